"""Per-key limits shared by every instance (`[limits] shared = true`): the `LimitState` of
lb/teams/limits.py over Redis, so N instances enforce one rpm, one tpm and one max_in_flight.

- `admit` is one Lua script (lb/shared/scripts.py): windows read, decision, request counted and
  lease taken, atomically. Keys without limits never reach Redis.
- `finish` must not block: it queues the tokens to charge and the lease to return. The key's next
  `admit` carries them (so a sequential client never meets its own previous call), or else one
  task sends all that is queued in one script call within FLUSH_AFTER_S; the same task renews this
  instance's live leases (an instance that dies frees its slots when they expire).
- When Redis fails or is slower than `[redis] timeout`, limits fail open: the request passes
  without a lease, the link counts the error and warns once a minute. Nothing waits longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from lb.errors import SharedStateDown
from lb.shared import scripts
from lb.shared.link import RedisLink
from lb.teams.limits import (
    IN_FLIGHT_RETRY_S,
    UNLIMITED,
    WINDOW_S,
    Decision,
    LimitName,
    Quota,
    Window,
    WindowView,
)
from lb.teams.table import KeyLimits

LEASE_TTL_S = 30.0  # a lease not renewed for this long is free again (its instance died)
RENEW_EVERY_S = LEASE_TTL_S / 3  # so a live lease survives two failed renewals
FLUSH_AFTER_S = 0.05  # ends of calls gathered this long go in one script call: one round trip
# per burst, not per request; a returned lease counts for others up to this much later
MIN_RETRY_S = 0.001  # Redis refused, our arithmetic says "now" (rounding): still a wait

log = structlog.get_logger("lb.shared")


@dataclass(slots=True, eq=False)
class _Held:
    """What this instance holds of one key: lease ids, and calls admitted without one (fail
    open, or no max_in_flight), which `finish` accounts first."""

    leases: list[str] = field(default_factory=list)
    unleased: int = 0


@dataclass(slots=True, eq=False)
class _Pending:
    tokens: int = 0
    leases: list[str] = field(default_factory=list)


class SharedLimits:
    """`LimitState` in Redis. `start()` / `stop()` own the task that flushes and renews."""

    def __init__(self, link: RedisLink, *, lease_ttl_s: float = LEASE_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._link = link
        self._window_ms = round(WINDOW_S * 1000)
        self._lease_ms = round(lease_ttl_s * 1000)
        self._clock = clock
        client = link.client
        self._admit = client.register_script(scripts.ADMIT)
        self._finish = client.register_script(scripts.FINISH)
        self._renew = client.register_script(scripts.RENEW)
        self._window = client.register_script(scripts.WINDOW)
        self._held: dict[str, _Held] = {}
        self._pending: dict[str, _Pending] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def admit(self, name: str, limits: KeyLimits, now: float) -> Decision:
        held = self._held.get(name)
        if held is None:
            held = self._held[name] = _Held()
        if limits.is_unlimited:  # nothing to enforce: no round trip
            held.unleased += 1
            return UNLIMITED
        lease = secrets.token_hex(8) if limits.max_in_flight else ""
        keys = self._keys(name)
        ends = self._pending.pop(name, None)  # this key's ends not sent yet ride along
        args: list[Any] = [self._window_ms, limits.rpm or 0, limits.tpm or 0,
                           limits.max_in_flight or 0, lease, self._lease_ms]
        args += [ends.tokens, len(ends.leases), *ends.leases] if ends else [0, 0]
        try:
            raw = await self._link.run("limits", lambda _r: self._admit(keys=keys, args=args))
        except SharedStateDown:
            if ends is not None:  # the flusher tries them again
                self._requeue(name, ends)
            held.unleased += 1  # fail open: counted by the link, warned once a minute
            return UNLIMITED
        decision = decision_of(raw, limits)
        if decision.admitted:
            if lease:
                held.leases.append(lease)
            else:
                held.unleased += 1
        return decision

    def finish(self, name: str, tokens: int, now: float) -> None:
        held = self._held.get(name)
        lease = None
        if held is not None:
            if held.unleased:
                held.unleased -= 1
            elif held.leases:
                lease = held.leases.pop()
        if tokens <= 0 and lease is None:
            return
        self._requeue(name, _Pending(max(tokens, 0), [lease] if lease is not None else []))
        self._wake.set()

    def _requeue(self, name: str, ends: _Pending) -> None:
        pending = self._pending.get(name)
        if pending is None:
            self._pending[name] = ends
        else:
            pending.tokens += ends.tokens
            pending.leases += ends.leases

    async def window(self, name: str, now: float) -> WindowView:
        keys = self._keys(name)
        try:
            raw = await self._link.run("limits", lambda _r: self._window(
                keys=keys, args=[self._window_ms]))
        except SharedStateDown:
            held = self._held.get(name)
            return WindowView(len(held.leases) + held.unleased if held else 0, 0, 0)
        cur_r, prev_r, cur_t, prev_t, leases, now_ms = (int(v) for v in raw)
        redis_now = now_ms / 1000
        requests, tokens = _window(redis_now, prev_r, cur_r), _window(redis_now, prev_t, cur_t)
        return WindowView(leases, math.ceil(requests.used(redis_now)),
                          math.ceil(tokens.used(redis_now)))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._flush_and_renew(), name="fleetlb-shared-limits")

    async def stop(self) -> None:
        """At shutdown (after the drain): what is queued is sent, our leases returned."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for name, held in self._held.items():
            if held.leases:
                self._pending.setdefault(name, _Pending()).leases.extend(held.leases)
                held.leases = []
        await self.flush()

    async def flush(self) -> None:
        """Send the queued ends of calls (tokens, returned leases) in one script call."""
        pending, self._pending = self._pending, {}
        if not pending:
            return
        keys: list[str] = []
        args: list[Any] = [self._window_ms]
        for name, ends in pending.items():
            keys += self._keys(name)
            args += [ends.tokens, len(ends.leases), *ends.leases]
        with contextlib.suppress(SharedStateDown):  # lost tokens: fail open; leases expire
            await self._link.run("limits", lambda _r: self._finish(keys=keys, args=args))

    async def renew(self) -> None:
        """Extend every lease this instance holds, in one script call."""
        live = {name: held.leases for name, held in self._held.items() if held.leases}
        if not live:
            return
        keys = [self._keys(name)[1] for name in live]
        args: list[Any] = [self._window_ms, self._lease_ms]
        for leases in live.values():
            args += [len(leases), *leases]
        with contextlib.suppress(SharedStateDown):
            await self._link.run("leases", lambda _r: self._renew(keys=keys, args=args))

    async def _flush_and_renew(self) -> None:
        renewed = self._clock()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RENEW_EVERY_S):
                    await self._wake.wait()
                await asyncio.sleep(FLUSH_AFTER_S)  # let the ends of a burst gather
            self._wake.clear()
            try:
                await self.flush()
                if self._clock() - renewed >= RENEW_EVERY_S:
                    renewed = self._clock()
                    await self.renew()
            except Exception:  # a background loop never dies silently
                log.exception("shared_limits_flush_failed")

    def _keys(self, name: str) -> list[str]:
        tagged = "{" + name + "}"  # a hash tag: both keys of a client key in one Cluster slot
        return [self._link.key("limits", tagged), self._link.key("leases", tagged)]


def decision_of(raw: list[Any], limits: KeyLimits) -> Decision:
    """The admission script's reply as the Decision the gate turns into headers (pure): the
    script decided; the quotas and the wait are the sliding-window arithmetic of lb.teams."""
    refused_raw, cur_r, prev_r, cur_t, prev_t, _held, now_ms = raw
    refused_text = refused_raw.decode() if isinstance(refused_raw, bytes) else str(refused_raw)
    now = int(now_ms) / 1000
    requests = _window(now, int(prev_r), int(cur_r))
    tokens = _window(now, int(prev_t), int(cur_t))
    refused: LimitName | None = None
    wait = 0.0
    if refused_text == "rpm" and limits.rpm is not None:
        refused, wait = "rpm", max(MIN_RETRY_S, requests.wait_for(1.0, limits.rpm, now))
    elif refused_text == "tpm" and limits.tpm is not None:
        refused, wait = "tpm", max(MIN_RETRY_S, tokens.wait_for(1.0, limits.tpm, now))
    elif refused_text == "max_in_flight":
        refused, wait = "max_in_flight", IN_FLIGHT_RETRY_S
    return Decision(refused is None, _quota(requests, limits.rpm, now),
                    _quota(tokens, limits.tpm, now), refused, wait)


def _window(now: float, previous: int, current: int) -> Window:
    return Window(start=now - now % WINDOW_S, previous=float(previous), current=float(current))


def _quota(window: Window, limit: int | None, now: float) -> Quota | None:
    if limit is None:
        return None
    return Quota(limit, max(0, math.floor(limit - window.used(now))), window.until_empty(now))
