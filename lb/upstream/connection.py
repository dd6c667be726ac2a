"""One keep-alive HTTP/1.1 connection to a backend: an asyncio.Protocol around httptools (llhttp).

A request goes out as one prebuilt bytes buffer. Its response resolves one future when the headers
are in; the body is then either pulled (`Reply.chunk`, `Reply.read`) or pushed, from
`data_received`, into a `BodySink` (the relay's fast path: no coroutine per chunk).

Timeouts: one timer per connection, rearmed lazily. Each read only stamps the time; when the timer
fires it compares the stamp with the gap allowed (`first_byte` until the headers, `idle` from the
headers on, between any two reads) and the request's total deadline, and either fails the request
or sleeps again until the next possible deadline. While the connection sits idle in its pool the
same timer closes it after KEEPALIVE_S.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import httptools

from lb.errors import StreamBroken, UpstreamConnectError, UpstreamError, UpstreamTimeout
from lb.upstream.reply import REST_IDLE_S, Reply, Rest

KEEPALIVE_S = 15.0  # an idle pooled connection is closed after this (backends close at 5-75 s)
# Slow readers: while a client is behind, the backend socket is paused, and the kernel then holds
# at most about twice this before the backend's own writes block (autotuning would let it take
# megabytes per stream). A LAN at 1 ms round trip still moves 250 MB/s through it.
RECEIVE_BUFFER_BYTES = 256 << 10


@dataclass(frozen=True, slots=True)
class Deadlines:
    """The gaps one request may leave between reads, and its total (None: no limit)."""

    first_byte_s: float  # request sent -> response headers complete
    idle_s: float  # between two reads of the body, from the headers on
    total_s: float | None


class BackendConnection(asyncio.Protocol):
    """One TCP connection, one request at a time. `on_idle` gives it back to its pool."""

    def __init__(self, loop: asyncio.AbstractEventLoop, label: str,
                 on_idle: Callable[[BackendConnection], None]) -> None:
        self.loop = loop
        self.label = label  # the endpoint's name, for error messages
        self._on_idle = on_idle
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._reply: Reply | None = None
        self._headers_ready: asyncio.Future[Reply] | None = None
        self._deadlines: Deadlines | None = None
        self._total_at = 0.0
        self._last_read = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._in_headers = True
        self._informational = False  # a 1xx response is being parsed: skipped
        self._has_length = False  # Content-Length or chunked: else the body ends at EOF
        self._is_paused = False
        self._keep_alive = False
        self.is_closed = False
        self.requests = 0  # served on this connection, the one being sent included
        self.got_bytes = False  # any byte of an answer to the request under way
        self.idle_since = 0.0

    # --- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)

    def data_received(self, data: bytes) -> None:
        if self._reply is None:  # bytes nobody asked for: the connection cannot be trusted
            self.abort()
            return
        self._last_read = self.loop.time()
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._broken(f"malformed response ({type(exc).__name__})")
            self.abort()

    def eof_received(self) -> bool | None:
        self._ended()
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_closed = True
        self._transport = None
        self._ended()

    # --- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._reply is not None
        self._reply.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        reply = self._reply
        assert reply is not None
        status = self._parser.get_status_code()
        if status < 200:  # 100 Continue, 103 Early Hints: the real answer follows
            self._informational = True
            reply.headers.clear()
            return
        reply.status = status
        for key, value in reply.headers:
            lower = key.lower()
            if lower == "content-type":
                reply.content_type = value.partition(";")[0].strip().lower()
            elif lower == "content-length" and value.isdigit():
                reply.content_length = int(value)
                self._has_length = True
            elif lower == "transfer-encoding" and "chunked" in value.lower():
                self._has_length = True
        if status in (204, 304):
            self._has_length = True
        self._in_headers = False
        deadlines = self._deadlines
        if deadlines is not None and deadlines.idle_s < deadlines.first_byte_s:
            self._arm(self._last_read + deadlines.idle_s)
        future = self._headers_ready
        self._headers_ready = None
        if future is not None and not future.done():
            future.set_result(reply)

    def on_body(self, body: bytes) -> None:
        if not self._informational and self._reply is not None:
            self._reply._body(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self._keep_alive = self._parser.should_keep_alive()  # llhttp forgets it after the feed
        reply = self._reply
        if reply is not None:
            reply._end()

    # --- requests
    async def request(self, data: bytes, deadlines: Deadlines) -> Reply:
        """Write one request; the response once its headers are in (or an UpstreamError)."""
        assert self._transport is not None
        reply = Reply(self)
        self._reply = reply
        self._in_headers = True
        self._has_length = False
        self._keep_alive = False
        self._deadlines = deadlines
        now = self.loop.time()
        self._last_read = now
        self._total_at = now + deadlines.total_s if deadlines.total_s is not None else 0.0
        self._arm(now + deadlines.first_byte_s)
        self.requests += 1
        self.got_bytes = False
        future: asyncio.Future[Reply] = self.loop.create_future()
        self._headers_ready = future
        self._transport.write(data)
        try:
            return await future
        except BaseException:  # cancelled (the client left), timed out or broken: never reused
            self._reply = None
            self.abort()
            raise

    def finish(self, reply: Reply) -> None:
        """The caller is done with `reply`: back to the pool if it ended whole, else closed,
        unless the body is framed and still coming: then its rest is read (`Rest`)."""
        if reply is not self._reply:
            return
        if not reply.is_complete and reply._error is None and not self.is_closed \
                and self._has_length and self._deadlines is not None:
            Rest(self, reply)
            return
        self._reply = None
        self._deadlines = None
        if (reply.is_complete and reply._error is None and not self.is_closed
                and self._keep_alive and not reply._chunks):
            self.resume()
            self.idle_since = self.loop.time()
            self._on_idle(self)
        else:
            self.abort()

    def read_rest(self) -> None:
        """Read what remains of the body within REST_IDLE_S between reads (`Rest`)."""
        deadlines = self._deadlines
        assert deadlines is not None
        if deadlines.idle_s > REST_IDLE_S:
            self._deadlines = Deadlines(deadlines.first_byte_s, REST_IDLE_S, deadlines.total_s)
        self._arm(self.loop.time() + REST_IDLE_S)
        self.resume()

    def pause(self) -> None:
        if not self._is_paused and self._transport is not None:
            self._is_paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._is_paused and self._transport is not None:
            self._is_paused = False
            self._transport.resume_reading()
            self._last_read = self.loop.time()  # a paused socket is our wait, not the backend's

    def abort(self) -> None:
        self.is_closed = True
        transport = self._transport
        if transport is not None:
            transport.abort()

    def idle(self) -> None:
        """Now in the pool: the timer closes it after KEEPALIVE_S unless it is used again."""
        self._arm(self.idle_since + KEEPALIVE_S)

    # --- timer
    def _arm(self, when: float) -> None:
        timer = self._timer
        if timer is not None:
            if timer.when() <= when:
                return  # it fires first, and looks again
            timer.cancel()
        self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.is_closed:
            return
        now = self.loop.time()
        deadlines = self._deadlines
        if deadlines is None:  # idle in the pool
            expires = self.idle_since + KEEPALIVE_S
            if now >= expires:
                self.abort()
            else:
                self._arm(expires)
            return
        gap = deadlines.first_byte_s if self._in_headers else deadlines.idle_s
        due = self._last_read + gap
        if self._is_paused:  # the client is behind, not the backend
            due = now + gap
        if self._total_at and self._total_at < due:
            due = self._total_at
        if now < due:
            self._arm(due)
            return
        if self._total_at and now >= self._total_at:
            self._timed_out(f"timed out: no complete answer within {deadlines.total_s:g} s "
                            f"([timeouts] total)")
        elif self._in_headers:
            self._timed_out(f"sent no response headers within {gap:g} s ([timeouts] first_byte)")
        else:
            self._timed_out(f"timed out: nothing for {gap:g} s ([timeouts] idle)")

    def _timed_out(self, why: str) -> None:
        future = self._headers_ready
        if future is not None and not future.done():
            self._headers_ready = None
            future.set_exception(UpstreamTimeout(f"{self.label}: {why}"))
        elif self._reply is not None:
            self._reply.is_timed_out = True
            self._reply._fail(StreamBroken(f"{self.label}: stream broke: {why}"))
        self.abort()

    # --- endings
    def _ended(self) -> None:
        reply = self._reply
        if reply is None:
            return
        if self._in_headers:
            self._before_headers(UpstreamConnectError(
                f"{self.label}: connection closed before the response headers"))
        elif not self._has_length and not reply.is_complete:
            self._has_length = True
            reply._end()  # a body without a length ends where the connection does
        elif not reply.is_complete:
            reply._fail(StreamBroken(f"{self.label}: stream broke: connection closed "
                                     f"mid-body"))

    def _broken(self, why: str) -> None:
        if self._in_headers:
            self._before_headers(UpstreamError(f"{self.label}: {why}"))
        elif self._reply is not None:
            self._reply._fail(StreamBroken(f"{self.label}: stream broke: {why}"))

    def _before_headers(self, error: UpstreamError) -> None:
        future = self._headers_ready
        self._headers_ready = None
        if future is not None and not future.done():
            future.set_exception(error)
