"""The running gateway's life: READY once probed, SIGHUP reloads, watchdog pings, and the drain on
shutdown. Each step tells systemd (sd_notify) and writes one log line.

A reload builds the next runtime generation beside the running one and swaps `holder.current`:
requests hold the generation they started on, so nothing in flight notices (lb/reload.py says what
carries over). A config that does not load changes nothing but a counter and one error line.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Literal

import structlog
from aiohttp import web

from lb import sdnotify
from lb.appstate import DRAIN, METRICS, PROBES, RESPONSES, RUNTIME, RUNTIME_FACTORY, UPSTREAM
from lb.config import Config
from lb.endpoints import Fleet, HealthState
from lb.errors import ConfigError
from lb.reload import diff_configs, keep_restart_only
from lb.sdnotify import Notifier

ConfigLoader = Callable[[], Config]

READY_WAIT_MAX_S = 10.0  # READY=1 waits for the first probe round at most this long
READY_POLL_S = 0.05
STATUS_EVERY_S = 5.0  # STATUS= refresh when there is no watchdog to ride along with

log = structlog.get_logger("lb.lifecycle")


class Signals:
    """SIGHUP asks for a reload (several during one reload make one more); SIGTERM or SIGINT for a
    stop, and a second one to cut the drain short. Installed before anything else starts, so an
    early SIGHUP cannot kill the process with its default action."""

    def __init__(self) -> None:
        self._wake = asyncio.Event()
        self._reload_pending = False
        self._stops = 0
        self.on_repeated_stop: Callable[[], None] = _nothing
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._hup)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop)

    async def next(self) -> Literal["reload", "stop"]:
        """What to do next; a pending stop wins over a pending reload."""
        while True:
            if self._stops:
                return "stop"
            if self._reload_pending:
                self._reload_pending = False
                return "reload"
            self._wake.clear()
            await self._wake.wait()

    def _hup(self) -> None:
        self._reload_pending = True
        self._wake.set()

    def _stop(self) -> None:
        self._stops += 1
        self._wake.set()
        if self._stops > 1:
            self.on_repeated_stop()


async def serve_until_stopped(app: web.Application, signals: Signals, load: ConfigLoader | None,
                              notifier: Notifier, watchdog_s: float | None) -> None:
    """Announce readiness, keep the watchdog fed, reload on SIGHUP; return on a stop signal."""
    ready = asyncio.create_task(announce_ready(app, notifier), name="sd-ready")
    beat = asyncio.create_task(heartbeat(app, notifier, watchdog_s), name="sd-heartbeat")
    try:
        while await signals.next() == "reload":
            await ready  # reload only after READY=1 went out, so systemd sees them in order
            await reload(app, load, notifier)
    finally:
        for task in (ready, beat):
            task.cancel()
        await asyncio.gather(ready, beat, return_exceptions=True)


async def announce_ready(app: web.Application, notifier: Notifier) -> None:
    """READY=1 once every endpoint has had its first probe, or after a short bound."""
    holder = app[RUNTIME]
    loop = asyncio.get_running_loop()
    wait_s = min(READY_WAIT_MAX_S, 2 * holder.current.config.probes.timeout)
    deadline = loop.time() + (wait_s if PROBES in app else 0.0)
    # polling: the prober writes plain endpoint fields and has no event to wait on
    while _unprobed(holder.current.fleet) and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(READY_POLL_S)
    status = status_line(holder.current.fleet)
    notifier.notify(*sdnotify.ready(status))
    log.info("ready", status=status)


async def heartbeat(app: web.Application, notifier: Notifier, watchdog_s: float | None) -> None:
    """WATCHDOG=1 every `watchdog_s` from this event loop (a blocked loop misses them and systemd
    restarts us), with STATUS= whenever the summary changed."""
    last = ""
    while True:
        await asyncio.sleep(watchdog_s or STATUS_EVERY_S)
        status = status_line(app[RUNTIME].current.fleet)
        lines = ["WATCHDOG=1"] if watchdog_s else []
        if status != last:
            lines.append(f"STATUS={status}")
            last = status
        if lines:
            notifier.notify(*lines)


async def reload(app: web.Application, load: ConfigLoader | None, notifier: Notifier) -> bool:
    """Load, validate and swap in the config; False (old config kept) when it does not load."""
    notifier.notify(*sdnotify.reloading())
    try:
        ok = await _reload(app, load)
    except Exception:  # a bug in a reload must not take the serving gateway down with it
        log.exception("config_reload_crashed")
        ok = False
    finally:
        notifier.notify(*sdnotify.ready(status_line(app[RUNTIME].current.fleet)))
    app[METRICS].config_reloaded(ok)
    return ok


async def _reload(app: web.Application, load: ConfigLoader | None) -> bool:
    if load is None:
        log.error("config_reload_failed", reason="no config file to reload (--demo)")
        return False
    try:
        config = load()
    except ConfigError as exc:
        log.error("config_reload_failed", file=exc.source,
                  problems=[f"{key}: {reason}" if key else reason for key, reason in exc.problems],
                  message="the running config stays in force")
        return False
    holder = app[RUNTIME]
    previous = holder.current
    change = diff_configs(previous.config, config)
    config = keep_restart_only(config, previous.config)
    holder.current = app[RUNTIME_FACTORY].build(config, previous)  # the atomic switch
    app[UPSTREAM].set_timeouts(config.timeouts)
    if RESPONSES in app:
        app[RESPONSES].normalize = config.responses.normalize
    note = {"message": "restart required for restart_required; their running values stay"} \
        if change.restart_required else {}
    log.info("config_reloaded", **change.log_fields(), **note, unchanged=change.is_empty)
    prober = app.get(PROBES)
    if prober is not None:
        await prober.sync(config.probes)  # tasks for added endpoints, none for removed ones
        fleet = holder.current.fleet
        await asyncio.gather(*(prober.probe_once(ep) for name in change.endpoints_replaced
                               if (ep := fleet.get(name)) is not None))
    return True


async def drain_on_shutdown(app: web.Application) -> None:
    """on_shutdown: the listening socket is closed; let requests finish for `drain_timeout`, then
    end the streams still going with a terminal error event and answer the rest 503."""
    drain = app[DRAIN]
    timeout_s = app[RUNTIME].current.config.server.drain_timeout
    if drain.requests:
        log.info("draining", requests=drain.requests, streams=len(drain.streams),
                 sessions=len(drain.sessions), drain_timeout_s=timeout_s)
    cut = await drain.settle(timeout_s)
    if any(cut):
        log.warning("drain_timeout", cut_streams=cut.streams, cut_sessions=cut.sessions,
                    cut_waiting=cut.waiting,
                    message="requests still going at the end of the drain period were ended "
                            "with an error: streams with a terminal error event, the others 503")


def status_line(fleet: Fleet) -> str:
    endpoints = list(fleet)
    up = sum(1 for ep in endpoints if ep.is_up and ep.state is not HealthState.UNKNOWN)
    return f"{up}/{len(endpoints)} endpoints healthy"


def _unprobed(fleet: Fleet) -> bool:
    return any(ep.state is HealthState.UNKNOWN for ep in fleet)


def _nothing() -> None:
    return None
