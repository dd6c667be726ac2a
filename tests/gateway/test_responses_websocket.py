"""WebSocket mode of /v1/responses: a client on loopback runs turns over one connection."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import pytest

from lb.responses.shape import problems
from tests.conftest import Gateway, GatewayFactory, Sim, SimFactory, endpoint

KEY = "sk-test"
TERMINAL = {"response.completed", "response.incomplete", "response.failed"}


@asynccontextmanager
async def connect(gw: Gateway) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as s, \
            s.ws_connect(gw.url + "/v1/responses") as ws:
        yield ws


async def turn(ws: aiohttp.ClientWebSocketResponse, **body: Any) -> list[dict[str, Any]]:
    """Send one response.create; the messages up to its end (a terminal event or an error)."""
    await ws.send_str(orjson.dumps({"type": "response.create", **body}).decode())
    messages = []
    while True:
        message = orjson.loads(await ws.receive_str(timeout=20))
        messages.append(message)
        if message["type"] in TERMINAL or message["type"] == "error":
            return messages


async def setup(start_sim: SimFactory, start_gateway: GatewayFactory,
                **ep: Any) -> tuple[Sim, Gateway]:
    sim = await start_sim("m1", responses=ep.pop("speaks_responses", False))
    gw = await start_gateway({"server": {"api_keys": [KEY]},
                              "endpoints": [endpoint("a", sim, **ep)]})
    return sim, gw


def chat_messages(sim: Sim, index: int) -> list[tuple[str, Any]]:
    calls = [r.json() for r in sim.behavior.requests if r.path == "/v1/chat/completions"]
    return [(m["role"], m["content"]) for m in calls[index]["messages"]]


async def test_single_turn_events(start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    _, gw = await setup(start_sim, start_gateway)
    async with connect(gw) as ws:
        events = await turn(ws, model="m1", input="hi")
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created"
    assert events[-1]["type"] == "response.completed"
    for event in events:
        assert problems(event) == []


async def test_sequential_turns_and_continuation(start_sim: SimFactory,
                                                 start_gateway: GatewayFactory) -> None:
    sim, gw = await setup(start_sim, start_gateway)
    async with connect(gw) as ws:
        first = await turn(ws, model="m1", input="one", store=False)
        first_id = first[-1]["response"]["id"]
        second = await turn(ws, model="m1", input="two", previous_response_id=first_id)
        assert second[-1]["type"] == "response.completed"
    answer = first[-1]["response"]["output"][0]["content"][0]["text"]
    assert chat_messages(sim, 1) == [("user", "one"), ("assistant", answer), ("user", "two")]
    # store:false state never leaves its connection
    async with connect(gw) as ws:
        again = await turn(ws, model="m1", input="x", previous_response_id=first_id)
    assert again == [{"type": "error", "status": 404, "error": {
        "type": "invalid_request_error", "code": "previous_response_not_found",
        "message": f"Previous response with id '{first_id}' not found.",
        "param": "previous_response_id"}}]


async def test_failed_continuation_evicts(start_sim: SimFactory,
                                          start_gateway: GatewayFactory) -> None:
    sim, gw = await setup(start_sim, start_gateway)
    async with connect(gw) as ws:
        first = await turn(ws, model="m1", input="one", store=False)
        first_id = first[-1]["response"]["id"]
        sim.behavior.fail_status = 500
        failed = await turn(ws, model="m1", input="two", previous_response_id=first_id)
        assert [m["type"] for m in failed] == ["error"]
        assert failed[0]["status"] == 502
        sim.behavior.fail_status = None
        retry = await turn(ws, model="m1", input="two", previous_response_id=first_id)
        assert retry[0]["error"]["code"] == "previous_response_not_found"
        # the connection itself carries on
        fresh = await turn(ws, model="m1", input="three")
        assert fresh[-1]["type"] == "response.completed"


async def test_mid_stream_failure_sends_only_response_failed(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sim, gw = await setup(start_sim, start_gateway)
    sim.behavior.die_after_chunks = 3
    async with connect(gw) as ws:
        events = await turn(ws, model="m1", input="x", max_output_tokens=30)
    assert events[-1]["type"] == "response.failed"
    assert "error" not in [e["type"] for e in events]


async def test_native_mode_over_websocket(start_sim: SimFactory,
                                          start_gateway: GatewayFactory) -> None:
    sim, gw = await setup(start_sim, start_gateway, responses="native", speaks_responses=True)
    async with connect(gw) as ws:
        first = await turn(ws, model="m1", input="one")
        second = await turn(ws, model="m1", input="two",
                            previous_response_id=first[-1]["response"]["id"])
    assert second[-1]["type"] == "response.completed"
    native = [r for r in sim.behavior.requests if r.path == "/v1/responses"]
    assert len(native) == 2


async def test_bad_messages_get_error_envelopes(start_sim: SimFactory,
                                                start_gateway: GatewayFactory) -> None:
    _, gw = await setup(start_sim, start_gateway)
    async with connect(gw) as ws:
        await ws.send_str("not json")
        bad_json = orjson.loads(await ws.receive_str(timeout=20))
        wrong = await turn(ws, model="m1", input="x", background=True)
        streamed = await turn(ws, model="m1", input="x", stream=True)  # Codex CLI sends it
        await ws.send_str(orjson.dumps({"type": "response.cancel"}).decode())
        wrong_type = orjson.loads(await ws.receive_str(timeout=20))
        ok = await turn(ws, model="m1", input="x")
    assert bad_json["type"] == "error" and bad_json["status"] == 400
    assert wrong[0]["error"]["param"] == "background"
    assert streamed[-1]["type"] == "response.completed"
    assert wrong_type["error"]["param"] == "type"
    assert ok[-1]["type"] == "response.completed"


async def test_websocket_needs_key(start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    _, gw = await setup(start_sim, start_gateway)
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await s.ws_connect(gw.url + "/v1/responses")
    assert info.value.status == 401
