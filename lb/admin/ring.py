"""The stats ring behind the status page: per-second request counts, errors, tokens and a TTFT
histogram for the last ten minutes, fleet-wide and per model (pure; the clock is injected).

One request costs O(1): a slot is picked by `second % size`, reset when it still holds an older
second, and a few counters are added. Nothing runs in the background: a slot whose second is not
the one asked for is empty, so reading skips what nobody wrote. Memory is fixed per model.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

HISTORY_S = 600  # the sparklines: ten minutes at one sample per second
MODEL_WINDOW_S = 60  # per-model rates and TTFT percentiles: the last minute
MAX_MODELS = 256  # models with a ring of their own; later names share OTHER_MODELS
OTHER_MODELS = "(other)"
# TTFT histogram bounds: 1 ms to ~150 s, each 25 % above the one before (percentiles within ~12 %)
TTFT_BOUNDS_S = tuple(0.001 * 1.25 ** i for i in range(54))


@dataclass(slots=True)
class Second:
    """What the requests finished in one second added up to."""

    second: int = -1  # which second this slot holds; -1: never written
    requests: int = 0
    errors: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    ttft: list[int] = field(default_factory=lambda: [0] * (len(TTFT_BOUNDS_S) + 1))

    def reset(self, second: int) -> None:
        self.second = second
        self.requests = self.errors = self.tokens_in = self.tokens_out = 0
        ttft = self.ttft
        for i in range(len(ttft)):
            ttft[i] = 0


class Ring:
    """`size` one-second slots, reused round and round."""

    __slots__ = ("_slots",)

    def __init__(self, size: int) -> None:
        self._slots = [Second() for _ in range(size)]

    def slot(self, second: int) -> Second:
        """The slot of `second`, emptied if it still held an older one."""
        slot = self._slots[second % len(self._slots)]
        if slot.second != second:
            slot.reset(second)
        return slot

    def seconds(self, last: int, count: int) -> Iterator[Second | None]:
        """The `count` seconds up to and including `last`, oldest first; None: nothing finished."""
        slots = self._slots
        for second in range(last - count + 1, last + 1):
            slot = slots[second % len(slots)]
            yield slot if slot.second == second else None


class StatsRing:
    """The metrics' `RequestStats`: fed once per finished request, read by /admin/stats."""

    def __init__(self, clock: Callable[[], float], *, history_s: int = HISTORY_S,
                 window_s: int = MODEL_WINDOW_S, max_models: int = MAX_MODELS) -> None:
        self._clock = clock
        self._history_s = history_s
        self._window_s = window_s
        self._max_models = max_models
        self._fleet = Ring(history_s)
        self._models: dict[str, Ring] = {}
        self._started = math.floor(clock())

    def count(self, model: str, is_error: bool, ttft_s: float | None,
              tokens_in: int, tokens_out: int) -> None:
        """One finished model request."""
        second = math.floor(self._clock())
        ring = self._models.get(model)
        if ring is None:
            ring = self._ring_for(model)
        for slot in (self._fleet.slot(second), ring.slot(second)):
            slot.requests += 1
            slot.errors += is_error
            slot.tokens_in += tokens_in
            slot.tokens_out += tokens_out
            if ttft_s is not None:
                slot.ttft[bisect_left(TTFT_BOUNDS_S, ttft_s)] += 1

    def _ring_for(self, model: str) -> Ring:
        if len(self._models) >= self._max_models:  # client-chosen names cannot grow memory
            model = OTHER_MODELS
            ring = self._models.get(model)
            if ring is not None:
                return ring
        ring = self._models[model] = Ring(self._window_s)
        return ring

    def snapshot(self) -> dict[str, Any]:
        """The sparkline series (oldest first, one point a second) and each model's last minute."""
        now = math.floor(self._clock())
        # the current second is still filling: the series ends with the last complete one
        series = list(self._fleet.seconds(now - 1, self._history_s))
        return {
            "interval_s": 1,
            "history_s": self._history_s,
            "window_s": self._window_s,
            "requests": [s.requests if s else 0 for s in series],
            "errors": [s.errors if s else 0 for s in series],
            "ttft_p90_ms": [_ms(percentile(s.ttft, 0.9)) if s else None for s in series],
            "models": {name: self._window(ring, now) for name, ring in self._models.items()},
        }

    def _window(self, ring: Ring, now: int) -> dict[str, Any]:
        """One model over the last `window_s` seconds, the current one included, so a request
        shows at once (fewer seconds just after a start)."""
        span = min(self._window_s, now - self._started + 1)
        requests = errors = tokens_in = tokens_out = 0
        ttft = [0] * (len(TTFT_BOUNDS_S) + 1)
        for s in ring.seconds(now, span):
            if s is None:
                continue
            requests += s.requests
            errors += s.errors
            tokens_in += s.tokens_in
            tokens_out += s.tokens_out
            for i, n in enumerate(s.ttft):
                ttft[i] += n
        return {
            "requests": requests,
            "requests_per_s": requests / span,
            "error_rate": errors / requests if requests else None,
            "ttft_p50_ms": _ms(percentile(ttft, 0.5)),
            "ttft_p90_ms": _ms(percentile(ttft, 0.9)),
            "tokens_in_per_s": tokens_in / span,
            "tokens_out_per_s": tokens_out / span,
        }


def percentile(counts: list[int], q: float) -> float | None:
    """The q-quantile of a TTFT histogram in seconds, interpolated geometrically inside its bucket
    (None for an empty one). Values past the last bound count as that bound."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            if i >= len(TTFT_BOUNDS_S):
                return TTFT_BOUNDS_S[-1]
            upper = TTFT_BOUNDS_S[i]
            lower = TTFT_BOUNDS_S[i - 1] if i else upper / 1.25
            return float(lower * (upper / lower) ** ((rank - seen) / n))
        seen += n
    return TTFT_BOUNDS_S[-1]  # unreachable: rank <= total


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)
