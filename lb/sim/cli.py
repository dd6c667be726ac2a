"""The `fleetlb sim` command line: its arguments and `run`, which serves a simulated backend until
SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import get_args

from aiohttp import web

from lb.sim.app import build_sim_app
from lb.sim.faults import FAULTS, Fault, FaultyBackend
from lb.sim.kvcache import KvCacheOptions
from lb.sim.options import SimBehavior, SimKind, SimOptions


def _models(value: str) -> tuple[str, ...]:
    models = tuple(m.strip() for m in value.split(",") if m.strip())
    if not models:
        raise argparse.ArgumentTypeError("give at least one model name")
    return models


def _non_negative(value: str) -> float:
    number = float(value)
    if not number >= 0:  # also rejects NaN
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return number


def _probability(value: str) -> float:
    number = float(value)
    if not 0 <= number <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return number


def configure_parser(p: argparse.ArgumentParser) -> None:
    defaults = SimOptions()
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    p.add_argument("--port", type=int, required=True, help="port to listen on (0: any free port)")
    p.add_argument(
        "--models", type=_models, default=defaults.models, help="comma-separated model names"
    )
    p.add_argument(
        "--kind",
        choices=get_args(SimKind),
        default=defaults.kind,
        help="which server to imitate (default: %(default)s)",
    )
    p.add_argument("--ttft-ms", type=_non_negative, default=0.0, help="time to first token, ms")
    p.add_argument(
        "--tokens-per-s",
        type=_non_negative,
        default=0.0,
        help="token rate; 0 = as fast as possible",
    )
    p.add_argument(
        "--no-responses",
        dest="responses",
        action="store_false",
        help="do not serve /v1/responses (404, like a chat-only server)",
    )
    p.add_argument(
        "--fail-rate",
        type=_probability,
        default=0.0,
        help="probability that a model request gets a 500",
    )
    p.add_argument("--seed", type=int, default=None, help="seed for --fail-rate")
    p.add_argument(
        "--fault",
        choices=FAULTS,
        default=None,
        help="misbehave instead (lb/sim/faults.py): every model request gets this fault",
    )
    kv = KvCacheOptions()
    p.add_argument("--kv-cache-blocks", type=int, default=0,
                   help=f"model a KV cache of this many {kv.block_tokens}-token blocks, a prefill "
                   "queue and batched decode (0: off); --ttft-ms is then the base TTFT")
    p.add_argument("--prefill-tokens-per-s", type=_non_negative, default=kv.prefill_tokens_per_s,
                   help="uncached prompt tokens one prefill processes a second "
                   "(default: %(default)s)")
    p.add_argument("--max-prefills", type=int, default=kv.max_prefills,
                   help="prefills at once, the rest queue (default: %(default)s)")
    p.add_argument("--decode-slowdown", type=_non_negative, default=kv.decode_slowdown,
                   help="how much slower each token gets per other decoding request "
                   "(default: %(default)s)")


def options_from_args(args: argparse.Namespace) -> SimOptions:
    return SimOptions(
        models=tuple(args.models),
        kind=args.kind,
        ttft_ms=args.ttft_ms,
        tokens_per_s=args.tokens_per_s,
        responses=args.responses,
        fail_rate=args.fail_rate,
        seed=args.seed,
        kv_cache=KvCacheOptions(
            blocks=args.kv_cache_blocks, prefill_tokens_per_s=args.prefill_tokens_per_s or 1.0,
            max_prefills=max(1, args.max_prefills), decode_slowdown=args.decode_slowdown,
        ) if args.kv_cache_blocks > 0 else None,
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; 0 on a clean stop, 1 when the address cannot be bound."""
    if getattr(args, "fault", None):
        return asyncio.run(_serve_fault(args.fault, args.host, args.port))
    return asyncio.run(_serve(options_from_args(args), args.host, args.port))


async def _serve_fault(fault: Fault, host: str, port: int) -> int:
    try:
        backend = await FaultyBackend(fault=fault).start(host, port)
    except OSError as exc:
        print(f"fleetlb sim: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    print(f"fleetlb sim: misbehaving backend ({fault}) listening on {backend.url}", flush=True)
    try:
        await _until_stopped()
    finally:
        await backend.close()
    return 0


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _serve(options: SimOptions, host: str, port: int) -> int:
    # Nobody can read the records of a standalone simulator: keep none, spend nothing on them.
    app = build_sim_app(options, SimBehavior(record_limit=0))
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        print(f"fleetlb sim: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        await runner.cleanup()
        return 1
    bound_host, bound_port = runner.addresses[0][:2]
    print(
        f"fleetlb sim: {options.kind} backend with {', '.join(options.models)} listening on "
        f"http://{bound_host}:{bound_port}",
        flush=True,
    )
    try:
        await _until_stopped()
    finally:
        await runner.cleanup()
    return 0
