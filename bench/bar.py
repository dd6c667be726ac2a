"""The bar fleetlb must reach (issue 6), and the goals of issue 15 as ratios, checked against one
run's rows.

Absolute limits were set on the project's reference 2-core machines; a machine that is slower or
busier inflates every CPU figure alike. So where the issue gives the bare aiohttp relay's figure,
a check also compares fleetlb with this run's relay, round by round: the limit allows fleetlb
limit / relay-reference times the relay (140 / 105 µs = 1.33x its CPU per request), on any machine.
A verdict is information for people; the bench never fails on speed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.summary import Row, find

NAN = math.nan


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    unit: str
    limit: float
    measured: float
    vs_relay: float = NAN  # this run: median over rounds of (measured / the relay's figure)
    relay_reference: float = NAN  # the relay's figure on the reference machine

    @property
    def allowed_vs_relay(self) -> float:
        """How many times the relay the limit allows (limit / the relay's reference figure)."""
        if math.isnan(self.relay_reference) or self.relay_reference == 0:
            return NAN
        return self.limit / self.relay_reference

    @property
    def verdict(self) -> str:
        if math.isnan(self.measured):
            return "not measured"
        if self.measured <= self.limit:
            return "met"
        if self.vs_relay <= self.allowed_vs_relay:  # False when either is NaN
            return "met vs relay"
        return "missed"


def _value(rows: Sequence[Row], workload: str, target: str, get: Callable[[Row], float]) -> float:
    row = find(rows, workload, target)
    return NAN if row is None else get(row)


def _cpu(rows: Sequence[Row], workload: str, target: str, scale: float = 1.0) -> float:
    return _value(rows, workload, target, lambda r: r.cpu_us_per_unit * scale)


def _cpu_vs_relay(rows: Sequence[Row], workload: str, target: str) -> float:
    return _value(rows, workload, target, lambda r: r.cpu_vs_relay)


def _hold(rows: Sequence[Row], target: str, key: str) -> float:
    row = find(rows, "hold", target)
    if row is None:
        return NAN
    value = row.extra.get(key, NAN) if key != "errors" else row.errors
    return float(value)


def checks(rows: Sequence[Row], target: str = "fleetlb") -> list[Check]:
    """The bar, for `target` (fleetlb unless another gateway is being held to it)."""
    native = _cpu(rows, "stream_c16", target)
    translate = _cpu(rows, "responses_c16", target)
    return [
        Check("CPU per non-streaming request (c=1)", "µs", 140.0,
              _cpu(rows, "chat_c1", target), _cpu_vs_relay(rows, "chat_c1", target), 105.0),
        Check("CPU per non-streaming request (c=32)", "µs", 140.0,
              _cpu(rows, "chat_c32", target), _cpu_vs_relay(rows, "chat_c32", target), 105.0),
        Check("CPU per 100-chunk stream (c=16)", "ms", 0.7,
              _cpu(rows, "stream_c16", target, 1e-3),
              _cpu_vs_relay(rows, "stream_c16", target), 0.5),
        Check("translate-mode stream CPU / native", "x", 3.0,
              translate / native if native else NAN),
        Check("added p50, non-streaming c=1", "ms", 0.3,
              _value(rows, "chat_c1", target, lambda r: r.added_p50_ms),
              _value(rows, "chat_c1", target, lambda r: r.added_p50_vs_relay), 0.2),
        Check("added time to first byte, stream c=1", "ms", 0.5,
              _value(rows, "stream_c1", target, lambda r: r.added_ttfb_p50_ms)),
        Check("errors among the held streams", "", 0.0, _hold(rows, target, "errors")),
        Check("RSS per open stream", "KiB", 64.0, _hold(rows, target, "rss_per_stream_kib")),
    ]


def _ratio(rows: Sequence[Row], workload: str, target: str, peer: str,
           get: Callable[[Row], float]) -> float:
    mine, theirs = _value(rows, workload, target, get), _value(rows, workload, peer, get)
    return mine / theirs if theirs and not math.isnan(theirs) else NAN


def goals(rows: Sequence[Row], target: str = "fleetlb") -> list[Check]:
    """Issue 15's goals, every one a ratio within this run (absolute figures move 5x between
    machines): 'x relay' is paired round by round where the rows carry it, else medians."""
    def cpu(r: Row) -> float:
        return r.cpu_us_per_unit

    def added_ttfb(r: Row) -> float:
        return r.added_ttfb_p50_ms

    native = _cpu(rows, "stream_c16", target)
    translate = _cpu(rows, "responses_c16", target)
    return [
        Check("goal: CPU per request c=1 / relay", "x", 1.0,
              _cpu_vs_relay(rows, "chat_c1", target)),
        Check("goal: CPU per request c=32 / relay", "x", 1.0,
              _cpu_vs_relay(rows, "chat_c32", target)),
        Check("goal: CPU per stream c=16 / relay", "x", 1.0,
              _cpu_vs_relay(rows, "stream_c16", target)),
        Check("goal: CPU per stream c=16 / nginx", "x", 3.0,
              _ratio(rows, "stream_c16", target, "nginx", cpu)),
        Check("goal: translate-mode stream / native", "x", 1.5,
              translate / native if native else NAN),
        Check("goal: added p50 c=1 / relay's", "x", 1.0,
              _value(rows, "chat_c1", target, lambda r: r.added_p50_vs_relay)),
        Check("goal: added TTFB c=1 / relay's", "x", 1.0,
              _ratio(rows, "stream_c1", target, "relay", added_ttfb)),
    ]
