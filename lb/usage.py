"""Token counts a backend reports, read cheaply out of bytes the relay already holds: OpenAI's
`usage` object, or Ollama's `prompt_eval_count` / `eval_count`.

No full JSON parse: a non-stream body may be a 256 KiB embedding, and a stream's counts sit in its
last chunk. We look at the bytes after the last such key only.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import orjson

USAGE_KEY = b'"usage"'
OLLAMA_USAGE_KEY = b'"eval_count"'  # in the last line of an Ollama stream, and in its bodies
_OLLAMA_INPUT_KEY = b'"prompt_eval_count"'
_INT_VALUE = re.compile(rb"\s*:\s*(\d+)")
_USAGE_WINDOW_BYTES = 512  # a usage object, details included, is well under this


class Usage(NamedTuple):  # a tuple: built once per request, cheaply
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
    return _ollama_counts(data)


def _ollama_counts(data: bytes) -> Usage | None:
    inputs, outputs = _last_int(data, _OLLAMA_INPUT_KEY), _last_int(data, OLLAMA_USAGE_KEY)
    if inputs is None and outputs is None:
        return None
    return Usage(inputs or 0, outputs or 0)


def _last_int(data: bytes, key: bytes) -> int | None:
    start = data.rfind(key)
    if start < 0:
        return None
    match = _INT_VALUE.match(data, start + len(key))
    return int(match[1]) if match else None


def _object_end(value: bytes) -> int:
    """Where the object opening `value` closes; its details objects nest inside it."""
    opened = closed = pos = 0
    while (end := value.find(b"}", pos)) >= 0:
        opened += value.count(b"{", pos, end)
        closed += 1
        if opened == closed:
            return end + 1
        pos = end + 1
    return len(value)


def _counts(obj: bytes) -> Usage | None:
    try:
        usage = orjson.loads(obj)
    except orjson.JSONDecodeError:
        return None  # cut short, or `usage` was a word inside a string
    if not isinstance(usage, dict):
        return None
    # Chat Completions and Completions say prompt/completion, Responses says input/output
    inputs = usage.get("prompt_tokens", usage.get("input_tokens"))
    outputs = usage.get("completion_tokens", usage.get("output_tokens", 0))
    if not isinstance(inputs, int) or not isinstance(outputs, int):
        return None
    return Usage(inputs, outputs)
