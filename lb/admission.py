"""The bounded queue of requests waiting for a free slot when a pool is at `max_in_flight`.

A released lease wakes the oldest waiter whose pool contains that endpoint; a waiter that is not
served before its deadline (or finds the queue full) gets 429 with Retry-After. One queue outlives
config reloads: it follows every fleet generation, so a slot freed by a request of an old generation
wakes a waiter of the new one (and the reverse). Interactive waiters go before batch ones, and a
batch waiter is promoted once it has waited `promote_after_s` (lb.teams.priority).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from lb.config import Priority
from lb.endpoints import Endpoint, Fleet
from lb.errors import RateLimited
from lb.teams.priority import PRIORITIES, first_served

RETRY_AFTER_S = 1.0  # what a client is told to wait after a queue timeout


@dataclass(slots=True, eq=False)
class _Waiter:
    members: frozenset[str]
    future: asyncio.Future[None]
    priority: Priority
    since: float  # the injected clock, for age-based promotion


class Admission:
    __slots__ = ("_clock", "_max_queued", "_timeout_s", "_waiters", "promote_after_s")

    def __init__(self, fleet: Fleet, *, max_queued: int, timeout_s: float,
                 promote_after_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._max_queued = max_queued
        self._timeout_s = timeout_s
        self._waiters: deque[_Waiter] = deque()
        self._clock = clock
        self.promote_after_s = promote_after_s
        self.follow(fleet)

    def follow(self, fleet: Fleet) -> None:
        """Also wake waiters when a slot of `fleet` (a newer generation) is freed."""
        fleet.on_slot_freed(self._slot_freed)

    def configure(self, *, max_queued: int, timeout_s: float) -> None:
        """New limits from a reload; requests already waiting keep their deadlines."""
        self._max_queued = max_queued
        self._timeout_s = timeout_s

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def queued_by_priority(self) -> dict[Priority, int]:
        depth = dict.fromkeys(PRIORITIES, 0)
        for waiter in self._waiters:
            depth[waiter.priority] += 1
        return depth

    def deadline(self) -> float:
        return asyncio.get_running_loop().time() + self._timeout_s

    async def wait_for_slot(self, members: tuple[Endpoint, ...], deadline: float,
                            priority: Priority = "interactive") -> None:
        """Wait until one of `members` frees a slot; raise RateLimited at the deadline."""
        if len(self._waiters) >= self._max_queued:
            raise RateLimited("too many requests are waiting for this model; retry later",
                              retry_after_s=RETRY_AFTER_S)
        waiter = _Waiter(frozenset(ep.name for ep in members),
                         asyncio.get_running_loop().create_future(), priority, self._clock())
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter.future
        except TimeoutError:
            raise RateLimited("every endpoint serving this model is at its concurrency limit",
                              retry_after_s=RETRY_AFTER_S) from None
        finally:
            if not waiter.future.done():
                waiter.future.cancel()
            with contextlib.suppress(ValueError):  # already woken and removed
                self._waiters.remove(waiter)

    def _slot_freed(self, endpoint: Endpoint) -> None:
        name = endpoint.name
        candidates = (w for w in self._waiters if name in w.members and not w.future.done())
        chosen = first_served(candidates, self._clock(), self.promote_after_s)
        if chosen is not None:
            chosen.future.set_result(None)
