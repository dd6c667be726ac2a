"""/v1/responses through the gateway with the official openai SDK: translate, native, state."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import orjson
import pytest

from lb.endpoints import HealthState
from lb.responses.shape import problems
from tests.conftest import Gateway, GatewayFactory, Sim, SimFactory, endpoint

KEY = "sk-test"
TERMINAL = {"response.completed", "response.incomplete", "response.failed"}


def keyed(*endpoints: dict[str, Any], **sections: Any) -> dict[str, Any]:
    return {"server": {"api_keys": [KEY]}, "endpoints": list(endpoints), **sections}


def chat_calls(sim: Sim) -> list[dict[str, Any]]:
    return [r.json() for r in sim.behavior.requests if r.path == "/v1/chat/completions"]


def native_calls(sim: Sim) -> list[dict[str, Any]]:
    return [r.json() for r in sim.behavior.requests
            if r.path == "/v1/responses" and r.method == "POST"]


async def chat_only(start_sim: SimFactory, start_gateway: GatewayFactory,
                    **ep: Any) -> tuple[Sim, Gateway]:
    sim = await start_sim("m1", responses=False)
    return sim, await start_gateway(keyed(endpoint("chat", sim, **ep)))


def conforms(obj: Any) -> None:
    data = obj if isinstance(obj, dict) else obj.model_dump(mode="json", exclude_unset=True)
    assert problems(data) == [], problems(data)


async def collect(stream: Any) -> list[dict[str, Any]]:
    """What the SDK parsed (proves it accepts every event), as plain dicts."""
    return [event.model_dump(mode="json", exclude_unset=True) async for event in stream]


async def raw_events(gw: Gateway, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The wire events of a streamed response: `event:` equals `type`, `[DONE]` ends it."""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as s, \
            s.post(gw.url + "/v1/responses", json={**body, "stream": True}) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        text = (await resp.read()).decode()
    blocks = [b for b in text.split("\n\n") if b]
    assert blocks[-1] == "data: [DONE]"
    events = []
    for block in blocks[:-1]:
        name, data = block.split("\n")
        event = orjson.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        events.append(event)
    return events


def check_events(events: list[dict[str, Any]]) -> None:
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created"
    assert events[-1]["type"] in TERMINAL
    for event in events:
        conforms(event)


async def test_translate_plain(start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sim, gw = await chat_only(start_sim, start_gateway)
    raw = await gw.openai().responses.with_raw_response.create(
        model="m1", input="hello", instructions="be brief", max_output_tokens=4)
    resp = raw.parse()
    assert raw.headers["x-fleetlb-mode"] == "translate"
    assert resp.status == "incomplete"
    assert resp.incomplete_details is not None
    assert resp.incomplete_details.reason == "max_output_tokens"
    assert len(resp.output_text.split()) == 4
    assert resp.usage is not None and resp.usage.output_tokens == 4
    conforms(orjson.loads(raw.http_response.content))
    sent = chat_calls(sim)[0]
    assert sent["messages"] == [{"role": "system", "content": "be brief"},
                                {"role": "user", "content": "hello"}]
    assert sent["max_tokens"] == 4


async def test_translate_stream(start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sim, gw = await chat_only(start_sim, start_gateway)
    await collect(await gw.openai().responses.create(model="m1", input="hi", stream=True))
    events = await raw_events(gw, {"model": "m1", "input": "hi"})
    check_events(events)
    types = [e["type"] for e in events]
    assert types[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert types[-1] == "response.completed"
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == text
    assert chat_calls(sim)[0]["stream_options"] == {"include_usage": True}


async def test_translate_tool_call(start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    _, gw = await chat_only(start_sim, start_gateway)
    tools = [{"type": "function", "name": "get_weather", "description": "weather",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    resp = await gw.openai().responses.create(model="m1", input="weather in Paris?",
                                              tools=tools)
    calls = [item for item in resp.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert orjson.loads(calls[0].arguments)
    await collect(await gw.openai().responses.create(model="m1", input="weather in Oslo?",
                                                     tools=tools, stream=True))
    events = await raw_events(gw, {"model": "m1", "input": "weather in Oslo?", "tools": tools})
    check_events(events)
    assert "response.function_call_arguments.done" in [e["type"] for e in events]


async def test_translate_previous_response_chain(start_sim: SimFactory,
                                                 start_gateway: GatewayFactory) -> None:
    sim, gw = await chat_only(start_sim, start_gateway)
    client = gw.openai()
    first = await client.responses.create(model="m1", input="one", instructions="sys")
    second = await client.responses.create(model="m1", input="two",
                                           previous_response_id=first.id)
    stream = await client.responses.create(model="m1", input="three", stream=True,
                                           previous_response_id=second.id)
    events = await collect(stream)
    third_id = events[-1]["response"]["id"]
    messages = chat_calls(sim)[2]["messages"]
    assert [(m["role"], m.get("content")) for m in messages] == [
        ("user", "one"), ("assistant", first.output_text),
        ("user", "two"), ("assistant", second.output_text), ("user", "three")]
    fetched = await client.responses.retrieve(third_id)
    assert fetched.id == third_id and fetched.status == "completed"
    items = await client.responses.input_items.list(third_id, order="asc")
    assert [i.type for i in items.data] == ["message"] * 5
    deleted = await client.responses.delete(first.id)
    assert deleted is None or getattr(deleted, "deleted", True)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError) as info:
        await client.responses.create(model="m1", input="x", previous_response_id=first.id)
    assert info.value.body["code"] == "previous_response_not_found"


async def test_store_false_is_not_kept(start_sim: SimFactory,
                                       start_gateway: GatewayFactory) -> None:
    _, gw = await chat_only(start_sim, start_gateway)
    resp = await gw.openai().responses.create(model="m1", input="x", store=False)
    with pytest.raises(openai.NotFoundError):
        await gw.openai().responses.retrieve(resp.id)


async def test_translate_mid_stream_death(start_sim: SimFactory,
                                          start_gateway: GatewayFactory) -> None:
    sim, gw = await chat_only(start_sim, start_gateway)
    sim.behavior.die_after_chunks = 4
    events = await raw_events(gw, {"model": "m1", "input": "x", "max_output_tokens": 50})
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    check_events(events)


async def test_a_forced_hosted_tool_is_400(start_sim: SimFactory,
                                           start_gateway: GatewayFactory) -> None:
    sim, gw = await chat_only(start_sim, start_gateway)
    with pytest.raises(openai.BadRequestError) as info:
        await gw.openai().responses.create(model="m1", input="x", tools=[{"type": "web_search"}],
                                           tool_choice={"type": "web_search"})
    assert info.value.body["param"] == "tool_choice"
    assert chat_calls(sim) == []


async def test_native_mode(start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1")
    gw = await start_gateway(keyed(endpoint("native", sim, responses="native")))
    raw = await gw.openai().responses.with_raw_response.create(model="m1", input="hi",
                                                               max_output_tokens=3)
    assert raw.headers["x-fleetlb-mode"] == "native"
    conforms(orjson.loads(raw.http_response.content))
    await collect(await gw.openai().responses.create(model="m1", input="hi", stream=True))
    check_events(await raw_events(gw, {"model": "m1", "input": "hi"}))
    assert len(native_calls(sim)) == 3 and chat_calls(sim) == []


async def test_auto_follows_the_probe_finding(start_sim: SimFactory,
                                              start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1")
    gw = await start_gateway(keyed(endpoint("a", sim)))
    client = gw.openai()
    raw = await client.responses.with_raw_response.create(model="m1", input="x")
    assert raw.headers["x-fleetlb-mode"] == "translate"  # support not known yet
    ep = gw.fleet.get("a")
    assert ep is not None
    ep.supports_responses_api = True  # what the prober writes
    raw = await client.responses.with_raw_response.create(model="m1", input="x")
    assert raw.headers["x-fleetlb-mode"] == "native"


async def test_native_follow_ups_reach_the_owner(start_sim: SimFactory,
                                                 start_gateway: GatewayFactory) -> None:
    a, b = await start_sim("m1"), await start_sim("m1")
    gw = await start_gateway(keyed(endpoint("a", a, responses="native", weight=1),
                                   endpoint("b", b, responses="native", weight=1)))
    client = gw.openai()
    previous = await client.responses.create(model="m1", input="turn 0")
    owner = a if native_calls(a) else b
    for turn in range(1, 4):
        stream = turn % 2 == 0
        if stream:
            events = await collect(await client.responses.create(
                model="m1", input=f"turn {turn}", previous_response_id=previous.id, stream=True))
            previous_id = events[-1]["response"]["id"]
        else:
            previous_id = (await client.responses.create(
                model="m1", input=f"turn {turn}", previous_response_id=previous.id)).id
        previous = await client.responses.retrieve(previous_id)
    assert len(native_calls(owner)) == 4
    assert native_calls(a if owner is b else b) == []
    # the owner gone: a follow-up must not silently lose its history
    owner_ep = gw.fleet.get("a" if owner is a else "b")
    assert owner_ep is not None
    owner_ep.draining = True
    gw.fleet.models_changed()
    with pytest.raises(openai.NotFoundError) as info:
        await client.responses.create(model="m1", input="x", previous_response_id=previous.id)
    assert info.value.body["code"] == "previous_response_not_found"
    owner_ep.draining = False


async def test_disabled_is_501(start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1")
    gw = await start_gateway(keyed(endpoint("a", sim, responses="disabled")))
    with pytest.raises(openai.APIStatusError) as info:
        await gw.openai().responses.create(model="m1", input="x")
    assert info.value.status_code == 501
    assert info.value.body["code"] == 501
    assert "does not support the Responses API" in info.value.body["message"]
    models = await gw.openai().models.list()
    assert models.data[0].model_extra["fleetlb"]["responses"] == "disabled"


async def test_mixed_pool_fails_over_across_modes(start_sim: SimFactory,
                                                  start_gateway: GatewayFactory) -> None:
    broken, chat = await start_sim("m1"), await start_sim("m1", responses=False)
    broken.behavior.fail_status = 503
    gw = await start_gateway(keyed(endpoint("n", broken, responses="native", priority=0),
                                   endpoint("t", chat, responses="translate", priority=1),
                                   models=[{"name": "m1", "strategy": "priority"}]))
    raw = await gw.openai().responses.with_raw_response.create(model="m1", input="x")
    assert raw.headers["x-fleetlb-mode"] == "translate"
    assert raw.headers["x-fleetlb-attempts"] == "2"
    models = await gw.openai().models.list()
    assert models.data[0].model_extra["fleetlb"]["responses"] == "mixed"


async def test_auth_and_unknown_ids(start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    _, gw = await chat_only(start_sim, start_gateway)
    with pytest.raises(openai.AuthenticationError):
        await gw.openai(key="wrong").responses.create(model="m1", input="x")
    with pytest.raises(openai.NotFoundError) as info:
        await gw.openai().responses.create(model="m1", input="x", previous_response_id="resp_no")
    assert info.value.body["code"] == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):
        await gw.openai().responses.retrieve("resp_nope")


async def test_compaction_round_trip(start_sim: SimFactory,
                                     start_gateway: GatewayFactory) -> None:
    sim, gw = await chat_only(start_sim, start_gateway)
    conversation = [
        {"role": "user", "content": "first"}, {"role": "assistant", "content": "answer one"},
        {"role": "user", "content": "second"}, {"role": "assistant", "content": "answer two"},
    ]
    headers = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession(headers=headers) as s:
        async with s.post(gw.url + "/v1/responses/compact",
                          json={"model": "m1", "input": conversation}) as resp:
            assert resp.status == 200
            compacted = await resp.json()
        async with s.post(gw.url + "/v1/responses/compact", json={"input": []}) as resp:
            assert resp.status == 400
    assert compacted["object"] == "response.compaction"
    assert compacted["output"][0]["type"] == "compaction"
    await gw.openai().responses.create(
        model="m1", input=[*compacted["output"], {"role": "user", "content": "third"}])
    sent = chat_calls(sim)[0]["messages"]
    assert [m["content"] for m in sent] == ["first", "answer one", "second", "answer two",
                                            "third"]
    tampered = dict(compacted["output"][0])
    tampered["encrypted_content"] = tampered["encrypted_content"][:-4] + "AAAA"
    with pytest.raises(openai.BadRequestError):
        await gw.openai().responses.create(model="m1", input=[tampered])


async def test_sqlite_store_survives_restart(start_sim: SimFactory,
                                             start_gateway: GatewayFactory,
                                             tmp_path: Any) -> None:
    sim = await start_sim("m1", responses=False)
    config = keyed(endpoint("a", sim),
                   store={"kind": "sqlite", "path": str(tmp_path / "r.db")},
                   responses={"compaction_key": "k" * 32})
    first_gw = await start_gateway(config)
    first = await first_gw.openai().responses.create(model="m1", input="remember me")
    await first_gw.server.close()
    second_gw = await start_gateway(config)
    await second_gw.openai().responses.create(model="m1", input="again",
                                              previous_response_id=first.id)
    assert chat_calls(sim)[1]["messages"][0] == {"role": "user", "content": "remember me"}
    assert (tmp_path / "r.db").exists()


async def test_unhealthy_owner_still_serves_follow_up(start_sim: SimFactory,
                                                      start_gateway: GatewayFactory) -> None:
    a = await start_sim("m1")
    gw = await start_gateway(keyed(endpoint("a", a, responses="native")))
    first = await gw.openai().responses.create(model="m1", input="x")
    ep = gw.fleet.get("a")
    assert ep is not None
    ep.state = HealthState.UNHEALTHY  # fail open: the only owner is tried anyway
    await gw.openai().responses.create(model="m1", input="y", previous_response_id=first.id)
    assert len(native_calls(a)) == 2


async def test_normalize_off_relays_native_verbatim(start_sim: SimFactory,
                                                    start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1")
    gw = await start_gateway(keyed(endpoint("n", sim, responses="native"),
                                   responses={"normalize": False}))
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as s, \
            s.post(gw.url + "/v1/responses",
                   json={"model": "m1", "input": "x", "stream": True}) as resp:
        relayed = await resp.read()
    async with aiohttp.ClientSession() as s, \
            s.post(sim.url + "/v1/responses",
                   json={"model": "m1", "input": "x", "stream": True}) as resp:
        direct = await resp.read()

    def skeleton(stream: bytes) -> list[Any]:
        """Event lines and JSON key sets: what verbatim keeps (ids and clocks differ per call)."""
        return [line if not line.startswith(b"data: {") else sorted(orjson.loads(line[6:]))
                for line in stream.split(b"\n")]

    assert skeleton(relayed) == skeleton(direct)
