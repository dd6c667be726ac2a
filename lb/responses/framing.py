"""Raw upstream SSE events in, the client's Responses SSE bytes out: the two per-event transforms
of /v1/responses streams, shaped as lb.relay's StreamFraming (events / end / fail).

TranslatedFraming turns a chat completion stream into Responses events; NormalizedFraming makes
a native Responses stream conform. Both end the stream with `data: [DONE]`, exactly once.
"""

from __future__ import annotations

from typing import Any

import orjson

from lb import nesting
from lb.errors import ApiError
from lb.responses.normalize import EventNormalizer
from lb.responses.stream import ChatToResponsesStream, encode
from lb.sse import DONE, parse_event

_DATA = b"data: "
_DATA_DONE = "[DONE]"


def event_data(raw: bytes) -> str | bytes | None:
    """The data of one raw SSE event; None for a comment or keep-alive. The common shapes (one
    data line, maybe after one event line, LF endings) are sliced without parsing.
    """
    if raw.endswith(b"\n\n"):
        lines = raw.count(b"\n")
        if lines == 2 and raw.startswith(_DATA):
            return raw[6:-2]
        if lines == 3 and raw.startswith(b"event: "):  # a native stream's `event:` + `data:`
            start = raw.find(b"\ndata: ")
            if start > 0:
                return raw[start + 7 : -2]
    event = parse_event(raw)
    return None if event.is_comment_only else event.data


def _is_done(data: str | bytes) -> bool:
    return data == b"[DONE]" or data == _DATA_DONE


def _error_code(error: ApiError) -> str:
    return str(error.code or "upstream_error")


class TranslatedFraming:
    """Chat completion chunks -> Responses events, through a ChatToResponsesStream."""

    __slots__ = ("_hits", "_learnt", "_shape", "is_closed", "machine")

    def __init__(self, machine: ChatToResponsesStream) -> None:
        self.machine = machine
        self.is_closed = False  # response.completed (or failed) and `[DONE]` went out
        self._shape: EventShape | None = None  # of this stream's plain text events
        self._learnt = self._hits = 0

    def start(self) -> bytes:
        """response.created and response.in_progress, to send before the first chunk arrives."""
        return b"".join(map(encode, self.machine.start()))

    def events(self, raw: list[bytes]) -> bytes:
        if self.is_closed:
            return b""
        if len(raw) == 1 and self.machine.is_started:  # the usual batch: one event mid-stream
            text = self._plain_text(raw[0])
            if text is not None:
                return text
        return self._translate(raw)

    def _plain_text(self, one: bytes) -> bytes | None:
        """One event that is one data line of plain text: its delta event, without the list
        and join of _translate; None for anything else (which _translate then reads).

        A backend writes a stream's text chunks byte for byte alike but for the text: once one
        has been read whole, the next ones that match its shape are read by their text alone."""
        shape = self._shape
        if shape is not None:
            content = shape.text_of(one)
            if content is not None:
                self._hits += 1
                return self.machine.more_text(content)
            self._shape = None  # something else changed (a timestamp): learnt again below
        data = event_data(one)
        if not data or len(data) > nesting.ALWAYS_SHALLOW:  # longer: nesting.loads checks it
            return None
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:  # `[DONE]` among others: _translate reads it
            return None
        text = self.machine.text_delta(chunk) if type(chunk) is dict else None
        # learn its shape; shapes that stop matching at once (a field that changes in every
        # chunk) are given up after two, the others re-learnt as long as they pay
        if text is not None and self._learnt <= self._hits // 16 + 1:
            self._learnt += 1
            self._shape = EventShape.of(one, chunk)
        return text

    def _translate(self, raw: list[bytes]) -> bytes:
        machine = self.machine
        out: list[bytes] = [] if machine.is_started else list(map(encode, machine.start()))
        for one in raw:
            data = event_data(one)
            if not data:
                continue
            if _is_done(data):
                out += map(encode, machine.finish())
                continue
            try:
                chunk = nesting.loads(data)
            except orjson.JSONDecodeError:
                out += map(encode, machine.fail("upstream_error",
                                                "the backend sent an event that is not JSON"))
                continue
            if type(chunk) is dict:
                text = machine.text_delta(chunk)
                if text is not None:
                    out.append(text)
                else:
                    out += map(encode, machine.feed(chunk))
        if machine.is_done:  # the terminal event: the client's stream ends with it
            return self._close(out)
        return b"".join(out)

    def end(self, tail: bytes) -> bytes:
        """The upstream body ended: finish (if `[DONE]` did not already) and close the stream.

        A leftover tail is an event cut short: it is not a chunk we could translate."""
        return self._close(list(map(encode, self.machine.finish())))

    def fail(self, error: ApiError) -> bytes:
        return self._close(list(map(encode, self.machine.fail(_error_code(error),
                                                                error.message))))

    def _close(self, encoded: list[bytes]) -> bytes:
        if self.is_closed:
            return b""
        self.is_closed = True
        encoded.append(DONE)
        return b"".join(encoded)


class EventShape:
    """A plain text chunk's event as the bytes before and after its text's JSON string: an
    event with the same bytes around a single JSON string is the same chunk with other text.
    Made only from a chunk read whole, and only when putting another string in the text's
    place is proven to change that text alone."""

    __slots__ = ("_prefix", "_size", "_suffix")

    def __init__(self, prefix: bytes, suffix: bytes) -> None:
        self._prefix, self._suffix = prefix, suffix
        self._size = len(prefix) + len(suffix)

    @classmethod
    def of(cls, one: bytes, chunk: dict[str, Any]) -> EventShape | None:
        content = chunk["choices"][0]["delta"]["content"]
        at = one.rfind(b'"content":')
        while at >= 0:
            start = at + len(b'"content":')
            while one[start : start + 1] in (b" ", b"\t"):
                start += 1
            end = _string_end(one, start)
            if end > 0 and _is_the_text(one, start, end, chunk, content):
                return cls(one[:start], one[end:])
            at = one.rfind(b'"content":', 0, at)
        return None

    def text_of(self, one: bytes) -> str | None:
        """The text of `one` if it has this shape (else None)."""
        prefix, suffix = self._prefix, self._suffix
        if len(one) <= self._size or not one.startswith(prefix) or not one.endswith(suffix):
            return None
        try:
            text = orjson.loads(one[len(prefix) : len(one) - len(suffix)])
        except orjson.JSONDecodeError:
            return None
        return text if type(text) is str and text else None


_PROBE = "fleetlb\u0000probe"  # no backend's text: proves where the text sits


def _is_the_text(one: bytes, start: int, end: int, chunk: dict[str, Any], text: str) -> bool:
    """Whether bytes start:end of event `one` are the delta's text and nothing else: the text
    they spell, and the same chunk but for that text when a probe string takes their place."""
    try:
        if orjson.loads(one[start:end]) != text:
            return False
        probed = orjson.loads(one[6:start] + orjson.dumps(_PROBE) + one[end:-2])
    except orjson.JSONDecodeError:
        return False
    try:
        delta = probed["choices"][0]["delta"]
        if delta["content"] != _PROBE:
            return False
        delta["content"] = text
    except (KeyError, IndexError, TypeError):
        return False
    return bool(probed == chunk)


def _string_end(data: bytes, start: int) -> int:
    """Where the JSON string opening at `start` ends (past its closing quote), or -1."""
    if data[start : start + 1] != b'"':
        return -1
    at = start + 1
    while (quote := data.find(b'"', at)) >= 0:
        escapes = 0
        while data[quote - 1 - escapes] == 0x5C:  # backslashes before the quote
            escapes += 1
        if escapes % 2 == 0:
            return quote + 1
        at = quote + 1
    return -1


def final_response(framing: object) -> dict[str, Any] | None:
    """The response a Responses stream ended with (its last snapshot), when the framing knows it."""
    if isinstance(framing, TranslatedFraming):
        return framing.machine.response
    if isinstance(framing, NormalizedFraming):
        return framing.normalizer.snapshot
    return None


class NormalizedFraming:
    """A native Responses stream, event by event, through an EventNormalizer. The backend's own
    `[DONE]` is held back so that exactly one ends the stream, after everything else.
    """

    __slots__ = ("is_closed", "normalizer", "unreadable")

    def __init__(self, normalizer: EventNormalizer) -> None:
        self.normalizer = normalizer
        self.unreadable = 0  # events whose data was not a JSON object: dropped
        self.is_closed = False  # the terminal snapshot and `[DONE]` went out

    def events(self, raw: list[bytes]) -> bytes:
        if self.is_closed:
            return b""
        out: list[dict[str, Any]] = []
        for one in raw:
            data = event_data(one)
            if data is None or not data or _is_done(data):
                continue
            try:
                event = nesting.loads(data)
            except orjson.JSONDecodeError:
                event = None
            if isinstance(event, dict):
                if "type" not in event:  # some servers name the event only on its event: line
                    event["type"] = parse_event(one).event
                out += self.normalizer.feed(event)
            else:
                self.unreadable += 1
            if self.normalizer.is_done:  # nothing after the terminal snapshot is sent
                return self._close(out)
        return b"".join(map(encode, out))

    def end(self, tail: bytes) -> bytes:
        return self._close([])  # an unterminated tail is not an event: never forward half

    def fail(self, error: ApiError) -> bytes:
        return self._close(self.normalizer.fail(_error_code(error), error.message))

    def _close(self, events: list[dict[str, Any]]) -> bytes:
        if self.is_closed:
            return b""
        self.is_closed = True
        return b"".join(map(encode, events)) + DONE
