"""A custom (freeform) tool's input, decoded while its function's arguments stream in, pure.

The backend calls a custom tool as a function with arguments `{"input": "<the input>"}`. The
client wants the input itself, as `response.custom_tool_call_input.delta` events, so the JSON
string is decoded piece by piece: escapes split across chunks are held back until whole.
Arguments of another shape are held until the end and then read whole; feed() + finish() always
equal custom_input(whole arguments).
"""

from __future__ import annotations

import re

import orjson

INPUT_KEY = "input"  # the one parameter of a custom tool's function
_OPENING = re.compile(r'\s*\{\s*"input"\s*:\s*"')
# What can still grow into _OPENING: each step optional once the one before it is there.
_PARTIAL_OPENING = re.compile(
    r'\s*(?:\{\s*(?:"(?:i(?:n(?:p(?:u(?:t(?:"\s*(?::\s*)?)?)?)?)?)?)?)?)?'
)
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_UNICODE_ESCAPE = 6  # \uXXXX


def custom_input(arguments: str) -> str:
    """The input in a custom tool's function arguments; other arguments are the input as they
    are (the model wrote them as the input)."""
    decoder = InputDecoder()
    return decoder.feed(arguments) + decoder.finish(arguments)


def custom_arguments(text: str) -> str:
    """A custom tool call's input as the arguments of its function (for the history)."""
    return orjson.dumps({INPUT_KEY: text}).decode()


def _whole(arguments: str) -> str:
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return arguments
    if isinstance(value, dict) and isinstance(value.get(INPUT_KEY), str):
        return str(value[INPUT_KEY])
    return value if isinstance(value, str) else arguments


class InputDecoder:
    """feed(fragment) -> the input text it completes; finish(whole arguments) -> the rest."""

    __slots__ = ("_buffer", "_state")

    def __init__(self) -> None:
        self._state = "opening"  # opening | string | closed | whole
        self._buffer = ""  # opening: what came so far; string: an escape not yet complete

    def feed(self, fragment: str) -> str:
        if self._state == "string":
            return self._decode(fragment)
        if self._state != "opening":
            return ""
        self._buffer += fragment
        opening = _OPENING.match(self._buffer)
        if opening is not None:
            rest = self._buffer[opening.end():]
            self._state, self._buffer = "string", ""
            return self._decode(rest)
        if _PARTIAL_OPENING.fullmatch(self._buffer) is None:
            self._state, self._buffer = "whole", ""
        return ""

    def finish(self, arguments: str) -> str:
        """What the deltas have not said yet. A string cut short ends where it was cut."""
        if self._state in ("opening", "whole"):
            self._state = "closed"
            return _whole(arguments)
        self._state = "closed"
        return ""

    def _decode(self, text: str) -> str:
        text = self._buffer + text
        self._buffer = ""
        out: list[str] = []
        start = index = 0
        while True:
            index = _next_special(text, start)
            if index < 0:
                out.append(text[start:])
                break
            out.append(text[start:index])
            if text[index] == '"':
                self._state = "closed"
                break
            piece, used = _escape(text, index)
            if used == 0:  # cut inside the escape: keep it for the next fragment
                self._buffer = text[index:]
                break
            out.append(piece)
            start = index + used
        return "".join(out)


def _next_special(text: str, start: int) -> int:
    quote, backslash = text.find('"', start), text.find("\\", start)
    if quote < 0 or 0 <= backslash < quote:
        return backslash
    return quote


def _escape(text: str, at: int) -> tuple[str, int]:
    """The character of the escape at `at` and its length; (.., 0) when it is not whole yet."""
    if at + 1 >= len(text):
        return "", 0
    code = text[at + 1]
    if code != "u":
        return _ESCAPES.get(code, code), 2
    if at + _UNICODE_ESCAPE > len(text):
        return "", 0
    unit = _hex(text[at + 2 : at + _UNICODE_ESCAPE])
    if 0xD800 <= unit < 0xDC00:  # a high surrogate: its low half follows as another \\u escape
        return _surrogate_pair(text, at, unit)
    if 0xD800 <= unit < 0xE000:
        return "\ufffd", _UNICODE_ESCAPE  # a lone surrogate cannot be sent as UTF-8
    return chr(unit), _UNICODE_ESCAPE


def _surrogate_pair(text: str, at: int, high: int) -> tuple[str, int]:
    low = text[at + _UNICODE_ESCAPE : at + 2 * _UNICODE_ESCAPE]
    if len(low) < _UNICODE_ESCAPE and "\\u".startswith(low[:2]):
        return "", 0  # what follows may still be the low half
    low_unit = _hex(low[2:]) if low.startswith("\\u") else 0
    if 0xDC00 <= low_unit < 0xE000:
        return chr(0x10000 + ((high - 0xD800) << 10) + (low_unit - 0xDC00)), 2 * _UNICODE_ESCAPE
    return "\ufffd", _UNICODE_ESCAPE


def _hex(digits: str) -> int:
    try:
        return int(digits, 16)
    except ValueError:
        return 0xFFFD
