"""GET /metrics: admin-guarded Prometheus text that parses, counters that move, bounded labels."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lb.metrics import api_of
from tests.conftest import Gateway, GatewayFactory, SimFactory, dead_url, endpoint

KEY, ADMIN = "sk-test", "adm-test"
MSG = [{"role": "user", "content": "hello"}]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def keyed(*endpoints: dict[str, Any], **sections: Any) -> dict[str, Any]:
    return {"server": {"api_keys": [KEY], "admin_key": ADMIN}, "endpoints": list(endpoints),
            **sections}


async def scrape(gw: Gateway) -> Samples:
    async with aiohttp.ClientSession() as s, s.get(
            gw.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await resp.text()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples that carry `labels` (others, e.g. `key`, summed over)."""
    wanted = frozenset(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


async def test_metrics_need_the_admin_key(start_sim: SimFactory,
                                          start_gateway: GatewayFactory) -> None:
    gw = await start_gateway(keyed(endpoint("a", await start_sim("m1"))))
    async with aiohttp.ClientSession() as s:
        for headers in ({}, {"Authorization": f"Bearer {KEY}"}):
            async with s.get(gw.url + "/metrics", headers=headers) as resp:
                assert resp.status == 401
                assert (await resp.json())["error"]["code"] == "invalid_api_key"
    samples = await scrape(gw)
    assert value(samples, "fleetlb_config_reloads_total", result="ok") == 0
    assert value(samples, "fleetlb_endpoint_up", endpoint="a") == 1


async def test_counters_move_as_requests_pass(start_sim: SimFactory,
                                              start_gateway: GatewayFactory) -> None:
    gw = await start_gateway(keyed(endpoint("a", await start_sim("m1", "emb"), ("m1", "emb"))))
    c = gw.openai()
    before = await scrape(gw)
    chat = await c.chat.completions.create(model="m1", messages=MSG, max_tokens=4)
    stream = await c.chat.completions.create(model="m1", messages=MSG, max_tokens=6, stream=True,
                                             stream_options={"include_usage": True})
    usage = [chunk.usage async for chunk in stream if chunk.usage][-1]
    await c.embeddings.create(model="emb", input=["x"])
    after = await scrape(gw)
    chat_labels = {"model": "m1", "endpoint": "a", "api": "chat_completions"}
    assert value(before, "fleetlb_requests_total", **chat_labels, status="200") == 0
    assert value(after, "fleetlb_requests_total", **chat_labels, status="200") == 2
    assert value(after, "fleetlb_request_duration_seconds_count", **chat_labels) == 2
    assert value(after, "fleetlb_time_to_first_byte_seconds_count", **chat_labels) == 2
    assert value(after, "fleetlb_requests_total", model="emb", endpoint="a", api="embeddings",
                 status="200") == 1
    assert chat.usage is not None and usage is not None
    assert value(after, "fleetlb_tokens_total", model="m1", endpoint="a", kind="output") == \
        chat.usage.completion_tokens + usage.completion_tokens == 10
    assert value(after, "fleetlb_tokens_total", model="m1", endpoint="a", kind="input") == \
        chat.usage.prompt_tokens + usage.prompt_tokens
    assert value(after, "fleetlb_in_flight", endpoint="a") == 0
    assert value(after, "fleetlb_requests_total", model="", endpoint="", api="metrics",
                 status="200") == 1  # the first scrape


async def test_ollama_token_counts_are_counted(start_sim: SimFactory,
                                               start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1", kind="ollama")
    gw = await start_gateway(keyed(endpoint("a", sim, kind="ollama")))
    c = gw.ollama(key=KEY)
    plain = await c.chat(model="m1", messages=MSG, options={"num_predict": 3})
    parts = [p async for p in await c.chat(model="m1", messages=MSG, stream=True,
                                           options={"num_predict": 4})]
    samples = await scrape(gw)
    assert plain.eval_count == 3 and parts[-1].eval_count == 4
    assert value(samples, "fleetlb_tokens_total", model="m1", endpoint="a", kind="output") == 7
    assert value(samples, "fleetlb_tokens_total", model="m1", endpoint="a", kind="input") == (
        (plain.prompt_eval_count or 0) + (parts[-1].prompt_eval_count or 0))
    assert value(samples, "fleetlb_requests_total", model="m1", endpoint="a", api="ollama_chat",
                 status="200") == 2


async def test_unknown_models_are_not_labels(start_sim: SimFactory,
                                             start_gateway: GatewayFactory) -> None:
    gw = await start_gateway(keyed(endpoint("a", await start_sim("m1"))))
    for name in ("no-such-model-1", "no-such-model-2"):
        with pytest.raises(openai.NotFoundError):
            await gw.openai().chat.completions.create(model=name, messages=MSG)
    samples = await scrape(gw)
    assert value(samples, "fleetlb_requests_total", model="unknown", endpoint="",
                 api="chat_completions", status="404") == 2
    assert not any("no-such-model" in v for _, labels in samples for _, v in labels)


async def test_retries_stream_failures_and_queue_waits(start_sim: SimFactory,
                                                        start_gateway: GatewayFactory) -> None:
    flaky = await start_sim("m1")
    slow = await start_sim("m2", tokens_per_s=200)
    gw = await start_gateway(keyed(
        endpoint("dead", dead_url(), priority=0), endpoint("flaky", flaky, priority=1),
        endpoint("slow", slow, ("m2",), max_in_flight=1),
        models=[{"name": "m1", "strategy": "priority"}]))
    c = gw.openai()
    await c.chat.completions.create(model="m1", messages=MSG, max_tokens=2)  # dead, then flaky
    flaky.behavior.die_after_chunks = 2
    with pytest.raises(openai.APIError):
        async for _ in await c.chat.completions.create(model="m1", messages=MSG, stream=True):
            pass
    # two requests for one slot: the second waits in the queue
    await asyncio.gather(*(c.chat.completions.create(model="m2", messages=MSG, max_tokens=5)
                           for _ in range(2)))
    samples = await scrape(gw)
    assert value(samples, "fleetlb_retries_total", model="m1") == 2
    assert value(samples, "fleetlb_stream_failures_total", model="m1", endpoint="flaky") == 1
    assert value(samples, "fleetlb_queue_wait_seconds_count") >= 1
    assert value(samples, "fleetlb_endpoint_supports_responses", endpoint="flaky") == 0


@pytest.mark.parametrize(("path", "api"), [
    ("/v1/chat/completions", "chat_completions"),
    ("/openai/v1/completions", "completions"),
    ("/v1/embeddings", "embeddings"),
    ("/v1/models", "models"),
    ("/v1/responses", "responses"),
    ("/v1/responses/resp_123/input_items", "responses"),
    ("/api/chat", "ollama_chat"),
    ("/admin/endpoints", "admin"),
    ("/metrics", "metrics"),
    ("/healthz", "health"),
    ("/wp-login.php", "other"),
])
def test_api_label_is_a_fixed_set(path: str, api: str) -> None:
    assert api_of(path) == api
