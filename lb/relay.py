"""Pump an upstream body to the client: whole SSE events (or NDJSON lines) in one write as soon as
they are whole.

A backend that breaks mid-stream ends the client's stream with a terminal error event (an error line
for NDJSON); a client that goes away aborts the upstream connection at once (the caller closes the
exchange with abort=True), and so does a drain that ends it (`Exchange.interrupt`). Token usage is
picked out of the bytes we already hold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import orjson
import structlog
from aiohttp import HttpVersion11, web
from multidict import CIMultiDict

from lb.answer import WholeAnswer
from lb.errors import ApiError, StreamBroken, UpstreamError
from lb.forward import Exchange
from lb.ndjson import NdjsonDecoder
from lb.observe import RequestRecord
from lb.sink import ClientSink
from lb.sse import SseDecoder
from lb.upstream import reply_chunks, returnable_headers
from lb.usage import OLLAMA_USAGE_KEY, USAGE_KEY, find_usage

NDJSON = "application/x-ndjson"  # Ollama's streams
# A slow reader: above this many bytes queued for the client, aiohttp's write waits for the client
# (it drains every 64 KiB written), and while it waits nothing reads upstream, so the backend is
# paused by TCP, not buffered here (lb.upstream bounds the upstream side).
CLIENT_HIGH_WATER_BYTES = 64 << 10

log = structlog.get_logger("lb.relay")


class Decoder(Protocol):
    """Cuts upstream bytes into whole units (SSE events, NDJSON lines); sans-IO."""

    def feed(self, chunk: bytes) -> list[bytes]: ...

    def flush(self) -> bytes: ...


class StreamFraming(Protocol):
    """How complete upstream units (SSE events, NDJSON lines) become client bytes."""

    @property
    def is_closed(self) -> bool:
        """The client's stream is whole (its terminal event went out): the relay ends there,
        whatever the backend still sends."""
        ...

    def events(self, raw: list[bytes]) -> bytes: ...

    def end(self, tail: bytes) -> bytes:
        """The upstream body ended; `tail` is what followed the last whole event (usually b"")."""
        ...

    def fail(self, error: ApiError) -> bytes: ...


class Writer(Protocol):
    """Where client bytes go: an aiohttp StreamResponse, or a WebSocket adapter."""

    async def write(self, data: bytes) -> None: ...


class Passthrough:
    """OpenAI streams: events unchanged; a failure becomes a final `data: {"error": …}` event."""

    __slots__ = ()
    is_closed = False  # the backend ends the stream

    def events(self, raw: list[bytes]) -> bytes:
        return raw[0] if len(raw) == 1 else b"".join(raw)

    def end(self, tail: bytes) -> bytes:
        return tail  # bytes unchanged, even an unterminated last event

    def fail(self, error: ApiError) -> bytes:
        return b"data: " + orjson.dumps(error.body()) + b"\n\n"


PASSTHROUGH = Passthrough()


class NdjsonLines:
    """Ollama streams: lines unchanged; a failure becomes a final `{"error": "…"}` line."""

    __slots__ = ()
    is_closed = False  # the backend ends the stream

    def events(self, raw: list[bytes]) -> bytes:
        return raw[0] if len(raw) == 1 else b"".join(raw)

    def end(self, tail: bytes) -> bytes:
        return tail  # a last line without its newline is still a whole JSON object

    def fail(self, error: ApiError) -> bytes:
        return orjson.dumps(error.ollama_body()) + b"\n"


NDJSON_LINES = NdjsonLines()


@dataclass(slots=True)
class RelayOutcome:
    broken: UpstreamError | None = None  # the backend failed mid-body
    failed: bool = False  # fleetlb could not go on (a bug, logged); the stream ended with an error
    client_gone: bool = False
    interrupted: bool = False  # the gateway ended it (shutdown): not the backend's fault


def response_headers(exchange: Exchange, record: RequestRecord,
                     extra: dict[str, str] | None = None) -> CIMultiDict[str]:
    headers = returnable_headers(exchange.response.headers)
    if exchange.response.status >= 400:  # an error answer may echo what the backend was sent
        clean = exchange.redactor.text
        headers = CIMultiDict((k, clean(v)) for k, v in headers.items())
    if extra:
        headers.update(extra)
    headers["X-Request-ID"] = record.request_id
    headers["x-fleetlb-endpoint"] = exchange.endpoint.name
    headers["x-fleetlb-attempts"] = str(exchange.attempts)
    route = record.route
    if route is not None and route.reason:
        headers["x-fleetlb-route"] = route.label
    return headers


async def relay(request: web.Request, exchange: Exchange, record: RequestRecord,
                framing: StreamFraming = PASSTHROUGH, headers: dict[str, str] | None = None,
                ) -> tuple[web.StreamResponse, RelayOutcome]:
    out_headers = response_headers(exchange, record, headers)
    body = exchange.body
    if body is not None:
        record.ttfb_s = time.perf_counter() - record.started
        record.bytes_out = len(body)
        if exchange.response.status < 300:
            record.usage = find_usage(body)
        else:
            body = exchange.redactor.bytes(body)
        return WholeAnswer(exchange.response.status, body, out_headers), RelayOutcome()
    response = web.StreamResponse(status=exchange.response.status, headers=out_headers)
    outcome = RelayOutcome()
    is_ndjson = not exchange.is_sse and exchange.response.content_type == NDJSON
    if request.version >= HttpVersion11:
        response.enable_chunked_encoding()  # the fast path writes chunks itself
    try:
        writer = await response.prepare(request)
        _bound_client_buffer(request)
        transport = request.transport
        if (exchange.is_sse or is_ndjson) and writer is not None and transport is not None \
                and request.version >= HttpVersion11:
            decoder, lines, key = (SseDecoder(), framing, USAGE_KEY) if exchange.is_sse else \
                (NdjsonDecoder(), NDJSON_LINES, OLLAMA_USAGE_KEY)
            await ClientSink(transport, exchange, record, decoder, lines, outcome,
                             key).run(writer)
        elif exchange.is_sse:
            await pump_sse(response, exchange, record, framing, outcome)
        elif is_ndjson:
            await _pump_framed(response, exchange, record, NdjsonDecoder(), NDJSON_LINES,
                               outcome, OLLAMA_USAGE_KEY)
        else:
            await _pump_bytes(response, exchange, record)
        await response.write_eof()
    except ConnectionError:
        # the sink marks a write that found the client gone; a hang-up after the framing's
        # terminal event (agents close at response.completed) left the client a whole answer
        outcome.client_gone = outcome.client_gone or not framing.is_closed
    except StreamBroken as exc:
        # a plain (non-SSE) body cannot carry an error: the truncated body and the closed
        # connection tell the client
        if exchange.interrupted is not None:
            outcome.interrupted = True
        else:
            outcome.broken = exc.redact(exchange.redactor.text)
        _drop_connection(request)
    return response, outcome


async def pump_sse(response: Writer, exchange: Exchange, record: RequestRecord,
                   framing: StreamFraming, outcome: RelayOutcome) -> None:
    """Upstream SSE -> framing -> client writes, each holding whole events; errors end it."""
    await _pump_framed(response, exchange, record, SseDecoder(), framing, outcome)


async def _pump_framed(response: Writer, exchange: Exchange, record: RequestRecord,
                       decoder: Decoder, framing: StreamFraming, outcome: RelayOutcome,
                       usage_key: bytes = USAGE_KEY) -> None:
    """Whole units only, each write as soon as a read completes some; a break ends with fail()."""
    write = response.write
    with_usage = b""  # the last write that mentions usage: parsed once, at the end
    try:
        async for chunk in reply_chunks(exchange.response, exchange.first):
            events = decoder.feed(chunk)
            data = framing.events(events) if events else b""
            if data:
                _count_out(record, data)
                if usage_key in data:
                    with_usage = data
                await write(data)
            if framing.is_closed:
                break
        tail = framing.end(decoder.flush())
    except ConnectionError:
        raise  # the client is gone: there is no one left to tell
    except Exception as exc:
        tail = _failed_tail(exc, exchange, framing, outcome)
    if with_usage or usage_key in tail:
        # a framing may have taken the counts out of the stream already (lb.teams.usage)
        record.usage = find_usage(with_usage or tail) or record.usage
    if tail:
        record.bytes_out += len(tail)
        await write(tail)


def _count_out(record: RequestRecord, data: bytes) -> None:
    if record.ttfb_s is None:
        record.ttfb_s = time.perf_counter() - record.started
    record.bytes_out += len(data)


def _failed_tail(exc: Exception, exchange: Exchange, framing: StreamFraming,
                 outcome: RelayOutcome) -> bytes:
    """The terminal error event of a stream that failed after its first byte, whatever failed."""
    if isinstance(exc, StreamBroken):
        if exchange.interrupted is not None:
            outcome.interrupted = True
            return framing.fail(exchange.interrupted)
        outcome.broken = exc.redact(exchange.redactor.text)
        return framing.fail(exc)
    # Not the backend's failure nor the client's: a transform could not go on (a bug). The
    # stream still ends with its terminal error event, and the upstream read stops here.
    log.exception("stream_failed")
    outcome.failed = True
    exchange.response.close()
    return _fail_safely(framing, ApiError("fleetlb could not relay the rest of this stream"))


def _fail_safely(framing: StreamFraming, error: ApiError) -> bytes:
    """framing's terminal error event; a plain error event if the framing itself is broken."""
    try:
        return framing.fail(error)
    except Exception:
        log.exception("stream_fail_failed")
        return PASSTHROUGH.fail(error)


async def _pump_bytes(response: web.StreamResponse, exchange: Exchange,
                      record: RequestRecord) -> None:
    async for chunk in reply_chunks(exchange.response, exchange.first):
        _count_out(record, chunk)
        await response.write(chunk)


def _bound_client_buffer(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.set_write_buffer_limits(high=CLIENT_HIGH_WATER_BYTES)


def _drop_connection(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.close()
