"""[timeouts] client_idle: a client connection with no request under way is closed, whether it
sits idle after an answer or trickles its request head in (slowloris); a stream that outlasts it
is not touched."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from tests.conftest import GatewayFactory, SimFactory, endpoint

CLIENT_IDLE_S = 0.5
BOUND_S = 20.0  # "it was closed": far below aiohttp's own 3,630 s


async def open_raw(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def closed_by_the_server(reader: asyncio.StreamReader) -> bool:
    async with asyncio.timeout(BOUND_S):
        while True:
            data = await reader.read(1 << 16)
            if not data:
                return True


async def test_a_trickled_request_head_is_closed(start_sim: SimFactory,
                                                 start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1")
    gw = await start_gateway({"endpoints": [endpoint("a", sim)],
                              "timeouts": {"client_idle": CLIENT_IDLE_S}})
    reader, writer = await open_raw(gw.url)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
    trickled = 0

    async def trickle() -> None:  # one header byte at a time, never the end of the head
        nonlocal trickled
        while True:
            writer.write(b"X")
            trickled += 1
            await asyncio.sleep(CLIENT_IDLE_S / 5)

    task = asyncio.create_task(trickle())
    try:
        assert await closed_by_the_server(reader)
    finally:
        task.cancel()
        writer.close()
    assert trickled >= 2  # it kept sending, and was closed all the same
    assert sim.behavior.requests == []


async def test_an_idle_keep_alive_connection_is_closed_and_a_long_stream_is_not(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1", tokens_per_s=20.0)  # 20 tokens: about 1 s, twice client_idle
    gw = await start_gateway({"endpoints": [endpoint("a", sim)],
                              "timeouts": {"client_idle": CLIENT_IDLE_S}})
    async with aiohttp.ClientSession() as s, s.post(
            gw.url + "/v1/chat/completions",
            json={"model": "m1", "messages": [{"role": "user", "content": "hi"}],
                  "max_tokens": 20, "stream": True}) as resp:
        body = await resp.read()
    assert resp.status == 200 and body.rstrip().endswith(b"data: [DONE]")
    reader, writer = await open_raw(gw.url)
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    assert orjson.loads(await reader.readexactly(length))["status"] == "ok"
    assert await closed_by_the_server(reader)  # kept alive, then idle: closed
    writer.close()
