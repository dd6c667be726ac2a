"""cache_aware against two real vLLM replicas with prefix caching: multi-turn conversations reuse
more of vLLM's cache than under round robin (`weighted`). The direction is asserted, not a number.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .gateway import Backend, start_gateway
from .llama import MODEL_ALIAS
from .process import ServerProcess
from .wire import post_json, request

pytestmark = pytest.mark.real

CONVERSATIONS = 3  # odd: round robin sends consecutive turns of one conversation to both replicas
TURNS = 4
MAX_TOKENS = 2
# vLLM on CPU caches whole blocks of 128 tokens: the shared prompt (~500 tokens of the tiny
# tokenizer) and each turn (~150) span blocks, and 4 turns stay within the 2048-token context
SENTENCE = "the quick brown fox jumps over the lazy dog "  # 28 tokens
SYSTEM_SENTENCES = 18
TURN_SENTENCES = 5
_COUNTER = re.compile(r"^(vllm:prefix_cache_(?:hits|queries))_total\{[^}]*\}\s+(\S+)", re.M)


def text(tag: str, sentences: int) -> str:
    return tag + " " + SENTENCE * sentences  # the tag first: texts differ from their first block


def prefix_counters(servers: list[ServerProcess]) -> dict[str, float]:
    """vLLM's prefix-cache hits and queries (tokens), summed over the replicas."""
    total = {"vllm:prefix_cache_hits": 0.0, "vllm:prefix_cache_queries": 0.0}
    for server in servers:
        reply = request("GET", server.url + "/metrics")
        assert reply.status == 200
        for name, value in _COUNTER.findall(reply.body.decode()):
            total[name] += float(value)
    return total


def converse(gateway_url: str, tag: str) -> list[str]:
    """CONVERSATIONS conversations of TURNS turns, interleaved; the x-fleetlb-route of each."""
    system = {"role": "system", "content": text(f"{tag} system", SYSTEM_SENTENCES)}
    histories: list[list[dict[str, str]]] = [[system] for _ in range(CONVERSATIONS)]
    routes = []
    for turn in range(TURNS):
        for conv, history in enumerate(histories):
            history.append({"role": "user",
                            "content": text(f"{tag} conversation {conv} turn {turn}",
                                            TURN_SENTENCES)})
            reply = post_json(gateway_url + "/v1/chat/completions", {
                "model": MODEL_ALIAS, "messages": history, "max_tokens": MAX_TOKENS,
                "temperature": 0})
            assert reply.status == 200, reply.body[:500]
            history.append({"role": "assistant",
                            "content": reply.json()["choices"][0]["message"]["content"]})
            routes.append(reply.headers.get("x-fleetlb-route", ""))
    return routes


def hit_ratio(servers: list[ServerProcess], folder: Path, strategy: str) -> tuple[float, list[str]]:
    backends = [Backend(name=f"vllm-{i}", url=s.url, kind="vllm") for i, s in enumerate(servers)]
    extra = f'\n[[models]]\nname = "{MODEL_ALIAS}"\nstrategy = "{strategy}"\n'
    gateway = start_gateway(backends, folder, extra)
    try:
        before = prefix_counters(servers)
        routes = converse(gateway.url, strategy)  # texts of its own: no cache from the other
        after = prefix_counters(servers)
    finally:
        gateway.stop()
    queries = after["vllm:prefix_cache_queries"] - before["vllm:prefix_cache_queries"]
    hits = after["vllm:prefix_cache_hits"] - before["vllm:prefix_cache_hits"]
    assert queries > 0, "vLLM counted no prefix-cache queries"
    return hits / queries, routes


def test_cache_aware_reuses_more_of_the_prefix_cache_than_round_robin(
    vllm_fleet: list[ServerProcess], tmp_path: Path
) -> None:
    weighted, _ = hit_ratio(vllm_fleet, tmp_path, "weighted")
    cache_aware, routes = hit_ratio(vllm_fleet, tmp_path, "cache_aware")
    later_turns = routes[CONVERSATIONS:]
    assert all(r.startswith("cache_aware;") for r in routes), routes
    assert sum(r.startswith("cache_aware;matched=") for r in later_turns) >= len(later_turns) - 1
    print(f"vLLM prefix-cache hits / queries: cache_aware {cache_aware:.3f}, "
          f"weighted {weighted:.3f}")  # shown with -s
    assert cache_aware > weighted, (cache_aware, weighted)
