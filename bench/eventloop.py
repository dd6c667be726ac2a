"""Running the bench's own servers and clients on the same event loop the gateway uses."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_name() -> str:
    """`uvloop X.Y` when installed (`fleetlb serve` then runs on it), else `asyncio`."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return "asyncio (uvloop not installed)"
    return f"uvloop {uvloop.__version__}"


def run(main: Coroutine[Any, Any, T]) -> T:
    """uvloop when installed, as `fleetlb serve` picks it, else the stdlib loop."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return asyncio.run(main)
    result: T = uvloop.run(main)
    return result
