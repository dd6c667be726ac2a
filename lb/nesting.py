"""How deep JSON may nest: one limit, decided where JSON comes in (client bodies, WebSocket
messages, backend answers), so that every JSON fleetlb writes back out can be written.

orjson reads 1,024 levels but writes only 254: a document between the two would be accepted and
then fail wherever fleetlb re-serialises it (a model rewrite, a translation, a stored response).
"""

from __future__ import annotations

from typing import Any

import orjson

# Generous for any real request (tool schemas nest a few dozen levels at most) and far enough
# below orjson's write limit of 254 that the few levels fleetlb wraps around a value still fit.
MAX_JSON_DEPTH = 128
# A valid document nested past MAX_JSON_DEPTH closes every bracket it opens, so it is at least
# twice that long: one this short is read with plain orjson.loads (a stream event usually is).
ALWAYS_SHALLOW = 2 * MAX_JSON_DEPTH


class TooDeep(orjson.JSONDecodeError):
    """JSON nested deeper than MAX_JSON_DEPTH: a JSONDecodeError, so every caller that handles
    unreadable JSON handles this too."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"JSON nested deeper than {limit} levels", "", 0)
        self.limit = limit

    def __str__(self) -> str:
        return f"JSON nested deeper than {self.limit} levels (fleetlb's limit)"


def loads(raw: bytes | bytearray | memoryview | str, limit: int = MAX_JSON_DEPTH) -> Any:
    """orjson.loads, refusing documents nested deeper than `limit` (TooDeep).

    It runs on every stream event fleetlb translates, so the common case costs a length test:
    a valid document (orjson read it) `limit` levels deep closes every bracket it opens, so it
    is at least 2 * limit long. Longer ones count their opening brackets next (brackets inside
    strings count too, so that test only ever over-estimates) and walk the value last."""
    value = orjson.loads(raw)
    kind = type(value)
    if (kind is dict or kind is list) and len(raw) > 2 * limit and _may_exceed(raw, limit) \
            and depth_exceeds(value, limit):
        raise TooDeep(limit)
    return value


def _may_exceed(raw: bytes | bytearray | memoryview | str, limit: int) -> bool:
    if isinstance(raw, str):
        return raw.count("[") + raw.count("{") > limit
    data = raw.tobytes() if isinstance(raw, memoryview) else raw
    return data.count(b"[") + data.count(b"{") > limit


def depth_exceeds(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether containers nest deeper than `limit` in a parsed value (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False
