"""Both relay paths give the client the same events: the fast path (lb/sink.py, HTTP/1.1 chunks
written from the backend socket's callbacks) and the pull path it falls back to for HTTP/1.0
clients (no chunked encoding; the body ends with the connection). Raw sockets, so the framing on
the wire is what is checked."""

from __future__ import annotations

import asyncio

import orjson

from lb.sse import SseDecoder
from tests.conftest import GatewayFactory, SimFactory, endpoint

KEY = "sk-test"
BODY = orjson.dumps({"model": "m1", "stream": True, "max_tokens": 6, "seed": 1,
                     "messages": [{"role": "user", "content": "hello"}]})


async def raw_stream(url: str, version: str) -> tuple[bytes, bytes]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"POST /v1/chat/completions {version}\r\nHost: x\r\nAuthorization: Bearer {KEY}"
                 f"\r\nContent-Type: application/json\r\nConnection: close\r\n"
                 f"Content-Length: {len(BODY)}\r\n\r\n".encode() + BODY)
    async with asyncio.timeout(20):
        data = await reader.read()  # until the gateway closes (Connection: close)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def dechunk(body: bytes) -> bytes:
    out, rest = b"", body
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return out
        out, rest = out + rest[:size], rest[size + 2:]


def events(body: bytes) -> list[bytes]:
    decoder = SseDecoder()
    found = decoder.feed(body)
    assert decoder.flush() == b""
    return found


async def test_fast_and_pull_paths_send_the_same_events(start_sim: SimFactory,
                                                        start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1")
    gw = await start_gateway({"server": {"api_keys": [KEY]}, "endpoints": [endpoint("a", sim)]})
    head11, body11 = await raw_stream(gw.url, "HTTP/1.1")
    head10, body10 = await raw_stream(gw.url, "HTTP/1.0")
    assert b"transfer-encoding: chunked" in head11.lower()
    assert b"transfer-encoding" not in head10.lower()
    fast, pull = events(dechunk(body11)), events(body10)
    assert fast[-1] == pull[-1] == b"data: [DONE]\n\n"
    assert len(fast) == len(pull) > 2
    assert all(e.startswith(b"data: {") for e in fast[:-1])
    async with asyncio.timeout(10):
        while gw.in_flight()["a"]:
            await asyncio.sleep(0.02)


async def read_chunked_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One whole HTTP/1.1 response with a chunked body, read exactly to its end."""
    head = await reader.readuntil(b"\r\n\r\n")
    body = b""
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.strip(), 16)
        data = await reader.readexactly(size + 2)
        if size == 0:
            assert data == b"\r\n"
            return head, body
        body += data[:-2]


async def test_streams_back_to_back_on_one_connection_end_exactly_once(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    """The sink writes the body's last chunk itself (with the last events, or alone at the
    end): a terminator written twice would be read as the start of the next response."""
    sim = await start_sim("m1", responses=False)
    gw = await start_gateway({"server": {"api_keys": [KEY]},
                              "endpoints": [endpoint("a", sim, responses="translate")]})
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    responses_body = orjson.dumps({"model": "m1", "input": "hello", "stream": True,
                                   "max_output_tokens": 6, "store": False})
    async with asyncio.timeout(30):
        for path, body in [("/v1/chat/completions", BODY), ("/v1/responses", responses_body)] * 3:
            writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                         f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                         f"\r\n".encode() + body)
            head, stream = await read_chunked_response(reader)
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            found = events(stream)
            assert found[-1] == b"data: [DONE]\n\n"
            if path == "/v1/responses":
                assert found[-2].startswith((b"event: response.completed\n",
                                             b"event: response.incomplete\n"))
    writer.close()  # (an extra terminator would have started the next response's head)


async def read_sized_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return head, await reader.readexactly(length)


async def test_whole_answers_back_to_back_on_one_connection_are_written_once(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    """The middleware writes a whole answer before counting the request: aiohttp, given the
    sent response back, must write nothing more (or the next answer would not parse)."""
    sim = await start_sim("m1")
    gw = await start_gateway({"server": {"api_keys": [KEY]}, "endpoints": [endpoint("a", sim)]})
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    chat = orjson.dumps({"model": "m1", "max_tokens": 4,
                         "messages": [{"role": "user", "content": "hello"}]})
    unknown = orjson.dumps({"model": "nope", "messages": []})
    asks = [(KEY, "/v1/chat/completions", chat, b"200"), ("wrong", "/v1/chat/completions", chat,
            b"401"), (KEY, "/v1/chat/completions", unknown, b"404"),
            (KEY, "/v1/chat/completions", chat, b"200")]
    async with asyncio.timeout(30):
        for key, path, body, status in asks:
            writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                         f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                         f"\r\n".encode() + body)
            head, answer = await read_sized_response(reader)
            assert head.startswith(b"HTTP/1.1 " + status)
            assert b"x-request-id:" in head.lower()
            assert orjson.loads(answer)
    writer.close()
