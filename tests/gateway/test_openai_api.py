"""The gateway as a real server in front of simulated backends, driven by the openai SDK."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from lb.endpoints import HealthState
from tests.conftest import GatewayFactory, SimFactory, dead_url, endpoint

KEY = "sk-test"
MSG = [{"role": "user", "content": "hello"}]


def keyed(*endpoints: dict[str, Any], **sections: Any) -> dict[str, Any]:
    return {"server": {"api_keys": [KEY]}, "endpoints": list(endpoints), **sections}


async def test_chat_plain_and_headers(start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1")
    gw = await start_gateway(keyed(endpoint("a", sim)))
    raw = await gw.openai().chat.completions.with_raw_response.create(
        model="m1", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    chat = raw.parse()
    assert chat.choices[0].finish_reason == "length"
    assert len(chat.choices[0].message.content.split()) == 5
    assert raw.headers["x-fleetlb-endpoint"] == "a"
    assert raw.headers["x-fleetlb-attempts"] == "1"
    assert raw.headers["x-request-id"]


async def test_chat_stream(start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1")
    gw = await start_gateway(keyed(endpoint("a", sim)))
    stream = await gw.openai().chat.completions.create(
        model="m1", messages=[{"role": "user", "content": "hi"}], max_tokens=7, stream=True,
        stream_options={"include_usage": True})
    pieces, usage = [], None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert len("".join(pieces).split()) == 7
    assert usage is not None and usage.completion_tokens == 7


async def test_completions_embeddings_models(start_sim: SimFactory,
                                            start_gateway: GatewayFactory) -> None:
    a = await start_sim("m1", "emb")
    b = await start_sim("m1")
    gw = await start_gateway(keyed(endpoint("a", a, ("m1", "emb")), endpoint("b", b)))
    c = gw.openai()
    comp = await c.completions.create(model="m1", prompt="once upon", max_tokens=3)
    assert len(comp.choices[0].text.split()) == 3
    emb = await c.embeddings.create(model="emb", input=["x", "y"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 8
    models = await c.models.list()
    by_id = {m.id: m.model_extra["fleetlb"] for m in models.data}
    assert by_id == {"m1": {"endpoints": 2, "healthy": 2, "responses": "translate"},
                     "emb": {"endpoints": 1, "healthy": 1, "responses": "translate"}}


async def test_openai_prefix_routes(start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1")
    gw = await start_gateway(keyed(endpoint("a", sim)))
    c = gw.openai(prefix="/openai/v1")
    chat = await c.chat.completions.create(model="m1", messages=[{"role": "user", "content": "x"}])
    assert chat.choices[0].message.content
    assert sim.behavior.paths() == ["/v1/chat/completions"]


async def test_failover_when_backend_down(start_sim: SimFactory,
                                          start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1")
    # priority puts the dead endpoint first, so every request must fail over
    gw = await start_gateway(keyed(endpoint("dead", dead_url(), priority=0),
                                   endpoint("live", sim, priority=1),
                                   models=[{"name": "m1", "strategy": "priority"}]))
    raw = await gw.openai().chat.completions.with_raw_response.create(
        model="m1", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-fleetlb-endpoint"] == "live"
    assert raw.headers["x-fleetlb-attempts"] == "2"
    assert gw.fleet.get("dead").live_failures == 1


async def test_failover_on_503_and_429(start_sim: SimFactory,
                                       start_gateway: GatewayFactory) -> None:
    sick = await start_sim("m1")
    busy = await start_sim("m1")
    good = await start_sim("m1")
    sick.behavior.fail_status = 503
    busy.behavior.fail_status = 429
    gw = await start_gateway(keyed(endpoint("sick", sick, priority=0),
                                   endpoint("busy", busy, priority=1),
                                   endpoint("good", good, priority=2),
                                   models=[{"name": "m1", "strategy": "priority"}]))
    raw = await gw.openai().chat.completions.with_raw_response.create(
        model="m1", messages=[{"role": "user", "content": "hi"}], stream=True)
    async for _ in raw.parse():
        pass
    assert raw.headers["x-fleetlb-endpoint"] == "good"
    assert raw.headers["x-fleetlb-attempts"] == "3"
    assert gw.fleet.get("busy").live_failures == 0  # a 429 is not the backend's fault


async def test_4xx_is_returned_as_is(start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    a = await start_sim("m1")
    b = await start_sim("m1")
    a.behavior.fail_status = b.behavior.fail_status = 422
    gw = await start_gateway(keyed(endpoint("a", a), endpoint("b", b)))
    with pytest.raises(openai.UnprocessableEntityError):
        await gw.openai().chat.completions.create(model="m1", messages=MSG)
    assert len(a.behavior.requests) + len(b.behavior.requests) == 1


async def test_all_attempts_fail_is_502(start_sim: SimFactory,
                                        start_gateway: GatewayFactory) -> None:
    sims = [await start_sim("m1") for _ in range(3)]
    for s in sims:
        s.behavior.fail_status = 500
    gw = await start_gateway(keyed(*(endpoint(f"e{i}", s) for i, s in enumerate(sims)),
                                   retry={"max_attempts": 2}))
    with pytest.raises(openai.APIStatusError) as info:
        await gw.openai().chat.completions.create(model="m1", messages=MSG)
    assert info.value.status_code == 502
    assert info.value.body["code"] == "upstream_error"
    assert sum(len(s.behavior.requests) for s in sims) == 2  # max_attempts, never the same twice


async def test_priority_tiers(start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    primary = await start_sim("m1")
    spare = await start_sim("m1")
    gw = await start_gateway(keyed(endpoint("primary", primary, priority=0),
                                   endpoint("spare", spare, priority=1),
                                   models=[{"name": "m1", "strategy": "priority"}]))
    c = gw.openai()
    for _ in range(4):
        await c.chat.completions.create(model="m1", messages=MSG)
    assert (len(primary.behavior.requests), len(spare.behavior.requests)) == (4, 0)
    gw.fleet.get("primary").state = HealthState.UNHEALTHY  # what the prober writes
    for _ in range(2):
        await c.chat.completions.create(model="m1", messages=MSG)
    assert (len(primary.behavior.requests), len(spare.behavior.requests)) == (4, 2)


async def test_weights_share_traffic(start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    big = await start_sim("m1")
    small = await start_sim("m1")
    gw = await start_gateway(keyed(endpoint("big", big, weight=3), endpoint("small", small),
                                   models=[{"name": "m1", "strategy": "weighted"}]))
    c = gw.openai()
    for _ in range(8):
        await c.embeddings.create(model="m1", input="x")
    assert (len(big.behavior.requests), len(small.behavior.requests)) == (6, 2)


async def test_max_in_flight_queues_then_serves(start_sim: SimFactory,
                                                start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1", tokens_per_s=200)
    gw = await start_gateway(keyed(endpoint("a", sim, max_in_flight=1)))
    c = gw.openai()
    results = await asyncio.gather(*(
        c.chat.completions.create(model="m1", messages=MSG, max_tokens=5) for _ in range(3)))
    assert all(r.choices[0].finish_reason == "length" for r in results)
    assert sim.behavior.completed == 3


async def test_queue_deadline_gives_429(start_sim: SimFactory,
                                        start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1")
    sim.behavior.hang = True
    gw = await start_gateway(keyed(endpoint("a", sim, max_in_flight=1),
                                   server={"api_keys": [KEY], "queue_timeout": 0.2}))
    c = gw.openai()
    first = asyncio.create_task(c.chat.completions.create(model="m1", messages=MSG))
    while gw.in_flight()["a"] == 0:
        await asyncio.sleep(0.01)
    with pytest.raises(openai.RateLimitError) as info:
        await c.chat.completions.create(model="m1", messages=MSG)
    assert info.value.response.headers["retry-after"] == "1"
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    while gw.in_flight()["a"]:
        await asyncio.sleep(0.01)


async def test_client_disconnect_aborts_upstream(start_sim: SimFactory,
                                                 start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1", tokens_per_s=20)
    gw = await start_gateway(keyed(endpoint("a", sim)))
    async with aiohttp.ClientSession() as session:
        resp = await session.post(gw.url + "/v1/chat/completions",
                                  headers={"Authorization": f"Bearer {KEY}"},
                                  json={"model": "m1", "stream": True, "max_tokens": 1000,
                                        "messages": MSG})
        await resp.content.readline()  # the stream has started
        assert gw.in_flight()["a"] == 1
        resp.close()  # the client goes away mid-stream
    while sim.behavior.disconnects == 0 or gw.in_flight()["a"]:
        await asyncio.sleep(0.01)
    assert sim.behavior.completed == 0


async def test_mid_stream_death_ends_with_error(start_sim: SimFactory,
                                                start_gateway: GatewayFactory,
                                                log_lines: Any) -> None:
    sim = await start_sim("m1")
    sim.behavior.die_after_chunks = 3
    gw = await start_gateway(keyed(endpoint("a", sim)))
    stream = await gw.openai().chat.completions.create(model="m1", messages=MSG, stream=True,
                                                      max_tokens=50)
    received = 0
    with pytest.raises(openai.APIError, match="stream broke"):
        async for _ in stream:
            received += 1
    assert received == 3
    access = [line for line in log_lines() if line["event"] == "access"]
    assert access[-1]["outcome"] == "upstream_failed"
    assert gw.fleet.get("a").live_failures == 1


async def test_death_before_first_byte_fails_over(start_sim: SimFactory,
                                                  start_gateway: GatewayFactory) -> None:
    dying = await start_sim("m1")
    dying.behavior.die_after_chunks = 0
    good = await start_sim("m1")
    gw = await start_gateway(keyed(endpoint("dying", dying, priority=0),
                                   endpoint("good", good, priority=1),
                                   models=[{"name": "m1", "strategy": "priority"}]))
    stream = await gw.openai().chat.completions.create(model="m1", messages=MSG, stream=True,
                                                      max_tokens=4)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert len(text.split()) == 4


async def test_split_crlf_events_pass_whole(start_sim: SimFactory,
                                            start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1")
    sim.behavior.split_writes = sim.behavior.crlf = True
    gw = await start_gateway(keyed(endpoint("a", sim)))
    stream = await gw.openai().chat.completions.create(model="m1", messages=MSG, stream=True,
                                                      max_tokens=6)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert len(text.split()) == 6


async def test_authorization_never_forwarded(start_sim: SimFactory,
                                             start_gateway: GatewayFactory) -> None:
    keyed_sim = await start_sim("m1")
    open_sim = await start_sim("m2")
    gw = await start_gateway(keyed(endpoint("k", keyed_sim, api_key_env="UPSTREAM_KEY"),
                                   endpoint("o", open_sim, ("m2",))),
                             env={"UPSTREAM_KEY": "sk-upstream"})
    c = gw.openai()
    await c.chat.completions.create(model="m1", messages=MSG)
    await c.chat.completions.create(model="m2", messages=MSG)
    assert keyed_sim.behavior.requests[0].headers["Authorization"] == "Bearer sk-upstream"
    assert "Authorization" not in open_sim.behavior.requests[0].headers
    for sim in (keyed_sim, open_sim):
        assert KEY not in str(sim.behavior.requests[0].headers)


async def test_request_id_propagates_and_is_logged(start_sim: SimFactory,
                                                   start_gateway: GatewayFactory,
                                                   log_lines: Any) -> None:
    sim = await start_sim("m1")
    dead = dead_url()
    gw = await start_gateway(keyed(endpoint("dead", dead, priority=0),
                                   endpoint("a", sim, priority=1),
                                   models=[{"name": "m1", "strategy": "priority"}]))
    raw = await gw.openai().chat.completions.with_raw_response.create(
        model="m1", messages=MSG, extra_headers={"X-Request-ID": "req-42"})
    assert raw.headers["x-request-id"] == "req-42"
    assert sim.behavior.requests[0].headers["X-Request-ID"] == "req-42"
    lines = [line for line in log_lines() if line.get("request_id") == "req-42"]
    events = [line["event"] for line in lines]
    assert events == ["attempt_failed", "access"]
    assert lines[0]["endpoint"] == "dead" and lines[0]["model"] == "m1"
    access = lines[-1]
    assert access["endpoint"] == "a" and access["attempts"] == 2 and access["status"] == 200
    assert access["stream"] is False and access["ttfb_ms"] is not None
    assert KEY not in str(lines)


async def test_model_rewrite_and_byte_for_byte(start_sim: SimFactory,
                                               start_gateway: GatewayFactory) -> None:
    sim = await start_sim("llama3.1:8b")
    gw = await start_gateway(keyed(endpoint("a", sim, ("llama3.1:8b",)),
                                   models=[{"name": "llama3", "upstream": "llama3.1:8b"}]))
    body = b'{"model":"llama3.1:8b",  "messages":[{"role":"user","content":"x"}], "extra":{"k":1}}'
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as s:
        async with s.post(gw.url + "/v1/chat/completions", data=body,
                          headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 200
        async with s.post(gw.url + "/v1/chat/completions",
                          json={"model": "llama3", "messages": MSG, "x": 1}) as resp:
            assert resp.status == 200
    assert sim.behavior.requests[0].body == body
    assert sim.behavior.requests[1].json() == {"model": "llama3.1:8b", "messages": MSG, "x": 1}


@pytest.mark.parametrize(("headers", "body", "status", "code"), [
    ({}, b'{"model":"m1"}', 401, "invalid_api_key"),
    ({"Authorization": "Bearer nope"}, b'{"model":"m1"}', 401, "invalid_api_key"),
    ({"Authorization": f"Bearer {KEY}"}, b"{not json", 400, "invalid_json"),
    ({"Authorization": f"Bearer {KEY}"}, b"", 400, "invalid_request"),
    ({"Authorization": f"Bearer {KEY}"}, b"[1]", 400, "invalid_json"),
    ({"Authorization": f"Bearer {KEY}"}, b'{"messages":[]}', 400, "invalid_request"),
    ({"Authorization": f"Bearer {KEY}"}, b'{"model":"nope"}', 404, "model_not_found"),
    ({"Authorization": f"Bearer {KEY}"}, b'{"model":"m1","x":"' + b"y" * 2000 + b'"}', 413,
     "payload_too_large"),
])
async def test_bad_requests_get_openai_errors(start_sim: SimFactory,
                                              start_gateway: GatewayFactory,
                                              headers: dict[str, str], body: bytes,
                                              status: int, code: str) -> None:
    sim = await start_sim("m1")
    gw = await start_gateway(keyed(endpoint("a", sim),
                                   server={"api_keys": [KEY], "max_body_bytes": 1024}))
    async with aiohttp.ClientSession() as s, \
            s.post(gw.url + "/v1/chat/completions", data=body, headers=headers) as resp:
        assert resp.status == status
        error = (await resp.json())["error"]
    assert error["code"] == code
    assert set(error) == {"message", "type", "param", "code"}
    assert resp.headers["X-Request-ID"]
    assert sim.behavior.requests == []


async def test_unknown_route_and_method(start_sim: SimFactory,
                                        start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1")
    gw = await start_gateway(keyed(endpoint("a", sim)))
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as s:
        async with s.get(gw.url + "/v1/nothing") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["type"] == "not_found_error"
        async with s.get(gw.url + "/v1/chat/completions") as resp:
            assert resp.status == 405
            assert (await resp.json())["error"]["code"] == "method_not_allowed"


async def test_health_ready_admin(start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1")
    gw = await start_gateway(keyed(endpoint("a", sim, weight=2, max_in_flight=4),
                                   server={"api_keys": [KEY], "admin_key": "adm"}))
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.url + "/healthz") as resp:
            assert resp.status == 200
        async with s.get(gw.url + "/readyz") as resp:
            assert resp.status == 200
        async with s.get(gw.url + "/admin/endpoints",
                         headers={"Authorization": f"Bearer {KEY}"}) as resp:
            assert resp.status == 401
        async with s.get(gw.url + "/admin/endpoints",
                         headers={"Authorization": "Bearer adm"}) as resp:
            rows = (await resp.json())["endpoints"]
        assert rows[0]["name"] == "a" and rows[0]["healthy"] is True
        assert rows[0]["weight"] == 2 and rows[0]["in_flight"] == 0 and rows[0]["models"] == ["m1"]
        assert "api_key" not in orjson.dumps(rows).decode()
        gw.fleet.get("a").state = HealthState.UNHEALTHY
        async with s.get(gw.url + "/readyz") as resp:
            assert resp.status == 503


async def test_open_gateway_without_keys(start_sim: SimFactory,
                                         start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1")
    gw = await start_gateway({"endpoints": [endpoint("a", sim)]})
    chat = await gw.openai(key="anything").chat.completions.create(model="m1", messages=MSG)
    assert chat.choices


async def test_fail_open_when_every_endpoint_is_down(start_sim: SimFactory,
                                                     start_gateway: GatewayFactory,
                                                     log_lines: Any) -> None:
    sim = await start_sim("m1")
    gw = await start_gateway(keyed(endpoint("a", sim)))
    gw.fleet.get("a").state = HealthState.UNHEALTHY
    chat = await gw.openai().chat.completions.create(model="m1", messages=MSG)
    assert chat.choices
    assert any(line["event"] == "pool_fail_open" for line in log_lines())


async def test_affinity_sticks_to_one_endpoint(start_sim: SimFactory,
                                               start_gateway: GatewayFactory) -> None:
    sims = [await start_sim("m1") for _ in range(3)]
    gw = await start_gateway(keyed(*(endpoint(f"e{i}", s) for i, s in enumerate(sims)),
                                   models=[{"name": "m1", "strategy": "affinity"}]))
    c = gw.openai()
    for _ in range(5):
        await c.chat.completions.create(model="m1", messages=MSG, user="alice")
    assert sorted(len(s.behavior.requests) for s in sims) == [0, 0, 5]


async def test_prober_wired_into_gateway(start_sim: SimFactory,
                                         start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1", "discovered")
    gw = await start_gateway(keyed(endpoint("live", sim), endpoint("dead", dead_url()),
                                   probes={"interval": 0.05, "timeout": 1, "fall": 1, "rise": 1}),
                             active_probes=True)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as s:
        for _ in range(400):
            async with s.get(gw.url + "/admin/endpoints") as resp:
                rows = {r["name"]: r for r in (await resp.json())["endpoints"]}
            if rows["dead"]["state"] == "unhealthy" and rows["live"]["state"] == "healthy" \
                    and rows["live"]["supports_responses_api"] is not None:
                break
            await asyncio.sleep(0.02)
    assert rows["dead"]["last_error"] and rows["live"]["last_probe_at"]
    assert rows["live"]["models"] == ["discovered", "m1"]
    assert rows["live"]["supports_responses_api"] is True
    models = {m.id for m in (await gw.openai().models.list()).data}
    assert models == {"m1", "discovered"}
    chat = await gw.openai().chat.completions.create(model="discovered", messages=MSG)
    assert chat.choices


async def test_hung_backends_time_out_as_504(start_sim: SimFactory,
                                             start_gateway: GatewayFactory) -> None:
    sims = [await start_sim("m1") for _ in range(2)]
    for sim in sims:
        sim.behavior.hang = True
    gw = await start_gateway(keyed(*(endpoint(f"e{i}", s) for i, s in enumerate(sims)),
                                   timeouts={"first_byte": 0.2}))
    with pytest.raises(openai.APIStatusError) as info:
        await gw.openai().chat.completions.create(model="m1", messages=MSG)
    assert info.value.status_code == 504
    assert info.value.body["code"] == "upstream_timeout"
    assert gw.fleet.get("e0").live_failures == gw.fleet.get("e1").live_failures == 1
    for sim in sims:  # the backends saw their connections close: nothing left generating
        sim.behavior.hang = False


async def test_idle_backend_mid_stream_ends_with_error(start_sim: SimFactory,
                                                       start_gateway: GatewayFactory,
                                                       log_lines: Any) -> None:
    sim = await start_sim("m1", tokens_per_s=2)  # a gap of 0.5 s between tokens
    gw = await start_gateway(keyed(endpoint("a", sim), timeouts={"idle": 0.1}))
    stream = await gw.openai().chat.completions.create(model="m1", messages=MSG, stream=True,
                                                       max_tokens=20)
    with pytest.raises(openai.APIError, match="timed out"):
        async for _ in stream:
            pass
    access = [line for line in log_lines() if line["event"] == "access"]
    assert access[-1]["outcome"] == "upstream_failed"
