"""Graceful drain: the requests in progress, so a shutdown can let them finish, and the streams
being relayed, so it can end those that outlast the grace period with a terminal error event.

Per request this costs two integer updates (middleware) and, for relayed bodies, one set add and
discard (relay); the waiting machinery exists only while a drain is under way.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from lb.errors import ShuttingDown

if TYPE_CHECKING:
    from lb.forward import Exchange

CUT_GRACE_S = 2.0  # after cutting streams: time for their last event and EOF to be written


class Drain:
    __slots__ = ("_hurry", "_idle", "requests", "streams")

    def __init__(self) -> None:
        self.requests = 0  # requests inside the middleware now
        self.streams: set[Exchange] = set()  # bodies being relayed now
        self._idle: asyncio.Event | None = None  # set while draining, woken at zero requests
        self._hurry: asyncio.Event | None = None

    def begin(self) -> None:
        self.requests += 1

    def end(self) -> None:
        self.requests -= 1
        if self.requests == 0 and self._idle is not None:
            self._idle.set()

    def hurry(self) -> None:
        """Stop waiting now (a second stop signal): cut what remains."""
        if self._hurry is not None:
            self._hurry.set()

    async def settle(self, timeout_s: float) -> int:
        """Wait up to `timeout_s` for every request to finish, then end the streams still going
        with a terminal error event and give them `CUT_GRACE_S` to write it. Returns how many
        streams were cut."""
        self._idle, self._hurry = asyncio.Event(), asyncio.Event()
        if self.requests == 0:
            return 0
        await self._wait(timeout_s, self._hurry)
        cut = list(self.streams)
        if not cut:
            return 0
        reason = ShuttingDown(f"fleetlb is shutting down: the stream outlasted the "
                              f"{timeout_s:g} s drain period")
        for exchange in cut:
            exchange.interrupt(reason)
        await self._wait(CUT_GRACE_S, None)
        return len(cut)

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
