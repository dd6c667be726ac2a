"""One response from a backend connection: status and headers first, then the body, pulled
(`Reply.chunk`, `Reply.read`) or pushed into a `BodySink` from the connection's data_received;
`Rest`, the sink of a body its reader left before it ended.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Protocol

from lb.errors import StreamBroken

if TYPE_CHECKING:
    from lb.upstream.connection import BackendConnection

PULL_HIGH_WATER = 32 << 10  # bytes buffered for a pull reader before the socket is paused
PULL_LOW_WATER = 16 << 10  # ...and resumed
REST_BYTES = 16 << 10  # what may follow once the reader is done (Reply.release), read, not sent
REST_IDLE_S = 1.0  # ...and the longest gap allowed while it comes


class BodySink(Protocol):
    """Takes a body pushed from data_received; none of these may raise."""

    def chunk(self, data: bytes) -> None: ...

    def end(self) -> None: ...

    def fail(self, error: StreamBroken) -> None: ...


class Reply:
    """One response: status and headers first, then the body, pulled or pushed."""

    __slots__ = ("_chunks", "_conn", "_done", "_error", "_sink", "_size", "_waiter",
                 "content_length", "content_type", "headers", "is_timed_out", "status")

    def __init__(self, conn: BackendConnection) -> None:
        self._conn = conn
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.content_type = ""
        self.content_length: int | None = None
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._done = False
        self._error: StreamBroken | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._sink: BodySink | None = None
        self.is_timed_out = False  # the body broke because a timeout ([timeouts]) ran out

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    @property
    def is_complete(self) -> bool:
        return self._done

    async def chunk(self) -> bytes:
        """The next piece of the body as it arrived; b"" at its end. Raises StreamBroken."""
        while True:
            if self._chunks:
                data = self._chunks.popleft()
                self._size -= len(data)
                if self._size < PULL_LOW_WATER:
                    self._conn.resume()
                return data
            if self._error is not None:
                raise self._error
            if self._done:
                return b""
            self._waiter = self._conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def read(self) -> bytes:
        """The whole body."""
        if self._done and len(self._chunks) <= 1:  # usually here: it came with the headers
            data = self._chunks.popleft() if self._chunks else b""
            self._size = 0
            return data
        parts = []
        while piece := await self.chunk():
            parts.append(piece)
        return b"".join(parts)

    async def read_at_most(self, limit: int) -> bytes:
        """The body, or its first `limit` bytes when longer (the rest is not read)."""
        parts: list[bytes] = []
        size = 0
        while size < limit and (piece := await self.chunk()):
            parts.append(piece)
            size += len(piece)
        return b"".join(parts)[:limit]

    def stream_to(self, sink: BodySink) -> None:
        """From now on the body goes to `sink` as it arrives (what was buffered goes first)."""
        self._sink = sink
        while self._chunks and self._sink is sink:
            data = self._chunks.popleft()
            self._size -= len(data)
            sink.chunk(data)
        self._conn.resume()
        if self._sink is not sink:
            return
        if self._error is not None:
            sink.fail(self._error)
        elif self._done:
            sink.end()

    def pause(self) -> None:
        """Stop reading the backend's socket (the client is behind); `resume` undoes it."""
        self._conn.pause()

    def resume(self) -> None:
        self._conn.resume()

    def close(self) -> None:
        """Drop the connection: the backend sees it close and stops generating. A reader or sink
        still waiting for the body learns it broke."""
        self._fail(StreamBroken(f"{self._conn.label}: stream broke: closed by the gateway"))
        self._sink = None
        self._conn.abort()

    def release(self) -> None:
        """Done with it: a complete response gives the connection back to its pool."""
        self._sink = None
        self._conn.finish(self)

    # --- fed by the connection
    def _body(self, data: bytes) -> None:
        sink = self._sink
        if sink is not None:
            sink.chunk(data)
            return
        self._chunks.append(data)
        self._size += len(data)
        if self._size > PULL_HIGH_WATER:
            self._conn.pause()
        self._wake()

    def _end(self) -> None:
        self._done = True
        if self._sink is not None:
            self._sink.end()
        else:
            self._wake()

    def _fail(self, error: StreamBroken) -> None:
        if self._done or self._error is not None:
            return
        self._error = error
        if self._sink is not None:
            self._sink.fail(error)
        else:
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Rest:
    """The sink of a body its reader stopped wanting before it ended (a Responses stream whose
    client already has its terminal event, the backend's `[DONE]` and end of body still on the
    way): the rest is discarded as it comes, and the connection goes back to its pool when the
    body ends, as if it had been read. More than REST_BYTES, a gap over REST_IDLE_S or a broken
    body close it instead (the backend then sees the connection drop, as before)."""

    __slots__ = ("_conn", "_reply", "_size")

    def __init__(self, conn: BackendConnection, reply: Reply) -> None:
        self._conn, self._reply = conn, reply
        self._size = reply._size
        reply._chunks.clear()
        reply._size = 0
        reply._sink = self
        if self._size > REST_BYTES:
            conn.abort()
            return
        conn.read_rest()

    def chunk(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > REST_BYTES:
            self._conn.abort()

    def end(self) -> None:
        self._reply._sink = None
        self._conn.finish(self._reply)  # complete now: pooled

    def fail(self, error: StreamBroken) -> None:
        self._conn.abort()
