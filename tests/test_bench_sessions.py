"""The agent-sessions bench harness on a tiny budget: it runs, counts and attributes turns.
Nothing here asserts on speed or on which strategy wins."""

from __future__ import annotations

from dataclasses import replace

from bench.conversations import Shape, TurnRecord, summarize
from bench.sessions import SCENARIOS, Timing, run_one

TINY = Timing(duration_s=2.5, warmup_s=0.5)
SHAPE = Shape(conversations=4, turns=3, system_tokens=200, user_tokens=(20, 40),
              answer_tokens=3, think_s=(0.05, 0.1))


async def test_a_tiny_agent_run_reports_every_number() -> None:
    scenario = replace(SCENARIOS[0], shape=SHAPE)
    result = await run_one(scenario, "cache_aware", TINY)
    assert result["errors"] == 0
    assert result["turns"] > 0
    assert abs(sum(result["share"].values()) - 1) < 1e-9
    assert 0 <= result["hit_rate"] <= 1
    assert set(result["routes"]) <= {"prefix", "balance", "miss"}
    assert sum(result["routes"].values()) == result["turns"]


def test_summarize_counts_only_turns_after_the_warm_up() -> None:
    records = [TurnRecord(0.5, "e0", 0.1, 100, 0, "cache_aware;miss;matched=0/4"),
               TurnRecord(2.0, "e0", 0.2, 100, 80, "cache_aware;matched=3/4"),
               TurnRecord(3.0, "e1", 0.4, 100, 40, "cache_aware;balance;matched=3/4")]
    result = summarize(records, since=1.0, seconds=2.0, endpoints=["e0", "e1"])
    assert (result["turns"], result["turns_per_s"], result["hit_rate"]) == (2, 1.0, 0.6)
    assert result["share"] == {"e0": 0.5, "e1": 0.5}
    assert result["routes"] == {"prefix": 1, "balance": 1}
    assert result["uncached_tokens"] == 80
