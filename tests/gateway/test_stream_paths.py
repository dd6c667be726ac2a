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
