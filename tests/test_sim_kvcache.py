"""The simulator's KV-cache model: the LRU of blocks, the prefill queue, and what it reports."""

from __future__ import annotations

import asyncio

import aiohttp

from lb.sim.kvcache import KvCache, KvCacheOptions
from lb.sim.stream import Pacer
from tests.conftest import SimFactory

SYSTEM = " ".join(f"rule{i}" for i in range(64))  # 64 tokens: 4 blocks of 16


def cache(blocks: int = 100, **kw: float) -> KvCache:
    return KvCache(KvCacheOptions(blocks=blocks, **kw), Pacer(0.0, 0.0))  # type: ignore[arg-type]


def test_lookup_finds_the_cached_head_in_whole_blocks() -> None:
    kv = cache()
    first = (SYSTEM + " hello there").split()
    assert kv.lookup(first) == 0
    assert kv.lookup(first) == 64  # the two extra words never filled a block
    assert kv.lookup((SYSTEM + " another conversation entirely").split()) == 64
    assert kv.lookup(("different " + SYSTEM).split()) == 0  # a prefix cache serves only a prefix
    assert (kv.prompt_tokens, kv.cached_tokens) == (66 + 66 + 67 + 65, 128)


def test_lookup_evicts_least_recently_used_blocks_tail_first() -> None:
    kv = cache(blocks=4)
    a = " ".join(f"a{i}" for i in range(64)).split()
    kv.lookup(a)
    kv.lookup(" ".join(f"b{i}" for i in range(32)).split())  # 2 new blocks: 2 of a's 4 go
    assert kv.lookup(a) == 32  # a kept its head


async def test_prefills_queue_beyond_the_limit() -> None:
    kv = KvCache(KvCacheOptions(blocks=100, max_prefills=1, prefill_tokens_per_s=1e9),
                 Pacer(0.05, 0.0))
    seen: list[int] = []

    async def one() -> None:
        async with kv.turn(SYSTEM) as turn:
            seen.append(kv.waiting)
            assert turn.cached_tokens is not None

    first = asyncio.create_task(one())
    await asyncio.sleep(0.01)  # the first is prefilling: the second waits for the slot
    second = asyncio.create_task(one())
    await asyncio.sleep(0.01)
    assert kv.waiting == 1 and kv.running == 1
    await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert (kv.waiting, kv.running, kv.active_tokens) == (0, 0, 0)


async def test_sim_reports_cached_tokens_and_metrics(start_sim: SimFactory) -> None:
    sim = await start_sim("m1", kind="vllm", kv_cache=KvCacheOptions(blocks=1000))
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hi"}]
    async with aiohttp.ClientSession() as session:
        usages = []
        for _ in range(2):
            async with session.post(sim.url + "/v1/chat/completions", json={
                    "model": "m1", "messages": messages, "max_tokens": 2}) as resp:
                usages.append((await resp.json())["usage"])
        async with session.post(sim.url + "/v1/chat/completions", json={
                "model": "m1", "messages": messages, "max_tokens": 2, "stream": True,
                "stream_options": {"include_usage": True}}) as resp:
            lines = [line async for line in resp.content if line.startswith(b"data: {")]
        async with session.post(sim.url + "/v1/responses", json={
                "model": "m1", "instructions": SYSTEM, "input": "hi", "max_output_tokens": 2},
                ) as resp:
            response = await resp.json()
        async with session.get(sim.url + "/metrics") as resp:
            metrics = await resp.text()
    assert [u["prompt_tokens_details"]["cached_tokens"] for u in usages] == [0, 64]
    assert b'"cached_tokens":64' in lines[-1]
    assert response["usage"]["input_tokens_details"]["cached_tokens"] == 64
    assert "vllm:kv_cache_usage_perc" in metrics
    assert 'vllm:prefix_cache_hits_total{model_name="m1"} 192' in metrics


async def test_without_the_model_usage_has_no_details(start_sim: SimFactory) -> None:
    sim = await start_sim("m1")
    async with aiohttp.ClientSession() as session, session.post(
            sim.url + "/v1/chat/completions",
            json={"model": "m1", "messages": [{"role": "user", "content": "x"}]}) as resp:
        usage = (await resp.json())["usage"]
    assert "prompt_tokens_details" not in usage
