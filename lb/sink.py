"""The relay's fast path: upstream bytes go from the backend socket's `data_received` through the
event decoder and the framing straight to the client's transport, with no coroutine per chunk.

The handler's coroutine sleeps until the body ends, and wakes only when the client falls behind:
then the backend's socket is paused (`pause_reading`), the coroutine waits for the client's
transport to drain below its low-water mark, and reading resumes. So a slow reader costs one
transport buffer, not a buffered backend (the slow-reader bound of issue 11).

Client writes are HTTP/1.1 chunks, written as aiohttp's own StreamWriter would (the response was
prepared with chunked encoding; `write_eof` ends it as usual).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import orjson
import structlog
from aiohttp.abc import AbstractStreamWriter

from lb.errors import ApiError, StreamBroken
from lb.observe import RequestRecord
from lb.upstream.reply import Reply
from lb.usage import find_usage

if TYPE_CHECKING:
    from lb.forward import Exchange
    from lb.relay import Decoder, RelayOutcome, StreamFraming

log = structlog.get_logger("lb.relay")
_END = b"0\r\n\r\n"  # appended to a tail as its own chunk: the body's last


def _take_head(writer: AbstractStreamWriter) -> bytes:
    """The response head aiohttp (3.10+) holds until the first body write, taken from its
    StreamWriter to go out with the first event; b"" when it has gone already (or this aiohttp
    keeps it elsewhere), and the caller sends it as usual."""
    head = getattr(writer, "_headers_buf", None)
    if not head or getattr(writer, "_headers_written", True):
        return b""
    writer._headers_buf = None  # type: ignore[attr-defined]
    writer._headers_written = True  # type: ignore[attr-defined]
    return bytes(head)


class ClientSink:
    """A BodySink that frames upstream bytes and writes them to the client's transport."""

    __slots__ = ("_decoder", "_exchange", "_framing", "_head", "_high", "_outcome", "_record",
                 "_transport", "_usage_key", "_waiter", "_with_usage", "_writer", "is_behind",
                 "is_over")

    def __init__(self, transport: asyncio.Transport, exchange: Exchange, record: RequestRecord,
                 decoder: Decoder, framing: StreamFraming, outcome: RelayOutcome,
                 usage_key: bytes) -> None:
        self._transport = transport
        self._exchange = exchange
        self._record = record
        self._decoder = decoder
        self._framing = framing
        self._outcome = outcome
        self._usage_key = usage_key
        self._high = transport.get_write_buffer_limits()[1]
        self._with_usage = b""  # the last write that mentions usage: parsed once, at the end
        self._waiter: asyncio.Future[None] | None = None
        self._head = b""  # the response head, when it goes out with the first event
        self._writer: AbstractStreamWriter | None = None  # set by run()
        self.is_behind = False  # the client's transport is above its high-water mark
        self.is_over = False

    # --- BodySink
    def chunk(self, data: bytes) -> None:
        if self.is_over:
            return
        try:
            events = self._decoder.feed(data)
            if not events:
                return
            out = self._framing.events(events)
        except StreamBroken as exc:  # an event over the size cap
            self._broken(exc)
            return
        except Exception:
            self._failed()
            return
        if self._framing.is_closed:  # the client's stream is whole; what the backend adds is
            self._over(out)  # not sent
        elif out:
            self._write(out)

    def end(self) -> None:
        if self.is_over:
            return
        try:
            tail = self._framing.end(self._decoder.flush())
        except StreamBroken as exc:
            self._broken(exc)
            return
        except Exception:
            self._failed()
            return
        self._over(tail)

    def fail(self, error: StreamBroken) -> None:
        if not self.is_over:
            self._broken(error)

    # --- the handler's side
    async def run(self, writer: AbstractStreamWriter) -> None:
        """Relay the exchange's body; ConnectionResetError when the client went away.

        The sink writes below aiohttp's writer, so it sends the response head itself: with the
        first event when that came with the backend's headers (one write, one wake-up of the
        client, as aiohttp's own first write does), else at once. It also writes the body's end
        itself, with the stream's last events (see `_over`)."""
        self._writer = writer
        exchange = self._exchange
        first = exchange.first
        self._head = _take_head(writer) if first else b""
        if not self._head:
            writer.send_headers()
        if first:
            self.chunk(first)
        if self._head:  # the first read made no event to send: the head goes alone
            head, self._head = self._head, b""
            if not self._transport.is_closing():
                self._transport.write(head)
        reply = exchange.response
        if not self.is_over:
            reply.stream_to(self)
        await self.wait(reply, writer)
        if self._outcome.client_gone:
            raise ConnectionResetError("the client went away")

    async def wait(self, reply: Reply, writer: AbstractStreamWriter) -> None:
        """Until the body is over; while the client is behind, the backend is paused."""
        while not self.is_over:
            if self.is_behind:
                await writer.drain()  # aiohttp's: until the transport calls resume_writing
                self.is_behind = False
                reply.resume()
                continue
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    # --- internals
    def _write(self, out: bytes, end: bool = False) -> None:
        record = self._record
        if record.ttfb_s is None:
            record.ttfb_s = time.perf_counter() - record.started
        record.bytes_out += len(out)
        if self._usage_key in out:
            self._with_usage = out
        transport = self._transport
        if transport.is_closing():
            self._outcome.client_gone = True
            self._finish()
            return
        framed = b"%x\r\n%b\r\n%b" % (len(out), out, _END if end else b"")
        if self._head:
            framed, self._head = self._head + framed, b""
        transport.write(framed)
        if transport.get_write_buffer_size() > self._high and not self.is_behind:
            self.is_behind = True
            self._exchange.response.pause()
            self._wake()

    def _broken(self, error: StreamBroken) -> None:
        """The backend's body broke (or a drain interrupted it): the terminal error event."""
        exchange = self._exchange
        if exchange.interrupted is not None:
            self._outcome.interrupted = True
            self._over(self._fail_safely(exchange.interrupted))
            return
        self._outcome.broken = error.redact(exchange.redactor.text)
        self._over(self._fail_safely(error))

    def _failed(self) -> None:
        """Not the backend's failure nor the client's: a transform could not go on (a bug). The
        stream still ends with its terminal error event, and the upstream read stops here."""
        log.exception("stream_failed")
        self._outcome.failed = True
        tail = self._fail_safely(ApiError("fleetlb could not relay the rest of this stream"))
        self._over(tail)
        self._exchange.response.close()

    def _fail_safely(self, error: ApiError) -> bytes:
        try:
            return self._framing.fail(error)
        except Exception:
            log.exception("stream_fail_failed")
            return b"data: " + orjson.dumps(error.body()) + b"\n\n"

    def _over(self, tail: bytes) -> None:
        if tail:
            self._write(tail, end=self._ends_body())
        elif self._ends_body():
            self._transport.write(self._head + _END)
            self._head = b""
        data = self._with_usage or (tail if self._usage_key in tail else b"")
        if data:
            # a framing may have taken the counts out of the stream already (lb.teams.usage)
            self._record.usage = find_usage(data) or self._record.usage
        self._finish()

    def _ends_body(self) -> bool:
        """Whether the chunked body's last chunk (`0\r\n\r\n`) can go with the tail: aiohttp
        then does not write it again (its writer's `_eof`), and the client has the end of the
        stream with its last event, one write sooner."""
        writer = self._writer
        if writer is None or self._outcome.client_gone or getattr(writer, "_eof", True) \
                or self._transport.is_closing():
            return False
        writer._eof = True  # type: ignore[attr-defined]  # aiohttp's StreamWriter
        return True

    def _finish(self) -> None:
        self.is_over = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
