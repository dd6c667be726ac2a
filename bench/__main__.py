"""`python -m bench [--quick] [--peers nginx,litellm] [--json out.json] [--plot out.png]`

How much does fleetlb add? The same workloads direct and through fleetlb (and peers), on 127.0.0.1.
Exit status: 0 when the harness worked, whatever the numbers; 1 when it broke (a required target
did not start, or a workload got no answer at all through direct or fleetlb); 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import orjson

from bench import bar, report
from bench.child import StartFailed
from bench.runner import REQUIRED, Run, run_bench
from bench.summary import Row, summarize
from bench.targets import PEERS
from bench.workloads import FULL, QUICK, Plan


def _peers(value: str) -> list[str]:
    peers = [p.strip() for p in value.split(",") if p.strip() and p.strip() != "none"]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown peer {', '.join(unknown)} "
                                         f"(known: {', '.join(PEERS)})")
    return peers


def _tree(value: str) -> tuple[str, Path]:
    label, sep, path = value.partition("=")
    reserved = ("direct", "fleetlb", "relay", *PEERS)
    if not sep or not label or label in reserved or not (Path(path) / "lb").is_dir():
        raise argparse.ArgumentTypeError(
            f"expected LABEL=DIR with DIR/lb a fleetlb source tree and LABEL not one of "
            f"{', '.join(reserved)}, got {value!r}")
    return label, Path(path).resolve()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small counts, 2 rounds, 100 held streams: under a minute")
    parser.add_argument("--peers", type=_peers, default=[],
                        help="also bench these when installed: nginx,litellm "
                             "(install them with bench/setup --peers nginx,litellm)")
    parser.add_argument("--fleetlb-tree", type=_tree, action="append", default=[],
                        metavar="LABEL=DIR",
                        help="also bench the fleetlb in source tree DIR as LABEL, interleaved "
                             "with this one (A/B a change); repeatable")
    parser.add_argument("--workloads", type=lambda v: [w.strip() for w in v.split(",")],
                        help="only these workloads (keys as in the JSON: chat_c1, chat_c32, "
                             "stream_c1, stream_c16, responses_c16, responses_c1, hold)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default: 3, quick: 2)")
    parser.add_argument("--chunk-gap-ms", type=float,
                        help=f"gap between two stream chunks (default: {FULL.chunk_gap_ms:g})")
    parser.add_argument("--client-keys", type=int, default=0, metavar="N",
                        help="configure N named [[keys]] (with limits) in each fleetlb build that "
                             "has lb/teams; the bench's key is one of them (default: 0, one "
                             "[server] api_keys key)")
    parser.add_argument("--keyless", action="append", default=[], metavar="LABEL",
                        help="run the --fleetlb-tree LABEL with one [server] api_keys key "
                             "whatever --client-keys says: the teams A/B is `--client-keys 1000 "
                             "--fleetlb-tree nokeys=. --keyless nokeys` (repeatable)")
    parser.add_argument("--json", type=Path, help="write every number to this file")
    parser.add_argument("--plot", type=Path, help="write a PNG of latency percentiles "
                                                  "(needs matplotlib)")
    parser.add_argument("--keep", type=Path,
                        help="run in this directory and keep the targets' configs and logs")
    return parser


def broken(run: Run, rows: Sequence[Row]) -> list[str]:
    """Why the harness itself failed: a required target answered nothing in some workload."""
    problems = []
    for row in rows:
        if row.target in REQUIRED and row.ok == 0:
            sample = row.error_samples[0] if row.error_samples else "no answer"
            problems.append(f"{row.workload} through {row.target}: nothing succeeded "
                            f"({row.errors} errors, e.g. {sample})")
    return problems


def execute(plan: Plan, peers: list[str], argv: Sequence[str], *, json_path: Path | None = None,
            plot_path: Path | None = None, keep: Path | None = None,
            trees: dict[str, Path] | None = None,
            keyless: frozenset[str] = frozenset()) -> int:
    def say(message: str) -> None:
        print(f"bench: {message}", file=sys.stderr, flush=True)

    meta = {"plan": plan.name, "rounds": plan.rounds, "date": report.now(),
            "command": shlex.join(["python", "-m", "bench", *argv]),
            "machine": report.machine(), "load_before": report.load_average(),
            "chunks": plan.chunks, "chunk_gap_ms": plan.chunk_gap_ms,
            "held_streams": plan.hold.count if plan.hold else 0}
    try:
        run = run_bench(plan, peers, say, keep=keep, trees=trees, keyless=keyless)
    except StartFailed as exc:
        say(f"broken: {exc}")
        return 1
    rows = summarize(run)
    checks = [*bar.checks(rows), *bar.goals(rows)]
    meta |= {"load_after": report.load_average(), "wall_s": round(run.wall_s, 1),
             "targets": run.targets, "skipped": run.skipped, "unavailable": run.unavailable,
             "notes": run.notes, "peak_rss_kib": run.peak_rss_kib}
    shown = [*plan.workloads, *([plan.hold] if plan.hold else [])]
    print(report.format_report(rows, shown, checks, meta))
    if json_path is not None:
        data = report.as_json(rows, checks, meta, run.as_dict()["cells"])
        json_path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        say(f"wrote {json_path}")
    if plot_path is not None:
        why_not = report.write_plot(rows, plot_path)
        say(why_not or f"wrote {plot_path}")
    problems = broken(run, rows)
    for problem in problems:
        say(f"broken: {problem}")
    say(f"done in {run.wall_s:.0f} s")
    return 1 if problems else 0


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the runner's finally: every child is stopped


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.rounds:
        plan = plan.scaled(1.0, rounds=args.rounds)
    if args.workloads:
        try:
            plan = plan.only(args.workloads)
        except ValueError as exc:
            _parser().error(str(exc))
    if args.client_keys:
        plan = dataclasses.replace(plan, client_keys=args.client_keys)
    if args.chunk_gap_ms is not None:
        plan = dataclasses.replace(plan, chunk_gap_ms=args.chunk_gap_ms)
    unknown = set(args.keyless) - {label for label, _ in args.fleetlb_tree}
    if unknown:
        _parser().error(f"--keyless names no --fleetlb-tree: {', '.join(sorted(unknown))}")
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    return execute(plan, args.peers, argv, json_path=args.json, plot_path=args.plot,
                   keep=args.keep, trees=dict(args.fleetlb_tree),
                   keyless=frozenset(args.keyless))


if __name__ == "__main__":
    sys.exit(main())
