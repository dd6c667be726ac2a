"""The "agent sessions" workload: many concurrent multi-turn conversations through one gateway.

Each conversation re-sends its whole, growing history every turn (as agents do), optionally after
one system prompt every conversation shares; between turns it thinks. Tokens are the simulator's
words. What each turn saw — endpoint, TTFT, prompt and cached tokens, the route — is kept as a
`TurnRecord`; `summarize` turns them into the report's numbers.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from bench.stats import percentile

MODEL = "agent"
SESSION_HEADER = "X-Session-ID"  # what affinity hashes on


@dataclass(frozen=True, slots=True)
class Shape:
    """What the conversations look like."""

    conversations: int = 48  # running at once; each starts a new one when it ends
    turns: int = 8  # per conversation
    system_tokens: int = 2000  # the shared system prompt (0: none)
    user_tokens: tuple[int, int] = (150, 350)  # per turn, drawn uniformly
    answer_tokens: int = 40
    think_s: tuple[float, float] = (0.5, 1.5)
    shared_prefix: bool = True  # False: every conversation has a system prompt of its own


@dataclass(frozen=True, slots=True)
class TurnRecord:
    started: float  # perf_counter
    endpoint: str
    ttft_s: float
    prompt_tokens: int
    cached_tokens: int
    route: str


def words(prefix: str, n: int) -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


class Conversations:
    """Drives `shape.conversations` conversation loops against `url` until `deadline`."""

    def __init__(self, url: str, key: str, shape: Shape, rng: random.Random,
                 session_key: bool) -> None:
        self._url = url + "/v1/chat/completions"
        self._headers = {"Authorization": f"Bearer {key}"}
        self._shape = shape
        self._rng = rng
        self._session_key = session_key
        self._system = words("sys", shape.system_tokens)
        self._next_id = 0
        self.records: list[TurnRecord] = []
        self.errors = 0

    async def run(self, deadline: float) -> None:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            loops = [self._loop(session, deadline) for _ in range(self._shape.conversations)]
            await asyncio.gather(*loops)

    async def _loop(self, session: aiohttp.ClientSession, deadline: float) -> None:
        shape, rng = self._shape, self._rng
        await asyncio.sleep(rng.uniform(0, shape.think_s[1]))  # do not start in lockstep
        while time.perf_counter() < deadline:
            conv = self._next_id
            self._next_id += 1
            system = (self._system if shape.shared_prefix
                      else words(f"s{conv}x", shape.system_tokens))
            messages: list[dict[str, Any]] = [{"role": "system", "content": system}] \
                if shape.system_tokens else []
            for turn in range(shape.turns):
                if time.perf_counter() >= deadline:
                    return
                messages.append({"role": "user", "content": words(
                    f"c{conv}t{turn}w", rng.randint(*shape.user_tokens))})
                answer = await self._turn(session, messages, conv)
                if answer is None:
                    break  # a failed turn ends its conversation
                messages.append({"role": "assistant", "content": answer})
                await asyncio.sleep(rng.uniform(*shape.think_s))

    async def _turn(self, session: aiohttp.ClientSession, messages: list[dict[str, Any]],
                    conv: int) -> str | None:
        body = {"model": MODEL, "messages": messages, "max_tokens": self._shape.answer_tokens,
                "stream": True, "stream_options": {"include_usage": True}}
        headers = dict(self._headers)
        if self._session_key:
            headers[SESSION_HEADER] = f"conv-{conv}"
        started = time.perf_counter()
        try:
            async with session.post(self._url, data=orjson.dumps(body), headers=headers) as resp:
                if resp.status != 200:
                    self.errors += 1
                    await resp.read()
                    return None
                ttft, pieces, usage = await _read_stream(resp.content, started)
                endpoint = resp.headers.get("x-fleetlb-endpoint", "")
                route = resp.headers.get("x-fleetlb-route", "")
        except (aiohttp.ClientError, TimeoutError):
            self.errors += 1
            return None
        details = usage.get("prompt_tokens_details") or {}
        self.records.append(TurnRecord(started, endpoint, ttft, int(usage.get("prompt_tokens", 0)),
                                       int(details.get("cached_tokens", 0)), route))
        return "".join(pieces)


async def _read_stream(content: aiohttp.StreamReader, started: float,
                       ) -> tuple[float, list[str], dict[str, Any]]:
    ttft = float("nan")
    pieces: list[str] = []
    usage: dict[str, Any] = {}
    async for line in content:
        if not line.startswith(b"data: {"):
            continue
        chunk = orjson.loads(line[6:])
        for choice in chunk.get("choices") or ():
            text = (choice.get("delta") or {}).get("content")
            if text:
                if not pieces:
                    ttft = time.perf_counter() - started
                pieces.append(text)
        if chunk.get("usage"):
            usage = chunk["usage"]
    return ttft, pieces, usage


def _reason(route: str) -> str:
    """`cache_aware;matched=37/40` -> prefix, `cache_aware;balance;matched=...` -> balance."""
    reason = route.split(";")[1]
    return "prefix" if reason.startswith("matched=") else reason


def summarize(records: Sequence[TurnRecord], since: float, seconds: float,
              endpoints: Sequence[str]) -> dict[str, Any]:
    """The report's numbers over the turns that started after the warm-up (`since`)."""
    kept = [r for r in records if r.started >= since]
    prompt = sum(r.prompt_tokens for r in kept)
    cached = sum(r.cached_tokens for r in kept)
    ttfts = [r.ttft_s for r in kept if r.ttft_s == r.ttft_s]
    per_endpoint = Counter(r.endpoint for r in kept)
    reasons = Counter(_reason(r.route) for r in kept if ";" in r.route)
    return {
        "turns": len(kept),
        "turns_per_s": len(kept) / seconds if seconds > 0 else float("nan"),
        "hit_rate": cached / prompt if prompt else float("nan"),
        "ttft_p50_ms": percentile(ttfts, 50) * 1000,
        "ttft_p90_ms": percentile(ttfts, 90) * 1000,
        "share": {name: per_endpoint.get(name, 0) / len(kept) if kept else float("nan")
                  for name in endpoints},
        "routes": dict(reasons),
        "uncached_tokens": prompt - cached,
    }
