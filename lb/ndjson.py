"""Newline-delimited JSON, sans-IO: NdjsonDecoder cuts upstream bytes into whole lines, unchanged.

Ollama streams one JSON object per line (LF; a CR before it stays part of the line). A line is
bounded so a backend that never sends a newline cannot grow a stream's memory without limit.
"""

from __future__ import annotations

from typing import NoReturn

from lb.errors import StreamBroken

# One line. Ollama's last /api/generate line carries `context`, every token id of the
# conversation (~7 bytes each): 4 MiB holds a 256k-token context with room to spare.
MAX_LINE_BYTES = 4 << 20


class NdjsonDecoder:
    """Cuts an NDJSON byte stream into complete lines, each with its terminating LF.

    Concatenating everything feed() returned and then flush() gives back the input unchanged.
    """

    __slots__ = ("_buf", "_max_line_bytes")

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._max_line_bytes = max_line_bytes
        self._buf = bytearray()  # the start of a line whose LF has not arrived yet

    @property
    def pending(self) -> int:
        """Number of bytes buffered: the incomplete line so far."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[bytes]:
        """Take one read from upstream; return every line it completes, in order, unchanged.

        Raises StreamBroken when a line grows beyond max_line_bytes.
        """
        if not chunk:
            return []
        buf = self._buf
        if not buf:
            first = chunk.find(b"\n")
            if first == len(chunk) - 1 and first < self._max_line_bytes:
                return [chunk]  # the common case, one whole line per read: no copy, no buffer
            return self._split(chunk, 0)
        end = chunk.find(b"\n")
        if end < 0:
            buf += chunk
            if len(buf) > self._max_line_bytes:
                self._overflow()
            return []
        if len(buf) + end + 1 > self._max_line_bytes:
            self._overflow()
        buf += memoryview(chunk)[: end + 1]
        first_line = bytes(buf)
        buf.clear()
        return [first_line, *self._split(chunk, end + 1)]

    def flush(self) -> bytes:
        """End of stream: return the unterminated tail (b"" if none) and start afresh."""
        tail = bytes(self._buf)
        self._buf.clear()
        return tail

    def _split(self, data: bytes, start: int) -> list[bytes]:
        """Slice the complete lines of data from start on; keep the incomplete rest buffered."""
        lines: list[bytes] = []
        limit = self._max_line_bytes
        size = len(data)
        while start < size:
            end = data.find(b"\n", start)
            if end < 0:
                break
            if end + 1 - start > limit:
                self._overflow()
            lines.append(data[start : end + 1])
            start = end + 1
        if start < size:
            if size - start > limit:
                self._overflow()
            self._buf += memoryview(data)[start:]
        return lines

    def _overflow(self) -> NoReturn:
        self._buf.clear()  # the stream is over; don't hold the memory until it is collected
        raise StreamBroken(f"NDJSON line larger than {self._max_line_bytes} bytes")
