"""Strategies: table-driven, with injected randomness."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from lb.balancing import (
    Affinity,
    LeastInFlight,
    LeastLoaded,
    PickRequest,
    Priority,
    SmoothWeighted,
    make_strategy,
)
from lb.config import EndpointConfig
from lb.endpoints import Endpoint

REQ = PickRequest(model="m")


def ep(name: str, **kw: Any) -> Endpoint:
    state = {k: kw.pop(k) for k in ("in_flight", "backend_queue", "loaded_models") if k in kw}
    endpoint = Endpoint(EndpointConfig(name=name, url="http://127.0.0.1:1", **kw))
    for k, v in state.items():
        setattr(endpoint, k, v)
    return endpoint


@pytest.mark.parametrize(("weights", "picks", "expected"), [
    ((1, 1), 4, "abab"),
    ((3, 1), 8, "aabaaaba"),  # smooth: never three a's in a row... until the shares demand it
    ((5, 1, 1), 7, "aabacaa"),
    ((1,), 3, "aaa"),
])
def test_smooth_weighted_sequence(weights: tuple[int, ...], picks: int, expected: str) -> None:
    eps = [ep(chr(ord("a") + i), weight=w) for i, w in enumerate(weights)]
    strategy = SmoothWeighted()
    assert "".join(strategy.pick(eps, eps, REQ).name for _ in range(picks)) == expected


def test_smooth_weighted_exact_shares() -> None:
    eps = [ep("a", weight=3), ep("b", weight=2), ep("c", weight=0.5)]
    strategy = SmoothWeighted()
    counts = Counter(strategy.pick(eps, eps, REQ).name for _ in range(110))
    assert counts == {"a": 60, "b": 40, "c": 10}


@pytest.mark.parametrize(("loads", "weights", "winner"), [
    ((0, 1), (1, 1), "a"),
    ((2, 1), (1, 1), "b"),
    ((2, 1), (4, 1), "a"),  # 2/4 < 1/1
    ((3, 3), (1, 1), "tie"),
])
def test_least_in_flight(loads: tuple[int, int], weights: tuple[int, int], winner: str) -> None:
    eps = [ep("a", in_flight=loads[0], weight=weights[0]),
           ep("b", in_flight=loads[1], weight=weights[1])]
    picks = {LeastInFlight(random.Random(seed)).pick(eps, eps, REQ).name for seed in range(20)}
    assert picks == ({"a", "b"} if winner == "tie" else {winner})


@pytest.mark.parametrize(("a", "b", "winner"), [
    ({"in_flight": 1, "backend_queue": 0}, {"in_flight": 0, "backend_queue": 5}, "a"),
    ({"in_flight": 0, "backend_queue": 3, "loaded_models": frozenset({"m"})},
     {"in_flight": 0, "backend_queue": 0}, "a"),  # warm beats an empty queue
    ({"in_flight": 0}, {"in_flight": 0, "backend_queue": 1}, "a"),
])
def test_least_loaded(a: dict[str, Any], b: dict[str, Any], winner: str) -> None:
    eps = [ep("a", **a), ep("b", **b)]
    assert LeastLoaded(random.Random(0)).pick(eps, eps, REQ).name == winner


def test_priority_uses_lowest_usable_tier_with_weights() -> None:
    p0a, p0b, p1 = ep("p0a", priority=0, weight=2), ep("p0b", priority=0), ep("p1", priority=1)
    members = [p0a, p0b, p1]
    strategy = Priority()
    assert "".join(strategy.pick(members, members, REQ).name[-1] for _ in range(3)) == "aba"
    assert strategy.pick(members, [p1], REQ).name == "p1"
    assert strategy.pick(members, [p0b, p1], REQ).name == "p0b"


def test_affinity_sticks_and_falls_back() -> None:
    members = [ep(f"e{i}") for i in range(4)]
    strategy = Affinity()
    owners = {k: strategy.pick(members, members, PickRequest("m", k)).name
              for k in ("alice", "bob", "carol", "dave", "erin", "frank")}
    for key, owner in owners.items():  # stable
        assert strategy.pick(members, members, PickRequest("m", key)).name == owner
    assert len(set(owners.values())) > 1  # keys spread over the pool
    key, owner = next(iter(owners.items()))
    others = [m for m in members if m.name != owner]
    assert strategy.pick(members, others, PickRequest("m", key)).name != owner
    # when the owner is back, the session returns to it
    assert strategy.pick(members, members, PickRequest("m", key)).name == owner


def test_affinity_removal_moves_only_the_removed_keys() -> None:
    members = [ep(f"e{i}") for i in range(5)]
    strategy = Affinity()
    keys = [f"user-{i}" for i in range(200)]
    before = {k: strategy.pick(members, members, PickRequest("m", k)).name for k in keys}
    fewer = members[:-1]
    after = {k: strategy.pick(fewer, fewer, PickRequest("m", k)).name for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert moved and all(before[k] == "e4" for k in moved)


def test_affinity_without_key_is_weighted() -> None:
    members = [ep("a"), ep("b")]
    strategy = Affinity()
    assert [strategy.pick(members, members, REQ).name for _ in range(4)] == ["a", "b", "a", "b"]


@pytest.mark.parametrize("name", ["weighted", "least_in_flight", "least_loaded", "priority",
                                  "affinity"])
def test_every_strategy_picks_from_usable(name: Any) -> None:
    members = [ep("a"), ep("b"), ep("c")]
    strategy = make_strategy(name, random.Random(1))
    for _ in range(10):
        assert strategy.pick(members, members[1:], PickRequest("m", "k")).name in {"b", "c"}


def _cache_aware(**knobs: Any) -> Any:
    from lb.config import CacheAwareConfig
    return make_strategy("cache_aware", random.Random(0), CacheAwareConfig(**knobs))


def _turn(text: str) -> PickRequest:
    from lb.balancing import RouteNote
    return PickRequest("m", prompt=lambda limit: text.encode()[:limit], note=RouteNote())


SHARED = "system prompt shared by every conversation. " * 30  # ~1.3 KB: 5 blocks of 256


def test_cache_aware_follows_a_conversation_and_spreads_new_ones() -> None:
    strategy = _cache_aware()
    pool = [ep("a"), ep("b"), ep("c")]
    for e in pool:  # each endpoint once served the shared system prompt
        strategy.pick(pool, [e], _turn(SHARED))
    owners = {}
    for conv in range(3):  # three new conversations over the shared prompt: spread by load
        req = _turn(SHARED + f"conversation {conv} " * 100)
        chosen = strategy.pick(pool, pool, req)
        chosen.in_flight += 1
        owners[conv] = chosen.name
        assert req.note is not None
    assert sorted(owners.values()) == ["a", "b", "c"]
    for e in pool:
        e.in_flight = 0
    for conv in range(3):  # the next turn of each goes where its history is
        req = _turn(SHARED + f"conversation {conv} " * 100 + "next turn " * 30)
        assert strategy.pick(pool, pool, req).name == owners[conv]
        assert req.note is not None and req.note.reason == "prefix"
        assert req.note.matched >= req.note.blocks - 2
        assert req.note.label.startswith("cache_aware;matched=")


def test_cache_aware_below_threshold_is_a_miss_to_the_least_loaded() -> None:
    strategy = _cache_aware()
    a, b = ep("a"), ep("b", in_flight=0)
    a.in_flight = 1
    req = _turn("a short prompt")
    assert strategy.pick([a, b], [a, b], req).name == "b"
    assert req.note is not None and (req.note.reason, req.note.label) == (
        "miss", "cache_aware;miss;matched=0/1")
    req = _turn("a short prompt" + "x" * 2000)  # 1 of 9 blocks known: under 0.3
    a.in_flight, b.in_flight = 0, 1
    assert strategy.pick([a, b], [a, b], req).name == "a"
    assert req.note is not None and req.note.reason == "miss"


@pytest.mark.parametrize(("owner_state", "other_state", "knobs", "reason"), [
    ({"in_flight": 2}, {"in_flight": 0}, {}, "prefix"),  # 2 - 0 is not above half of 4 slots
    ({"in_flight": 3}, {"in_flight": 0}, {}, "balance"),
    ({"in_flight": 3, "max_in_flight": 16}, {"in_flight": 0}, {}, "prefix"),  # 8 for 16 slots
    ({"in_flight": 3}, {"in_flight": 2}, {}, "prefix"),  # 3 is not above 1.5 x 2
    ({"in_flight": 1}, {"in_flight": 0}, {"balance_abs": 0.5}, "balance"),
    ({"in_flight": 0, "kv_cache_usage": 0.95}, {"in_flight": 0}, {}, "balance"),
    ({"in_flight": 0, "kv_cache_usage": 0.95}, {"in_flight": 0}, {"kv_overload": 1.0}, "prefix"),
    ({"in_flight": 0, "backend_queue": 6}, {"in_flight": 0, "backend_queue": 0}, {}, "balance"),
    # the other's queue is unknown: the mean of the known ones (6), not idle
    ({"in_flight": 0, "backend_queue": 6}, {"in_flight": 0}, {}, "prefix"),
])
def test_cache_aware_gives_up_the_cache_only_when_the_owner_is_overloaded(
        owner_state: dict[str, Any], other_state: dict[str, Any], knobs: dict[str, Any],
        reason: str) -> None:
    strategy = _cache_aware(**knobs)
    text = SHARED + "history " * 200
    owner, other = ep("owner"), ep("other")
    strategy.pick([owner, other], [owner], _turn(text))  # only the owner was up: it holds it
    config = {k: owner_state.pop(k) for k in ("max_in_flight",) if k in owner_state}
    if config:
        owner.config = owner.config.model_copy(update=config)
    for endpoint, state in ((owner, owner_state), (other, other_state)):
        for key, value in state.items():
            setattr(endpoint, key, value)
    req = _turn(text + "one more turn")
    chosen = strategy.pick([owner, other], [owner, other], req)
    assert req.note is not None and req.note.reason == reason
    assert chosen.name == ("owner" if reason == "prefix" else "other")


def test_cache_aware_hashes_once_per_request_and_fails_over() -> None:
    strategy = _cache_aware()
    a, b = ep("a"), ep("b")
    calls = []

    def prompt(limit: int) -> bytes:
        calls.append(limit)
        return (SHARED * 3).encode()

    from lb.balancing import RouteNote
    strategy.pick([a, b], [a], PickRequest("m", prompt=prompt, note=RouteNote()))
    req = PickRequest("m", prompt=prompt, note=RouteNote())
    assert strategy.pick([a, b], [a, b], req).name == "a"
    assert strategy.pick([a, b], [b], req).name == "b"  # a failed: the next attempt
    assert calls == [256 * 256, 256 * 256]
    assert strategy.pick([a, b], [a], PickRequest("m")).name == "a"  # no text, no note: no crash
    alone = PickRequest("m", prompt=prompt, note=RouteNote())
    assert strategy.pick([a], [a], alone).name == "a"  # a pool of one: nothing to weigh
    assert (alone.note is not None and alone.note.reason, len(calls)) == ("", 2)
