"""What each key did on this instance since it started (pure): totals for /admin/keys and the
metrics. Kept by key name, so a reload that keeps a name keeps its totals."""

from __future__ import annotations

from dataclasses import dataclass, field

from lb.teams.limits import LimitName


@dataclass(slots=True)
class KeyTotals:
    requests: int = 0  # admitted model calls
    input_tokens: int = 0
    output_tokens: int = 0
    in_flight: int = 0
    rate_limited: dict[LimitName, int] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def rate_limited_total(self) -> int:
        return sum(self.rate_limited.values())


class KeyStats:
    __slots__ = ("_totals",)

    def __init__(self) -> None:
        self._totals: dict[str, KeyTotals] = {}

    def of(self, name: str) -> KeyTotals:
        totals = self._totals.get(name)
        if totals is None:
            totals = self._totals[name] = KeyTotals()
        return totals

    def items(self) -> list[tuple[str, KeyTotals]]:
        return list(self._totals.items())
