"""`python -m bench.sessions [--quick] [--scenarios agent,no_prefix,slow] [--json out.json]`

Does cache_aware keep conversations on their KV cache without giving up balance? Agent sessions
(lb/sim's KV-cache model behind fleetlb, in one process on 127.0.0.1) under each strategy:
prefix-cache hit rate, TTFT p50/p90, turns/s and each endpoint's share of the turns. Separate from
`python -m bench` (the gateway's overhead): this measures where requests go, not what fleetlb costs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from aiohttp import web

from bench.conversations import MODEL, Conversations, Shape, summarize
from lb.app import build_app
from lb.appstate import RUNTIME
from lb.config import parse_config
from lb.observe import RequestRecord, configure_logging
from lb.routing import Router
from lb.sim.app import build_sim_app
from lb.sim.kvcache import KvCacheOptions
from lb.sim.options import SimBehavior, SimOptions

KEY = "sk-bench"
STRATEGIES = ("cache_aware", "least_loaded", "least_in_flight", "affinity", "weighted")
# One simulated GPU box: 24k tokens of KV cache, two prefills at once at 3k tokens/s, 100 tokens/s
# decode, 8 requests at once (max_in_flight). 48 conversations over 4 of them offer ~70 % of the
# prefill capacity of a spread (least_in_flight) fleet, whose caches miss most histories.
BOX_KV = KvCacheOptions(blocks=2500, block_tokens=16, prefill_tokens_per_s=3000.0, max_prefills=2,
                        decode_slowdown=0.05)
BOX_SLOTS = 8
BOX_TTFT_MS, BOX_TOKENS_PER_S = 10.0, 100.0
SLOW_FACTOR = 4.0  # the slow box: this much slower at prefill and decode
PROBE_INTERVAL_S = 0.5


@dataclass(frozen=True, slots=True)
class Backend:
    kv: KvCacheOptions = BOX_KV
    ttft_ms: float = BOX_TTFT_MS
    tokens_per_s: float = BOX_TOKENS_PER_S
    slots: int = BOX_SLOTS  # its max_in_flight


BOX = Backend()
SLOW = Backend(replace(BOX_KV, prefill_tokens_per_s=BOX_KV.prefill_tokens_per_s / SLOW_FACTOR),
               tokens_per_s=BOX_TOKENS_PER_S / SLOW_FACTOR)
# the reference for hit rates: one box as big as the four together
BIG = Backend(replace(BOX_KV, blocks=BOX_KV.blocks * 4, max_prefills=BOX_KV.max_prefills * 4),
              slots=BOX_SLOTS * 4)


@dataclass(frozen=True, slots=True)
class Scenario:
    key: str
    title: str
    shape: Shape
    backends: tuple[Backend, ...]
    strategies: tuple[str, ...]
    warm_on_first_s: float = 0.0  # this long only the first backend serves (it gets every prefix)


SCENARIOS = (
    Scenario("agent", "agent sessions: shared 2k-token system prompt, growing histories",
             Shape(), (BOX,) * 4, STRATEGIES),
    Scenario("single", "the same sessions on one box as big as the four (hit-rate reference)",
             Shape(), (BIG,), ("least_in_flight",)),
    Scenario("no_prefix", "single turns, no shared prefix: the cache cannot help",
             Shape(turns=1, shared_prefix=False, think_s=(0.2, 0.6)), (BOX,) * 4,
             ("cache_aware", "least_loaded")),
    Scenario("slow", "one box 4x slower holds every prefix (it served the first seconds alone)",
             Shape(), (SLOW, BOX, BOX, BOX), ("cache_aware", "least_loaded"), warm_on_first_s=3.0),
)


@dataclass(frozen=True, slots=True)
class Timing:
    duration_s: float = 20.0
    warmup_s: float = 5.0  # turns started before this are not counted: every cache starts cold


QUICK = Timing(duration_s=8.0, warmup_s=3.0)


class _Quiet:
    """An access log that writes nothing: the bench reads headers, not logs."""

    def write(self, record: RequestRecord) -> None:
        return None

    def flush(self) -> None:
        return None


@dataclass(slots=True)
class _Servers:
    runners: list[web.AppRunner] = field(default_factory=list)

    async def start(self, app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.runners.append(runner)
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def stop(self) -> None:
        for runner in reversed(self.runners):
            await runner.cleanup()


def gateway_config(urls: Sequence[str], slots: Sequence[int], strategy: str,
                   knobs: dict[str, Any]) -> dict[str, Any]:
    model: dict[str, Any] = {"name": MODEL, "strategy": strategy}
    if knobs:
        model["cache_aware"] = knobs
    return {
        "server": {"api_keys": [KEY], "max_queued": 4096, "queue_timeout": 60.0},
        "timeouts": {"first_byte": 120.0, "idle": 60.0},
        "probes": {"interval": PROBE_INTERVAL_S, "timeout": 1.0, "rise": 1, "fall": 3},
        "store": {"kind": "memory"},
        "endpoints": [{"name": f"e{i}", "url": url, "kind": "vllm", "models": [MODEL],
                       "max_in_flight": n}
                      for i, (url, n) in enumerate(zip(urls, slots, strict=True))],
        "models": [model],
    }


async def run_one(scenario: Scenario, strategy: str, timing: Timing, seed: int = 1,
                  knobs: dict[str, Any] | None = None) -> dict[str, Any]:
    servers = _Servers()
    try:
        urls = [await servers.start(build_sim_app(SimOptions(
            models=(MODEL,), kind="vllm", ttft_ms=b.ttft_ms, tokens_per_s=b.tokens_per_s,
            kv_cache=b.kv, name=f"sim{i}"), SimBehavior(record_limit=0)))
            for i, b in enumerate(scenario.backends)]
        slots = [b.slots for b in scenario.backends]
        config = parse_config(gateway_config(urls, slots, strategy, knobs or {}), env={})
        app = build_app(config, rng=random.Random(seed), access_log=_Quiet())
        url = await servers.start(app)
        runtime = app[RUNTIME]
        load = Conversations(url, KEY, scenario.shape, random.Random(seed),
                             session_key=strategy == "affinity")
        start = time.perf_counter()
        deadline = start + timing.duration_s
        warm = asyncio.create_task(_serve_first_alone(runtime.current.router,
                                                      scenario.warm_on_first_s))
        await load.run(deadline)
        await warm
        measured = time.perf_counter() - start - timing.warmup_s
        names = [f"e{i}" for i in range(len(urls))]
        result = summarize(load.records, start + timing.warmup_s, measured, names)
        result["errors"] = load.errors
        capacity = sum(b.kv.prefill_tokens_per_s * b.kv.max_prefills for b in scenario.backends)
        result["prefill_load"] = result.pop("uncached_tokens") / (capacity * measured)
        return result
    finally:
        await servers.stop()


async def _serve_first_alone(router: Router, seconds: float) -> None:
    """Drain every endpoint but the first for `seconds`, so the prefix map learns that the first
    holds every conversation; then put them back."""
    if seconds <= 0:
        return
    others = [ep for ep in router.fleet if ep.name != "e0"]
    for ep in others:
        ep.draining = True
    router.fleet.models_changed()
    await asyncio.sleep(seconds)
    for ep in others:
        ep.draining = False
    router.fleet.models_changed()


def _row(scenario: str, strategy: str, result: dict[str, Any]) -> str:
    share = " ".join(f"{v:4.0%}" for v in result["share"].values())
    routes = ",".join(f"{k}={v}" for k, v in sorted(result["routes"].items()))
    return (f"{scenario:10} {strategy:16} {result['hit_rate']:6.1%} {result['ttft_p50_ms']:8.0f} "
            f"{result['ttft_p90_ms']:8.0f} {result['turns_per_s']:7.1f} "
            f"{result['prefill_load']:5.0%}  {share:24} {routes}")


async def run_all(scenarios: Sequence[Scenario], timing: Timing,
                  say: Any = print) -> list[dict[str, Any]]:
    say(f"{'scenario':10} {'strategy':16} {'hit':>6} {'p50 ms':>8} {'p90 ms':>8} "
        f"{'turns/s':>7} {'load':>5}  {'share per endpoint':24} routes")
    rows = []
    for scenario in scenarios:
        for strategy in scenario.strategies:
            result = await run_one(scenario, strategy, timing)
            say(_row(scenario.key, strategy, result))
            rows.append({"scenario": scenario.key, "strategy": strategy, **result})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sessions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 s per run instead of 20")
    parser.add_argument("--scenarios", default=",".join(s.key for s in SCENARIOS),
                        help="comma-separated: " + ",".join(s.key for s in SCENARIOS))
    parser.add_argument("--json", help="write every number to this file")
    args = parser.parse_args(argv)
    wanted = [k.strip() for k in args.scenarios.split(",") if k.strip()]
    chosen = [s for s in SCENARIOS if s.key in wanted]
    if len(chosen) != len(wanted):
        parser.error(f"unknown scenario in {args.scenarios!r}")
    configure_logging(level=logging.WARNING, stream=open(os.devnull, "wb"))  # noqa: SIM115
    rows = asyncio.run(run_all(chosen, QUICK if args.quick else Timing()))
    if args.json:
        with open(args.json, "wb") as out:
            out.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    return 0 if all(r["turns"] > 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
