"""`python -m bench.teamscost [--keys 1000] [--quick]`: what client keys cost per model call.

Everything the request path does for keys, run in-process against a table of N named keys with
rpm/tpm/max_in_flight (the bench's key last, with a model glob), next to the same steps for one
anonymous `[server] api_keys` key (what every build did before lb.teams): the key lookup, the
admission (model access, the limits' decision, the ticket), the x-ratelimit-* headers merged into
the answer's headers and serialised by aiohttp, and the finish (lease back, tokens charged).

Pure Python, no sockets, best of 9 interleaved batches. The interleaved `python -m bench
--client-keys N --fleetlb-tree nokeys=. --keyless nokeys` is the end-to-end A/B, but on a shared
2-core VM its rounds move by more than the few percent this is about (an A/A run of one build
against itself differs by as much); this gives the deterministic part, to set against the
per-request CPU that run reports.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import timeit
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from aiohttp.http_writer import _serialize_headers
from multidict import CIMultiDict

from lb.auth import BearerKeys
from lb.config import parse_config
from lb.teams.gate import KeyGate
from lb.teams.table import KeyTable
from lb.usage import Usage

REPEAT = 9
MODEL = "bench-fast"
KEY = "sk-bench-key"
USAGE = Usage(12, 30)
README_REQUEST_CPU_US = ((1, 323.0), (32, 193.0))  # fleetlb, the README's full run
# what relay.response_headers builds for a non-streaming chat answer, before the key's headers
BASE_HEADERS = {"Content-Type": "application/json", "X-Request-ID": "0" * 32,
                "x-fleetlb-endpoint": "bench-backend", "x-fleetlb-attempts": "1"}


def _config(keys: int) -> dict[str, Any]:
    endpoints = [{"name": "b", "url": "http://127.0.0.1:1", "models": [MODEL]}]
    if keys == 0:
        return {"server": {"api_keys": [KEY]}, "endpoints": endpoints}
    entries: list[dict[str, Any]] = [{"name": f"team-{i}", "key": f"sk-bench-team-{i}",
                                      "rpm": 600} for i in range(keys - 1)]
    entries.append({"name": "bench", "key": KEY, "models": ["bench*"], "rpm": 100_000_000,
                    "tpm": 1_000_000_000, "max_in_flight": 100_000})
    return {"keys": entries, "endpoints": endpoints}


def one_call(keys: int) -> Callable[[], None]:
    """One model call's key steps, as a function to time (its loop made once, outside)."""
    table = KeyTable.from_config(parse_config(_config(keys), env={}))
    clock = iter(range(10**12)).__next__  # a moving clock: the windows roll as in production
    gate = KeyGate(lambda: 1_000.0 + clock() * 1e-4)
    authorization = f"Bearer {KEY}"

    def call() -> None:
        team = table.identify(authorization)
        ticket = gate.admit_now(team, MODEL)  # in-process limits: what lb.teams.step calls
        assert ticket is not None
        headers = dict(BASE_HEADERS)
        more = ticket.headers()
        if more:
            headers.update(more)
        _serialize_headers("HTTP/1.1 200 OK", CIMultiDict(headers))
        ticket.finish(USAGE)

    return call


def before_teams() -> Callable[[], None]:
    """What a build before lb.teams did for a client key: a constant-time check of the
    `[server] api_keys` list, and the answer's headers without any x-ratelimit-*."""
    auth = BearerKeys(frozenset({KEY}))
    authorization = f"Bearer {KEY}"

    def call() -> None:
        auth.check(authorization)
        _serialize_headers("HTTP/1.1 200 OK", CIMultiDict(dict(BASE_HEADERS)))

    return call


def measure(calls: Sequence[Callable[[], None]], number: int) -> list[float]:
    """Best microseconds per call of each, their batches interleaved (a slow spell of the
    machine hits them all alike)."""
    best = [float("inf")] * len(calls)
    for _ in range(REPEAT):
        for i, call in enumerate(calls):
            best[i] = min(best[i], timeit.timeit(call, number=number) / number * 1e6)
    return best


def request_cpu(bench_json: Path | None) -> list[tuple[str, float]]:
    """fleetlb's CPU per non-streaming request (median over rounds) at c=1 and c=32: from a
    bench JSON file, else the README's full run (2026-12-02)."""
    if bench_json is None:
        return [(f"c={c} (README's full run)", us) for c, us in README_REQUEST_CPU_US]
    cells = orjson.loads(bench_json.read_bytes())["cells"]
    found = []
    for key, label in (("chat_c1", "c=1"), ("chat_c32", "c=32")):
        values = [c["cpu_us_per_unit"] for c in cells if c["target"] == "fleetlb"
                  and c["workload"] == key and c["cpu_us_per_unit"] is not None]
        if values:
            found.append((f"{label} ({bench_json.name})", statistics.median(values)))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.teamscost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1000, help="named keys (default 1000)")
    parser.add_argument("--quick", action="store_true", help="fewer calls (CI)")
    parser.add_argument("--bench-json", type=Path,
                        help="a `python -m bench --json` file: express the difference against "
                             "fleetlb's own CPU per non-streaming request there (c=1 and c=32)")
    args = parser.parse_args(argv)
    number = 2_000 if args.quick else 20_000
    before, keyless, keyed = measure([before_teams(), one_call(0), one_call(args.keys)], number)
    print(f"{'client keys':>34} {'us per model call':>18} {'added':>7}")
    print(f"{'before lb.teams: one api_keys key':>34} {before:18.2f}")
    print(f"{'lb.teams: one api_keys key':>34} {keyless:18.2f} {keyless - before:7.2f}")
    print(f"{f'lb.teams: {args.keys} keys with limits':>34} {keyed:18.2f} {keyed - before:7.2f}")
    for label, cpu_us in request_cpu(args.bench_json):
        print(f"added by {args.keys} keys with limits: {100 * (keyed - before) / cpu_us:.1f} % of "
              f"fleetlb's {cpu_us:.0f} us non-streaming request, {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
