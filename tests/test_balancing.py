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
