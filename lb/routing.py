"""Model name -> pool -> attempt plan: which endpoints may serve a request, in which order.

Pools are derived from `[[models]]` policies and from what each endpoint serves (configured or
discovered); they are cached per fleet generation, so the prober's discoveries show up at once.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from lb.balancing import PickRequest, Strategy, make_strategy
from lb.config import Config, ModelConfig
from lb.endpoints import Endpoint, Fleet
from lb.errors import ModelNotFound, NoUsableEndpoint
from lb.health import usable_or_all


@dataclass(frozen=True, slots=True)
class Pool:
    name: str  # what the client asked for
    upstream: str  # what the backend is asked for
    members: tuple[Endpoint, ...]
    strategy: Strategy = field(compare=False)

    @property
    def rewrites_model(self) -> bool:
        return self.upstream != self.name


class Verdict(enum.Enum):
    EXHAUSTED = "exhausted"  # every member was tried (or none exists)
    BUSY = "busy"  # untried members are up but at max_in_flight: wait for a slot


class AttemptPlan:
    """One request's walk through its pool: never the same endpoint twice."""

    __slots__ = ("panicked", "pool", "request", "tried")

    def __init__(self, pool: Pool, request: PickRequest) -> None:
        self.pool = pool
        self.request = request
        self.tried: list[Endpoint] = []
        self.panicked = False  # every candidate was down: tried anyway (fail open)

    def only(self, keep: Callable[[Endpoint], bool]) -> AttemptPlan:
        """The same request over the members `keep` accepts (e.g. those that can serve an API)."""
        pool = self.pool
        members = tuple(ep for ep in pool.members if keep(ep))
        return AttemptPlan(Pool(pool.name, pool.upstream, members, pool.strategy), self.request)

    def next(self) -> Endpoint | Verdict:
        # Envoy's panic mode: a pool none of whose endpoints is up more likely has a probe
        # problem than no working backend; trying them beats a certain 503
        candidates, panicked = usable_or_all(self.pool.members)
        tried = self.tried
        up = [ep for ep in candidates if ep not in tried]
        if not up:
            return Verdict.EXHAUSTED
        self.panicked |= panicked
        usable = [ep for ep in up if ep.has_capacity]
        if not usable:
            return Verdict.BUSY
        chosen = self.pool.strategy.pick(self.pool.members, usable, self.request)
        self.tried.append(chosen)
        return chosen


class Router:
    """Resolves client model names to pools over one fleet, with one strategy object per model."""

    def __init__(self, config: Config, fleet: Fleet, rng: random.Random) -> None:
        self._fleet = fleet
        self._rng = rng
        self._policies = {m.name: m for m in config.models}
        self._strategies: dict[str, Strategy] = {}
        self._pools: dict[str, Pool] = {}
        self._generation = -1

    @property
    def fleet(self) -> Fleet:
        return self._fleet

    def pool(self, model: str) -> Pool:
        if self._generation != self._fleet.generation:
            self._pools.clear()
            self._generation = self._fleet.generation
        pool = self._pools.get(model)
        if pool is None:
            pool = self._build_pool(model)
            self._pools[model] = pool
        return pool

    def plan(self, model: str, key: str | None = None) -> AttemptPlan:
        pool = self.pool(model)
        return AttemptPlan(pool, PickRequest(model=pool.upstream, key=key))

    def model_names(self) -> list[str]:
        """Every name a client may ask for: policy names and every served model, once each."""
        names = dict.fromkeys(self._policies)
        for ep in self._fleet:
            if not ep.draining:
                names.update(dict.fromkeys(sorted(ep.served_models)))
        return [n for n in names if self._members(n)]

    def _build_pool(self, model: str) -> Pool:
        members = self._members(model)
        if not members:
            if model in self._policies:
                raise NoUsableEndpoint(f"no endpoint serves the model '{model}' right now")
            raise ModelNotFound(f"The model '{model}' does not exist", param="model")
        policy = self._policies.get(model)
        upstream = policy.upstream_name if policy else model
        return Pool(model, upstream, members, self._strategy(model, policy))

    def _members(self, model: str) -> tuple[Endpoint, ...]:
        policy = self._policies.get(model)
        upstream = policy.upstream_name if policy else model
        allowed: Iterable[str] | None = policy.endpoints if policy else None
        eps: Iterable[Endpoint] = self._fleet
        if allowed is not None:
            eps = (ep for name in allowed if (ep := self._fleet.get(name)) is not None)
        return tuple(ep for ep in eps if ep.serves(upstream) and not ep.draining)

    def _strategy(self, model: str, policy: ModelConfig | None) -> Strategy:
        strategy = self._strategies.get(model)
        if strategy is None:
            strategy = make_strategy(policy.strategy if policy else "weighted", self._rng)
            self._strategies[model] = strategy
        return strategy
