"""Running the gateway: event loop, listening socket, signals; `--demo` adds three sim backends.

What happens on signals (reload, drain) and what systemd is told lives in lb/lifecycle.py.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from aiohttp import web

from lb import sdnotify
from lb.app import build_app
from lb.appstate import DRAIN
from lb.config import Config, load_config, parse_config
from lb.dispatch import GatewayRunner
from lb.drain import CUT_GRACE_S
from lb.errors import ConfigError
from lb.lifecycle import ConfigLoader, Signals, serve_until_stopped
from lb.observe import AccessLog, access_log_for, configure_logging
from lb.serverlog import server_options

log = structlog.get_logger("lb.serve")
DEMO_MODELS = (("llama3.1:8b", "qwen2.5:7b"), ("llama3.1:8b",), ("qwen2.5:7b", "nomic-embed"))
DEMO_TOKENS_PER_S = 40.0  # slow enough to watch a stream arrive token by token


def serve(args: argparse.Namespace) -> int:
    configure_logging(args.log_format)
    load = None if args.demo else functools.partial(_load, args.config, args.host, args.port)
    try:
        config = None if load is None else load()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    access_log = access_log_for(args.log_format)
    return _run(lambda: _serve(config, load, args.host, args.port, access_log))


def _load(path: str, host: str | None, port: int | None) -> Config:
    """The config file with the command line's overrides, at start and on every reload."""
    return _with_overrides(load_config(path), host, port)


def _with_overrides(config: Config, host: str | None, port: int | None) -> Config:
    server = config.server.model_copy(update={
        k: v for k, v in (("host", host), ("port", port)) if v is not None})
    return config.model_copy(update={"server": server})


def _run(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.Runner()
    with runner:
        return runner.run(main())


async def _serve(config: Config | None, load: ConfigLoader | None, host: str | None,
                 port: int | None, access_log: AccessLog) -> int:
    """Serve until SIGTERM/SIGINT; 0 after a drain, 1 when the address cannot be bound."""
    signals = Signals()  # first: a SIGHUP during start-up must not kill the process
    sims: list[web.AppRunner] = []
    if config is None:
        config, sims = await _start_demo_backends()
        config = _with_overrides(config, host, port)
    server = config.server
    app = build_app(config, access_log=access_log)
    signals.on_repeated_stop = app[DRAIN].hurry
    # our drain (app.on_shutdown) ends every stream; aiohttp's own timeout is the last resort
    runner = GatewayRunner(app, shutdown_timeout=CUT_GRACE_S,
                           **server_options(access_log, config.timeouts.client_idle))
    await runner.setup()
    notifier = sdnotify.notifier_from_env(os.environ)
    try:
        site = web.TCPSite(runner, server.host, server.port, backlog=1024)
        try:
            await site.start()
        except OSError as exc:
            log.error("cannot_listen", host=server.host, port=server.port, error=str(exc))
            return 1
        log.info("listening", url=f"http://{server.host}:{server.port}")
        if sims:
            _print_demo_help(server.host, server.port)
        await serve_until_stopped(app, signals, load, notifier,
                                  sdnotify.watchdog_interval_s(os.environ))
    finally:
        in_flight = app[DRAIN].requests
        notifier.notify(*sdnotify.stopping(f"stopping, {in_flight} in flight"))
        log.info("stopping", requests=in_flight)
        await runner.cleanup()  # closes the listener, then drains (lifecycle.drain_on_shutdown)
        notifier.close()
        for sim in sims:
            await sim.cleanup()
    return 0


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
    # a demo leaves nothing behind: its stored responses live in memory
    config = parse_config({"endpoints": endpoints, "store": {"kind": "memory"},
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
Status page: {base}/admin/ in a browser.
Stop with Ctrl-C.""", file=sys.stderr, flush=True)
