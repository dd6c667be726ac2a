"""The background prober: one task per endpoint probes it every interval (±10 % jitter) and writes
health, served models, backend load and Responses-API support into the live `Endpoint` state.

Every state change is one structured log line. Per-endpoint probe bookkeeping (streaks, last error,
latency) lives here, keyed by endpoint name, and is shown through `snapshot()`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from lb.config import EndpointConfig, ProbesConfig
from lb.endpoints import Endpoint, Fleet, HealthState
from probes.checks import CheckResult, check, detect_responses
from probes.verdict import Streak, Verdict, judge

if TYPE_CHECKING:
    import aiohttp

RESPONSES_RECHECK_S = 600.0  # support changes only when a backend is upgraded or swapped; one
# cheap rejected POST per endpoint every 10 min notices that without probing it every interval
JITTER_FRACTION = 0.1  # ±10 % on every sleep so the probes of many endpoints drift apart


class EventLog(Protocol):
    """The slice of a structlog logger the prober uses."""

    def info(self, event: str, **kw: Any) -> Any: ...

    def error(self, event: str, **kw: Any) -> Any: ...


@dataclass(slots=True)
class ProbeRecord:
    """What the prober knows about one endpoint beyond the `Endpoint` state itself."""

    config: EndpointConfig  # a new URL or kind (reload) starts a fresh record; weights etc. don't
    streak: Streak = field(default_factory=Streak)
    last_probe_at: float | None = None  # wall-clock epoch seconds, for people
    last_error: str | None = None  # of the latest probe; None when it succeeded
    latency_ms: float | None = None
    responses_checked: float | None = None  # monotonic, decides when to re-detect
    responses_checked_at: float | None = None  # wall clock, for people


class Prober:
    """Keeps every endpoint of the current fleet probed; `stop()` leaves no task behind."""

    def __init__(
        self,
        fleet: Callable[[], Fleet],
        config: ProbesConfig,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float],
        rng: random.Random,
        log: EventLog,
        wall_clock: Callable[[], float] = time.time,
        redact: Callable[[str], str] = str,
    ) -> None:
        self._fleet = fleet  # a callable: a reload swaps the fleet under us
        self._redact = redact  # lb.redact: probe errors quote backends, and are logged and shown
        self._config = config
        self._session = session
        self._clock = clock  # monotonic; the clock `ejected_until` is measured on
        self._rng = rng
        self._log = log
        self._wall_clock = wall_clock
        self._records: dict[str, ProbeRecord] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        """Start one task per endpoint; each probes at once, so the fleet is probed all together."""
        await self.sync()

    async def sync(self, config: ProbesConfig | None = None) -> None:
        """Match tasks to the current fleet: start missing ones, stop those of gone endpoints."""
        if config is not None:
            self._config = config  # running tasks read it on their next round
        names = {e.name for e in self._fleet()}
        gone = [name for name in self._tasks if name not in names]
        await _cancel(self._tasks.pop(name) for name in gone)
        for name in gone:
            self._records.pop(name, None)
        for name in sorted(names):
            task = self._tasks.get(name)
            if task is None or task.done():
                self._tasks[name] = asyncio.create_task(self._run(name), name=f"probe:{name}")

    async def stop(self) -> None:
        """Cancel every probe task and wait until each has finished."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        await _cancel(tasks)

    async def probe_once(self, endpoint: Endpoint) -> CheckResult:
        """Probe one endpoint now and apply the outcome to its state."""
        result = await check(self._session, endpoint.config, self._config.timeout, self._clock)
        if result.error:
            result = replace(result, error=self._redact(result.error))
        record = self._record_for(endpoint)
        record.last_probe_at = self._wall_clock()
        record.last_error = result.error
        record.latency_ms = result.latency_ms
        if result.ok:
            self._apply_findings(endpoint, result)
        else:  # a load read before the failure is stale: unknown, not whatever it last was
            endpoint.backend_queue = endpoint.kv_cache_usage = None
        verdict = self._apply_verdict(endpoint, record, result)
        if endpoint.state is HealthState.HEALTHY and (
            verdict is not None or self._is_responses_due(record)
        ):
            await self._refresh_responses(endpoint, record)
        return result

    def snapshot(self, name: str) -> dict[str, Any]:
        """The admin view of one endpoint of the current fleet (empty if there is none such)."""
        endpoint = self._fleet().get(name)
        if endpoint is None:
            return {}
        record = self._records.get(name) or ProbeRecord(endpoint.config)
        return {
            "healthy": endpoint.state is HealthState.HEALTHY,
            "state": str(endpoint.state),
            "last_probe_at": _iso(record.last_probe_at),
            "last_error": record.last_error,
            "probe_latency_ms": record.latency_ms,
            "consecutive_successes": record.streak.successes,
            "consecutive_failures": record.streak.failures,
            "supports_responses_api": endpoint.supports_responses_api,
            "responses_checked_at": _iso(record.responses_checked_at),
            "loaded_models": sorted(endpoint.loaded_models),
            "backend_queue": endpoint.backend_queue,
            "kv_cache_usage": endpoint.kv_cache_usage,
        }

    async def _run(self, name: str) -> None:
        while (endpoint := self._fleet().get(name)) is not None:
            try:
                await self.probe_once(endpoint)
            except Exception as exc:  # a bug must not end the probing of this endpoint
                self._log.error("probe_crashed", endpoint=name, error=repr(exc), exc_info=True)
            await asyncio.sleep(jittered(self._config.interval, self._rng))

    def _record_for(self, endpoint: Endpoint) -> ProbeRecord:
        record = self._records.get(endpoint.name)
        config = endpoint.config
        if record is None or (record.config.url, record.config.kind) != (config.url, config.kind):
            record = self._records[endpoint.name] = ProbeRecord(config)
        record.config = config
        return record

    def _apply_findings(self, endpoint: Endpoint, result: CheckResult) -> None:
        before = endpoint.discovered_models
        if result.models is not None and endpoint.set_discovered_models(result.models):
            self._fleet().models_changed()  # the router caches pools per generation
            self._log.info(
                "endpoint_models_changed",
                endpoint=endpoint.name,
                added=sorted(result.models - before),
                removed=sorted(before - result.models),
            )
        if result.loaded_models is not None:
            endpoint.loaded_models = result.loaded_models
        endpoint.backend_queue = result.backend_queue
        endpoint.kv_cache_usage = result.kv_cache_usage  # None after a failed probe: unknown

    def _apply_verdict(
        self, endpoint: Endpoint, record: ProbeRecord, result: CheckResult
    ) -> Verdict | None:
        streak = record.streak.record(result.ok)
        verdict = judge(
            endpoint.state,
            result.ok,
            streak,
            rise=self._config.rise,
            fall=self._config.fall,
            cooled_down=self._clock() >= endpoint.ejected_until,
        )
        if verdict is None:
            return None
        endpoint.state = verdict.new
        if verdict.old is HealthState.EJECTED:
            endpoint.ejected_until = 0.0
            endpoint.record_success()  # the live-failure streak starts over after a return
        reason = verdict.reason if result.ok else f"{verdict.reason}: {result.error}"
        self._log.info(
            "endpoint_state_changed",
            endpoint=endpoint.name,
            **{"from": str(verdict.old), "to": str(verdict.new)},
            reason=reason,
            latency_ms=result.latency_ms,
            streak=streak,
        )
        return verdict

    def _is_responses_due(self, record: ProbeRecord) -> bool:
        checked = record.responses_checked
        return checked is None or self._clock() - checked >= RESPONSES_RECHECK_S

    async def _refresh_responses(self, endpoint: Endpoint, record: ProbeRecord) -> None:
        found = await detect_responses(self._session, endpoint.config, self._config.timeout)
        record.responses_checked = self._clock()
        record.responses_checked_at = self._wall_clock()
        previous = endpoint.supports_responses_api
        if found is None or found == previous:
            return  # an inconclusive answer keeps what we knew
        endpoint.supports_responses_api = found
        event = (
            "responses_support_found"
            if found
            else ("responses_support_lost" if previous else "responses_support_absent")
        )
        self._log.info(event, endpoint=endpoint.name, previous=previous)


def jittered(interval_s: float, rng: random.Random) -> float:
    """`interval_s` moved by up to ±JITTER_FRACTION, uniformly."""
    return interval_s * (1.0 + rng.uniform(-JITTER_FRACTION, JITTER_FRACTION))


async def _cancel(tasks: Iterable[asyncio.Task[None]]) -> None:
    pending = list(tasks)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def _iso(epoch_s: float | None) -> str | None:
    if epoch_s is None:
        return None
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")
