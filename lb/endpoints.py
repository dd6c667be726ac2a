"""Live endpoint state: config + health + in-flight + discovered models and capabilities (no I/O).

The router reads it, the forwarder leases it, the prober writes it. `Lease` keeps in-flight exact:
it is released exactly once, whatever the exit path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from lb.config import EndpointConfig
from lb.model_names import model_key


class HealthState(StrEnum):
    UNKNOWN = "unknown"  # not probed yet: usable, so a restart does not black out the fleet
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    EJECTED = "ejected"  # taken out by live-traffic failures until a probe after the cool-down


@dataclass(slots=True, eq=False)
class Endpoint:
    config: EndpointConfig
    state: HealthState = HealthState.UNKNOWN
    in_flight: int = 0
    discovered_models: frozenset[str] = frozenset()
    loaded_models: frozenset[str] = frozenset()
    supports_responses_api: bool | None = None
    backend_queue: int | None = None
    kv_cache_usage: float | None = None  # vLLM's share of KV-cache blocks in use (0..1)
    ejected_until: float = 0.0
    live_failures: int = 0
    draining: bool = False
    served_models: frozenset[str] = field(init=False)
    _served_keys: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.served_models = frozenset(self.config.models)
        self._served_keys = frozenset(map(model_key, self.served_models))

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def is_up(self) -> bool:
        return self.state in (HealthState.UNKNOWN, HealthState.HEALTHY) and not self.draining

    @property
    def has_capacity(self) -> bool:
        limit = self.config.max_in_flight
        return limit == 0 or self.in_flight < limit

    @property
    def is_usable(self) -> bool:
        return self.is_up and self.has_capacity

    def serves(self, model: str) -> bool:
        """Whether this endpoint serves model, in either spelling (`qwen`, `qwen:latest`)."""
        return model_key(model) in self._served_keys

    def has_loaded(self, model: str) -> bool:
        """Whether model is loaded in memory here (Ollama /api/ps): no cold load to wait for."""
        key = model_key(model)
        return any(model_key(name) == key for name in self.loaded_models)

    def reconfigure(self, config: EndpointConfig) -> bool:
        """New settings from a reload, keeping all live state; True if the served models changed."""
        before = self.served_models
        self.config = config
        self.served_models = frozenset(config.models) | self.discovered_models
        return self.served_models != before

    def set_discovered_models(self, models: Iterable[str]) -> bool:
        """Replace what the prober found; config models stay as a floor. True if it changed."""
        found = frozenset(models)
        if found == self.discovered_models:
            return False
        self.discovered_models = found
        self.served_models = frozenset(self.config.models) | found
        self._served_keys = frozenset(map(model_key, self.served_models))
        return True

    def record_success(self) -> None:
        self.live_failures = 0

    def record_failure(self) -> int:
        self.live_failures += 1
        return self.live_failures


class Lease:
    """One request's hold on an endpoint slot; `release()` is idempotent."""

    __slots__ = ("_fleet", "_released", "endpoint")

    def __init__(self, fleet: Fleet, endpoint: Endpoint) -> None:
        self._fleet = fleet
        self.endpoint = endpoint
        self._released = False
        endpoint.in_flight += 1

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self.endpoint.in_flight -= 1
        self._fleet.slot_freed(self.endpoint)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Fleet:
    """Every endpoint by name, plus a generation counter bumped when served models change."""

    def __init__(self, endpoints: Iterable[Endpoint]) -> None:
        self._by_name = {e.name: e for e in endpoints}
        self.generation = 0
        self._slot_listeners: list[Callable[[Endpoint], None]] = []

    def __iter__(self) -> Iterator[Endpoint]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def get(self, name: str) -> Endpoint | None:
        return self._by_name.get(name)

    def models_changed(self) -> None:
        self.generation += 1

    def lease(self, endpoint: Endpoint) -> Lease:
        return Lease(self, endpoint)

    def on_slot_freed(self, listener: Callable[[Endpoint], None]) -> None:
        self._slot_listeners.append(listener)

    def slot_freed(self, endpoint: Endpoint) -> None:
        for listener in self._slot_listeners:
            listener(endpoint)

    @classmethod
    def from_configs(cls, configs: Iterable[EndpointConfig]) -> Fleet:
        return cls(Endpoint(c) for c in configs)
