"""Who a freed admission-queue slot goes to (pure): the oldest interactive waiter first, unless a
batch waiter has waited `promote_after_s` — then it is served as if it were interactive, so a
steady interactive load delays batch work but never starves it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar

from lb.config import Priority

PRIORITIES: tuple[Priority, ...] = ("interactive", "batch")


class Queued(Protocol):
    @property
    def priority(self) -> Priority: ...

    @property
    def since(self) -> float: ...


W = TypeVar("W", bound=Queued)


def first_served(waiters: Iterable[W], now: float, promote_after_s: float) -> W | None:
    """The waiter to serve among `waiters` (in arrival order), or None when there is none."""
    oldest_batch: W | None = None
    for waiter in waiters:
        if waiter.priority == "interactive":
            if oldest_batch is not None and now - oldest_batch.since >= promote_after_s:
                return oldest_batch  # it arrived first and has waited long enough
            return waiter
        if oldest_batch is None:
            oldest_batch = waiter
    return oldest_batch
