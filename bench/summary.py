"""From cells (one workload, one target, one round) to rows: medians over rounds, and what each
target adds to direct, paired round by round so that a noisy round moves both sides."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from bench.runner import Cell, Run
from bench.stats import median, ratio

NAN = math.nan


@dataclass(frozen=True, slots=True)
class Row:
    workload: str
    target: str
    rounds: int
    ok: int
    errors: int
    tool: str
    p50_ms: float
    p90_ms: float
    p99_ms: float
    ttfb_p50_ms: float
    ttfb_p90_ms: float
    per_s: float
    cpu_us_per_unit: float
    system_share: float  # of the CPU, the kernel's part
    added_p50_ms: float = NAN  # vs direct, median of the per-round differences
    p50_ratio: float = NAN
    added_ttfb_p50_ms: float = NAN
    per_s_ratio: float = NAN
    cpu_vs_relay: float = NAN  # median of the per-round ratios to the bare relay's CPU
    added_p50_vs_relay: float = NAN  # ... and to the relay's added p50
    error_samples: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def _num(value: float | None) -> float:
    return NAN if value is None else value


def _ttfb(cell: Cell, key: str) -> float:
    return NAN if cell.ttfb is None else cell.ttfb[key]


def _paired(mine: list[Cell], base: dict[int, Cell], fn: Callable[[Cell, Cell], float]) -> float:
    return median([fn(c, base[c.round]) for c in mine if c.round in base])


def summarize_cells(cells: Iterable[Cell]) -> list[Row]:
    """One row per (workload, target), in the order the cells were measured."""
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.workload, cell.target), []).append(cell)
    rows = []
    for (workload, target), mine in groups.items():
        direct = {c.round: c for c in groups.get((workload, "direct"), [])}
        relay = {c.round: c for c in groups.get((workload, "relay"), [])}
        rows.append(_row(workload, target, mine, direct if target != "direct" else {}, relay))
    return rows


def _row(workload: str, target: str, mine: list[Cell], direct: dict[int, Cell],
         relay: dict[int, Cell]) -> Row:
    def added(cell: Cell) -> float:
        base = direct.get(cell.round)
        return NAN if base is None else cell.latency["p50_ms"] - base.latency["p50_ms"]

    return Row(
        workload, target, len(mine), sum(c.ok for c in mine), sum(c.errors for c in mine),
        mine[0].tool,
        median([c.latency["p50_ms"] for c in mine]),
        median([c.latency["p90_ms"] for c in mine]),
        median([c.latency["p99_ms"] for c in mine]),
        median([_ttfb(c, "p50_ms") for c in mine]),
        median([_ttfb(c, "p90_ms") for c in mine]),
        median([c.per_s for c in mine]),
        median([_num(c.cpu_us_per_unit) for c in mine]),
        median([_num(c.system_share) for c in mine]),
        added_p50_ms=median([added(c) for c in mine]),
        p50_ratio=_paired(mine, direct, lambda a, b: ratio(a.latency["p50_ms"],
                                                           b.latency["p50_ms"])),
        added_ttfb_p50_ms=_paired(mine, direct, lambda a, b: _ttfb(a, "p50_ms") -
                                  _ttfb(b, "p50_ms")),
        per_s_ratio=_paired(mine, direct, lambda a, b: ratio(a.per_s, b.per_s)),
        cpu_vs_relay=_paired(mine, relay, lambda a, b: ratio(_num(a.cpu_us_per_unit),
                                                            _num(b.cpu_us_per_unit))),
        added_p50_vs_relay=_paired(mine, relay, lambda a, b: ratio(added(a), added(b))),
        error_samples=tuple(s for c in mine for s in c.error_samples)[:3],
        extra=mine[-1].extra,
    )


def summarize(run: Run) -> list[Row]:
    return summarize_cells(run.cells)


def find(rows: Iterable[Row], workload: str, target: str) -> Row | None:
    return next((r for r in rows if r.workload == workload and r.target == target), None)
