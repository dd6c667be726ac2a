"""The load generator: a separate process, so its CPU never counts as the gateway's.

It reads one JSON job per line on stdin and answers one JSON line per job on stdout (a `hold` job
also says `{"event": "open"}` once every stream is open). Every job is bounded in count and time.
`LoadGen` is the bench's handle on that process.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.child import Child
from bench.eventloop import run

REQUEST_TIMEOUT_S = 30.0  # one request or stream, whatever the workload
MAX_ERROR_SAMPLES = 5  # error messages kept per job (the count is exact)
_DATA = b"data:"


@dataclass(slots=True)
class Tally:
    """What one job saw; each request adds its latency (and time to first byte when streamed)."""

    latencies_s: list[float] = field(default_factory=list)
    ttfb_s: list[float] = field(default_factory=list)
    errors: int = 0
    opened: int = 0  # streams that got their first event (the hold job waits for all)
    ended: int = 0  # of those, streams that are over (done or failed)
    error_samples: list[str] = field(default_factory=list)
    awaited: int = 0  # the hold job: `settled` is set once this many streams opened or failed
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    def fail(self, message: str) -> None:
        self.errors += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(message)
        self._progress()

    def open_one(self) -> None:
        self.opened += 1
        self._progress()

    def _progress(self) -> None:
        if self.awaited and self.opened + self.errors >= self.awaited:
            self.settled.set()

    def as_dict(self, wall_s: float) -> dict[str, Any]:
        return {"ok": len(self.latencies_s), "errors": self.errors,
                "error_samples": self.error_samples, "wall_s": wall_s,
                "latencies_s": self.latencies_s, "ttfb_s": self.ttfb_s}


def count_events(tail: bytes, chunk: bytes) -> tuple[int, bytes]:
    """`data:` lines in `chunk`, counting one split across reads once; returns the new tail."""
    joined = tail + chunk
    return joined.count(_DATA), joined[-(len(_DATA) - 1):]


@dataclass(frozen=True, slots=True)
class Job:
    url: str
    headers: dict[str, str]
    body: bytes
    stream: bool
    count: int
    concurrency: int
    time_limit_s: float
    expect_events: int | None = None  # a stream with another count of `data:` lines is an error

    @classmethod
    def parse(cls, spec: dict[str, Any]) -> Job:
        return cls(spec["url"], spec["headers"], spec["body"].encode(), spec["stream"],
                   spec["count"], spec["concurrency"], spec["time_limit_s"],
                   spec.get("expect_events"))


class Client:
    """One job's requests over one connection pool."""

    def __init__(self, session: aiohttp.ClientSession, job: Job, tally: Tally) -> None:
        self._session = session
        self._job = job
        self._tally = tally

    async def one(self) -> None:
        job, tally = self._job, self._tally
        started = time.perf_counter()
        try:
            async with self._session.post(job.url, data=job.body, headers=job.headers) as resp:
                if resp.status != 200:
                    text = (await resp.read())[:120].decode("utf-8", "replace")
                    tally.fail(f"HTTP {resp.status}: {text}")
                    return
                if job.stream:
                    await self._read_stream(resp, started)
                    return
                if not await resp.read():
                    tally.fail("empty body")
                    return
        except (aiohttp.ClientError, TimeoutError) as exc:
            tally.fail(f"{type(exc).__name__}: {exc}"[:200])
            return
        tally.latencies_s.append(time.perf_counter() - started)

    async def _read_stream(self, resp: aiohttp.ClientResponse, started: float) -> None:
        first: float | None = None
        events, tail = 0, b""
        try:
            async for chunk in resp.content.iter_any():
                if first is None:
                    first = time.perf_counter()
                    self._tally.open_one()
                n, tail = count_events(tail, chunk)
                events += n
        finally:
            if first is not None:
                self._tally.ended += 1
        done = time.perf_counter()
        expected = self._job.expect_events
        if first is None or (expected is not None and events != expected):
            self._tally.fail(f"stream ended after {events} events, expected {expected}")
            return
        self._tally.ttfb_s.append(first - started)
        self._tally.latencies_s.append(done - started)


def _session(concurrency: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    return aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                 timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))


async def run_requests(job: Job) -> dict[str, Any]:
    """`count` requests, `concurrency` at a time, stopping early at `time_limit_s`."""
    tally = Tally()
    remaining = job.count
    started = time.perf_counter()
    deadline = started + job.time_limit_s

    async def worker(client: Client) -> None:
        nonlocal remaining
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            await client.one()

    async with _session(job.concurrency) as session:
        client = Client(session, job, tally)
        await asyncio.gather(*(worker(client) for _ in range(job.concurrency)))
    return tally.as_dict(time.perf_counter() - started)


async def run_hold(job: Job) -> dict[str, Any]:
    """`count` streams at once; says `open` when each has its first event (or time is up)."""
    tally = Tally(awaited=job.count)
    started = time.perf_counter()
    async with _session(job.count) as session:
        client = Client(session, job, tally)
        tasks = [asyncio.ensure_future(client.one()) for _ in range(job.count)]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tally.settled.wait(), job.time_limit_s / 2)
        _say({"event": "open", "open_now": tally.opened - tally.ended,
              "open_s": time.perf_counter() - started})
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, started + job.time_limit_s
                                                           - time.perf_counter()))
        for task in pending:
            task.cancel()
            tally.fail("stream still open at the time limit")
        await asyncio.gather(*pending, return_exceptions=True)
    return tally.as_dict(time.perf_counter() - started)


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(obj) + b"\n")
    sys.stdout.buffer.flush()


async def serve_jobs() -> None:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.buffer.readline)
        if not line:
            return
        spec = orjson.loads(line)
        job = Job.parse(spec)
        result = await (run_hold(job) if spec["kind"] == "hold" else run_requests(job))
        _say({"event": "result", **result})


class LoadGen:
    """The bench's end of the pipe: one job at a time."""

    def __init__(self, workdir: Path) -> None:
        self._child = Child("loadgen", [sys.executable, "-m", "bench.loadgen"],
                            workdir / "loadgen.log", pipes=True)

    @property
    def pid(self) -> int:
        return self._child.pid

    def run(self, kind: str, job: dict[str, Any],
            on_open: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        popen = self._child.popen
        assert popen.stdin is not None
        assert popen.stdout is not None
        popen.stdin.write(orjson.dumps({"kind": kind, **job}) + b"\n")
        popen.stdin.flush()
        while True:
            line = popen.stdout.readline()
            if not line:
                raise RuntimeError(f"the load generator died:\n{self._child.log_tail()}")
            message = orjson.loads(line)
            if message["event"] == "result":
                return dict(message)
            if on_open is not None:
                on_open(message)

    def stop(self) -> None:
        self._child.stop()


if __name__ == "__main__":
    run(serve_jobs())
