"""Two fleetlb processes on one real redis-server: a conversation whose turns alternate between
them (translate and native mode), stored responses read and deleted on the other one, native
follow-ups reaching their owner endpoint, and Redis SIGKILLed and restarted under traffic."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from tests.conftest import Sim, SimFactory
from tests.fleetlb_process import ADMIN, FleetlbProcess, eventually
from tests.redis_server import RedisServer

KEY = "sk-test"  # the unlimited "default" key
TEAM_KEY = "sk-team-a-secret"  # rpm = 4, counted across both instances
BOUND_S = 10.0  # one request "did not hang": far above [redis] timeout (0.5 s here)
Start = Callable[..., Awaitable[FleetlbProcess]]


def two_instance_toml(redis: RedisServer, chat: Sim, native_a: Sim, native_b: Sim) -> str:
    return f'''
[server]
api_keys = ["{KEY}"]
admin_key = "{ADMIN}"
[probes]
interval = 1.0
[redis]
url_env = "FLEETLB_REDIS_URL"
timeout = 0.5
[store]
kind = "redis"
[responses]
compaction_key = "{"c" * 32}"
[limits]
shared = true
[[keys]]
name = "team-a"
key = "{TEAM_KEY}"
rpm = 4
[[endpoints]]
name = "chat"
url = "{chat.url}"
models = ["chatty"]
responses = "translate"
[[endpoints]]
name = "na"
url = "{native_a.url}"
models = ["deep"]
responses = "native"
[[endpoints]]
name = "nb"
url = "{native_b.url}"
models = ["deep"]
responses = "native"
'''


@pytest.fixture
async def start_fleetlb(tmp_path: Path) -> AsyncIterator[Start]:
    processes: list[FleetlbProcess] = []

    async def start(config: str, redis: RedisServer) -> FleetlbProcess:
        folder = tmp_path / f"instance-{len(processes)}"
        folder.mkdir()
        process = await FleetlbProcess.start(folder, config, {"FLEETLB_REDIS_URL": redis.url})
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.kill()


@pytest.fixture
async def pair(redis_server: RedisServer, start_sim: SimFactory, start_fleetlb: Start
               ) -> tuple[FleetlbProcess, FleetlbProcess, dict[str, Sim]]:
    sims = {"chat": await start_sim("chatty", responses=False),
            "na": await start_sim("deep"), "nb": await start_sim("deep")}
    config = two_instance_toml(redis_server, sims["chat"], sims["na"], sims["nb"])
    a, b = await start_fleetlb(config, redis_server), await start_fleetlb(config, redis_server)
    return a, b, sims


def sdk(process: FleetlbProcess) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=process.url + "/v1", api_key=KEY, max_retries=0,
                              timeout=20)


def native_posts(sim: Sim) -> list[dict[str, Any]]:
    """Turns the backend served (not the probes' `{}` that detect the Responses API)."""
    return [r.json() for r in sim.behavior.requests
            if r.path == "/v1/responses" and r.method == "POST" and r.json()]


async def call(method: str, url: str, body: dict[str, Any] | None = None, key: str = KEY
               ) -> tuple[int, Any, bytes]:
    async with asyncio.timeout(BOUND_S), aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {key}"}) as s, \
            s.request(method, url, json=body) as resp:
        return resp.status, resp.headers, await resp.read()


async def test_translate_conversation_alternates_between_instances(
        pair: tuple[FleetlbProcess, FleetlbProcess, dict[str, Sim]]) -> None:
    a, b, sims = pair
    on_a, on_b = sdk(a), sdk(b)
    try:
        first = await on_a.responses.create(model="chatty", input="one")
        second = await on_b.responses.create(model="chatty", input="two",
                                             previous_response_id=first.id)
        stream = await on_a.responses.create(model="chatty", input="three", stream=True,
                                             previous_response_id=second.id)
        third = [event async for event in stream][-1].response  # type: ignore[union-attr]
        chats = [r.json() for r in sims["chat"].behavior.requests
                 if r.path == "/v1/chat/completions"]
        assert [(m["role"], m["content"]) for m in chats[2]["messages"]] == [
            ("user", "one"), ("assistant", first.output_text),
            ("user", "two"), ("assistant", second.output_text), ("user", "three")]
        assert (await on_b.responses.retrieve(third.id)).output_text == third.output_text
        items = await on_b.responses.input_items.list(third.id, order="asc")
        assert len(items.data) == 5
        await on_b.responses.delete(first.id)
        for client in (on_a, on_b):
            with pytest.raises(openai.NotFoundError):
                await client.responses.retrieve(first.id)
        with pytest.raises(openai.NotFoundError) as info:
            await on_a.responses.create(model="chatty", input="x",
                                        previous_response_id=first.id)
        assert info.value.body["code"] == "previous_response_not_found"  # type: ignore[index]
    finally:
        await on_a.close()
        await on_b.close()


async def test_native_follow_ups_reach_their_owner_from_either_instance(
        pair: tuple[FleetlbProcess, FleetlbProcess, dict[str, Sim]]) -> None:
    a, b, sims = pair
    on = itertools.cycle([sdk(a), sdk(b)])
    clients = [next(on), next(on)]
    try:
        raw = await clients[0].responses.with_raw_response.create(model="deep", input="turn 0")
        owner = raw.headers["x-fleetlb-endpoint"]
        previous = raw.parse()
        for turn in range(1, 5):
            client = next(on)
            raw = await client.responses.with_raw_response.create(
                model="deep", input=f"turn {turn}", previous_response_id=previous.id)
            assert raw.headers["x-fleetlb-endpoint"] == owner
            previous = raw.parse()  # the sim 404s an id it did not store: this is the owner
            assert (await next(on).responses.retrieve(previous.id)).id == previous.id
        assert len(native_posts(sims[owner])) == 5
        assert native_posts(sims["nb" if owner == "na" else "na"]) == []
        # input_items and cancel of a native response reach its owner from either instance
        for process in (a, b):
            status, headers, body = await call(
                "GET", process.url + f"/v1/responses/{previous.id}/input_items")
            assert status == 200 and headers["x-fleetlb-endpoint"] == owner, body
            status, headers, body = await call(
                "POST", process.url + f"/v1/responses/{previous.id}/cancel")
            assert headers["x-fleetlb-endpoint"] == owner  # the owner knows it: a 400, not 404
            assert status == 400 and b"background" in body, body
        await clients[1].responses.delete(previous.id)
        with pytest.raises(openai.NotFoundError):
            await clients[0].responses.retrieve(previous.id)
    finally:
        for client in clients:
            await client.close()


async def test_redis_sigkilled_and_restarted_under_traffic(
        redis_server: RedisServer,
        pair: tuple[FleetlbProcess, FleetlbProcess, dict[str, Sim]]) -> None:
    a, b, _ = pair
    chat_statuses: list[int] = []
    stop = asyncio.Event()

    async def chat_all_along() -> None:
        for process in itertools.cycle([a, b]):
            if stop.is_set():
                return
            status, _, _ = await call("POST", process.url + "/v1/chat/completions", {
                "model": "chatty", "max_tokens": 2,
                "messages": [{"role": "user", "content": "hi"}]})
            chat_statuses.append(status)

    chatter = asyncio.create_task(chat_all_along())
    _, _, body = await call("POST", a.url + "/v1/responses", {"model": "chatty", "input": "1"})
    stored_id = orjson.loads(body)["id"]
    redis_server.kill()
    for process in (a, b):
        status, headers, body = await call("POST", process.url + "/v1/responses", {
            "model": "chatty", "input": "2", "previous_response_id": stored_id})
        assert status == 503 and "Retry-After" in headers, body
        assert orjson.loads(body)["error"]["code"] == "store_unavailable"
        status, headers, _ = await call("GET", process.url + f"/v1/responses/{stored_id}")
        assert status == 503 and "Retry-After" in headers
        status, headers, body = await call("POST", process.url + "/v1/responses",
                                           {"model": "chatty", "input": "3"})
        assert status == 200 and headers["x-fleetlb-stored"] == "false", body
        status, _, _ = await call("GET", process.url + "/readyz")
        assert status == 200
        errors = [v for (name, _), v in (await process.metrics()).items()
                  if name == "fleetlb_redis_errors_total"]
        assert sum(errors) >= 2
        assert len(process.events("redis_unavailable")) == 1  # one warning, not one per call
    redis_server.start()  # empty: it kept nothing (no persistence), as after a real crash

    async def store_works_again() -> bool:
        status, headers, body = await call("POST", a.url + "/v1/responses",
                                           {"model": "chatty", "input": "4"})
        if status != 200 or "x-fleetlb-stored" in headers:
            return False
        status, _, _ = await call("GET", b.url + f"/v1/responses/{orjson.loads(body)['id']}")
        return status == 200

    await eventually(store_works_again, "the store did not come back with Redis")
    stop.set()
    await chatter
    assert chat_statuses and set(chat_statuses) == {200}


async def team_chat(process: FleetlbProcess) -> tuple[int, Any, bytes]:
    return await call("POST", process.url + "/v1/chat/completions", {
        "model": "chatty", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]},
        key=TEAM_KEY)


async def test_a_team_rpm_is_enforced_across_both_and_fails_open_without_redis(
        redis_server: RedisServer,
        pair: tuple[FleetlbProcess, FleetlbProcess, dict[str, Sim]]) -> None:
    a, b, _ = pair
    remaining = []
    for process in (a, b, a, b):
        status, headers, body = await team_chat(process)
        assert status == 200, body
        remaining.append(int(headers["x-ratelimit-remaining-requests"]))
    assert remaining == [3, 2, 1, 0]
    for process in (a, b):
        status, headers, body = await team_chat(process)
        assert status == 429, body
        assert orjson.loads(body)["error"]["code"] == "rate_limit_exceeded"
        assert int(headers["Retry-After"]) >= 1
        assert headers["x-ratelimit-limit-requests"] == "4"
    redis_server.kill()
    for process in (a, b, a, b):  # fail open: over the limit, and served
        status, headers, body = await team_chat(process)
        assert status == 200, body
        assert "x-ratelimit-remaining-requests" not in headers
    for process in (a, b):
        status, _, _ = await call("GET", process.url + "/readyz")
        assert status == 200
        metrics = await process.metrics()
        assert metrics[("fleetlb_redis_errors_total", frozenset({("op", "limits")}))] >= 1
    redis_server.start()

    async def counted_again() -> bool:
        status, headers, _ = await team_chat(a)
        return status == 200 and "x-ratelimit-remaining-requests" in headers

    await eventually(counted_again, "limits did not come back with Redis")
