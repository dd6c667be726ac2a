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

from lb.config import CacheAwareConfig, StrategyName
from lb.endpoints import Endpoint
from lb.prefix import PrefixMap, PromptSource, block_hashes

_JUST_BELOW_ONE = 1.0 - 1e-12  # log(1) = 0 would divide by zero


DEFAULT_SLOTS = 4  # what an endpoint without max_in_flight is taken to run at once (Ollama's
# OLLAMA_NUM_PARALLEL, llama-server's -np): half of it is the default imbalance margin


@dataclass(slots=True, eq=False)
class RouteNote:
    """What cache_aware says about its choice, for `x-fleetlb-route`, the access line and the
    route-decision metric; the strategy writes it, the request's record carries it."""

    reason: str = ""  # prefix | balance | miss; empty: no strategy wrote a note
    matched: int = 0  # leading blocks the chosen endpoint already held
    blocks: int = 0  # blocks of the routing text
    hashes: list[int] | None = None  # computed once per request, reused by a failover pick

    @property
    def label(self) -> str:
        if self.reason == "prefix":
            return f"cache_aware;matched={self.matched}/{self.blocks}"
        return f"cache_aware;{self.reason};matched={self.matched}/{self.blocks}"


@dataclass(frozen=True, slots=True)
class PickRequest:
    """What a strategy may know of the request: the upstream model, the session key, and the
    routing text (built only by a strategy that reads it)."""

    model: str
    key: str | None = None
    prompt: PromptSource | None = None
    note: RouteNote | None = None


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


class CacheAware:
    """The endpoint that already holds the longest prefix of the prompt, while that is not
    overloaded; else the least loaded (README: How a request is routed).

    Endpoints within one block of the best match are ties broken by load, so a prefix that every
    conversation shares (a common system prompt) spreads over all endpoints that hold it.
    """

    __slots__ = ("_config", "_map", "_rng")

    def __init__(self, config: CacheAwareConfig, rng: random.Random) -> None:
        self._config = config
        self._rng = rng
        self._map = PrefixMap.for_memory(config.max_map_bytes)

    def pick(self, members: Sequence[Endpoint], usable: Sequence[Endpoint],
             request: PickRequest) -> Endpoint:
        if len(members) == 1:  # nowhere else to go: no text to build, nothing to learn
            return usable[0]
        note = request.note if request.note is not None else RouteNote()
        hashes = note.hashes
        if hashes is None:
            config = self._config
            text = request.prompt(config.block_bytes * config.max_blocks) if request.prompt else b""
            hashes = note.hashes = block_hashes(text, request.model, config.block_bytes,
                                                config.max_blocks)
        loads = _loads(usable)
        matched = self._map.match(hashes) if hashes else {}
        best = max((matched.get(ep.name, 0) for ep in usable), default=0)
        if best == 0 or best < self._config.cache_threshold * len(hashes):
            chosen, note.reason = self._least(usable, loads), "miss"
        else:
            ties = [ep for ep in usable if matched.get(ep.name, 0) >= best - 1]
            chosen = self._least(ties, loads)
            if self._is_overloaded(chosen, loads):
                chosen, note.reason = self._least(usable, loads), "balance"
            else:
                note.reason = "prefix"
        note.matched, note.blocks = matched.get(chosen.name, 0), len(hashes)
        if hashes:
            self._map.insert(hashes, chosen.name)
        return chosen

    def _least(self, candidates: Sequence[Endpoint], loads: dict[str, float]) -> Endpoint:
        return _least(candidates, self._rng, lambda ep: loads[ep.name])

    def _is_overloaded(self, ep: Endpoint, loads: dict[str, float]) -> bool:
        config = self._config
        kv_use = ep.kv_cache_usage
        if kv_use is not None and kv_use > config.kv_overload:
            return True
        margin = config.balance_abs
        if margin is None:
            margin = (ep.config.max_in_flight or DEFAULT_SLOTS) / 2
        load, least = loads[ep.name], min(loads.values())
        return load - least > margin and load > config.balance_rel * least


def _loads(usable: Sequence[Endpoint]) -> dict[str, float]:
    """The load per endpoint, per weight: what it runs and queues by the backend's own count
    (vLLM running + waiting), or by our in-flight count when that is higher.

    Not their sum, as least_loaded has it: the backend's count includes our own requests, and
    counting them twice would halve every imbalance margin. A queue the prober could not read
    (none yet, or its last probe failed) is unknown, not empty: it counts as the mean of the
    known ones, so a silent endpoint draws no extra traffic.
    """
    known = [ep.backend_queue for ep in usable if ep.backend_queue is not None]
    guess = sum(known) / len(known) if known else 0.0
    return {ep.name: max(ep.in_flight, guess if ep.backend_queue is None else ep.backend_queue)
            / ep.config.weight for ep in usable}


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


def make_strategy(name: StrategyName, rng: random.Random,
                  cache_aware: CacheAwareConfig | None = None) -> Strategy:
    if name == "cache_aware":
        return CacheAware(cache_aware or CacheAwareConfig(), rng)
    if name == "weighted":
        return SmoothWeighted()
    if name == "least_in_flight":
        return LeastInFlight(rng)
    if name == "least_loaded":
        return LeastLoaded(rng)
    if name == "priority":
        return Priority()
    return Affinity()
