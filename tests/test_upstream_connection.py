"""The lean upstream client (lb/upstream) against scripted raw-socket backends on 127.0.0.1: framing
(content-length, chunked split anywhere, close-delimited), 1xx, keep-alive reuse and when not to
reuse, the stale keep-alive race, timeouts and malformed answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from lb.errors import StreamBroken, UpstreamConnectError, UpstreamError, UpstreamTimeout
from lb.upstream.connection import Deadlines
from lb.upstream.pool import EndpointPool
from lb.upstream.reply import Reply

DEADLINES = Deadlines(first_byte_s=5.0, idle_s=5.0, total_s=10.0)
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


@dataclass
class Backend:
    port: int
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            head += await reader.readexactly(int(line.split(b":")[1]))
    return head


@pytest.fixture
async def backend() -> AsyncIterator[Callable[[Script], Awaitable[Backend]]]:
    servers: list[asyncio.Server] = []

    async def start(script: Script) -> Backend:
        state = Backend(0)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            state.connections += 1
            number = state.connections
            try:
                await script(reader, writer, number)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        state.port = server.sockets[0].getsockname()[1]
        return state

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def pool_for(b: Backend) -> EndpointPool:
    return EndpointPool(f"http://127.0.0.1:{b.port}", "b")


def request(body: bytes = b"{}") -> bytes:
    return b"POST /v1/x HTTP/1.1\r\nHost: b\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)


def answering(*answers: bytes, keep: bool = True) -> Script:
    """Answer each request on a connection with the next answer, each as one write."""
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        for answer in answers:
            await read_request(reader)
            writer.write(answer)
            await writer.drain()
        if keep:
            await reader.read()  # until the client closes

    return script


async def body_of(reply: Reply) -> bytes:
    parts = []
    while piece := await reply.chunk():
        parts.append(piece)
    return b"".join(parts)


async def test_content_length_and_keep_alive_reuse(backend: Callable[[Script], Awaitable[Backend]]
                                                   ) -> None:
    b = await backend(answering(OK, OK, OK))
    pool = pool_for(b)
    for _ in range(3):
        reply = await pool.send(request(), DEADLINES, 1.0)
        assert (reply.status, reply.content_type, reply.content_length) == (200, "text/plain", 5)
        assert reply.header("content-TYPE") == "text/plain"
        assert await reply.read() == b"hello"
        reply.release()
    assert b.connections == 1
    pool.close()


@pytest.mark.parametrize("cut", [1, 7, 30, 44, 47, 52, 60])
async def test_chunked_body_split_anywhere(backend: Callable[[Script], Awaitable[Backend]],
                                           cut: int) -> None:
    answer = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        for _ in range(2):
            await read_request(reader)
            writer.write(answer[:cut])
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(answer[cut:])
            await writer.drain()
        await reader.read()

    b = await backend(script)
    pool = pool_for(b)
    for _ in range(2):
        reply = await pool.send(request(), DEADLINES, 1.0)
        assert reply.content_length is None
        assert await body_of(reply) == b"hello world"
        reply.release()
    assert b.connections == 1  # a whole chunked body leaves the connection reusable
    pool.close()


async def test_close_delimited_body_ends_at_eof_and_is_not_reused(
        backend: Callable[[Script], Awaitable[Backend]]) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart one, ")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"part two")
        await writer.drain()

    b = await backend(script)
    pool = pool_for(b)
    reply = await pool.send(request(), DEADLINES, 1.0)
    assert await body_of(reply) == b"part one, part two"
    reply.release()
    assert pool.idle_count == 0
    reply = await pool.send(request(), DEADLINES, 1.0)
    assert await reply.read() == b"part one, part two"
    assert b.connections == 2
    pool.close()


async def test_informational_answers_are_skipped(backend: Callable[[Script], Awaitable[Backend]]
                                                ) -> None:
    b = await backend(answering(b"HTTP/1.1 100 Continue\r\n\r\n"
                                b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK))
    pool = pool_for(b)
    reply = await pool.send(request(), DEADLINES, 1.0)
    assert reply.status == 200
    assert reply.header("link") is None
    assert await reply.read() == b"hello"
    pool.close()


async def test_partial_read_is_never_reused(backend: Callable[[Script], Awaitable[Backend]]
                                            ) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        if n == 1:  # a long body the caller stops reading half way
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
            await writer.drain()
        else:
            writer.write(OK)
        await reader.read()

    b = await backend(script)
    pool = pool_for(b)
    reply = await pool.send(request(), DEADLINES, 1.0)
    assert await reply.chunk()
    reply.release()  # the rest of the body is still on the wire: the connection must go
    assert pool.idle_count == 0
    reply = await pool.send(request(), DEADLINES, 1.0)
    assert await reply.read() == b"hello"  # not the first body's leftovers
    assert b.connections == 2
    pool.close()


async def test_connection_closed_while_idle_is_replaced(
        backend: Callable[[Script], Awaitable[Backend]]) -> None:
    b = await backend(answering(OK, keep=False))  # answers one, then closes
    pool = pool_for(b)
    reply = await pool.send(request(), DEADLINES, 1.0)
    assert await reply.read() == b"hello"
    reply.release()
    for _ in range(200):  # until the pooled connection has seen the backend close it
        if pool._idle and pool._idle[0].is_closed:
            break
        await asyncio.sleep(0.01)
    reply = await pool.send(request(), DEADLINES, 1.0)
    assert await reply.read() == b"hello"
    assert b.connections == 2
    pool.close()


async def test_stale_keep_alive_is_sent_once_more_on_a_fresh_connection(
        backend: Callable[[Script], Awaitable[Backend]]) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        if n == 1:  # the second request on this connection: closed unanswered, as in the race
            await read_request(reader)
            return
        await reader.read()

    b = await backend(script)
    pool = pool_for(b)
    reply = await pool.send(request(), DEADLINES, 1.0)
    await reply.read()
    reply.release()
    reply = await pool.send(request(), DEADLINES, 1.0)
    assert await reply.read() == b"hello"
    assert b.connections == 2
    pool.close()


async def test_no_headers_in_time_is_a_timeout(backend: Callable[[Script], Awaitable[Backend]]
                                               ) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        await reader.read()

    b = await backend(script)
    pool = pool_for(b)
    with pytest.raises(UpstreamTimeout, match="no response headers"):
        await pool.send(request(), Deadlines(0.1, 5.0, 10.0), 1.0)
    pool.close()


async def test_headers_then_stall_ends_at_idle(backend: Callable[[Script], Awaitable[Backend]]
                                               ) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        await reader.read()

    b = await backend(script)
    pool = pool_for(b)
    reply = await pool.send(request(), Deadlines(30.0, 0.1, 60.0), 1.0)
    with pytest.raises(StreamBroken, match="idle"):
        await reply.chunk()
    pool.close()


async def test_malformed_status_line_fails_before_headers(
        backend: Callable[[Script], Awaitable[Backend]]) -> None:
    b = await backend(answering(b"HTTP/1.1 2x0 WHAT\r\n\r\n"))
    pool = pool_for(b)
    with pytest.raises(UpstreamError, match="malformed"):
        await pool.send(request(), DEADLINES, 1.0)
    pool.close()


async def test_body_cut_short_is_a_broken_stream(backend: Callable[[Script], Awaitable[Backend]]
                                                ) -> None:
    b = await backend(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nonly this",
                                keep=False))
    pool = pool_for(b)
    reply = await pool.send(request(), DEADLINES, 1.0)
    with pytest.raises(StreamBroken, match="mid-body"):
        await reply.read()
    pool.close()


async def test_refused_connection_is_a_connect_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    pool = EndpointPool(f"http://127.0.0.1:{port}", "gone")
    with pytest.raises(UpstreamConnectError, match="gone"):
        await pool.send(request(), DEADLINES, 1.0)


async def test_a_paused_read_is_not_the_backends_silence(
        backend: Callable[[Script], Awaitable[Backend]]) -> None:
    big = b"x" * (512 << 10)  # past the pull buffer's high-water mark: the socket is paused

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(big), big))
        await writer.drain()
        await reader.read()

    b = await backend(script)
    pool = pool_for(b)
    reply = await pool.send(request(), Deadlines(5.0, 0.1, 30.0), 1.0)
    await asyncio.sleep(0.5)  # a slow consumer: five idle periods, all of them ours
    assert await reply.read() == big
    pool.close()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def rest_then_end(rest: bytes) -> Script:
    """The first connection's first request: a chunked head and one chunk, then (a moment
    later) `rest` and the end of the body; every other request: OK."""
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if n == 1:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + _chunk(b"a"))
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write((_chunk(rest) if rest else b"") + b"0\r\n\r\n")
            await writer.drain()
        while True:
            await read_request(reader)
            writer.write(OK)
            await writer.drain()

    return script


async def test_a_reader_done_early_leaves_the_rest_read_and_the_connection_reused(
        backend: Callable[[Script], Awaitable[Backend]]) -> None:
    """A Responses stream ends for its client at the terminal event; the backend's end of body
    is still on the way: it is read (not sent anywhere) and the connection goes back to the pool."""
    b = await backend(rest_then_end(b"data: [DONE]\n\n"))
    pool = pool_for(b)
    reply = await pool.send(request(), DEADLINES, 1.0)
    assert await reply.chunk() == b"a"
    reply.release()
    async with asyncio.timeout(5):
        while pool.idle_count == 0:
            await asyncio.sleep(0.01)
    reply = await pool.send(request(), DEADLINES, 1.0)
    assert await reply.read() == b"hello"
    assert b.connections == 1
    pool.close()


async def test_too_much_left_after_the_reader_is_done_closes_the_connection(
        backend: Callable[[Script], Awaitable[Backend]]) -> None:
    b = await backend(rest_then_end(b"x" * (64 << 10)))
    pool = pool_for(b)
    reply = await pool.send(request(), DEADLINES, 1.0)
    assert await reply.chunk() == b"a"
    reply.release()
    await asyncio.sleep(0.3)  # the rest came, and was more than is worth reading
    assert pool.idle_count == 0
    reply = await pool.send(request(), DEADLINES, 1.0)
    assert await reply.read() == b"hello"
    assert b.connections == 2
    pool.close()
