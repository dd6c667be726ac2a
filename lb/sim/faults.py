"""A misbehaving backend: a raw asyncio HTTP/1.1 server that answers each request with one fault.

aiohttp cannot be told to send a broken status line or a Content-Length its body does not keep,
so this speaks HTTP by hand. The tests (and `fleetlb sim --fault NAME`) use it to pin what fleetlb
does when a backend misbehaves; discovery routes (/v1/models, /api/tags, /health) answer normally
so probes see a healthy box whose model calls go wrong.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import orjson

Fault = Literal[
    "ok",  # a normal SSE stream (or JSON answer): the control
    "garbage_status",  # a status line that is not HTTP
    "headers_then_stall",  # 200 SSE headers, then nothing
    "events_then_stall",  # headers and two events in one write, then nothing
    "ndjson_then_stall",  # Ollama NDJSON headers and one line, then nothing
    "plain_then_stall",  # a plain (chunked) body's first bytes, then nothing
    "short_body",  # Content-Length longer than the body, then the connection closes
    "huge_event",  # 5 MB of one SSE event with no blank line
    "gzip",  # a gzip-compressed JSON body although fleetlb asked for identity
    "auth_echo",  # 401 that echoes the Authorization it received, in its body and a header
    "error_echo",  # 400 (or `echo_status`) whose body and headers echo the request's headers
    "firehose",  # SSE events as fast as the socket takes them, `firehose_bytes` in all
    "die_mid_stream",  # headers and two events, then the connection is reset
    "done_then_stall",  # a whole chat stream up to `data: [DONE]`, then the body never ends
    "completed_then_stall",  # a Responses stream up to response.completed, then nothing
]
FAULTS: tuple[str, ...] = Fault.__args__  # type: ignore[attr-defined]
HUGE_EVENT_BYTES = 5 << 20
MAX_HEAD_BYTES = 64 << 10
_DISCOVERY = {
    "/v1/models": b'{"object":"list","data":[{"id":"m1","object":"model"}]}',
    "/api/tags": b'{"models":[{"name":"m1","model":"m1"}]}',
    "/health": b"{}",
    "/api/version": b'{"version":"0.0.0"}',
    "/api/ps": b'{"models":[]}',
}
_EVENT = (
    b'data: {"id":"c","object":"chat.completion.chunk","model":"m1","choices":[{"index":0,'
    b'"delta":{"content":"hi "},"finish_reason":null}]}\n\n'
)
_DONE = b"data: [DONE]\n\n"
_STOP = (
    b'data: {"id":"c","object":"chat.completion.chunk","model":"m1","choices":[{"index":0,'
    b'"delta":{},"finish_reason":"stop"}]}\n\n'
)


def _response_event(kind: str, **fields: object) -> bytes:
    data = orjson.dumps({"type": kind, **fields})
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


_MESSAGE = {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": "hi", "annotations": []}]}
_RESPONSE = {"id": "resp_faulty1", "object": "response", "created_at": 0, "model": "m1",
             "status": "in_progress", "output": []}
_RESPONSE_EVENTS = (
    _response_event("response.created", response=_RESPONSE),
    _response_event("response.output_item.added", output_index=0,
                    item={**_MESSAGE, "status": "in_progress", "content": []}),
    _response_event("response.output_item.done", output_index=0, item=_MESSAGE),
    _response_event("response.completed",
                    response={**_RESPONSE, "status": "completed", "output": [_MESSAGE]}),
)
_ANSWER = (
    b'{"id":"c","object":"chat.completion","model":"m1","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
)


@dataclass(slots=True, frozen=True)
class Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


@dataclass(slots=True)
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class FaultyBackend:
    """One listening socket; `fault` applies to every model request from now on."""

    fault: Fault = "ok"
    echo_status: int = 400
    all_routes: bool = False  # the fault applies to discovery routes too (probes see it)
    firehose_bytes: int = 64 << 20
    sent_bytes: int = 0  # what the firehose managed to write (the socket took)
    requests: list[SeenRequest] = field(default_factory=list)
    open_connections: int = 0
    _server: asyncio.Server | None = None
    _stalled: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> FaultyBackend:
        self._server = await asyncio.start_server(self._serve, host, port)
        return self

    async def close(self) -> None:
        for writer in list(self._stalled):
            writer.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open_connections += 1
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self.open_connections -= 1
            writer.transport.abort()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; whether the connection can carry another."""
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEAD_BYTES:
            return False
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = [*lines[0].split(" "), "", ""][:3]
        path = target.split("?")[0]
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        body = await reader.readexactly(length) if length else b""
        seen = SeenRequest(method, path, headers, body)
        self.requests.append(seen)
        if path in _DISCOVERY and not self.all_routes:
            await _answer(writer, 200, _DISCOVERY[path])
            return True
        return await _BEHAVIOURS[self.fault](self, Conn(reader, writer), seen)

    async def _stall(self, conn: Conn) -> bool:
        """Say nothing more until the client (fleetlb) closes the connection."""
        self._stalled.add(conn.writer)
        try:
            while await conn.reader.read(1 << 16):
                pass
            return False
        finally:
            self._stalled.discard(conn.writer)


async def _answer(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    content_type: str = "application/json",
    extra: dict[str, str] | None = None,
) -> None:
    head = [f"HTTP/1.1 {status} X", f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in (extra or {}).items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
    await writer.drain()


_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


Behaviour = Callable[[FaultyBackend, Conn, SeenRequest], Awaitable[bool]]


async def _ok(backend: FaultyBackend, conn: Conn, seen: SeenRequest) -> bool:
    writer = conn.writer
    writer.write(_SSE_HEAD + _chunk(_EVENT * 3 + _DONE) + b"0\r\n\r\n")
    await writer.drain()
    return True


async def _garbage_status(backend: FaultyBackend, conn: Conn, seen: SeenRequest) -> bool:
    writer = conn.writer
    writer.write(b"HTX/9 nonsense here\r\nwhat: ever\r\n\r\n")
    await writer.drain()
    return False


def _then_stall(data: bytes) -> Behaviour:
    """Write `data` (a status line, headers and what part of a body), then say nothing more."""
    async def behaviour(backend: FaultyBackend, conn: Conn, seen: SeenRequest) -> bool:
        conn.writer.write(data)
        await conn.writer.drain()
        return await backend._stall(conn)

    return behaviour


_NDJSON_LINE = b'{"model":"m1","message":{"role":"assistant","content":"hi"},"done":false}\n'
_NDJSON_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
_PLAIN_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")


async def _short_body(backend: FaultyBackend, conn: Conn, seen: SeenRequest) -> bool:
    writer = conn.writer
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n" + _ANSWER[:40]
    )
    await writer.drain()
    return False


async def _huge_event(backend: FaultyBackend, conn: Conn, seen: SeenRequest) -> bool:
    writer = conn.writer
    writer.write(_SSE_HEAD + _chunk(_EVENT))
    piece = b"data: " + b"x" * (64 << 10)  # one line after another, never a blank line
    for _ in range(HUGE_EVENT_BYTES // len(piece) + 1):
        writer.write(_chunk(piece + b"\n"))
        await writer.drain()
    writer.write(_chunk(b"\n") + b"0\r\n\r\n")
    await writer.drain()
    return False


async def _gzip(backend: FaultyBackend, conn: Conn, seen: SeenRequest) -> bool:
    writer = conn.writer
    await _answer(writer, 200, gzip.compress(_ANSWER), extra={"Content-Encoding": "gzip"})
    return True


async def _auth_echo(backend: FaultyBackend, conn: Conn, seen: SeenRequest) -> bool:
    writer, headers = conn.writer, seen.headers
    auth = headers.get("authorization", "")
    body = orjson.dumps(
        {"error": {"message": f"bad key; you sent Authorization: {auth}", "received": headers}}
    )
    await _answer(
        writer,
        401,
        body,
        extra={"X-Echo-Authorization": auth, "WWW-Authenticate": f"Bearer realm={auth}"},
    )
    return True


async def _error_echo(backend: FaultyBackend, conn: Conn, seen: SeenRequest) -> bool:
    writer, headers = conn.writer, seen.headers
    auth = headers.get("authorization", "")
    token = auth.removeprefix("Bearer ")  # bare, as some servers quote it
    text = f"rejected {token}; body was {seen.body[:300]!r}; headers were {headers}"
    body = orjson.dumps({"error": {"message": text}})
    await _answer(writer, backend.echo_status, body, extra={"X-Echo-Authorization": auth})
    return True


async def _firehose(backend: FaultyBackend, conn: Conn, seen: SeenRequest) -> bool:
    writer = conn.writer
    writer.write(_SSE_HEAD)
    event = _chunk(
        b"data: "
        + orjson.dumps({"choices": [{"index": 0, "delta": {"content": "x" * 4000}}]})
        + b"\n\n"
    )
    for _ in itertools.count():
        if backend.sent_bytes >= backend.firehose_bytes:
            break
        writer.write(event)
        backend.sent_bytes += len(event)
        await writer.drain()  # the socket (fleetlb's reading) sets the pace
    writer.write(_chunk(_DONE) + b"0\r\n\r\n")
    await writer.drain()
    return True


async def _die_mid_stream(backend: FaultyBackend, conn: Conn, seen: SeenRequest) -> bool:
    writer = conn.writer
    writer.write(_SSE_HEAD + _chunk(_EVENT * 2))
    await writer.drain()
    writer.transport.abort()
    return False


_BEHAVIOURS: dict[str, Behaviour] = {
    "ok": _ok,
    "garbage_status": _garbage_status,
    "headers_then_stall": _then_stall(_SSE_HEAD),
    "events_then_stall": _then_stall(_SSE_HEAD + _chunk(_EVENT * 2)),  # one read of ours
    "ndjson_then_stall": _then_stall(_NDJSON_HEAD + _chunk(_NDJSON_LINE)),
    "plain_then_stall": _then_stall(_PLAIN_HEAD + _chunk(b"first bytes")),
    "short_body": _short_body,
    "huge_event": _huge_event,
    "gzip": _gzip,
    "auth_echo": _auth_echo,
    "error_echo": _error_echo,
    "firehose": _firehose,
    "die_mid_stream": _die_mid_stream,
    "done_then_stall": _then_stall(_SSE_HEAD + _chunk(_EVENT * 2 + _STOP + _DONE)),
    "completed_then_stall": _then_stall(_SSE_HEAD + _chunk(b"".join(_RESPONSE_EVENTS))),
}
