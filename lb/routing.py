"""Model name -> pool -> attempt plan: which endpoints may serve a request, in which order.

Pools are derived from `[[models]]` policies and from what each endpoint serves (configured or
discovered); they are cached per fleet generation, so the prober's discoveries show up at once.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from lb.balancing import PickRequest, RouteNote, Strategy, make_strategy, warm_first
from lb.config import Config, EndpointKind, ModelConfig, StrategyName
from lb.endpoints import Endpoint, Fleet
from lb.errors import ModelNotFound, NoUsableEndpoint
from lb.health import usable_or_all
from lb.model_names import model_key
from lb.prefix import PromptSource

# A model without `strategy` in its [[models]] entry (or without an entry) is balanced by its
# API's default: cache_aware for generation (the agent-sessions bench, README: How a request is
# routed), least_in_flight for embeddings (no conversation, no prefix worth following).
DEFAULT_STRATEGY: StrategyName = "cache_aware"
EMBEDDINGS_STRATEGY: StrategyName = "least_in_flight"


@dataclass(frozen=True, slots=True)
class Surface:
    """An API surface's view of the pools: which endpoint kinds may serve it, whether endpoints
    with the model already loaded go first whatever the model's strategy, and the strategy of
    models that name none."""

    name: str
    kinds: frozenset[EndpointKind] | None = None  # None: every kind
    is_warm_first: bool = False
    default_strategy: StrategyName = DEFAULT_STRATEGY

    def admits(self, endpoint: Endpoint) -> bool:
        return self.kinds is None or endpoint.config.kind in self.kinds


ANY_KIND = Surface("any")
EMBEDDINGS = Surface("any", default_strategy=EMBEDDINGS_STRATEGY)


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

    def with_prompt(self, prompt: PromptSource) -> AttemptPlan:
        """The same plan routing on another text (a Responses turn knows its history later)."""
        request = self.request
        note = request.note
        return AttemptPlan(self.pool, PickRequest(request.model, request.key, prompt, note))

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
        self._policies = {model_key(m.name): m for m in config.models}
        self._strategies: dict[tuple[str, StrategyName], Strategy] = {}
        self._pools: dict[tuple[str, Surface], Pool] = {}
        self._generation = -1

    @property
    def fleet(self) -> Fleet:
        return self._fleet

    def pool(self, model: str, surface: Surface = ANY_KIND) -> Pool:
        if self._generation != self._fleet.generation:
            self._pools.clear()
            self._generation = self._fleet.generation
        pool = self._pools.get((model, surface))
        if pool is None:
            pool = self._build_pool(model, surface)
            self._pools[model, surface] = pool
        return pool

    def knows(self, model: str) -> bool:
        """True when `model` names a pool (a policy or a served model), even one with none up."""
        try:
            self.pool(model)
        except ModelNotFound:
            return False
        except NoUsableEndpoint:
            return True
        return True

    def plan(self, model: str, key: str | None = None,
             surface: Surface = ANY_KIND, prompt: PromptSource | None = None) -> AttemptPlan:
        pool = self.pool(model, surface)
        return AttemptPlan(pool, PickRequest(pool.upstream, key, prompt, RouteNote()))

    def strategy_name(self, model: str, surface: Surface = ANY_KIND) -> StrategyName:
        """The strategy that balances `model` on `surface`: its policy's, else the default."""
        policy = self._policies.get(model_key(model))
        return policy.strategy if policy and policy.strategy else surface.default_strategy

    def model_names(self) -> list[str]:
        """Every name a client may ask for: policy names and every served model, once each
        (`qwen` and `qwen:latest` are one model: the first spelling seen is listed)."""
        names = {model_key(m.name): m.name for m in self._policies.values()}
        for ep in self._fleet:
            if not ep.draining:
                for name in sorted(ep.served_models):
                    names.setdefault(model_key(name), name)
        return [n for n in names.values() if self._members(n)]

    def _build_pool(self, model: str, surface: Surface) -> Pool:
        every_kind = self._members(model)
        members = tuple(ep for ep in every_kind if surface.admits(ep))
        policy = self._policies.get(model_key(model))
        if not members:
            if every_kind:
                raise ModelNotFound(f"The model '{model}' is not served by any "
                                    f"{surface.name} endpoint", param="model")
            if policy is not None:
                raise NoUsableEndpoint(f"no endpoint serves the model '{model}' right now")
            raise ModelNotFound(f"The model '{model}' does not exist", param="model")
        upstream = policy.upstream_name if policy else model
        name = self.strategy_name(model, surface)
        strategy = self._strategy(model, name, policy)
        if surface.is_warm_first:
            strategy = warm_first(strategy, name)
        return Pool(model, upstream, members, strategy)

    def _members(self, model: str) -> tuple[Endpoint, ...]:
        policy = self._policies.get(model_key(model))
        upstream = policy.upstream_name if policy else model
        allowed: Iterable[str] | None = policy.endpoints if policy else None
        eps: Iterable[Endpoint] = self._fleet
        if allowed is not None:
            eps = (ep for name in allowed if (ep := self._fleet.get(name)) is not None)
        return tuple(ep for ep in eps if ep.serves(upstream) and not ep.draining)

    def _strategy(self, model: str, name: StrategyName, policy: ModelConfig | None) -> Strategy:
        """One strategy object per model and name, shared by both spellings and every surface
        (a cache_aware model's prefix map is one, whichever API its requests came by)."""
        key = (model_key(model), name)
        strategy = self._strategies.get(key)
        if strategy is None:
            strategy = make_strategy(name, self._rng, policy.cache_aware if policy else None)
            self._strategies[key] = strategy
        return strategy
