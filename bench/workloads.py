"""What the bench asks of each target: the workloads, and the plans (full, quick) that size them.

Every workload is bounded twice, by a count and by a time limit, whichever comes first.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import orjson

from bench.backend import FAST_MODEL, SLOW_MODEL

Tool = Literal["loadgen", "wrk", "hold"]
Unit = Literal["request", "stream"]
PROMPT = "Tell me about the quick brown fox."
CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
# One chunk per millisecond: each event reaches the gateway in its own read, as tokens from a
# real server do (a backend writing as fast as it can lets reads coalesce and flatters every relay).
CHUNK_GAP_MS = 1.0


@dataclass(frozen=True, slots=True)
class Workload:
    key: str
    title: str
    path: str
    stream: bool
    concurrency: int
    count: int
    time_limit_s: float
    unit: Unit
    tool: Tool = "loadgen"
    model: str = FAST_MODEL
    only: tuple[str, ...] | None = None  # the targets that run it; None: every target
    optional_route: bool = False  # 404/405/501 means "not available here", not an error

    def body(self) -> str:
        if self.path == RESPONSES:
            obj: dict[str, object] = {"model": self.model, "input": PROMPT,
                                      "max_output_tokens": 128, "stream": self.stream}
        else:
            obj = {"model": self.model, "max_tokens": 128, "stream": self.stream,
                   "messages": [{"role": "user", "content": PROMPT}]}
        return orjson.dumps(obj).decode()

    def runs_on(self, target: str) -> bool:
        return self.only is None or target in self.only


@dataclass(frozen=True, slots=True)
class Plan:
    """How big a run is: rounds of the interleaved workloads, then the held streams once."""

    name: str
    rounds: int
    chunks: int  # events per stream (plus the final [DONE])
    chunk_gap_ms: float  # between two events of one stream
    workloads: tuple[Workload, ...]
    hold: Workload | None  # None: no held streams this run
    slow_chunks: int  # the held streams: this many events...
    slow_gap_ms: float  # ...this far apart

    def scaled(self, factor: float, rounds: int | None = None) -> Plan:
        """Smaller (or larger) counts and time limits, for tests and quick looks."""
        def scale(w: Workload) -> Workload:
            return replace(w, count=max(1, int(w.count * factor)),
                           time_limit_s=max(0.2, w.time_limit_s * factor))

        hold = self.hold and replace(self.hold, count=max(2, int(self.hold.count * factor)))
        return replace(self, rounds=rounds or self.rounds,
                       workloads=tuple(scale(w) for w in self.workloads), hold=hold)

    def only(self, keys: list[str]) -> Plan:
        """The same plan with only the workloads named (`hold` for the held streams)."""
        known = {w.key for w in self.workloads} | {"hold"}
        unknown = set(keys) - known
        if unknown:
            raise ValueError(f"unknown workload {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(sorted(known))})")
        return replace(self, workloads=tuple(w for w in self.workloads if w.key in keys),
                       hold=self.hold if "hold" in keys else None)


# before anything is measured, every target serves a few of these (connections, caches)
WARMUP = Workload("warmup", "warm-up", CHAT, False, 1, 20, 5.0, "request")


def _plan(name: str, rounds: int, seconds: float, scale: float, hold_streams: int,
          slow_chunks: int, slow_gap_ms: float) -> Plan:
    chunks = 100
    workloads = (
        Workload("chat_c1", "chat, non-streaming, c=1", CHAT, False, 1,
                 int(3000 * scale), seconds, "request"),
        Workload("chat_c32", "chat, non-streaming, c=32", CHAT, False, 32,
                 int(100_000 * scale), seconds, "request", tool="wrk"),
        Workload("stream_c1", f"chat stream, {chunks} chunks, c=1", CHAT, True, 1,
                 int(200 * scale), seconds, "stream"),
        Workload("stream_c16", f"chat stream, {chunks} chunks, c=16", CHAT, True, 16,
                 int(2000 * scale), seconds, "stream"),
        Workload("responses_c16", f"Responses stream (translate), {chunks} chunks, c=16",
                 RESPONSES, True, 16, int(2000 * scale), seconds, "stream",
                 only=("fleetlb", "fleetlb-redis"), optional_route=True),
        # each one stored: the response store's cost per request (SQLite, or Redis with --peers)
        Workload("responses_c1", "Responses, non-streaming (translate, stored), c=1", RESPONSES,
                 False, 1, int(2000 * scale), seconds, "request",
                 only=("fleetlb", "fleetlb-limits", "fleetlb-redis"), optional_route=True),
    )
    # the held streams last slow_chunks * slow_gap_ms; the limit leaves time to open them all
    hold_s = slow_chunks * slow_gap_ms / 1000
    hold = Workload("hold", f"{hold_streams} concurrent slow streams", CHAT, True, hold_streams,
                    hold_streams, 2 * hold_s + 10, "stream", tool="hold", model=SLOW_MODEL)
    return Plan(name, rounds, chunks, CHUNK_GAP_MS, workloads, hold, slow_chunks, slow_gap_ms)


FULL = _plan("full", rounds=5, seconds=1.2, scale=1.0, hold_streams=1000,
             slow_chunks=40, slow_gap_ms=200.0)
QUICK = _plan("quick", rounds=2, seconds=0.6, scale=0.1, hold_streams=100,
              slow_chunks=10, slow_gap_ms=100.0)
