"""The state of one simulated backend: its options, behavior, injected randomness and clock, the
model names it answers to, the models it has loaded and the responses it has stored. Pure."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lb.sim.kvcache import KvCache, NoKvCache, kv_cache
from lb.sim.options import SimBehavior, SimOptions
from lb.sim.stream import Pacer

OLLAMA_DEFAULT_TAG = ":latest"  # Ollama treats "name" and "name:latest" as one model


@dataclass(slots=True)
class StoredResponse:
    response: dict[str, Any]
    input_items: list[dict[str, Any]]


@dataclass(slots=True)
class SimBackend:
    options: SimOptions
    behavior: SimBehavior
    rng: random.Random
    clock: Callable[[], float]  # wall-clock seconds, for `created` fields
    started_at: float = 0.0
    responses: dict[str, StoredResponse] = field(default_factory=dict)
    loaded: dict[str, None] = field(default_factory=dict)  # an ordered set of served names
    models: list[str] = field(default_factory=list)  # served now: options.models, pulls, copies
    _names: dict[str, str] = field(default_factory=dict)  # every accepted spelling -> served name
    kv: KvCache | NoKvCache = field(init=False)

    def __post_init__(self) -> None:
        self.started_at = self.clock()
        self.kv = kv_cache(self.options.kv_cache, Pacer.of(self.options))
        for model in self.options.models:
            self.add_model(model)
        if self.options.models:
            self.loaded[self.options.models[0]] = None

    def add_model(self, model: str) -> None:
        """Serve model from now on (an Ollama pull, create or copy); no-op if already served."""
        if self.resolve(model) is not None:
            return
        self.models.append(model)
        for spelling in self._spellings(model):
            self._names.setdefault(spelling, model)

    def remove_model(self, name: str) -> bool:
        """Stop serving the model name names (an Ollama delete); False if it was not served."""
        served = self.resolve(name)
        if served is None:
            return False
        self.models.remove(served)
        self.loaded.pop(served, None)
        for spelling in self._spellings(served):
            self._names.pop(spelling, None)
        return True

    def _spellings(self, model: str) -> tuple[str, ...]:
        if self.options.kind != "ollama":
            return (model,)
        if model.endswith(OLLAMA_DEFAULT_TAG):
            return (model, model.removesuffix(OLLAMA_DEFAULT_TAG))
        if ":" not in model:
            return (model, model + OLLAMA_DEFAULT_TAG)
        return (model,)

    def listed_name(self, model: str) -> str:
        """The name model lists show: Ollama always shows a tag."""
        if self.options.kind == "ollama" and ":" not in model:
            return model + OLLAMA_DEFAULT_TAG
        return model

    def resolve(self, name: Any) -> str | None:
        """The served model a request's `model` names, or None."""
        return self._names.get(name) if isinstance(name, str) else None

    def mark_loaded(self, model: str) -> None:
        self.loaded[model] = None

    def injected_failure(self) -> int | None:
        """The status a model request must fail with now, if any. The rng is drawn only when
        fail_rate is set, so a seed gives the same failure pattern on every run."""
        if self.behavior.fail_status is not None:
            return self.behavior.fail_status
        if self.options.fail_rate > 0 and self.rng.random() < self.options.fail_rate:
            return 500
        return None

    def now(self) -> int:
        return int(self.clock())
