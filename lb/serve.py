"""Running the gateway: event loop, listening socket, signals; `--demo` adds three sim backends."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from aiohttp import web

from lb.app import build_app
from lb.config import Config, load_config, parse_config
from lb.errors import ConfigError
from lb.observe import configure_logging

log = structlog.get_logger("lb.serve")
DEMO_MODELS = (("llama3.1:8b", "qwen2.5:7b"), ("llama3.1:8b",), ("qwen2.5:7b", "nomic-embed"))
DEMO_TOKENS_PER_S = 40.0  # slow enough to watch a stream arrive token by token


def serve(args: argparse.Namespace) -> int:
    configure_logging(args.log_format)
    try:
        config = None if args.demo else load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    return _run(lambda: _serve(config, args.host, args.port))


def _run(main: Callable[[], Coroutine[Any, Any, None]]) -> int:
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.Runner()
    with runner:
        runner.run(main())
    return 0


async def _serve(config: Config | None, host: str | None, port: int | None) -> None:
    sims: list[web.AppRunner] = []
    if config is None:
        config, sims = await _start_demo_backends()
    server = config.server.model_copy(update={
        k: v for k, v in (("host", host), ("port", port)) if v is not None})
    config = config.model_copy(update={"server": server})
    runner = web.AppRunner(build_app(config), handler_cancellation=True, access_log=None,
                           shutdown_timeout=config.server.drain_timeout)
    await runner.setup()
    site = web.TCPSite(runner, server.host, server.port, backlog=1024)
    await site.start()
    log.info("listening", url=f"http://{server.host}:{server.port}")
    if sims:
        _print_demo_help(server.host, server.port)
    try:
        await _wait_for_stop_signal()
    finally:
        log.info("stopping")
        await runner.cleanup()
        for sim in sims:
            await sim.cleanup()


async def _wait_for_stop_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _start_demo_backends() -> tuple[Config, list[web.AppRunner]]:
    from lb.sim import SimOptions, build_sim_app

    runners, endpoints = [], []
    for i, models in enumerate(DEMO_MODELS):
        # simulated Ollama boxes: they speak both the OpenAI API and Ollama's own
        options = SimOptions(models=models, tokens_per_s=DEMO_TOKENS_PER_S, name=f"sim-{i + 1}",
                             kind="ollama")
        runner = web.AppRunner(build_sim_app(options), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        runners.append(runner)
        endpoints.append({"name": f"sim-{i + 1}", "url": f"http://127.0.0.1:{port}",
                          "kind": "ollama", "weight": 2 if i == 0 else 1,
                          "models": list(models)})
    config = parse_config({"endpoints": endpoints,
                           "models": [{"name": "llama3", "upstream": "llama3.1:8b"}]},
                          source="<demo>")
    return config, runners


def _print_demo_help(host: str, port: int) -> None:
    base = f"http://{host}:{port}"
    print(f"""
fleetlb demo: gateway on {base} in front of three simulated backends.
  curl {base}/v1/models
  curl {base}/v1/chat/completions -H 'Content-Type: application/json' \\
       -d '{{"model": "llama3", "stream": true, "messages": [{{"role": "user", "content": "hi"}}]}}'
  curl {base}/api/chat -d '{{"model": "llama3", "messages": [{{"role": "user", "content": "hi"}}]}}'
  curl {base}/api/ps
  curl {base}/admin/endpoints
Stop with Ctrl-C.""", file=sys.stderr, flush=True)
