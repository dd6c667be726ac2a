"""Token counts a backend reports (`usage`), read cheaply out of bytes the relay already holds.

No full JSON parse: a non-stream body may be a 256 KiB embedding, and a stream's usage sits in its
last chunk. We look at the bytes after the last `"usage"` key only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

USAGE_KEY = b'"usage"'
_USAGE_WINDOW_BYTES = 512  # a usage object, details included, is well under this
_COUNT = re.compile(rb'"(prompt_tokens|input_tokens|completion_tokens|output_tokens)"\s*:\s*(\d+)')
_BRACES = re.compile(rb"[{}]")
_INPUT_KEYS = frozenset({b"prompt_tokens", b"input_tokens"})  # Chat/Completions | Responses


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int
    output_tokens: int


def find_usage(data: bytes) -> Usage | None:
    """The token counts of the last non-null `usage` object in `data`, if any."""
    start = data.rfind(USAGE_KEY)
    while start >= 0:
        window = data[start + len(USAGE_KEY): start + len(USAGE_KEY) + _USAGE_WINDOW_BYTES]
        value = window.lstrip(b" \t\r\n:")
        if value.startswith(b"{"):
            return _counts(value[: _object_end(value)])
        start = data.rfind(USAGE_KEY, 0, start)  # `"usage": null` on every chunk but the last
    return None


def _object_end(value: bytes) -> int:
    """Where the object opening `value` closes (details objects nest one level deep)."""
    depth = 0
    for brace in _BRACES.finditer(value):
        depth += 1 if brace.group() == b"{" else -1
        if depth == 0:
            return brace.end()
    return len(value)


def _counts(obj: bytes) -> Usage | None:
    found = {key: int(n) for key, n in _COUNT.findall(obj)}
    if not found:
        return None
    inputs = sum(n for key, n in found.items() if key in _INPUT_KEYS)
    outputs = sum(n for key, n in found.items() if key not in _INPUT_KEYS)
    return Usage(inputs, outputs)
