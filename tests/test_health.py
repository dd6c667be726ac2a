"""lb.health: passive ejection by live failures and the fail-open helpers (pure, no network)."""

from __future__ import annotations

import pytest

from lb.config import EndpointConfig, ProbesConfig
from lb.endpoints import Endpoint, HealthState
from lb.health import PassiveHealth, should_fail_open, usable_or_all

UNKNOWN, HEALTHY = HealthState.UNKNOWN, HealthState.HEALTHY
UNHEALTHY, EJECTED = HealthState.UNHEALTHY, HealthState.EJECTED


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def endpoint(name: str = "a", state: HealthState = HEALTHY, *, draining: bool = False) -> Endpoint:
    ep = Endpoint(EndpointConfig(name=name, url=f"http://{name}.test:8000"), state=state)
    ep.draining = draining
    return ep


@pytest.mark.parametrize("state", [UNKNOWN, HEALTHY])
def test_ejects_on_the_nth_consecutive_failure(state: HealthState) -> None:
    clock = FakeClock()
    health = PassiveHealth(3, 30.0, clock)
    ep = endpoint(state=state)
    assert [health.on_failure(ep) for _ in range(2)] == [False, False]
    assert ep.state is state
    assert health.on_failure(ep) is True
    assert (ep.state, ep.ejected_until, ep.live_failures) == (EJECTED, 1030.0, 3)


def test_a_success_restarts_the_streak() -> None:
    health = PassiveHealth(2, 30.0, FakeClock())
    ep = endpoint()
    outcomes = [health.on_failure(ep)]
    health.on_success(ep)
    outcomes += [health.on_failure(ep), health.on_failure(ep)]
    assert outcomes == [False, False, True]


def test_failures_after_the_ejection_eject_nothing_more() -> None:
    clock = FakeClock()
    health = PassiveHealth(1, 10.0, clock)
    ep = endpoint()
    assert health.on_failure(ep) is True
    clock.now += 5  # requests still in flight fail later
    assert health.on_failure(ep) is False
    assert ep.ejected_until == 1010.0  # the cool-down is not extended


@pytest.mark.parametrize("state", [UNHEALTHY, EJECTED])
def test_an_endpoint_already_out_is_not_ejected(state: HealthState) -> None:
    health = PassiveHealth(1, 10.0, FakeClock())
    ep = endpoint(state=state)
    assert health.on_failure(ep) is False
    assert ep.state is state


def test_success_does_not_lift_an_ejection() -> None:
    health = PassiveHealth(1, 10.0, FakeClock())
    ep = endpoint()
    health.on_failure(ep)
    health.on_success(ep)  # a panic-mode request that happened to work
    assert (ep.state, ep.live_failures) == (EJECTED, 0)


def test_from_config_and_bad_threshold() -> None:
    health = PassiveHealth.from_config(ProbesConfig(eject_after=4, eject_for=12.5), FakeClock())
    assert (health.eject_after, health.eject_for_s) == (4, 12.5)
    with pytest.raises(ValueError, match="eject_after"):
        PassiveHealth(0, 1.0, FakeClock())


def test_zero_cool_down_still_ejects_until_a_probe() -> None:
    clock = FakeClock()
    health = PassiveHealth(1, 0.0, clock)
    ep = endpoint()
    assert health.on_failure(ep) is True
    assert (ep.state, ep.ejected_until) == (EJECTED, clock.now)


# --- fail open ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "expected_names", "panicked"),
    [
        ([("a", HEALTHY, False), ("b", UNHEALTHY, False)], ["a"], False),
        ([("a", UNKNOWN, False), ("b", HEALTHY, False)], ["a", "b"], False),
        ([("a", UNHEALTHY, False), ("b", EJECTED, False)], ["a", "b"], True),
        ([("a", EJECTED, False)], ["a"], True),
        ([("a", UNHEALTHY, False), ("b", HEALTHY, True)], ["a"], True),  # draining never offered
        ([("a", HEALTHY, True)], [], False),  # only draining: nothing to panic about
        ([], [], False),
        ([("b", EJECTED, False), ("a", UNHEALTHY, False)], ["b", "a"], True),  # order kept
    ],
)
def test_usable_or_all(
    members: list[tuple[str, HealthState, bool]], expected_names: list[str], panicked: bool
) -> None:
    pool = [endpoint(name, state, draining=draining) for name, state, draining in members]
    chosen, did_panic = usable_or_all(pool)
    assert [e.name for e in chosen] == expected_names
    assert did_panic is panicked
    assert should_fail_open(pool) is panicked


def test_full_endpoints_are_still_up_not_a_panic() -> None:
    ep = Endpoint(EndpointConfig(name="a", url="http://a.test", max_in_flight=1), state=HEALTHY)
    ep.in_flight = 1  # at its limit: the router queues, it does not fail open
    assert usable_or_all([ep]) == ([ep], False)
