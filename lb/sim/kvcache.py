"""A KV-cache model for the simulated backend, so routing can be judged without GPUs.

A finite LRU cache of prompt blocks (chained hashes of `block_tokens` tokens, like vLLM's automatic
prefix caching), a few concurrent prefills with the rest queued, TTFT = base + uncached prompt
tokens ÷ prefill rate, and decode slowed by the batch (requests decoding at once). Tokens are the
simulator's words.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from lb.sim.stream import Pacer


@dataclass(slots=True, frozen=True)
class KvCacheOptions:
    """The shape of one simulated backend's KV cache and compute."""

    blocks: int = 4096  # cache capacity in blocks (4096 x 16 = 64k tokens)
    block_tokens: int = 16  # vLLM's default block size
    prefill_tokens_per_s: float = 20_000.0  # uncached prompt tokens one prefill processes a second
    max_prefills: int = 2  # prefills at once; more requests wait in the backend's queue
    decode_slowdown: float = 0.05  # each other decoding request makes a token this much slower


@dataclass(slots=True, frozen=True)
class KvTurn:
    """One request's view of the cache: what it found, and how its tokens are paced."""

    cached_tokens: int | None  # None: the backend has no KV model (usage shows no details)
    pacer: Pacer


class KvCache:
    """The cache and the prefill queue of one simulated backend."""

    def __init__(self, options: KvCacheOptions, pacer: Pacer) -> None:
        self.options = options
        self._pacer = pacer  # --ttft-ms is the base TTFT, --tokens-per-s the unbatched rate
        self._blocks: OrderedDict[int, None] = OrderedDict()
        self._prefills = asyncio.Semaphore(options.max_prefills)
        self._space = asyncio.Condition()  # notified when a request frees its blocks
        self.waiting = 0  # queued for a prefill slot
        self.prefilling = 0
        self.decoding = 0
        self.active_tokens = 0  # prompt tokens of the requests running now
        self.prompt_tokens = 0  # totals over the backend's life
        self.cached_tokens = 0

    @property
    def running(self) -> int:
        return self.prefilling + self.decoding

    @property
    def usage(self) -> float:
        """The share of the cache the running requests hold (vLLM's kv_cache_usage_perc: a
        cached block nobody is using counts as free, since it can be evicted at once)."""
        capacity = self.options.blocks * self.options.block_tokens
        return min(1.0, self.active_tokens / capacity)

    def lookup(self, tokens: Sequence[str]) -> int:
        """Cached tokens at the head of `tokens`; then every full block of it is cached."""
        size = self.options.block_tokens
        blocks = self._blocks
        hashes: list[int] = []
        previous = 0
        for start in range(0, len(tokens) - size + 1, size):
            previous = hash((previous, *tokens[start:start + size]))
            hashes.append(previous)
        hits = 0
        for h in hashes:
            if h not in blocks:
                break
            hits += 1
        for h in reversed(hashes):  # the head most recently used: evicted last
            blocks[h] = None
            blocks.move_to_end(h)
        while len(blocks) > self.options.blocks:
            blocks.popitem(last=False)
        cached = hits * size
        self.prompt_tokens += len(tokens)
        self.cached_tokens += cached
        return cached

    @contextlib.asynccontextmanager
    async def turn(self, prompt: str) -> AsyncIterator[KvTurn]:
        """Wait for a prefill slot, prefill what is not cached, then decode in the batch."""
        tokens = prompt.split()
        self.waiting += 1
        try:
            await self._admit(len(tokens))
        finally:
            self.waiting -= 1
        try:
            self.prefilling += 1
            try:
                cached = self.lookup(tokens)
                uncached = len(tokens) - cached
                await asyncio.sleep(self._pacer.ttft_s
                                    + uncached / self.options.prefill_tokens_per_s)
            finally:
                self.prefilling -= 1
                self._prefills.release()
            gap = self._pacer.token_gap_s * (1 + self.options.decode_slowdown * self.decoding)
            self.decoding += 1
            try:
                yield KvTurn(cached, Pacer(0.0, gap))
            finally:
                self.decoding -= 1
        finally:
            self.active_tokens -= len(tokens)
            async with self._space:
                self._space.notify_all()

    async def _admit(self, n_tokens: int) -> None:
        """A prefill slot, then room in the cache for the whole prompt: like vLLM, a request
        waits while the running ones hold the blocks it needs (one alone always runs)."""
        await self._prefills.acquire()
        try:
            capacity = self.options.blocks * self.options.block_tokens
            async with self._space:
                await self._space.wait_for(
                    lambda: not self.active_tokens or self.active_tokens + n_tokens <= capacity)
                self.active_tokens += n_tokens  # admitted: its blocks are held until it ends
        except BaseException:
            self._prefills.release()
            raise

    def metric_lines(self, model: str) -> list[str]:
        """vLLM's gauges and counters for this cache (the prober reads the KV-cache use)."""
        label = f'{{model_name="{model}"}}'
        return [
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f"vllm:kv_cache_usage_perc{label} {self.usage:.4f}",
            "# TYPE vllm:prefix_cache_queries counter",
            f"vllm:prefix_cache_queries_total{label} {self.prompt_tokens}",
            "# TYPE vllm:prefix_cache_hits counter",
            f"vllm:prefix_cache_hits_total{label} {self.cached_tokens}",
        ]


class NoKvCache:
    """A backend without the model: the options' pacing, nothing cached, nothing reported."""

    __slots__ = ("_turn",)
    waiting = 0

    def __init__(self, pacer: Pacer) -> None:
        self._turn = KvTurn(None, pacer)

    @contextlib.asynccontextmanager
    async def turn(self, prompt: str) -> AsyncIterator[KvTurn]:
        yield self._turn

    def metric_lines(self, model: str) -> list[str]:
        return []


def kv_cache(options: KvCacheOptions | None, pacer: Pacer) -> KvCache | NoKvCache:
    return NoKvCache(pacer) if options is None else KvCache(options, pacer)
