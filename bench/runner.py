"""One bench run: start the backend and the targets, drive the workloads round by round with every
target in turn (A B A B …, so machine noise hits all alike), then the held streams; stop all.

Cost comes from the OS: the target's CPU ticks (its whole process tree) before and after each
workload, divided by the requests or streams it served.
"""

from __future__ import annotations

import functools
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import wrk
from bench.child import Child, StartFailed, free_port, http_status
from bench.loadgen import LoadGen
from bench.procfs import TreeSample
from bench.stats import latency_summary, per_unit, rate, ratio
from bench.targets import REPO, STARTERS, Context, NotInstalled, Starter, Target, start_fleetlb
from bench.workloads import WARMUP, Plan, Workload

REQUIRED = ("direct", "fleetlb")  # the bench is broken without these; peers are optional
NOT_AVAILABLE = (404, 405, 501)  # an optional route answering this is not there (yet)
WARMUP_REQUESTS = 20  # per target, before anything is measured

Say = Callable[[str], None]


@dataclass(slots=True)
class Cell:
    """One workload on one target in one round."""

    workload: str
    target: str
    round: int
    ok: int
    errors: int
    error_samples: list[str]
    wall_s: float
    tool: str
    latency: dict[str, float]
    ttfb: dict[str, float] | None
    per_s: float  # requests or streams per second
    cpu_s: float | None = None
    cpu_us_per_unit: float | None = None
    system_share: float | None = None  # of that CPU, the part spent in the kernel
    rss_kib: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Run:
    plan: Plan
    targets: list[str]
    cells: list[Cell] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # target -> why
    unavailable: dict[str, dict[str, str]] = field(default_factory=dict)  # workload -> target
    notes: dict[str, list[str]] = field(default_factory=dict)  # target -> notes
    peak_rss_kib: dict[str, int] = field(default_factory=dict)
    pids: list[int] = field(default_factory=list)  # every process the run started
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"plan": self.plan.name, "rounds": self.plan.rounds, "targets": self.targets,
                "skipped": self.skipped, "unavailable": self.unavailable, "notes": self.notes,
                "peak_rss_kib": self.peak_rss_kib, "wall_s": self.wall_s,
                "cells": [asdict(c) for c in self.cells]}


def raise_open_files_limit() -> None:
    """1,000 streams need ~3,000 sockets across the bench's processes (children inherit this)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Bench:
    def __init__(self, plan: Plan, peers: list[str], workdir: Path, say: Say,
                 trees: Mapping[str, Path] | None = None,
                 keyless: frozenset[str] = frozenset()) -> None:
        """`trees`: more fleetlb builds to bench beside this one, by label (their source dirs);
        those in `keyless` run with one [server] api_keys key whatever the plan's client_keys."""
        self.plan = plan
        self.peers = peers
        self.workdir = workdir
        self.say = say
        self.starters: dict[str, Starter] = {
            "direct": STARTERS["direct"], "fleetlb": STARTERS["fleetlb"],
            **{label: functools.partial(start_fleetlb, name=label, tree=tree,
                                        keyless=label in keyless)
               for label, tree in (trees or {}).items()},
            "relay": STARTERS["relay"], **{p: STARTERS[p] for p in peers}}
        self.targets: list[Target] = []
        self._tree_labels = frozenset(trees or {})
        self._children: list[Child] = []
        self._loadgen: LoadGen | None = None

    def run(self) -> Run:
        started = time.monotonic()
        raise_open_files_limit()
        run = Run(self.plan, [])
        try:
            backend_url = self._start_backend()
            run.pids += [c.pid for c in self._children]
            self._start_targets(Context(backend_url, self.workdir, self.plan.client_keys), run)
            run.pids += [t.child.pid for t in self.targets if t.child is not None]
            run.pids += [h.pid for t in self.targets for h in t.helpers]
            self._loadgen = LoadGen(self.workdir)
            run.pids.append(self._loadgen.pid)
            self._warm_up()
            self._rounds(run)
            self._hold(run)
            for target in self.targets:
                sample = target.sample()
                if sample is not None:
                    run.peak_rss_kib[target.name] = sample.peak_rss_kib
        finally:
            self.stop()
        run.wall_s = time.monotonic() - started
        return run

    def stop(self) -> None:
        """Everything this run started, by PID, last started first."""
        if self._loadgen is not None:
            self._loadgen.stop()
            self._loadgen = None
        for target in reversed(self.targets):
            target.stop()
        for child in reversed(self._children):
            child.stop()
        self.targets.clear()
        self._children.clear()

    def _start_backend(self) -> str:
        port = free_port()
        plan = self.plan
        child = Child("backend", [sys.executable, "-m", "bench.backend", "--port", str(port),
                                  "--chunks", str(plan.chunks),
                                  "--gap-ms", str(plan.chunk_gap_ms),
                                  "--slow-chunks", str(plan.slow_chunks),
                                  "--slow-gap-ms", str(plan.slow_gap_ms)],
                      self.workdir / "backend.log", cwd=REPO, env={"PYTHONPATH": str(REPO)})
        self._children.append(child)
        url = f"http://127.0.0.1:{port}"
        child.wait_http(url + "/v1/models", 15)
        return url

    def _start_targets(self, ctx: Context, run: Run) -> None:
        for name, start in self.starters.items():
            self.say(f"starting {name}")
            try:
                target = start(ctx)
            except NotInstalled as exc:
                run.skipped[name] = str(exc)
                self.say(f"skipping {name}: {exc}")
                continue
            except StartFailed as exc:
                if name in REQUIRED:
                    raise
                run.skipped[name] = f"did not start: {exc}"
                self.say(f"skipping {name}: did not start: {exc}")
                continue
            self.targets.append(target)
            run.targets.append(target.name)  # a peer may name its target (redis: fleetlb-redis)
            if target.notes:
                run.notes[target.name] = target.notes

    def _warm_up(self) -> None:
        for target in self.targets:
            self._load(target, WARMUP, count=WARMUP_REQUESTS, time_limit_s=5)

    def _rounds(self, run: Run) -> None:
        for workload in self.plan.workloads:
            for target in self.targets:
                if self._runs(workload, target) and workload.optional_route:
                    self._check_route(target, workload, run)
        for round_no in range(1, self.plan.rounds + 1):
            self.say(f"round {round_no}/{self.plan.rounds}")
            for workload in self.plan.workloads:
                for target in self.targets:
                    if not self._runs(workload, target) or \
                            target.name in run.unavailable.get(workload.key, {}):
                        continue
                    run.cells.append(self._measure(target, workload, round_no))

    def _runs(self, workload: Workload, target: Target) -> bool:
        """Another fleetlb source tree runs what fleetlb runs (an A/B of responses_c16 too)."""
        name = "fleetlb" if target.name in self._tree_labels else target.name
        return workload.runs_on(name)

    def _check_route(self, target: Target, workload: Workload, run: Run) -> None:
        status = http_status(target.base_url + workload.path, target.headers, method="POST",
                             body=workload.body().encode(), timeout_s=30)
        if status in NOT_AVAILABLE:
            why = f"not available: {workload.path} answers HTTP {status}"
            run.unavailable.setdefault(workload.key, {})[target.name] = why
            self.say(f"{workload.key} on {target.name}: {why}")

    def _measure(self, target: Target, workload: Workload, round_no: int) -> Cell:
        before = target.sample()
        use_wrk = workload.tool == "wrk" and wrk.available() is not None
        if use_wrk:
            result = wrk.run_wrk(target.base_url + workload.path, workload.body(),
                                 target.headers, connections=workload.concurrency,
                                 duration_s=workload.time_limit_s, workdir=self.workdir)
            latency = result["percentiles_ms"]
        else:
            result = self._load(target, workload)
            latency = latency_summary(result["latencies_s"])
        after = target.sample()
        ttfb = latency_summary(result["ttfb_s"]) if result.get("ttfb_s") else None
        cell = Cell(workload.key, target.name, round_no, result["ok"], result["errors"],
                    result["error_samples"], result["wall_s"], "wrk" if use_wrk else "loadgen",
                    latency, ttfb, rate(result["ok"], result["wall_s"]))
        _cost(cell, before, after)
        return cell

    def _load(self, target: Target, workload: Workload, *, count: int | None = None,
              time_limit_s: float | None = None,
              on_open: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        assert self._loadgen is not None
        kind = "hold" if workload.tool == "hold" else "requests"
        expect = None
        if workload.stream and target.passthrough and workload.path.endswith("/completions"):
            expect = self._events_per_stream(workload)
        job = {"url": target.base_url + workload.path, "headers": target.headers,
               "body": workload.body(), "stream": workload.stream,
               "count": count or workload.count, "concurrency": workload.concurrency,
               "time_limit_s": time_limit_s or workload.time_limit_s, "expect_events": expect}
        return self._loadgen.run(kind, job, on_open)

    def _events_per_stream(self, workload: Workload) -> int:
        chunks = self.plan.slow_chunks if workload.tool == "hold" else self.plan.chunks
        return chunks + 1  # and the final [DONE]

    def _hold(self, run: Run) -> None:
        workload = self.plan.hold
        if workload is None:
            return
        for target in self.targets:
            if target.name == "direct":
                continue  # nothing in between: no memory to measure
            self.say(f"{workload.title} through {target.name}")
            run.cells.append(self._hold_one(target, workload))

    def _hold_one(self, target: Target, workload: Workload) -> Cell:
        before = target.sample()
        seen: dict[str, Any] = {}

        def on_open(message: dict[str, Any]) -> None:
            seen["open_now"] = message["open_now"]
            seen["open_s"] = message["open_s"]
            seen["sample"] = target.sample()

        result = self._load(target, workload, on_open=on_open)
        after = target.sample()
        ttfb = latency_summary(result["ttfb_s"]) if result["ttfb_s"] else None
        cell = Cell(workload.key, target.name, 1, result["ok"], result["errors"],
                    result["error_samples"], result["wall_s"], "loadgen",
                    latency_summary(result["latencies_s"]), ttfb,
                    rate(result["ok"], result["wall_s"]))
        _cost(cell, before, after)
        at_open: TreeSample | None = seen.get("sample")
        if before is not None and at_open is not None:
            open_now = int(seen["open_now"])
            cell.extra = {"open_streams": open_now, "open_s": seen["open_s"],
                          "rss_before_kib": before.rss_kib, "rss_open_kib": at_open.rss_kib,
                          "rss_per_stream_kib": per_unit(at_open.rss_kib - before.rss_kib,
                                                         open_now)}
        return cell


def _cost(cell: Cell, before: TreeSample | None, after: TreeSample | None) -> None:
    if before is None or after is None:
        return
    cell.cpu_s = after.cpu_s - before.cpu_s
    cell.cpu_us_per_unit = per_unit(cell.cpu_s * 1e6, cell.ok)
    cell.system_share = ratio(after.system_s - before.system_s, cell.cpu_s)
    cell.rss_kib = after.rss_kib


def run_bench(plan: Plan, peers: list[str], say: Say, *, keep: Path | None = None,
              trees: Mapping[str, Path] | None = None,
              keyless: frozenset[str] = frozenset()) -> Run:
    """A whole run in a fresh temp dir (kept at `keep` when given, for its logs)."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        return Bench(plan, peers, keep, say, trees, keyless).run()
    with tempfile.TemporaryDirectory(prefix="fleetlb-bench-") as tmp:
        return Bench(plan, peers, Path(tmp), say, trees, keyless).run()
