"""Ollama's native API through the gateway, driven by the official `ollama` client, in front of
simulated Ollama backends (and a few fakes) on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import aiohttp
import ollama
import orjson
import pytest

from lb import __version__
from lb.endpoints import HealthState
from tests.conftest import Gateway, GatewayFactory, Sim, SimFactory, dead_url, endpoint
from tests.fake_probe_backends import FakeBackend, eventually, running

KEY = "sk-test"
AUTH = {"Authorization": f"Bearer {KEY}"}
HI = [{"role": "user", "content": "hi"}]


def ollama_ep(name: str, sim: Sim | str, models: tuple[str, ...] = ("m1",),
              **extra: Any) -> dict[str, Any]:
    return endpoint(name, sim, models, kind="ollama", **extra)


WEIGHTED = [{"name": m, "strategy": "weighted"} for m in ("m1", "m2")]


def keyed(*endpoints: dict[str, Any], **sections: Any) -> dict[str, Any]:
    return {"server": {"api_keys": [KEY]}, "endpoints": list(endpoints), **sections}


async def ollama_sim(start_sim: SimFactory, *models: str, **options: Any) -> Sim:
    return await start_sim(*(models or ("m1",)), kind="ollama", **options)


async def get_json(gw: Gateway, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession(headers=AUTH) as s, \
            s.request(kwargs.pop("method", "GET"), gw.url + path, **kwargs) as resp:
        return resp.status, orjson.loads(await resp.read())


async def ndjson_lines(gw: Gateway, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession(headers=AUTH) as s, \
            s.post(gw.url + path, json=body) as resp:
        assert resp.status == 200 and resp.content_type == "application/x-ndjson"
        return [orjson.loads(line) async for line in resp.content]


# --- model calls

async def test_chat_plain_and_streamed(start_sim: SimFactory,
                                       start_gateway: GatewayFactory) -> None:
    sim = await ollama_sim(start_sim)
    gw = await start_gateway(keyed(ollama_ep("a", sim)))
    c = gw.ollama()
    chat = await c.chat(model="m1", messages=HI, options={"num_predict": 5})
    assert chat.done and chat.done_reason == "length"
    assert len(chat.message.content.split()) == 5
    parts = [p async for p in await c.chat(model="m1", messages=HI, stream=True,
                                           options={"num_predict": 7})]
    assert len("".join(p.message.content for p in parts).split()) == 7
    assert [p.done for p in parts] == [False] * 7 + [True]
    assert sim.behavior.paths() == ["/api/chat", "/api/chat"]


async def test_generate_embed_show(start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sim = await ollama_sim(start_sim, "m1", "emb")
    gw = await start_gateway(keyed(ollama_ep("a", sim, ("m1", "emb"))))
    c = gw.ollama()
    gen = await c.generate(model="m1", prompt="once upon", options={"num_predict": 3})
    assert len(gen.response.split()) == 3
    streamed = [p.response async for p in await c.generate(model="m1", prompt="x", stream=True,
                                                            options={"num_predict": 4})]
    assert len("".join(streamed).split()) == 4
    embed = await c.embed(model="emb", input=["x", "y"])
    assert len(embed.embeddings) == 2 and len(embed.embeddings[0]) == 8
    old = await c.embeddings(model="emb", prompt="x")
    assert list(old.embedding) == embed.embeddings[0]
    show = await c.show("m1")
    assert show.modelfile == "FROM m1:latest\n"
    assert sim.behavior.paths() == ["/api/generate", "/api/generate", "/api/embed",
                                    "/api/embeddings", "/api/show"]


async def test_stream_is_ndjson_with_gateway_headers(start_sim: SimFactory,
                                                     start_gateway: GatewayFactory,
                                                     log_lines: Any) -> None:
    sim = await ollama_sim(start_sim)
    sim.behavior.split_writes = True  # every line reaches the gateway in pieces
    gw = await start_gateway(keyed(ollama_ep("a", sim)))
    async with aiohttp.ClientSession(headers=AUTH) as s, \
            s.post(gw.url + "/api/chat", json={"model": "m1", "messages": HI,
                                               "options": {"num_predict": 3}}) as resp:
        assert resp.content_type == "application/x-ndjson"
        assert resp.headers["x-fleetlb-endpoint"] == "a"
        assert resp.headers["x-fleetlb-attempts"] == "1"
        lines = [orjson.loads(line) async for line in resp.content]
    assert [line["done"] for line in lines] == [False, False, False, True]
    access = [line for line in log_lines() if line["event"] == "access"][-1]
    assert (access["path"], access["stream"], access["outcome"]) == ("/api/chat", True, "ok")
    assert access["model"] == "m1" and access["endpoint"] == "a"


async def test_only_ollama_endpoints_serve_the_native_api(start_sim: SimFactory,
                                                          start_gateway: GatewayFactory) -> None:
    native = await ollama_sim(start_sim)
    openai_only = await start_sim("m1", "gpt-ish")
    gw = await start_gateway(keyed(ollama_ep("native", native),
                                   endpoint("openai", openai_only, ("m1", "gpt-ish"))))
    c = gw.ollama()
    for _ in range(4):
        await c.chat(model="m1", messages=HI)
    assert len(native.behavior.requests) == 4 and not openai_only.behavior.requests
    with pytest.raises(ollama.ResponseError) as info:
        await c.chat(model="gpt-ish", messages=HI)
    assert info.value.status_code == 404
    assert info.value.error == "The model 'gpt-ish' is not served by any Ollama endpoint"


async def test_latest_tag_is_the_same_model(start_sim: SimFactory,
                                            start_gateway: GatewayFactory) -> None:
    sim = await ollama_sim(start_sim, "qwen", "m1")
    gw = await start_gateway(keyed(ollama_ep("a", sim, ("qwen:latest", "m1"))))
    c = gw.ollama()
    assert (await c.chat(model="qwen", messages=HI)).message.content
    assert (await c.chat(model="m1:latest", messages=HI)).message.content
    chat = await gw.openai().chat.completions.create(model="qwen", messages=HI)
    assert chat.choices[0].message.content
    assert [r.json()["model"] for r in sim.behavior.requests] == ["qwen", "m1:latest", "qwen"]


# --- failover, mid-stream death, disconnect

async def test_failover_past_dead_and_sick_endpoints(start_sim: SimFactory,
                                                     start_gateway: GatewayFactory) -> None:
    sick = await ollama_sim(start_sim)
    sick.behavior.fail_status = 503
    good = await ollama_sim(start_sim)
    gw = await start_gateway(keyed(ollama_ep("dead", dead_url(), priority=0),
                                   ollama_ep("sick", sick, priority=1),
                                   ollama_ep("good", good, priority=2),
                                   models=[{"name": "m1", "strategy": "priority"}]))
    parts = [p async for p in await gw.ollama().chat(model="m1", messages=HI, stream=True)]
    assert parts[-1].done
    assert [len(s.behavior.requests) for s in (sick, good)] == [1, 1]
    assert gw.fleet.get("dead").live_failures == 1 and gw.fleet.get("sick").live_failures == 1


async def test_mid_stream_death_ends_with_error_line(start_sim: SimFactory,
                                                     start_gateway: GatewayFactory,
                                                     log_lines: Any) -> None:
    sim = await ollama_sim(start_sim)
    sim.behavior.die_after_chunks = 3
    gw = await start_gateway(keyed(ollama_ep("a", sim)))
    received = []
    with pytest.raises(ollama.ResponseError, match="stream broke"):
        async for part in await gw.ollama().chat(model="m1", messages=HI, stream=True,
                                                 options={"num_predict": 50}):
            received.append(part)
    assert len(received) == 3 and not any(p.done for p in received)
    access = [line for line in log_lines() if line["event"] == "access"][-1]
    assert access["outcome"] == "upstream_failed"
    assert gw.fleet.get("a").live_failures == 1


async def test_death_before_first_byte_fails_over(start_sim: SimFactory,
                                                  start_gateway: GatewayFactory) -> None:
    dying = await ollama_sim(start_sim)
    dying.behavior.die_after_chunks = 0
    good = await ollama_sim(start_sim)
    gw = await start_gateway(keyed(ollama_ep("dying", dying, priority=0),
                                   ollama_ep("good", good, priority=1),
                                   models=[{"name": "m1", "strategy": "priority"}]))
    parts = [p async for p in await gw.ollama().generate(model="m1", prompt="x", stream=True,
                                                         options={"num_predict": 4})]
    assert len("".join(p.response for p in parts).split()) == 4


async def test_client_disconnect_aborts_upstream(start_sim: SimFactory,
                                                 start_gateway: GatewayFactory) -> None:
    sim = await ollama_sim(start_sim, tokens_per_s=20)
    gw = await start_gateway(keyed(ollama_ep("a", sim)))
    async with aiohttp.ClientSession(headers=AUTH) as session:
        resp = await session.post(gw.url + "/api/chat", json={
            "model": "m1", "messages": HI, "options": {"num_predict": 1000}})
        assert orjson.loads(await resp.content.readline())["done"] is False
        assert gw.in_flight()["a"] == 1
        resp.close()  # the client goes away mid-stream
    await eventually(lambda: sim.behavior.disconnects == 1 and gw.in_flight()["a"] == 0)
    assert sim.behavior.completed == 0


# --- warm first

async def test_warm_first_from_the_probers_ps(start_sim: SimFactory,
                                              start_gateway: GatewayFactory) -> None:
    # each simulated Ollama starts with its first model loaded: a has m1 warm, b has m2 warm
    a = await ollama_sim(start_sim, "m1", "m2")
    b = await ollama_sim(start_sim, "m2", "m1")
    gw = await start_gateway(keyed(ollama_ep("a", a, ("m1", "m2")),
                                   ollama_ep("b", b, ("m1", "m2")),
                                   probes={"interval": 0.05, "timeout": 1},
                                   models=WEIGHTED),
                             active_probes=True)
    ep_a, ep_b = gw.fleet.get("a"), gw.fleet.get("b")
    await eventually(lambda: ep_a.has_loaded("m1") and ep_b.has_loaded("m2"))
    c = gw.ollama()
    for _ in range(4):
        await c.chat(model="m2", messages=HI)
        await c.generate(model="m1", prompt="x")
    assert [r.json()["model"] for r in a.behavior.requests if r.path.startswith("/api/g")] \
        == ["m1"] * 4
    assert [r.json()["model"] for r in b.behavior.requests if r.path == "/api/chat"] == ["m2"] * 4
    # the weighted model keeps its spread on the OpenAI surface
    for _ in range(4):
        await gw.openai().chat.completions.create(model="m2", messages=HI)
    chats = [[r for r in s.behavior.requests if r.path == "/v1/chat/completions"] for s in (a, b)]
    assert [len(c) for c in chats] == [2, 2]


# --- fleet-wide listings

async def test_tags_is_the_union_of_healthy_ollama_endpoints(start_sim: SimFactory,
                                                             start_gateway: GatewayFactory) -> None:
    a = await ollama_sim(start_sim, "m1", "m2")
    b = await ollama_sim(start_sim, "m2:latest", "emb")
    sick = await ollama_sim(start_sim, "hidden")
    other = await start_sim("not-ollama")
    gw = await start_gateway(keyed(ollama_ep("a", a, ("m1", "m2")), ollama_ep("b", b, ("m2",)),
                                   ollama_ep("sick", sick, ("hidden",)),
                                   ollama_ep("unreachable", dead_url(), ("m1",)),
                                   endpoint("other", other, ("not-ollama",))))
    gw.fleet.get("sick").state = HealthState.UNHEALTHY
    listed = await gw.ollama().list()
    assert [m.model for m in listed.models] == ["m1:latest", "m2:latest", "emb:latest"]
    status, doc = await get_json(gw, "/api/tags")
    async with aiohttp.ClientSession() as s, s.get(a.url + "/api/tags") as resp:
        a_tags = {m["name"]: m for m in (await resp.json())["models"]}
    m2 = doc["models"][1]
    assert status == 200 and m2["fleetlb"] == {"endpoints": ["a", "b"]}
    assert {k: v for k, v in m2.items() if k != "fleetlb"} == a_tags["m2:latest"]


async def test_ps_names_the_endpoint_of_each_loaded_model(start_sim: SimFactory,
                                                          start_gateway: GatewayFactory) -> None:
    a = await ollama_sim(start_sim, "m1", "m2")
    b = await ollama_sim(start_sim, "m2", "m1")
    gw = await start_gateway(keyed(ollama_ep("a", a, ("m1", "m2")),
                                   ollama_ep("b", b, ("m1", "m2")), models=WEIGHTED))
    ps = await gw.ollama().ps()
    assert sorted(m.model for m in ps.models) == ["m1:latest", "m2:latest"]
    await gw.ollama().chat(model="m2", messages=HI, options={"num_predict": 1})  # loads m2 on a
    _, doc = await get_json(gw, "/api/ps")
    assert [(m["name"], m["fleetlb"]) for m in doc["models"]] == [
        ("m1:latest", {"endpoint": "a"}), ("m2:latest", {"endpoint": "a"}),
        ("m2:latest", {"endpoint": "b"})]
    assert all(m["size_vram"] > 0 and m["expires_at"] for m in doc["models"])


async def test_version_reports_the_oldest_backend(start_sim: SimFactory,
                                                  start_gateway: GatewayFactory) -> None:
    sim = await ollama_sim(start_sim)
    old = FakeBackend("ollama", raw={"/api/version": '{"version": "0.5.1"}'})
    async with running(old):
        gw = await start_gateway(keyed(ollama_ep("new", sim), ollama_ep("old", old.url)))
        status, doc = await get_json(gw, "/api/version")  # the ollama client has no call for it
    assert status == 200
    assert doc == {"version": "0.5.1", "fleetlb": {
        "version": __version__, "endpoints": {"new": "0.9.3", "old": "0.5.1"}}}


async def test_version_without_any_ollama_endpoint_is_503(start_sim: SimFactory,
                                                          start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1")
    gw = await start_gateway(keyed(endpoint("openai", sim)))
    status, doc = await get_json(gw, "/api/version")
    assert (status, doc) == (503, {"error": "no Ollama endpoint answered /api/version"})
    assert (await gw.ollama().list()).models == []


# --- errors

@pytest.mark.parametrize(("method", "path", "body", "status", "says"), [
    ("POST", "/api/chat", None, 400, "empty"),
    ("POST", "/api/chat", b"{not json", 400, "not valid JSON"),
    ("POST", "/api/generate", b'{"prompt": "x"}', 400, "model"),
    ("POST", "/api/chat", b'{"model": "nope"}', 404, "'nope' does not exist"),
    ("GET", "/api/chat", None, 405, "Method not allowed"),
    ("GET", "/api/nothing-here", None, 404, "Unknown route"),
])
async def test_errors_use_ollamas_shape(start_sim: SimFactory, start_gateway: GatewayFactory,
                                        method: str, path: str, body: bytes | None, status: int,
                                        says: str) -> None:
    sim = await ollama_sim(start_sim)
    gw = await start_gateway(keyed(ollama_ep("a", sim)))
    got, doc = await get_json(gw, path, method=method, data=body)
    assert got == status
    assert list(doc) == ["error"] and isinstance(doc["error"], str) and says in doc["error"]


async def test_auth_applies_and_errors_keep_their_route_shape(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sim = await ollama_sim(start_sim)
    gw = await start_gateway(keyed(ollama_ep("a", sim)))
    with pytest.raises(ollama.ResponseError) as info:
        await gw.ollama(key="sk-wrong").chat(model="m1", messages=HI)
    assert info.value.status_code == 401 and info.value.error == "Incorrect API key provided"
    with pytest.raises(ollama.ResponseError) as info:
        await gw.ollama(key=None).list()
    assert info.value.status_code == 401
    status, doc = await get_json(gw, "/v1/chat/completions",
                                 json={"model": "nope", "messages": HI}, method="POST")
    assert status == 404 and doc["error"]["code"] == "model_not_found"  # OpenAI's shape on /v1
    assert not sim.behavior.requests


# --- fleet-changing calls

@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/api/pull", {"model": "new"}),
    ("POST", "/api/push", {"model": "m1"}),
    ("POST", "/api/create", {"model": "new", "from": "m1"}),
    ("POST", "/api/copy", {"source": "m1", "destination": "m2"}),
    ("DELETE", "/api/delete", {"model": "m1"}),
])
async def test_fleet_changing_calls_refused_by_default(start_sim: SimFactory,
                                                       start_gateway: GatewayFactory,
                                                       method: str, path: str,
                                                       body: dict[str, Any]) -> None:
    sim = await ollama_sim(start_sim)
    gw = await start_gateway(keyed(ollama_ep("a", sim)))
    status, doc = await get_json(gw, path, method=method, json=body)
    assert status == 403
    assert doc == {"error": f"{path} would change every Ollama server of the fleet and is "
                            "disabled on this gateway; an operator can allow it with "
                            "[ollama] allow_admin = true"}
    assert not sim.behavior.requests


async def test_ollama_client_sees_the_refusal(start_sim: SimFactory,
                                              start_gateway: GatewayFactory) -> None:
    sim = await ollama_sim(start_sim)
    gw = await start_gateway(keyed(ollama_ep("a", sim)))
    with pytest.raises(ollama.ResponseError, match="allow_admin") as info:
        await gw.ollama().pull("new")
    assert info.value.status_code == 403
    with pytest.raises(ollama.ResponseError, match="allow_admin"):
        await gw.ollama().delete("m1")


async def admin_fleet(start_sim: SimFactory, start_gateway: GatewayFactory,
                      ) -> tuple[Gateway, Sim, Sim]:
    a = await ollama_sim(start_sim, "m1")
    b = await ollama_sim(start_sim, "m1", "only-b")
    openai_sim = await start_sim("m1")
    gw = await start_gateway(keyed(ollama_ep("a", a), ollama_ep("b", b),
                                   endpoint("openai", openai_sim),
                                   ollama={"allow_admin": True}))
    return gw, a, b


async def test_fleet_changing_calls_go_to_every_ollama_endpoint(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    gw, a, b = await admin_fleet(start_sim, start_gateway)
    c = gw.ollama()
    assert (await c.pull("new")).status == "success"
    for sim in (a, b):
        pulled = [r for r in sim.behavior.requests if r.path == "/api/pull"]
        assert [r.json() for r in pulled] == [{"model": "new", "insecure": False, "stream": True}]
    names = [m.model for m in (await c.list()).models]
    assert names == ["m1:latest", "new:latest", "only-b:latest"]
    assert (await c.copy("new", "copied")).status == "success"
    assert (await c.delete("copied")).status == "success"
    # b alone has it: a's 404 leaves the fleet as asked
    assert (await c.delete("only-b")).status == "success"
    with pytest.raises(ollama.ResponseError) as info:
        await c.delete("never-there")
    assert info.value.status_code == 404
    assert [m.model for m in (await c.list()).models] == ["m1:latest", "new:latest"]


async def test_streamed_pull_tags_progress_with_the_endpoint(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    gw, _, _ = await admin_fleet(start_sim, start_gateway)
    statuses = [p.status async for p in await gw.ollama().pull("new", stream=True)]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert statuses.count("success") == 1  # per-endpoint successes fold into the final line
    lines = await ndjson_lines(gw, "/api/pull", {"model": "other"})  # stream by default
    progress, final = lines[:-1], lines[-1]
    assert {line["fleetlb"]["endpoint"] for line in progress} == {"a", "b"}
    assert len(progress) == 10  # five steps from each endpoint
    assert final["status"] == "success"
    assert [(r["endpoint"], r["status"], r["response"]) for r in final["fleetlb"]["results"]] \
        == [("a", 200, {"status": "success"}), ("b", 200, {"status": "success"})]


async def test_fleet_call_failing_somewhere_reports_each_endpoint(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    gw, _, b = await admin_fleet(start_sim, start_gateway)
    b.behavior.fail_status = 500
    with pytest.raises(ollama.ResponseError) as info:
        await gw.ollama().pull("new")
    assert info.value.status_code == 502
    assert info.value.error == ("/api/pull failed on 1 of 2 Ollama endpoints: "
                                "b: sim: injected failure")
    status, doc = await get_json(gw, "/api/pull", method="POST",
                                 json={"model": "new", "stream": False})
    assert status == 502
    assert doc["fleetlb"]["results"] == [
        {"endpoint": "a", "status": 200, "response": {"status": "success"}, "error": None},
        {"endpoint": "b", "status": 500, "response": None, "error": "sim: injected failure"}]
    lines = await ndjson_lines(gw, "/api/pull", {"model": "new"})
    assert lines[-1]["error"].startswith("/api/pull failed on 1 of 2")
    assert len(lines[-1]["fleetlb"]["results"]) == 2


async def test_fleet_call_to_a_dying_endpoint(start_sim: SimFactory,
                                              start_gateway: GatewayFactory) -> None:
    gw, a, _ = await admin_fleet(start_sim, start_gateway)
    a.behavior.die_after_chunks = 2
    status, doc = await get_json(gw, "/api/pull", method="POST", json={"model": "new",
                                                                       "stream": False})
    assert status == 502
    result_a = doc["fleetlb"]["results"][0]
    assert result_a["endpoint"] == "a" and "stream broke" in result_a["error"]
    assert doc["fleetlb"]["results"][1]["error"] is None
