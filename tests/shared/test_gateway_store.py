"""The gateway on `[store] kind = "redis"`: a conversation kept in Redis, and what clients see
while Redis is gone (chat served, lookups 503, new responses served unstored) and after."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Gateway, GatewayFactory, SimFactory, endpoint
from tests.fleetlb_process import eventually
from tests.redis_server import RedisServer

KEY = "sk-test"
ADMIN = "adm-test"
BOUND_S = 10.0  # "it did not hang": far above any [redis] timeout


def redis_config(redis: RedisServer, *endpoints: dict[str, Any]) -> dict[str, Any]:
    return {"server": {"api_keys": [KEY], "admin_key": ADMIN}, "endpoints": list(endpoints),
            "store": {"kind": "redis"}, "redis": {"url": redis.url, "timeout": 0.5}}


async def post(gw: Gateway, path: str, body: dict[str, Any]) -> tuple[int, Any, bytes]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as s, \
            s.post(gw.url + path, json=body) as resp:
        return resp.status, resp.headers, await resp.read()


async def get(gw: Gateway, path: str, key: str = KEY) -> tuple[int, Any, bytes]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as s, \
            s.get(gw.url + path) as resp:
        return resp.status, resp.headers, await resp.read()


async def samples(gw: Gateway) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    _, _, text = await get(gw, "/metrics", ADMIN)
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text.decode()) for s in f.samples}


async def test_conversation_lives_in_redis(redis_server: RedisServer, start_sim: SimFactory,
                                           start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1", responses=False)
    gw = await start_gateway(redis_config(redis_server, endpoint("a", sim)))
    client = gw.openai()
    first = await client.responses.create(model="m1", input="one")
    second = await client.responses.create(model="m1", input="two",
                                           previous_response_id=first.id)
    items = await client.responses.input_items.list(second.id, order="asc")
    assert [i.type for i in items.data] == ["message"] * 3
    assert (await client.responses.retrieve(second.id)).output_text == second.output_text
    await client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(first.id)


async def test_redis_gone_and_back(redis_server: RedisServer, start_sim: SimFactory,
                                   start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1", responses=False)
    gw = await start_gateway(redis_config(redis_server, endpoint("a", sim)))
    status, _, body = await post(gw, "/v1/responses", {"model": "m1", "input": "one"})
    first_id = orjson.loads(body)["id"]
    redis_server.kill()
    async with asyncio.timeout(BOUND_S):
        # the relay does not need Redis
        status, _, _ = await post(gw, "/v1/chat/completions", {
            "model": "m1", "messages": [{"role": "user", "content": "hi"}]})
        assert status == 200
        # what needs the store fails closed, with a hint when to come back
        status, headers, body = await post(gw, "/v1/responses", {
            "model": "m1", "input": "two", "previous_response_id": first_id})
        assert status == 503, body
        assert orjson.loads(body)["error"]["code"] == "store_unavailable"
        assert int(headers["Retry-After"]) >= 1
        for path in (f"/v1/responses/{first_id}", f"/v1/responses/{first_id}/input_items"):
            status, headers, body = await get(gw, path)
            assert status == 503 and "Retry-After" in headers, body
        # a new response is served, and says it was not stored (body and stream alike)
        status, headers, body = await post(gw, "/v1/responses", {"model": "m1", "input": "x"})
        assert status == 200 and headers["x-fleetlb-stored"] == "false"
        assert orjson.loads(body)["status"] == "completed"
        status, headers, body = await post(gw, "/v1/responses",
                                           {"model": "m1", "input": "x", "stream": True})
        assert status == 200 and headers["x-fleetlb-stored"] == "false"
        assert body.endswith(b"data: [DONE]\n\n")
        status, _, _ = await post(gw, "/v1/responses", {"model": "m1", "input": "x",
                                                          "store": False})
        assert status == 200
        status, _, _ = await get(gw, "/readyz")
        assert status == 200
    metrics = await samples(gw)
    assert metrics[("fleetlb_redis_up", frozenset())] == 0
    assert metrics[("fleetlb_redis_errors_total", frozenset({("op", "store_get")}))] >= 3
    assert metrics[("fleetlb_responses_not_stored_total", frozenset())] == 2

    redis_server.start()

    async def stores_again() -> bool:
        status, headers, _ = await post(gw, "/v1/responses", {"model": "m1", "input": "y"})
        return status == 200 and "x-fleetlb-stored" not in headers

    await eventually(stores_again, "the store did not come back with Redis")
    client = gw.openai()
    again = await client.responses.create(model="m1", input="three")
    follow = await client.responses.create(model="m1", input="four",
                                           previous_response_id=again.id)
    assert follow.status == "completed"
    assert (await samples(gw))[("fleetlb_redis_up", frozenset())] == 1
