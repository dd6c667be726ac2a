"""Graceful drain: the requests in progress, so a shutdown can let them finish, and what each one is
relaying, so that what outlasts the grace period ends with an error the client can read: a stream
gets a terminal error event, a request still waiting for its backend gets a 503 `shutting_down`.
Long-lived sessions (WebSockets) are asked to go away as soon as the drain starts: at once when
idle, after the turn under way otherwise.

Per request this costs one `asyncio.current_task()` and a set add and discard (middleware) and, for
relayed bodies, a dict store and pop keyed by that task (`handlers.deliver`); the waiting machinery
exists only while a drain is under way.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, NamedTuple, Protocol

from lb.errors import ShuttingDown

if TYPE_CHECKING:
    from lb.forward import Exchange

CUT_GRACE_S = 2.0  # after the cut: time for the last event or the 503 to be written


class Session(Protocol):
    """A long-lived connection (WebSocket) that can be asked to end."""

    async def going_away(self, now: bool) -> None:
        """End the connection: at once if `now` or idle, else after the exchange under way."""


class Cut(NamedTuple):
    """What a drain had to end when its time was up."""

    streams: int  # ended with a terminal error event
    sessions: int  # closed mid-way
    waiting: int  # answered 503 while still waiting for their backend


class Drain:
    __slots__ = ("_cancelled", "_hurry", "_idle", "_tasks", "sessions", "streams")

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()  # the handler task of each request
        self.streams: dict[asyncio.Task[object], Exchange] = {}  # requests relaying a body
        self.sessions: dict[asyncio.Task[object], Session] = {}
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

    def relaying(self, task: asyncio.Task[object] | None, exchange: Exchange) -> None:
        """`task` (what `begin` returned) relays `exchange` until `relayed(task)`."""
        if task is not None:
            self.streams[task] = exchange

    def relayed(self, task: asyncio.Task[object] | None) -> None:
        if task is not None:
            self.streams.pop(task, None)

    def holding(self, session: Session) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.sessions[task] = session

    def released(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.sessions.pop(task, None)

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

    async def settle(self, timeout_s: float) -> Cut:
        """Ask sessions to go away, wait up to `timeout_s` for every request to finish, then cut
        the rest: streams end with a terminal error event, sessions close, requests still waiting
        for a backend answer 503."""
        self._idle, self._hurry = asyncio.Event(), asyncio.Event()
        if not self._tasks:
            return Cut(0, 0, 0)
        farewells: list[asyncio.Future[None]] = [
            asyncio.ensure_future(s.going_away(now=False)) for s in self.sessions.values()]
        try:
            await self._wait(timeout_s, self._hurry)
            return await self._cut(timeout_s, farewells)
        finally:
            for farewell in farewells:
                farewell.cancel()
            await asyncio.gather(*farewells, return_exceptions=True)

    async def _cut(self, timeout_s: float, farewells: list[asyncio.Future[None]]) -> Cut:
        remaining = list(self._tasks)
        if not remaining:
            return Cut(0, 0, 0)
        reason = ShuttingDown(f"fleetlb is shutting down: the request outlasted the "
                              f"{timeout_s:g} s drain period")
        streams = sessions = 0
        for task in remaining:
            exchange, session = self.streams.get(task), self.sessions.get(task)
            if exchange is not None:  # a WebSocket turn too: it ends with its failure event
                exchange.interrupt(reason)
                streams += 1
            elif session is not None:
                farewells.append(asyncio.ensure_future(session.going_away(now=True)))
                sessions += 1
            else:
                self._cancelled.add(task)
                task.cancel()
        await self._wait(CUT_GRACE_S, None)
        return Cut(streams, sessions, len(remaining) - streams - sessions)

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
