"""Teams on a real gateway with the openai and ollama SDKs: model access by glob, rpm/tpm/
max_in_flight hit and recovered (a fake clock moves the windows), OpenAI's headers, priority in the
admission queue, /admin/keys, every surface, and no secret in any output."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import ollama
import openai
import pytest

from lb.appstate import RUNTIME
from tests.conftest import Gateway, GatewayFactory, SimFactory, endpoint

MSG = [{"role": "user", "content": "hi"}]
ADMIN = "adm-secret-9"
SECRETS = {"a": "sk-team-a-secret", "b": "sk-team-b-secret", "batch": "sk-batch-secret",
           "legacy": "sk-legacy-secret"}


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def teams(*eps: dict[str, Any], keys: list[dict[str, Any]], **sections: Any) -> dict[str, Any]:
    server = {"api_keys": [SECRETS["legacy"]], "admin_key": ADMIN, **sections.pop("server", {})}
    return {"server": server, "endpoints": list(eps), "keys": keys, **sections}


def key(name: str, **limits: Any) -> dict[str, Any]:
    return {"name": name, "key": SECRETS[name], **limits}


async def admin_keys(gw: Gateway) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(
            gw.url + "/admin/keys", headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return {row["name"]: row for row in body["keys"]}


async def test_models_by_glob_and_404_as_if_the_model_did_not_exist(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sim = await start_sim("llama3.1:8b", "qwen2.5:7b")
    gw = await start_gateway(teams(endpoint("e", sim, models=("llama3.1:8b", "qwen2.5:7b")),
                                   keys=[key("a", models=["llama3*"]), key("b")]))
    a, b = gw.openai(SECRETS["a"]), gw.openai(SECRETS["b"])
    await a.chat.completions.create(model="llama3.1:8b", messages=MSG)
    with pytest.raises(openai.NotFoundError) as forbidden:
        await a.chat.completions.create(model="qwen2.5:7b", messages=MSG)
    with pytest.raises(openai.NotFoundError) as unknown:
        await a.chat.completions.create(model="nope", messages=MSG)
    assert forbidden.value.body["code"] == unknown.value.body["code"] == "model_not_found"
    assert forbidden.value.body["message"] == "The model 'qwen2.5:7b' does not exist"
    assert [m.id async for m in a.models.list()] == ["llama3.1:8b"]
    assert sorted([m.id async for m in b.models.list()]) == ["llama3.1:8b", "qwen2.5:7b"]
    await b.chat.completions.create(model="qwen2.5:7b", messages=MSG)
    # the legacy [server] api_keys still work, as the unlimited "default" entry
    await gw.openai(SECRETS["legacy"]).chat.completions.create(model="qwen2.5:7b", messages=MSG)
    with pytest.raises(openai.AuthenticationError):
        await gw.openai("sk-team-a-secreT").chat.completions.create(model="m1", messages=MSG)
    with pytest.raises(openai.NotFoundError):  # Responses and compaction honour access too
        await a.responses.create(model="qwen2.5:7b", input="hi")
    assert len(sim.behavior.requests) == 3  # nothing forbidden reached the backend


async def test_rpm_429_with_openai_headers_then_recovered(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1")
    clock = FakeClock()
    gw = await start_gateway(teams(endpoint("e", sim), keys=[key("a", rpm=2), key("b")]),
                             clock=clock)
    a = gw.openai(SECRETS["a"])
    first = await a.chat.completions.with_raw_response.create(model="m1", messages=MSG)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    assert "x-ratelimit-limit-tokens" not in first.headers  # no tpm: nothing to tell
    await a.chat.completions.create(model="m1", messages=MSG)
    with pytest.raises(openai.RateLimitError) as limited:
        await a.chat.completions.create(model="m1", messages=MSG)
    headers = limited.value.response.headers
    assert limited.value.body["code"] == "rate_limit_exceeded"
    assert "requests per minute" in limited.value.body["message"]
    assert headers["x-ratelimit-remaining-requests"] == "0"
    retry_after = int(headers["Retry-After"])
    assert 1 <= retry_after <= 120 and int(headers["retry-after-ms"]) <= retry_after * 1000
    # another key is not affected; nor is the backend asked
    await gw.openai(SECRETS["b"]).chat.completions.create(model="m1", messages=MSG)
    assert len(sim.behavior.requests) == 3
    clock.now += retry_after
    await a.chat.completions.create(model="m1", messages=MSG)
    rows = await admin_keys(gw)
    assert rows["a"]["totals"] == {**rows["a"]["totals"], "requests": 3, "rate_limited": 1}


async def test_the_sdk_backs_off_on_its_own(start_sim: SimFactory,
                                            start_gateway: GatewayFactory) -> None:
    """The SDK reads retry-after-ms and retries; a real clock here: the window must move."""
    sim = await start_sim("m1")
    clock = FakeClock()
    gw = await start_gateway(teams(endpoint("e", sim), keys=[key("a", max_in_flight=1)]),
                             clock=clock)
    sim.behavior.hang = True
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=SECRETS["a"], max_retries=3)
    gw.clients.append(client)
    held = asyncio.create_task(client.chat.completions.create(model="m1", messages=MSG))
    await _until(lambda: sim.behavior.active == 1)
    second = asyncio.create_task(client.chat.completions.create(model="m1", messages=MSG))
    await _until(lambda: _limited(gw, "a") >= 1)  # refused once, the SDK waits retry-after-ms
    sim.behavior.hang = False
    await asyncio.wait_for(asyncio.gather(held, second), 20)
    assert (await admin_keys(gw))["a"]["totals"]["requests"] == 2


async def test_tpm_charges_backend_usage_and_stream_usage_is_asked_then_hidden(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1")
    clock = FakeClock()
    gw = await start_gateway(teams(endpoint("e", sim), keys=[key("a", tpm=40)]), clock=clock)
    a = gw.openai(SECRETS["a"])
    plain = await a.chat.completions.with_raw_response.create(model="m1", messages=MSG)
    used = plain.parse().usage.total_tokens
    assert int(plain.headers["x-ratelimit-remaining-tokens"]) == 40  # charged when it ends
    chunks = [c async for c in await a.chat.completions.create(model="m1", messages=MSG,
                                                               stream=True)]
    upstream = sim.behavior.requests[-1].json()
    assert upstream["stream_options"] == {"include_usage": True}
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    rows = await admin_keys(gw)
    streamed = rows["a"]["totals"]["tokens"] - used
    assert streamed > 0 and rows["a"]["window"]["tokens"] == used + streamed
    asked = [c async for c in await a.chat.completions.create(
        model="m1", messages=MSG, stream=True, stream_options={"include_usage": True})]
    assert asked[-1].usage is not None and not asked[-1].choices  # the client's own is kept
    while (await admin_keys(gw))["a"]["window"]["tokens"] < 40:
        await a.chat.completions.create(model="m1", messages=MSG)
    with pytest.raises(openai.RateLimitError) as limited:
        await a.chat.completions.create(model="m1", messages=MSG)
    assert "tokens per minute" in limited.value.body["message"]
    assert limited.value.response.headers["x-ratelimit-remaining-tokens"] == "0"
    clock.now += int(limited.value.response.headers["Retry-After"])
    await a.chat.completions.create(model="m1", messages=MSG)


async def test_max_in_flight_and_the_key_metrics(start_sim: SimFactory,
                                                 start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1")
    gw = await start_gateway(teams(endpoint("e", sim), keys=[key("a", max_in_flight=1)]))
    a = gw.openai(SECRETS["a"])
    sim.behavior.hang = True
    held = asyncio.create_task(a.chat.completions.create(model="m1", messages=MSG))
    await _until(lambda: sim.behavior.active == 1)
    assert (await admin_keys(gw))["a"]["in_flight"] == 1
    metrics = await _metrics(gw)
    assert 'fleetlb_key_in_flight{key="a"} 1.0' in metrics
    with pytest.raises(openai.RateLimitError) as limited:
        await a.chat.completions.create(model="m1", messages=MSG)
    assert "concurrent requests" in limited.value.body["message"]
    sim.behavior.hang = False
    await asyncio.wait_for(held, 20)
    await a.chat.completions.create(model="m1", messages=MSG)
    metrics = await _metrics(gw)
    assert 'fleetlb_rate_limited_total{key="a",limit="max_in_flight"} 1.0' in metrics
    assert 'fleetlb_key_in_flight{key="a"} 0.0' in metrics
    assert 'fleetlb_requests_total{api="chat_completions",endpoint="e",key="a",model="m1",' \
        'status="200"} 2.0' in metrics
    assert 'fleetlb_requests_total{api="chat_completions",endpoint="",key="a",model="m1",' \
        'status="429"} 1.0' in metrics


async def test_interactive_waiters_go_first_and_batch_is_promoted_by_age(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1")
    clock = FakeClock()
    gw = await start_gateway(teams(endpoint("e", sim, max_in_flight=1),
                                   keys=[key("a"), key("batch", priority="batch")],
                                   limits={"promote_batch_after": 30.0}), clock=clock)
    a, batch = gw.openai(SECRETS["a"]), gw.openai(SECRETS["batch"])
    admission = gw.app[RUNTIME].current.admission

    async def round_(promote: bool) -> list[str]:
        sim.behavior.requests.clear()
        sim.behavior.hang = True
        tasks = [asyncio.create_task(a.chat.completions.create(model="m1", messages=MSG,
                                                               user="holder"))]
        await _until(lambda: sim.behavior.active == 1)
        tasks.append(asyncio.create_task(batch.chat.completions.create(
            model="m1", messages=MSG, user="batch")))
        await _until(lambda: admission.queued == 1)
        assert admission.queued_by_priority() == {"interactive": 0, "batch": 1}
        if promote:
            clock.now += 30.0  # the batch request has waited long enough
        tasks.append(asyncio.create_task(a.chat.completions.create(
            model="m1", messages=MSG, user="interactive")))
        await _until(lambda: admission.queued == 2)
        sim.behavior.hang = False
        await asyncio.wait_for(asyncio.gather(*tasks), 20)
        return [r.json()["user"] for r in sim.behavior.requests]

    assert await round_(promote=False) == ["holder", "interactive", "batch"]
    assert await round_(promote=True) == ["holder", "batch", "interactive"]
    assert 'fleetlb_queue_depth{priority="batch"} 0.0' in await _metrics(gw)


async def test_ollama_surface_filters_lists_and_limits_in_its_own_shape(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sim = await start_sim("llama3.1:8b", "qwen2.5:7b", kind="ollama")
    gw = await start_gateway(teams(endpoint("o", sim, models=("llama3.1:8b", "qwen2.5:7b"),
                                            kind="ollama"),
                                   keys=[key("a", models=["llama3*"], rpm=2)]),
                             clock=FakeClock())
    client = gw.ollama(SECRETS["a"])
    assert [m.model for m in (await client.list()).models] == ["llama3.1:8b"]
    assert (await client.ps()).models is not None
    with pytest.raises(ollama.ResponseError) as forbidden:
        await client.chat(model="qwen2.5:7b", messages=MSG)
    assert forbidden.value.status_code == 404
    reply = await client.chat(model="llama3.1:8b", messages=MSG)
    assert reply.message.content
    await client.generate(model="llama3.1:8b", prompt="hi")
    with pytest.raises(ollama.ResponseError) as limited:
        await client.chat(model="llama3.1:8b", messages=MSG)
    assert limited.value.status_code == 429
    assert "requests per minute" in limited.value.error
    rows = await admin_keys(gw)
    assert rows["a"]["totals"]["tokens"] > 0  # Ollama's own counts are charged


async def test_responses_http_and_each_websocket_turn_count(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1")
    clock = FakeClock()
    gw = await start_gateway(teams(endpoint("e", sim, responses="translate"),
                                   keys=[key("a", rpm=3)]), clock=clock)
    a = gw.openai(SECRETS["a"])
    await a.responses.create(model="m1", input="hi")
    async with aiohttp.ClientSession() as session, session.ws_connect(
            gw.url + "/v1/responses",
            headers={"Authorization": f"Bearer {SECRETS['a']}"}) as ws:
        statuses = []
        for _ in range(3):
            await ws.send_json({"type": "response.create", "model": "m1", "input": "hi"})
            while True:
                event = await ws.receive_json(timeout=20)
                if event["type"] in ("response.completed", "error", "response.failed"):
                    statuses.append(event.get("status", 200))
                    break
        assert statuses == [200, 200, 429]
    with pytest.raises(openai.RateLimitError):
        await a.responses.create(model="m1", input="hi")
    rows = await admin_keys(gw)
    assert rows["a"]["totals"]["requests"] == 3 and rows["a"]["in_flight"] == 0
    assert rows["a"]["totals"]["tokens"] > 0


async def test_admin_keys_shape(start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1")
    gw = await start_gateway(teams(endpoint("e", sim),
                                   keys=[key("a", models=["llama3*", "m1"], rpm=600,
                                             tpm=200000, max_in_flight=32),
                                         key("batch", priority="batch")]))
    await gw.openai(SECRETS["a"]).chat.completions.create(model="m1", messages=MSG)
    async with aiohttp.ClientSession() as session:
        async with session.get(gw.url + "/admin/keys") as resp:
            assert resp.status == 401  # the admin key is required
        rows = await admin_keys(gw)
    row = rows["a"]
    assert {k: row[k] for k in ("name", "models", "priority", "limits", "in_flight")} == {
        "name": "a", "models": ["llama3*", "m1"], "priority": "interactive",
        "limits": {"rpm": 600, "tpm": 200000, "max_in_flight": 32}, "in_flight": 0}
    assert row["window"]["requests"] == 1 and row["window"]["tokens"] > 0
    assert {k: row["totals"][k] for k in ("requests", "rate_limited")} == \
        {"requests": 1, "rate_limited": 0}
    assert row["totals"]["tokens"] == row["window"]["tokens"]
    assert rows["batch"]["models"] is None and rows["batch"]["priority"] == "batch"
    assert rows["batch"]["limits"] == {"rpm": None, "tpm": None, "max_in_flight": None}
    assert rows["default"]["limits"]["rpm"] is None  # the [server] api_keys entry


async def test_no_secret_in_any_answer_log_or_metric(
        start_sim: SimFactory, start_gateway: GatewayFactory,
        log_lines: Any) -> None:
    sim = await start_sim("m1")
    gw = await start_gateway(teams(endpoint("e", sim), keys=[key("a", rpm=1), key("b")]),
                             clock=FakeClock())
    a = gw.openai(SECRETS["a"])
    await a.chat.completions.create(model="m1", messages=MSG)
    with pytest.raises(openai.RateLimitError) as limited:
        await a.chat.completions.create(model="m1", messages=MSG)
    with pytest.raises(openai.AuthenticationError) as wrong:
        await gw.openai(SECRETS["a"] + "x").chat.completions.create(model="m1", messages=MSG)
    outputs = [str(limited.value.body), str(dict(limited.value.response.headers)),
               str(wrong.value.body), str(await admin_keys(gw)), await _metrics(gw),
               str(log_lines())]
    for text in outputs:
        for secret in SECRETS.values():
            assert secret not in text
    access = [line for line in log_lines() if line.get("event") == "access"]
    assert [line["key"] for line in access[:2]] == ["a", "a"]


async def _metrics(gw: Gateway) -> str:
    async with aiohttp.ClientSession() as session, session.get(
            gw.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
        return await resp.text()


def _limited(gw: Gateway, name: str) -> int:
    from lb.appstate import KEY_GATE
    return gw.app[KEY_GATE].stats.of(name).rate_limited_total


async def _until(check: Any) -> None:
    async with asyncio.timeout(20):
        while not check():
            await asyncio.sleep(0.01)


async def test_every_model_surface_answers_with_the_remaining_quota(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    """x-ratelimit-* on each successful model call, streamed or not, whatever its API; none on
    what is not a model call, nor on a backend's error."""
    sim = await start_sim("m1", kind="ollama")  # an Ollama box answers both APIs
    gw = await start_gateway(teams(endpoint("e", sim, kind="ollama"),
                                   keys=[key("a", rpm=100, tpm=10_000)]))
    auth = {"Authorization": f"Bearer {SECRETS['a']}"}
    chat = {"model": "m1", "messages": MSG, "max_tokens": 3}
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/v1/chat/completions", chat),
        ("POST", "/v1/chat/completions", {**chat, "stream": True}),
        ("POST", "/v1/completions", {"model": "m1", "prompt": "hi", "max_tokens": 3}),
        ("POST", "/v1/embeddings", {"model": "m1", "input": "hi"}),
        ("POST", "/v1/responses", {"model": "m1", "input": "hi"}),
        ("POST", "/v1/responses", {"model": "m1", "input": "hi", "stream": True}),
        ("POST", "/api/chat", {"model": "m1", "messages": MSG}),
        ("POST", "/api/generate", {"model": "m1", "prompt": "hi", "stream": False}),
    ]
    remaining = []
    async with aiohttp.ClientSession(headers=auth) as session:
        for method, path, body in calls:
            async with session.request(method, gw.url + path, json=body) as resp:
                await resp.read()
                assert resp.status == 200, (path, body)
                assert resp.headers["x-ratelimit-limit-requests"] == "100", (path, body)
                assert resp.headers["x-ratelimit-limit-tokens"] == "10000", (path, body)
                assert resp.headers["x-ratelimit-reset-requests"].endswith("s"), (path, body)
                remaining.append(int(resp.headers["x-ratelimit-remaining-requests"]))
        assert remaining == list(range(99, 99 - len(calls), -1))  # each call counted once
        async with session.get(gw.url + "/v1/models") as resp:
            assert resp.status == 200 and "x-ratelimit-limit-requests" not in resp.headers
        sim.behavior.fail_status = 500
        async with session.post(gw.url + "/v1/chat/completions", json=chat) as resp:
            assert resp.status >= 500 and "x-ratelimit-limit-requests" not in resp.headers
