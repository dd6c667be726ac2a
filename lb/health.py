"""Passive health: live-traffic failures eject an endpoint for a cool-down, and a pool fails open.

Pure (no I/O, no logging): callers log what the return values tell them. Which outcomes count is
the caller's decision: connect errors, timeouts and 5xx are failures; a 4xx is the client's fault
and must be reported as neither success nor failure. The prober, not this module, brings an ejected
endpoint back (half-open: the first successful probe after `ejected_until`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from lb.config import ProbesConfig
from lb.endpoints import Endpoint, HealthState

# Only endpoints that are taking traffic can be ejected; an unhealthy one is already out and must
# come back through `rise` probes, not through the one-probe half-open path of an ejection.
_EJECTABLE = frozenset({HealthState.UNKNOWN, HealthState.HEALTHY})


class PassiveHealth:
    """Counts consecutive live failures per endpoint; ejects at `eject_after` for `eject_for_s`."""

    __slots__ = ("_clock", "eject_after", "eject_for_s")

    def __init__(self, eject_after: int, eject_for_s: float, clock: Callable[[], float]) -> None:
        if eject_after < 1:
            raise ValueError("eject_after must be >= 1")
        self.eject_after = eject_after
        self.eject_for_s = eject_for_s
        self._clock = clock  # monotonic; the prober compares `ejected_until` on the same clock

    @classmethod
    def from_config(cls, config: ProbesConfig, clock: Callable[[], float]) -> PassiveHealth:
        return cls(config.eject_after, config.eject_for, clock)

    def on_success(self, endpoint: Endpoint) -> None:
        """A live request succeeded: the failure streak starts over (an ejection stays)."""
        endpoint.record_success()

    def on_failure(self, endpoint: Endpoint) -> bool:
        """Count one live failure; True when this very failure ejected the endpoint.

        On True the caller logs the ejection (`endpoint.live_failures`, `endpoint.ejected_until`).
        Failures of requests still in flight when the endpoint is already out eject nothing more.
        """
        streak = endpoint.record_failure()
        if streak < self.eject_after or endpoint.state not in _EJECTABLE:
            return False
        endpoint.state = HealthState.EJECTED
        endpoint.ejected_until = self._clock() + self.eject_for_s
        return True


def should_fail_open(members: Iterable[Endpoint]) -> bool:
    """True when a non-empty pool has no endpoint that is up: the router should try them anyway."""
    candidates = [e for e in members if not e.draining]
    return bool(candidates) and not any(e.is_up for e in candidates)


def usable_or_all(members: Iterable[Endpoint]) -> tuple[list[Endpoint], bool]:
    """The endpoints a router may try, and whether it is panicking (failing open).

    Normally: the members that are up (unknown or healthy, not draining), in the given order;
    whether they have a free slot is the caller's concern (queue, then 429). When none is up: every
    member that is not draining, with `True`, so a pool whose probes all fail still gets a chance to
    answer rather than a 503 at once (Envoy's panic threshold at 100 %). The caller logs the panic.
    Draining endpoints are never offered: they are leaving the fleet on purpose.
    """
    candidates = [e for e in members if not e.draining]
    up = [e for e in candidates if e.is_up]
    if up or not candidates:
        return up, False
    return candidates, True
