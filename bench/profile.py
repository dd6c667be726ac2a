"""Where fleetlb's CPU goes under one bench workload: py-spy samples the gateway while the load
generator drives it, and the stacks are folded into self and inclusive shares per function.

`python -m bench.profile [--workload chat_c1] [--seconds 15] [--out stacks.txt]`
(needs py-spy: `pip install py-spy`). `fold` and `top` are pure.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from bench.child import Child, free_port
from bench.loadgen import LoadGen
from bench.runner import raise_open_files_limit
from bench.targets import REPO, STARTERS, Context
from bench.workloads import FULL, Workload

SAMPLE_RATE_HZ = 250
IDLE_EXECUTOR_THREAD = "_worker (concurrent/futures/thread.py)"  # blocked in work_queue.get


@dataclass(frozen=True, slots=True)
class Share:
    function: str
    self_pct: float
    total_pct: float


def fold(collapsed: Iterable[str]) -> tuple[Counter[str], Counter[str], int]:
    """py-spy's raw output (`frame;frame;frame count` per line) -> self and inclusive samples per
    frame (a frame counted once per stack even when it recurses), and the sample total."""
    self_samples: Counter[str] = Counter()
    total_samples: Counter[str] = Counter()
    total = 0
    for line in collapsed:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        if frames[-1] == IDLE_EXECUTOR_THREAD:
            continue  # an executor thread waiting for work (py-spy counts its lock wait)
        total += count
        self_samples[frames[-1]] += count
        for frame in set(frames):
            total_samples[frame] += count
    return self_samples, total_samples, total


def _short(frame: str) -> str:
    """`handle (lb/handlers.py:49)` -> `handle (lb/handlers.py)`: lines split one function.
    (py-spy already names files relative to their sys.path entry.)"""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({path})" if path else name


# Where a sample's time goes, decided by the leaf-most frame that names a place (walking up from
# the leaf); the event loop only when nothing else in the stack does.
KERNEL_SEND = "socket send (syscall: loopback TCP, wakes the peer)"
KERNEL_RECV = "socket recv (syscall)"
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("epoll wait (syscall)", ("(selectors.py)",)),
    ("logging: structlog JSON line, contextvars", ("(structlog/", "(lb/observe.py)")),
    ("upstream client: request and response (lb/upstream, or aiohttp's client)",
     ("(aiohttp/client", "(aiohttp/connector.py)", "(lb/upstream/", "(lb/upstream.py)",
      "(httptools")),
    ("aiohttp server: response headers and writes",
     ("(aiohttp/web_response.py)", "(aiohttp/http_writer.py)")),
    ("aiohttp server: request parsing and dispatch",
     ("(aiohttp/web_protocol.py)", "(aiohttp/web_request.py)", "(aiohttp/http_parser.py)",
      "(aiohttp/web_app.py)", "(aiohttp/web_urldispatcher.py)",
      "(aiohttp/web_middlewares.py)", "(aiohttp/_http_parser")),
    ("fleetlb's own code (middleware, auth, routing, payload, relay, sse)", ("(lb/",)),
)
# Under uvloop transport.write is C, so the send syscall shows as the self time of the Python
# function that called it: these do little else.
_WRITES_IN_C = frozenset({"ClientSink._write (lb/sink.py)",
                          "BackendConnection.request (lb/upstream/connection.py)",
                          "StreamWriter._writelines (aiohttp/http_writer.py)",
                          "StreamWriter._write (aiohttp/http_writer.py)"})
_ROOTS = ("(lb/serve.py)", "(lb/__main__.py)", "(<frozen runpy>)")  # every sample's outer frames
EVENT_LOOP = "event loop (asyncio scheduling, tasks, timers)"


def group_of(frames: list[str]) -> str:
    leaf = frames[-1]
    if leaf.startswith(("_SelectorSocketTransport.write ",
                        "_SelectorSocketTransport.writelines ")) or leaf in _WRITES_IN_C:
        return KERNEL_SEND
    if leaf.startswith("_SelectorSocketTransport._read_ready"):
        return KERNEL_RECV
    for frame in reversed(frames):
        if frame.endswith(_ROOTS):
            continue
        for name, markers in GROUPS:
            if any(m in frame for m in markers):
                return name
    return EVENT_LOOP if any("(asyncio/" in f for f in frames) else "other"


def groups(collapsed: Iterable[str]) -> list[tuple[str, float]]:
    """Share of samples per place (see GROUPS), largest first."""
    counts: Counter[str] = Counter()
    for line in collapsed:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if stack and count_text.isdigit():
            frames = [_short(f) for f in stack.split(";")]
            if frames[-1] != IDLE_EXECUTOR_THREAD:
                counts[group_of(frames)] += int(count_text)
    total = sum(counts.values())
    return [(name, 100 * c / total) for name, c in counts.most_common()] if total else []


def samples_per_unit(stacks: Path, units: int) -> float:
    """Samples per request (or stream): with the rate, how long one costs in sampled time."""
    _, _, total = fold(stacks.read_text().splitlines())
    return total / units if units else float("nan")


def top(collapsed: Iterable[str], n: int = 30) -> list[Share]:
    self_samples, total_samples, total = fold(collapsed)
    if total == 0:
        return []
    return [Share(f, 100 * c / total, 100 * total_samples[f] / total)
            for f, c in self_samples.most_common(n)]


def _profile(workload: Workload, seconds: float, out: Path, workdir: Path,
             target_name: str) -> None:
    raise_open_files_limit()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        sys.exit("bench.profile: py-spy is not installed (pip install py-spy)")
    port = free_port()
    backend = Child("backend", [sys.executable, "-m", "bench.backend", "--port", str(port),
                                "--gap-ms", str(FULL.chunk_gap_ms)],
                    workdir / "backend.log", cwd=REPO, env={"PYTHONPATH": str(REPO)})
    target = loadgen = None
    try:
        backend.wait_http(f"http://127.0.0.1:{port}/v1/models", 15)
        target = STARTERS[target_name](Context(f"http://127.0.0.1:{port}", workdir))
        assert target.child is not None
        loadgen = LoadGen(workdir)
        job = {"url": target.base_url + workload.path, "headers": target.headers,
               "body": workload.body(), "stream": workload.stream, "count": 10**7,
               "concurrency": workload.concurrency, "time_limit_s": seconds,
               "expect_events": None}
        spy_proc = subprocess.Popen([spy, "record", "--pid", str(target.child.pid), "--rate",
                                     str(SAMPLE_RATE_HZ), "--duration", str(int(seconds)),
                                     "--format", "raw", "--output", str(out)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        result = loadgen.run("requests", job)
        spy_proc.wait(timeout=seconds + 30)
        print(f"{target_name}, {workload.key} at c={workload.concurrency}: {result['ok']} ok, "
              f"{result['errors']} errors in {result['wall_s']:.1f} s; "
              f"{samples_per_unit(out, result['ok']):.2f} samples per "
              f"{workload.unit} at {SAMPLE_RATE_HZ} Hz; stacks in {out}")
    finally:
        if loadgen is not None:
            loadgen.stop()
        if target is not None:
            target.stop()
        backend.stop()


def main() -> None:
    keys = [w.key for w in FULL.workloads if w.tool == "loadgen"]
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--target", choices=("fleetlb", "relay"), default="fleetlb")
    parser.add_argument("--workload", choices=keys, default="chat_c1")
    parser.add_argument("--concurrency", type=int, help="override the workload's")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--out", type=Path, help="raw stacks (default: a temp file)")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    workload = next(w for w in FULL.workloads if w.key == args.workload)
    if args.concurrency:
        workload = replace(workload, concurrency=args.concurrency)
    with tempfile.TemporaryDirectory(prefix="fleetlb-profile-") as tmp:
        out = args.out or Path(tmp) / "stacks.txt"
        _profile(workload, args.seconds, out, Path(tmp), args.target)
        lines = out.read_text().splitlines()
        shares = top(lines, args.top)
    print(f"{'share %':>7}  where")
    for name, pct in groups(lines):
        print(f"{pct:7.1f}  {name}")
    print(f"\n{'self %':>7} {'total %':>8}  function")
    for share in shares:
        print(f"{share.self_pct:7.1f} {share.total_pct:8.1f}  {share.function}")


if __name__ == "__main__":
    main()
