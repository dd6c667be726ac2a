"""Graceful drain: the requests in progress, so a shutdown can let them finish, and what each one is
relaying, so that what outlasts the grace period ends with an error the client can read: a stream
gets a terminal error event, a request still waiting for its backend gets a 503 `shutting_down`.

Per request this costs a set add and discard (middleware) and, for relayed bodies, a dict store and
pop (relay); the waiting machinery exists only while a drain is under way.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from lb.errors import ShuttingDown

if TYPE_CHECKING:
    from lb.forward import Exchange

CUT_GRACE_S = 2.0  # after the cut: time for the last event or the 503 to be written


class Drain:
    __slots__ = ("_cancelled", "_hurry", "_idle", "_tasks", "streams")

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()  # the handler task of each request
        self.streams: dict[asyncio.Task[object], Exchange] = {}  # requests relaying a body
        self._cancelled: set[asyncio.Task[object]] = set()  # cut short by us, not by the client
        self._idle: asyncio.Event | None = None  # exists while draining: set at zero requests
        self._hurry: asyncio.Event | None = None

    @property
    def requests(self) -> int:
        return len(self._tasks)

    def begin(self) -> asyncio.Task[object] | None:
        """A request starts (in its handler task); give what this returns to `end`."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        return task

    def end(self, task: asyncio.Task[object] | None) -> None:
        if task is not None:
            self._tasks.discard(task)
        if not self._tasks and self._idle is not None:
            self._idle.set()

    def relaying(self, exchange: Exchange) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.streams[task] = exchange

    def relayed(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.streams.pop(task, None)

    def cut_short(self) -> bool:
        """In a request's CancelledError handler: True (and the cancellation undone) when the
        drain cancelled it, so the request answers 503 rather than vanishing."""
        task = asyncio.current_task()
        if task is None or task not in self._cancelled:
            return False
        self._cancelled.discard(task)
        task.uncancel()
        return True

    def hurry(self) -> None:
        """Stop waiting now (a second stop signal): cut what remains."""
        if self._hurry is not None:
            self._hurry.set()

    async def settle(self, timeout_s: float) -> tuple[int, int]:
        """Wait up to `timeout_s` for every request to finish, then cut the rest: streams end
        with a terminal error event, requests still waiting for a backend answer 503. Returns how
        many of each were cut."""
        self._idle, self._hurry = asyncio.Event(), asyncio.Event()
        if not self._tasks:
            return 0, 0
        await self._wait(timeout_s, self._hurry)
        remaining = list(self._tasks)
        if not remaining:
            return 0, 0
        streams = sum(1 for task in remaining if task in self.streams)
        reason = ShuttingDown(f"fleetlb is shutting down: the request outlasted the "
                              f"{timeout_s:g} s drain period")
        for task in remaining:
            exchange = self.streams.get(task)
            if exchange is not None:
                exchange.interrupt(reason)
            else:
                self._cancelled.add(task)
                task.cancel()
        await self._wait(CUT_GRACE_S, None)
        return streams, len(remaining) - streams

    async def _wait(self, timeout_s: float, hurry: asyncio.Event | None) -> None:
        assert self._idle is not None
        waits = [asyncio.ensure_future(self._idle.wait())]
        if hurry is not None:
            waits.append(asyncio.ensure_future(hurry.wait()))
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
