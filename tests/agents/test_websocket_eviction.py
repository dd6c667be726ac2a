"""A failed store:false continuation evicts the response it continued, in both modes, over
WebSocket against fleetlb as a server; over HTTP nothing of a connection's state is found."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import orjson
import pytest

from lb.responses.shape import problems
from tests.conftest import Gateway, GatewayFactory, Sim, SimFactory, endpoint
from tests.gateway.test_responses_websocket import connect, turn

KEY = "sk-test"
WEATHER_TOOL = {"type": "function", "name": "get_weather",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}


async def gateway(start_sim: SimFactory, start_gateway: GatewayFactory,
                  mode: str) -> tuple[Sim, Gateway]:
    sim = await start_sim("m1", responses=mode == "native")
    gw = await start_gateway({"server": {"api_keys": [KEY]},
                              "endpoints": [endpoint("a", sim, responses=mode)]})
    return sim, gw


def output(call_id: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": "sunny"}


def not_found(messages: list[dict[str, Any]], previous: str) -> bool:
    return messages == [{"type": "error", "status": 404, "error": {
        "type": "invalid_request_error", "code": "previous_response_not_found",
        "message": f"Previous response with id '{previous}' not found.",
        "param": "previous_response_id"}}]


async def test_translate_a_continuation_answering_no_call_fails_and_evicts(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sim, gw = await gateway(start_sim, start_gateway, "translate")
    async with connect(gw) as ws:
        first = await turn(ws, model="m1", input="weather?", tools=[WEATHER_TOOL], store=False)
        response = first[-1]["response"]
        call = response["output"][0]
        assert (first[-1]["type"], call["type"]) == ("response.completed", "function_call")
        wrong = await turn(ws, model="m1", previous_response_id=response["id"],
                           input=[output("call_not_made")])
        assert len(wrong) == 1 and wrong[0]["type"] == "error"
        assert (wrong[0]["status"], wrong[0]["error"]["param"]) == (400, "input[0].call_id")
        assert "call_not_made" in wrong[0]["error"]["message"]
        # the right answer comes too late: the failure evicted the response it continued
        late = await turn(ws, model="m1", previous_response_id=response["id"],
                          input=[output(call["call_id"])])
        assert not_found(late, response["id"])
        # the connection still serves new conversations
        fresh = await turn(ws, model="m1", input="hi")
        assert fresh[-1]["type"] == "response.completed"
    chats = [r for r in sim.behavior.requests if r.path == "/v1/chat/completions"]
    assert len(chats) == 2  # the refused continuations never reached the backend


async def test_translate_a_right_continuation_is_served(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sim, gw = await gateway(start_sim, start_gateway, "translate")
    async with connect(gw) as ws:
        first = await turn(ws, model="m1", input="weather?", tools=[WEATHER_TOOL], store=False)
        response = first[-1]["response"]
        second = await turn(ws, model="m1", previous_response_id=response["id"],
                            input=[output(response["output"][0]["call_id"])])
        assert second[-1]["type"] == "response.completed"
    last = [r.json() for r in sim.behavior.requests if r.path == "/v1/chat/completions"][-1]
    assert [m["role"] for m in last["messages"]] == ["user", "assistant", "tool"]


async def test_native_a_continuation_the_backend_refuses_evicts(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sim, gw = await gateway(start_sim, start_gateway, "native")
    async with connect(gw) as ws:
        first = await turn(ws, model="m1", input="one", store=False)
        first_id = first[-1]["response"]["id"]
        sim.behavior.fail_status = 400  # the backend refuses the continuation
        refused = await turn(ws, model="m1", input="two", previous_response_id=first_id)
        assert [m["type"] for m in refused] == ["error"]
        assert refused[0]["status"] == 400
        sim.behavior.fail_status = None
        again = await turn(ws, model="m1", input="two", previous_response_id=first_id)
        assert not_found(again, first_id)
        fresh = await turn(ws, model="m1", input="three")
        assert fresh[-1]["type"] == "response.completed"
    natives = [r for r in sim.behavior.requests if r.path == "/v1/responses"]
    assert len(natives) == 3  # one, the refused two, three: the evicted id was not sent on


@pytest.mark.parametrize("mode", ["translate", "native"])
async def test_http_never_finds_a_connections_store_false_response(
        start_sim: SimFactory, start_gateway: GatewayFactory, mode: str) -> None:
    _, gw = await gateway(start_sim, start_gateway, mode)
    async with connect(gw) as ws:
        first = await turn(ws, model="m1", input="one", store=False)
    first_id = first[-1]["response"]["id"]
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as s, \
            s.post(gw.url + "/v1/responses", json={"model": "m1", "input": "two",
                                                     "previous_response_id": first_id}) as resp:
        body = orjson.loads(await resp.read())
    assert resp.status == 404
    assert body["error"]["code"] == "previous_response_not_found"


async def test_http_translate_a_continuation_answering_no_call_is_a_400_and_the_stored_one_stays(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    _, gw = await gateway(start_sim, start_gateway, "translate")
    client = gw.openai()
    first = await client.responses.create(model="m1", input="weather?", tools=[WEATHER_TOOL])
    call = first.output[0]
    assert call.type == "function_call"
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(model="m1", previous_response_id=first.id,
                                      input=[output("call_not_made")])  # type: ignore[list-item]
    assert caught.value.body["param"] == "input[0].call_id"  # type: ignore[index]
    second = await client.responses.create(model="m1", previous_response_id=first.id,
                                           input=[output(call.call_id)])  # type: ignore[list-item]
    assert second.status == "completed"


@pytest.mark.parametrize("mode", ["translate", "native"])
async def test_a_warm_up_turn_asks_no_backend_and_can_be_continued(
        start_sim: SimFactory, start_gateway: GatewayFactory, mode: str) -> None:
    sim, gw = await gateway(start_sim, start_gateway, mode)
    async with connect(gw) as ws:
        warm = await turn(ws, model="m1", input="system prompt here", generate=False,
                          store=False)
        assert [m["type"] for m in warm] == ["response.created", "response.in_progress",
                                             "response.completed"]
        for message in warm:
            assert problems(message) == [], message
        final = warm[-1]["response"]
        assert (final["status"], final["output"]) == ("completed", [])
        assert sim.behavior.requests == []  # no backend was asked
        second = await turn(ws, model="m1", input="go", previous_response_id=final["id"])
        assert second[-1]["type"] == "response.completed"
    sent = sim.behavior.requests[-1].json()
    texts = str(sent.get("messages") or sent.get("input"))
    assert "system prompt here" in texts and "go" in texts
