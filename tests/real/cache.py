"""Where the real-backend tests keep what is slow to make: built binaries, the model, vLLM's venv.

`~/.cache/fleetlb-tests/` unless FLEETLB_TESTS_CACHE names another folder. Entries are made in a
temporary sibling and renamed into place, so an interrupted build never leaves a half entry.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CACHE_ENV = "FLEETLB_TESTS_CACHE"


def cache_root() -> Path:
    configured = os.environ.get(CACHE_ENV)
    root = Path(configured) if configured else Path.home() / ".cache" / "fleetlb-tests"
    root.mkdir(parents=True, exist_ok=True)
    return root


def publish(staging: Path, final: Path) -> Path:
    """Move a finished `staging` path to `final` (atomic rename on one file system)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.is_dir():
        shutil.rmtree(final)
    os.replace(staging, final)
    return final
