"""Percentiles, medians and ratios: the arithmetic of the report, pure."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's
    default); NaN for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    """The median of the values that are numbers (NaN entries are left out); NaN for none."""
    return percentile([v for v in values if not math.isnan(v)], 50)


def ratio(value: float, base: float) -> float:
    """value / base; NaN when either is missing or the base is zero."""
    if math.isnan(value) or math.isnan(base) or base == 0:
        return math.nan
    return value / base


def per_unit(total: float, units: int) -> float:
    """total / units; NaN when nothing was done."""
    return total / units if units > 0 else math.nan


def rate(count: int, seconds: float) -> float:
    """count per second; NaN for no time."""
    return count / seconds if seconds > 0 else math.nan


def latency_summary(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99 and mean of one run, in milliseconds."""
    mean = sum(latencies_s) / len(latencies_s) if latencies_s else math.nan
    return {"p50_ms": percentile(latencies_s, 50) * 1000,
            "p90_ms": percentile(latencies_s, 90) * 1000,
            "p99_ms": percentile(latencies_s, 99) * 1000,
            "mean_ms": mean * 1000}
