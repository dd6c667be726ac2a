"""Graceful drain on an in-process gateway: streams finish within drain_timeout, and those that
outlast it end with a terminal error event instead of a cut connection."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from lb.appstate import DRAIN
from tests.conftest import Gateway, GatewayFactory, SimFactory, endpoint


async def open_stream(gw: Gateway, session: aiohttp.ClientSession,
                      max_tokens: int) -> aiohttp.ClientResponse:
    body = {"model": "m1", "stream": True, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "hi"}]}
    resp = await session.post(gw.url + "/v1/chat/completions", json=body)
    assert resp.status == 200
    await resp.content.readuntil(b"\n\n")  # the first event: the stream is under way
    return resp


def events(body: bytes) -> list[bytes]:
    return [e for e in body.split(b"\n\n") if e]


async def test_stream_within_the_drain_window_completes(start_sim: SimFactory,
                                                        start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1", tokens_per_s=50)
    gw = await start_gateway({"server": {"drain_timeout": 30},
                              "endpoints": [endpoint("a", sim)]})
    async with aiohttp.ClientSession() as session:
        resp = await open_stream(gw, session, max_tokens=15)
        closing = asyncio.create_task(gw.server.close())
        rest = await resp.read()
        await closing
    assert events(rest)[-1] == b"data: [DONE]"
    assert b'"error"' not in rest
    assert gw.app[DRAIN].requests == 0


async def test_stream_outlasting_the_drain_ends_with_an_error_event(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1", tokens_per_s=20)
    gw = await start_gateway({"server": {"drain_timeout": 0.3},
                              "endpoints": [endpoint("a", sim)]})
    async with aiohttp.ClientSession() as session:
        resp = await open_stream(gw, session, max_tokens=1000)
        await gw.server.close()
        rest = await resp.read()
    last = events(rest)[-1]
    assert last.startswith(b"data: ")
    error = orjson.loads(last.removeprefix(b"data: "))["error"]
    assert error["code"] == "shutting_down" and "drain" in error["message"]
    a = gw.fleet.get("a")
    assert a is not None
    assert a.in_flight == 0 and a.live_failures == 0  # a shutdown is not the backend's fault
    for _ in range(100):  # the sim sees its client go away: generation stopped
        if sim.behavior.disconnects:
            break
        await asyncio.sleep(0.02)
    assert sim.behavior.disconnects == 1


async def test_request_still_waiting_for_its_backend_gets_a_503(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1", ttft_ms=60_000)  # answers long after the drain period
    gw = await start_gateway({"server": {"drain_timeout": 0.2},
                              "endpoints": [endpoint("a", sim)]})
    async with aiohttp.ClientSession() as session:
        body = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}
        waiting = asyncio.create_task(session.post(gw.url + "/v1/chat/completions", json=body))
        while gw.app[DRAIN].requests == 0:
            await asyncio.sleep(0.01)
        await gw.server.close()
        resp = await waiting
        assert resp.status == 503
        assert (await resp.json())["error"]["code"] == "shutting_down"
    a = gw.fleet.get("a")
    assert a is not None and a.in_flight == 0 and a.live_failures == 0


async def test_idle_websocket_is_told_to_go_away_at_once(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1")
    gw = await start_gateway({"server": {"api_keys": ["k"], "drain_timeout": 30},
                              "endpoints": [endpoint("a", sim)]})
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer k"}) as s, \
            s.ws_connect(gw.url + "/v1/responses") as ws:
        closing = asyncio.create_task(gw.server.close())
        message = await ws.receive(timeout=20)
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == aiohttp.WSCloseCode.GOING_AWAY
        await closing  # did not sit out the 30 s drain period


async def test_websocket_turn_under_way_finishes_then_goes_away(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1", tokens_per_s=50)
    gw = await start_gateway({"server": {"api_keys": ["k"], "drain_timeout": 30},
                              "endpoints": [endpoint("a", sim)]})
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer k"}) as s, \
            s.ws_connect(gw.url + "/v1/responses") as ws:
        await ws.send_str(orjson.dumps({"type": "response.create", "model": "m1", "input": "hi",
                                        "max_output_tokens": 15}).decode())
        first = orjson.loads(await ws.receive_str(timeout=20))
        assert first["type"] == "response.created"
        closing = asyncio.create_task(gw.server.close())
        types = []
        while (message := await ws.receive(timeout=20)).type is aiohttp.WSMsgType.TEXT:
            types.append(orjson.loads(message.data)["type"])
        await closing
    assert types[-1] in ("response.completed", "response.incomplete")  # the turn ran to its end
    assert ws.close_code == aiohttp.WSCloseCode.GOING_AWAY
