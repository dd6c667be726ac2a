"""Balancing strategies behind one sync, pure signature: pick one endpoint from the usable ones.

`members` is the whole pool (affinity hashes over it, so a session keeps its endpoint while that
endpoint lives); `usable` is the non-empty subset the router may send to now.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from lb.config import StrategyName
from lb.endpoints import Endpoint

_JUST_BELOW_ONE = 1.0 - 1e-12  # log(1) = 0 would divide by zero


@dataclass(frozen=True, slots=True)
class PickRequest:
    """What a strategy may know of the request: the upstream model and the session key."""

    model: str
    key: str | None = None


class Strategy(Protocol):
    def pick(self, members: Sequence[Endpoint], usable: Sequence[Endpoint],
             request: PickRequest) -> Endpoint: ...


class SmoothWeighted:
    """nginx's smooth weighted round robin: exact shares, no bursts, deterministic."""

    __slots__ = ("_current",)

    def __init__(self) -> None:
        self._current: dict[str, float] = {}

    def pick(self, members: Sequence[Endpoint], usable: Sequence[Endpoint],
             request: PickRequest) -> Endpoint:
        if len(usable) == 1:
            return usable[0]
        current = self._current
        total = 0.0
        best: Endpoint | None = None
        best_score = 0.0
        for ep in usable:
            weight = ep.config.weight
            score = current.get(ep.name, 0.0) + weight
            current[ep.name] = score
            total += weight
            if best is None or score > best_score:
                best, best_score = ep, score
        assert best is not None
        current[best.name] = best_score - total
        return best


class LeastInFlight:
    """Fewest requests in flight per unit of weight; ties broken by the injected rng."""

    __slots__ = ("_rng",)

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def pick(self, members: Sequence[Endpoint], usable: Sequence[Endpoint],
             request: PickRequest) -> Endpoint:
        return _least(usable, self._rng, lambda ep: ep.in_flight / ep.config.weight)


class LeastLoaded:
    """Like least_in_flight, adding the backend's own queue (vLLM running + waiting).

    Endpoints where the model is already loaded (Ollama /api/ps) win first: a cold load costs
    seconds, more than any queue.
    """

    __slots__ = ("_rng",)

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def pick(self, members: Sequence[Endpoint], usable: Sequence[Endpoint],
             request: PickRequest) -> Endpoint:
        warm = [ep for ep in usable if ep.has_loaded(request.model)]

        def load(ep: Endpoint) -> float:
            return (ep.in_flight + (ep.backend_queue or 0)) / ep.config.weight

        return _least(warm or usable, self._rng, load)


class Priority:
    """The lowest tier (priority number) with a usable endpoint; smooth weights inside it."""

    __slots__ = ("_weighted",)

    def __init__(self) -> None:
        self._weighted = SmoothWeighted()

    def pick(self, members: Sequence[Endpoint], usable: Sequence[Endpoint],
             request: PickRequest) -> Endpoint:
        tier = min(ep.config.priority for ep in usable)
        tier_usable = [ep for ep in usable if ep.config.priority == tier]
        return self._weighted.pick(members, tier_usable, request)


class Affinity:
    """Rendezvous hashing on a session key, so a conversation keeps hitting one KV cache.

    The winner is chosen over the whole pool: while it is usable the session sticks to it; when
    it is not, the request falls back to weighted choice (and comes back once it recovers).
    """

    __slots__ = ("_fallback",)

    def __init__(self) -> None:
        self._fallback = SmoothWeighted()

    def pick(self, members: Sequence[Endpoint], usable: Sequence[Endpoint],
             request: PickRequest) -> Endpoint:
        key = request.key
        if key is not None:
            owner = max(members, key=lambda ep: _score(key, ep))
            if owner in usable:
                return owner
        return self._fallback.pick(members, usable, request)


class WarmFirst:
    """Wraps a strategy so endpoints with the model already loaded are offered first.

    A cold Ollama load costs seconds, more than any queue, so while some usable endpoint has the
    model loaded the inner strategy chooses among those only. For `priority` pools the tier comes
    first: a warm spare never wins over a usable primary, or the primary would stay cold for good.
    """

    __slots__ = ("_inner", "_is_tiered")

    def __init__(self, inner: Strategy, *, is_tiered: bool) -> None:
        self._inner = inner
        self._is_tiered = is_tiered

    def pick(self, members: Sequence[Endpoint], usable: Sequence[Endpoint],
             request: PickRequest) -> Endpoint:
        candidates = usable
        if self._is_tiered:
            tier = min(ep.config.priority for ep in usable)
            candidates = [ep for ep in usable if ep.config.priority == tier]
        warm = [ep for ep in candidates if ep.has_loaded(request.model)]
        return self._inner.pick(members, warm or usable, request)


def _score(key: str, ep: Endpoint) -> float:
    digest = hashlib.blake2b(f"{ep.name}\x00{key}".encode(), digest_size=8).digest()
    # weighted rendezvous: -w / ln(u) keeps shares proportional to weight
    unit = (int.from_bytes(digest, "big") + 1) / float(1 << 64)
    return ep.config.weight / -math.log(min(unit, _JUST_BELOW_ONE))


def _least(usable: Sequence[Endpoint], rng: random.Random,
           load: _LoadFn) -> Endpoint:
    best_load = min(load(ep) for ep in usable)
    best = [ep for ep in usable if load(ep) == best_load]
    return best[0] if len(best) == 1 else rng.choice(best)


class _LoadFn(Protocol):
    def __call__(self, ep: Endpoint, /) -> float: ...


def warm_first(inner: Strategy, name: StrategyName) -> Strategy:
    return WarmFirst(inner, is_tiered=name == "priority")


def make_strategy(name: StrategyName, rng: random.Random) -> Strategy:
    if name == "weighted":
        return SmoothWeighted()
    if name == "least_in_flight":
        return LeastInFlight(rng)
    if name == "least_loaded":
        return LeastLoaded(rng)
    if name == "priority":
        return Priority()
    return Affinity()
