"""Rise/fall verdicts: a streak of active-probe results -> the endpoint's next health state (pure).

From `unknown` the first probe decides (as Envoy does at startup): there is no history to smooth,
and unknown is already routed. Between known states `rise` successes or `fall` failures in a row are
needed. An ejected endpoint comes back on the first success after its cool-down (half-open); if
probes fail `fall` times meanwhile it is plainly unhealthy and must rise like any other.
"""

from __future__ import annotations

from dataclasses import dataclass

from lb.endpoints import HealthState


@dataclass(slots=True, frozen=True)
class Verdict:
    """A state change and why, for the one log line each change gets."""

    old: HealthState
    new: HealthState
    reason: str


@dataclass(slots=True)
class Streak:
    """Consecutive probe outcomes of one endpoint: one of the two counters is always zero."""

    successes: int = 0
    failures: int = 0

    def record(self, ok: bool) -> int:
        """Count one probe; returns the length of the streak it belongs to."""
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            return self.successes
        self.successes, self.failures = 0, self.failures + 1
        return self.failures


def judge(
    state: HealthState, ok: bool, streak: int, *, rise: int, fall: int, cooled_down: bool
) -> Verdict | None:
    """The state after a probe whose outcome `ok` made a streak of `streak`; None if unchanged."""
    if ok:
        return _judge_success(state, streak, rise, cooled_down)
    if state is HealthState.UNKNOWN:
        return Verdict(state, HealthState.UNHEALTHY, "first probe failed")
    if state in (HealthState.HEALTHY, HealthState.EJECTED) and streak >= fall:
        return Verdict(state, HealthState.UNHEALTHY, f"{streak} probes in a row failed")
    return None


def _judge_success(state: HealthState, streak: int, rise: int, cooled_down: bool) -> Verdict | None:
    if state is HealthState.UNKNOWN:
        return Verdict(state, HealthState.HEALTHY, "first probe succeeded")
    if state is HealthState.UNHEALTHY and streak >= rise:
        return Verdict(state, HealthState.HEALTHY, f"{streak} probes in a row succeeded")
    if state is HealthState.EJECTED and cooled_down:
        return Verdict(state, HealthState.HEALTHY, "probe succeeded after the ejection cool-down")
    return None
