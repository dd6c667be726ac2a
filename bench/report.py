"""What a run says: a table for people, JSON for machines, a PNG when matplotlib is installed.

Formatting is pure (rows in, text or dicts out); only `write_plot` touches a file.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.bar import Check
from bench.eventloop import loop_name
from bench.summary import Row
from bench.workloads import Workload

DASH = "—"


def fmt(value: float | None, digits: int = 2) -> str:
    """A number for the table; a dash when there is none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def signed(value: float, digits: int = 3) -> str:
    return DASH if math.isnan(value) else f"{value:+.{digits}f}"


def _table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
              for i, h in enumerate(header)]
    out = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in
                     enumerate(zip(header, widths, strict=True)))]
    out += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                      enumerate(zip(line, widths, strict=True))) for line in lines]
    return out


def _request_block(rows: Sequence[Row]) -> list[str]:
    header = ["target", "ok", "err", "p50 ms", "p90 ms", "p99 ms", "req/s", "CPU µs/req",
              "sys %", "+p50 ms", "x p50"]
    return _table(header, [[r.target, str(r.ok), str(r.errors), fmt(r.p50_ms, 3),
                            fmt(r.p90_ms, 3), fmt(r.p99_ms, 3), fmt(r.per_s, 0),
                            fmt(r.cpu_us_per_unit, 0), fmt(r.system_share * 100, 0),
                            signed(r.added_p50_ms),
                            fmt(r.p50_ratio)] for r in rows])


def _stream_block(rows: Sequence[Row]) -> list[str]:
    header = ["target", "ok", "err", "TTFB p50 ms", "TTFB p90 ms", "total p50 ms",
              "total p99 ms", "streams/s", "CPU ms/stream", "sys %", "+TTFB ms", "+total ms"]
    return _table(header, [[r.target, str(r.ok), str(r.errors), fmt(r.ttfb_p50_ms, 3),
                            fmt(r.ttfb_p90_ms, 3), fmt(r.p50_ms, 2), fmt(r.p99_ms, 2),
                            fmt(r.per_s, 1), fmt(r.cpu_us_per_unit / 1000, 3),
                            fmt(r.system_share * 100, 0),
                            signed(r.added_ttfb_p50_ms), signed(r.added_p50_ms, 2)]
                           for r in rows])


def _hold_block(rows: Sequence[Row]) -> list[str]:
    header = ["target", "ok", "err", "open at once", "RSS before MiB", "RSS open MiB",
              "KiB/stream", "TTFB p90 ms", "CPU ms/stream"]
    lines = []
    for r in rows:
        x = r.extra
        lines.append([r.target, str(r.ok), str(r.errors), str(x.get("open_streams", DASH)),
                      fmt(x.get("rss_before_kib", math.nan) / 1024, 1),
                      fmt(x.get("rss_open_kib", math.nan) / 1024, 1),
                      fmt(x.get("rss_per_stream_kib", math.nan), 1),
                      fmt(r.ttfb_p90_ms, 1),
                      fmt(r.cpu_us_per_unit / 1000, 3)])
    return _table(header, lines)


def format_report(rows: Sequence[Row], workloads: Sequence[Workload],
                  checks: Sequence[Check], meta: dict[str, Any]) -> str:
    out = [f"fleetlb bench · {meta['plan']} · {meta['date']} · {meta['machine']['cpu']} "
           f"({meta['machine']['cores']} cores) · load avg {meta['load_before']} → "
           f"{meta['load_after']}",
           f"medians of {meta['rounds']} interleaved rounds; + (added) and x (ratio) are paired "
           "with direct round by round; CPU: the target's process tree, utime+stime from /proc",
           ""]
    for workload in workloads:
        mine = [r for r in rows if r.workload == workload.key]
        unavailable = meta["unavailable"].get(workload.key, {})
        if not mine and not unavailable:
            continue
        tool = mine[0].tool if mine else ""
        out.append(workload.title + (f"  [{tool}]" if tool else ""))
        if mine:
            block = _hold_block if workload.tool == "hold" else (
                _stream_block if workload.stream else _request_block)
            out += ["  " + line for line in block(mine)]
        out += [f"  {target}: {why}" for target, why in unavailable.items()]
        for r in mine:
            if r.errors and r.error_samples:
                out.append(f"  {r.target} errors, e.g.: {r.error_samples[0]}")
        out.append("")
    out.append("the bar (fleetlb; informational, the bench never fails on speed; 'x relay' is "
               "fleetlb / the bare relay, paired by round, and what the limit allows)")
    out += ["  " + line for line in _table(
        ["target", "limit", "measured", "x relay", "allowed x relay", "verdict"],
        [[c.name, f"<= {fmt(c.limit)} {c.unit}".strip(),
          f"{fmt(c.measured, 3)} {c.unit}".strip(), fmt(c.vs_relay), fmt(c.allowed_vs_relay),
          c.verdict] for c in checks])]
    for name, why in meta["skipped"].items():
        out.append(f"skipped {name}: {why}")
    for name, notes in meta["notes"].items():
        out += [f"note {name}: {n}" for n in notes]
    return "\n".join(out)


def machine() -> dict[str, Any]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "event_loop": loop_name()}


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def as_json(rows: Sequence[Row], checks: Sequence[Check], meta: dict[str, Any],
            cells: list[dict[str, Any]]) -> dict[str, Any]:
    def clean(obj: Any) -> Any:
        if isinstance(obj, float) and math.isnan(obj):
            return None
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [clean(v) for v in obj]
        return obj

    data: dict[str, Any] = clean({"meta": meta, "summary": [asdict(r) for r in rows],
                  "bar": [{**asdict(c), "allowed_vs_relay": c.allowed_vs_relay,
                           "verdict": c.verdict}
                          for c in checks],
                  "cells": cells})
    return data


def write_plot(rows: Sequence[Row], path: Path) -> str | None:
    """Latency percentiles per target (non-streaming c=1, streams' TTFB); None when written,
    else why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot (pip install matplotlib)"
    panels = [("chat_c1", "non-streaming c=1: latency", ("p50_ms", "p90_ms", "p99_ms")),
              ("stream_c1", "stream c=1: time to first byte", ("ttfb_p50_ms", "ttfb_p90_ms"))]
    fig, axes = plt.subplots(1, len(panels), figsize=(12, 4.5))
    for ax, (key, title, fields) in zip(axes, panels, strict=True):
        mine = [r for r in rows if r.workload == key]
        width = 0.8 / max(1, len(fields))
        for i, name in enumerate(fields):
            xs = [j + i * width for j in range(len(mine))]
            ax.bar(xs, [getattr(r, name) for r in mine], width, label=name.replace("_ms", ""))
        ax.set_xticks([j + width * (len(fields) - 1) / 2 for j in range(len(mine))],
                      [r.target for r in mine])
        ax.set_ylabel("ms")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
