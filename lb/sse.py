"""Server-sent events, sans-IO: SseDecoder cuts upstream bytes into raw events, byte for byte.

Also owns reading one event (parse_event, is_done) and writing our own (encode_event, DONE).
Framing follows the WHATWG HTML spec: lines end in CRLF, LF or CR; a blank line ends an event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NoReturn

from lb.errors import StreamBroken

MAX_EVENT_BYTES = 1 << 20  # one SSE event; caps memory per stream
DONE = b"data: [DONE]\n\n"

_CR = 0x0D
_LF = 0x0A
# A line terminator followed by another one is a blank line, which ends the event. The first CR
# must not be followed by LF, so "x\r\n" is never read as CR + LF (a blank line that isn't there).
_BLANK_LINE = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r|\n)")
# A boundary spans at most 4 bytes (CRLF CRLF), so any boundary completed by new bytes starts at
# most 3 bytes before the old end of the buffer: resume the search there, not at the event start,
# so an event trickling in small reads costs O(n), not O(n^2).
_RESCAN_BYTES = 3
_LINE_END = re.compile(r"\r\n|\r|\n")
_LINE_END_BYTES = re.compile(rb"\r\n|\r|\n")
_BOM = "\ufeff"


def _blank_line(data: bytes | bytearray, scan: int) -> bytes | None:
    """The blank line that ends events if data uses one line ending from scan on (LF or CRLF).

    Then bytes.find can look for it, faster than the regex (LF: several times). None for bare CRs
    or mixed endings, which only the regex reads right.
    """
    crs = data.count(b"\r", scan)
    if not crs:
        return b"\n\n"
    if crs == data.count(b"\n", scan) == data.count(b"\r\n", scan):
        return b"\r\n\r\n"
    return None


def _event_end(data: bytes | bytearray, start: int, scan: int, blank: bytes | None) -> int:
    """End offset of the event that begins at start, or -1 while the bytes so far cannot tell."""
    first = data[start]
    if first in (_LF, _CR):  # a blank line right at the start is an (empty) event
        end = start + 2 if data[start : start + 2] == b"\r\n" else start + 1
    elif blank is None:
        match = _BLANK_LINE.search(data, scan)
        if match is None:
            return -1
        end = match.end()
    else:
        found = data.find(blank, scan)
        return -1 if found < 0 else found + len(blank)
    if end == len(data) and data[end - 1] == _CR:
        return -1  # a final CR may be the first half of a CRLF split across reads: wait and see
    return end


def _is_one_lf_event(chunk: bytes) -> bool:
    """Whether chunk is exactly one event with LF line ends (what Ollama and vLLM send)."""
    return (
        len(chunk) > 2
        and chunk.find(b"\n\n") == len(chunk) - 2
        and chunk[0] != _LF
        and chunk.find(b"\r") < 0
    )


class SseDecoder:
    """Cuts an SSE byte stream into complete raw events, each with its terminating blank line.

    Concatenating everything feed() returned and then flush() gives back the input unchanged.
    """

    __slots__ = ("_buf", "_max_event_bytes")

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._max_event_bytes = max_event_bytes
        self._buf = bytearray()  # the start of an event whose end has not arrived yet

    @property
    def pending(self) -> int:
        """Number of bytes buffered: the incomplete event so far."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[bytes]:
        """Take one read from upstream; return every event it completes, in order, unchanged.

        Raises StreamBroken when an event grows beyond max_event_bytes.
        """
        buf = self._buf
        if not buf:
            if _is_one_lf_event(chunk) and len(chunk) <= self._max_event_bytes:
                return [chunk]  # the common case, one whole event per read: no copy, no buffer
            return self._split(chunk, 0)
        scan = max(len(buf) - _RESCAN_BYTES, 0)
        buf += chunk
        end = _event_end(buf, 0, scan, _blank_line(buf, scan))
        if end < 0:
            if len(buf) > self._max_event_bytes:
                self._overflow()
            return []
        data = bytes(buf)
        buf.clear()
        if end == len(data) <= self._max_event_bytes:
            return [data]  # this read completed the buffered event and brought nothing more
        return self._split(data, scan)

    def flush(self) -> bytes:
        """End of stream: return the incomplete tail (b"" if none) and start afresh.

        A tail is normally an event cut short. Only with CR line endings can it be complete
        (a final CR that no LF followed); such a tail ends with a blank line.
        """
        tail = bytes(self._buf)
        self._buf.clear()
        return tail

    def _split(self, data: bytes, scan: int) -> list[bytes]:
        """Slice the complete events off data; keep the incomplete rest in the buffer."""
        events: list[bytes] = []
        start = 0
        size = len(data)
        limit = self._max_event_bytes
        blank = _blank_line(data, scan)
        while start < size:
            end = _event_end(data, start, scan, blank)
            if end < 0:
                break
            if end - start > limit:
                self._overflow()
            events.append(data[start:end])  # the whole of data when it is exactly one event
            start = scan = end
        if start < size:
            if size - start > limit:
                self._overflow()
            self._buf += memoryview(data)[start:]
        return events

    def _overflow(self) -> NoReturn:
        self._buf.clear()  # the stream is over; don't hold the memory until it is collected
        raise StreamBroken(f"SSE event larger than {self._max_event_bytes} bytes")


@dataclass(slots=True, frozen=True)
class SseEvent:
    """The fields of one event. event is None when absent or empty (both mean "message")."""

    event: str | None
    data: str
    id: str | None
    retry: int | None
    is_comment_only: bool  # no field lines at all: a keep-alive comment or a stray blank line


def parse_event(raw: bytes) -> SseEvent:
    """Read the fields of one raw event (as SseDecoder returns it), following the WHATWG rules.

    Bytes that are not UTF-8 become U+FFFD; unknown fields are ignored.
    """
    event: str | None = None
    data: list[str] = []
    event_id: str | None = None
    retry: int | None = None
    is_comment_only = True
    text = raw.decode("utf-8", "replace").removeprefix(_BOM)
    lines = _LINE_END.split(text) if "\r" in text else text.split("\n")
    for line in lines:
        if not line or line[0] == ":":
            continue
        is_comment_only = False
        name, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value or None
        elif name == "id":
            if "\0" not in value:  # the spec ignores ids holding NUL
                event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            retry = int(value)
    return SseEvent(event, "\n".join(data), event_id, retry, is_comment_only)


def encode_event(data: str | bytes, event: str | None = None) -> bytes:
    """Write one event: an optional event line, one data line per line of data, a blank line.

    Line breaks inside data (CRLF, LF or CR) become separate data lines, which a reader joins with
    LF again.
    """
    payload = data.encode() if isinstance(data, str) else data
    body = b"data: " + b"\ndata: ".join(_LINE_END_BYTES.split(payload)) + b"\n\n"
    if not event:
        return body
    if "\r" in event or "\n" in event:
        raise ValueError(f"SSE event name with a line break: {event!r}")
    return b"event: " + event.encode() + b"\n" + body


def is_done(raw: bytes) -> bool:
    """Whether a raw event is the "data: [DONE]" end-of-stream sentinel, whatever its line ends."""
    if raw == DONE:
        return True
    return raw.find(b"[DONE]") >= 0 and parse_event(raw).data == "[DONE]"
