"""probes.prober and probes.verdict: rise/fall, models, Responses detection, ejection, lifecycle.

Most tests drive `probe_once` by hand (deterministic); the loop tests use 20 ms intervals against
fake backends on 127.0.0.1 and wait for states, never for wall-clock durations.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from lb.config import EndpointConfig, ProbesConfig
from lb.endpoints import Endpoint, Fleet, HealthState
from lb.health import PassiveHealth
from probes.prober import JITTER_FRACTION, RESPONSES_RECHECK_S, Prober, jittered
from probes.verdict import Streak, judge
from tests.fake_probe_backends import FakeBackend, eventually, running

UNKNOWN, HEALTHY = HealthState.UNKNOWN, HealthState.HEALTHY
UNHEALTHY, EJECTED = HealthState.UNHEALTHY, HealthState.EJECTED
FAST = {"interval": 0.02, "timeout": 0.5}  # loop tests: probes every 20 ms


@dataclass
class RecordingLog:
    lines: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def info(self, event: str, **kw: Any) -> None:
        self.lines.append((event, kw))

    def error(self, event: str, **kw: Any) -> None:
        self.lines.append((event, kw))

    def changes(self, name: str) -> list[tuple[str, str, int]]:
        return [
            (kw["from"], kw["to"], kw["streak"])
            for event, kw in self.lines
            if event == "endpoint_state_changed" and kw["endpoint"] == name
        ]

    def events(self, event: str) -> list[dict[str, Any]]:
        return [kw for e, kw in self.lines if e == event]


class FakeClock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    fleet: Fleet
    prober: Prober
    log: RecordingLog
    clock: FakeClock


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def rig(
    session: aiohttp.ClientSession,
    *configs: EndpointConfig,
    real_clock: bool = False,
    **probes: Any,
) -> Rig:
    fleet = Fleet.from_configs(configs)
    log, clock = RecordingLog(), FakeClock()
    loop_clock = asyncio.get_running_loop().time if real_clock else clock
    prober = Prober(
        lambda: fleet,
        ProbesConfig(**probes),
        session,
        clock=loop_clock,
        rng=random.Random(7),
        log=log,
    )
    return Rig(fleet, prober, log, clock)


def the(fleet: Fleet, name: str = "ep") -> Endpoint:
    endpoint = fleet.get(name)
    assert endpoint is not None
    return endpoint


# --- verdicts (pure) ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "ok", "streak", "cooled_down", "expected"),
    [
        (UNKNOWN, True, 1, False, HEALTHY),  # the first probe decides
        (UNKNOWN, False, 1, False, UNHEALTHY),
        (HEALTHY, True, 5, False, None),
        (HEALTHY, False, 2, False, None),  # fall = 3
        (HEALTHY, False, 3, False, UNHEALTHY),
        (UNHEALTHY, False, 9, False, None),
        (UNHEALTHY, True, 1, False, None),  # rise = 2
        (UNHEALTHY, True, 2, False, HEALTHY),
        (EJECTED, True, 4, False, None),  # still cooling down
        (EJECTED, True, 1, True, HEALTHY),  # half-open: one success after the cool-down
        (EJECTED, False, 2, True, None),
        (EJECTED, False, 3, False, UNHEALTHY),  # probes fail too: it must rise like any other
    ],
)
def test_judge(
    state: HealthState, ok: bool, streak: int, cooled_down: bool, expected: HealthState | None
) -> None:
    verdict = judge(state, ok, streak, rise=2, fall=3, cooled_down=cooled_down)
    assert (verdict.new if verdict else None) is expected


def test_streak_counts_runs() -> None:
    streak = Streak()
    assert [streak.record(ok) for ok in (True, True, False, False, False, True)] == [
        1,
        2,
        1,
        2,
        3,
        1,
    ]


@pytest.mark.parametrize("draw", [0.0, 0.5, 1.0])
def test_jitter_stays_within_ten_percent(draw: float) -> None:
    class Fixed(random.Random):
        def random(self) -> float:
            return draw

    delay = jittered(5.0, Fixed())
    assert 5.0 * (1 - JITTER_FRACTION) <= delay <= 5.0 * (1 + JITTER_FRACTION)


# --- rise and fall, driven by hand ----------------------------------------------------------------


@pytest.mark.parametrize(("rise", "fall"), [(1, 1), (2, 3), (3, 2)])
async def test_fall_then_rise_on_the_same_port(
    session: aiohttp.ClientSession, rise: int, fall: int
) -> None:
    fake = FakeBackend("openai", models=["m"])
    async with running(fake):
        r = rig(session, fake.endpoint(), rise=rise, fall=fall)
        ep = the(r.fleet)
        assert ep.state is UNKNOWN  # routed until the first verdict
        await r.prober.probe_once(ep)
        assert ep.state is HEALTHY
    # killed: connections are refused now
    states = [(await r.prober.probe_once(ep), ep.state)[1] for _ in range(fall)]
    assert states == [HEALTHY] * (fall - 1) + [UNHEALTHY]
    async with running(fake):  # restarted on the same port
        states = [(await r.prober.probe_once(ep), ep.state)[1] for _ in range(rise)]
    assert states == [UNHEALTHY] * (rise - 1) + [HEALTHY]
    assert r.log.changes("ep") == [
        ("unknown", "healthy", 1),
        ("healthy", "unhealthy", fall),
        ("unhealthy", "healthy", rise),
    ]
    down = r.log.events("endpoint_state_changed")[1]
    assert "/v1/models" in down["reason"]
    assert isinstance(down["latency_ms"], float)


async def test_first_failure_from_unknown_is_a_verdict(session: aiohttp.ClientSession) -> None:
    fake = FakeBackend("vllm", status=503)
    async with running(fake):
        r = rig(session, fake.endpoint(), fall=3)
        await r.prober.probe_once(the(r.fleet))
    assert the(r.fleet).state is UNHEALTHY
    assert r.prober.snapshot("ep")["last_error"] == "/health: HTTP 503"


# --- models and load ------------------------------------------------------------------------------


async def test_discovered_models_are_served_then_withdrawn(session: aiohttp.ClientSession) -> None:
    fake = FakeBackend("ollama", models=["llama3.1:8b", "qwen2:latest"], loaded=["qwen2:latest"])
    async with running(fake):
        r = rig(session, fake.endpoint(models=["floor"]))
        ep = the(r.fleet)
        await r.prober.probe_once(ep)
        assert ep.served_models == {"floor", "llama3.1:8b", "qwen2:latest", "qwen2"}
        assert ep.loaded_models == {"qwen2:latest", "qwen2"}
        assert r.fleet.generation == 1
        fake.models = ["llama3.1:8b"]
        await r.prober.probe_once(ep)
        assert ep.served_models == {"floor", "llama3.1:8b"}  # the config floor stays
        assert not ep.serves("qwen2")
        assert r.fleet.generation == 2
        await r.prober.probe_once(ep)
        assert r.fleet.generation == 2  # nothing changed, the router keeps its cache
    changes = r.log.events("endpoint_models_changed")
    assert changes[1] == {"endpoint": "ep", "added": [], "removed": ["qwen2", "qwen2:latest"]}


async def test_vllm_queue_and_snapshot(session: aiohttp.ClientSession) -> None:
    metrics = "vllm:num_requests_running 2\nvllm:num_requests_waiting 5\n"
    fake = FakeBackend("vllm", models=["q"], metrics=metrics, responses=(400, "{}"))
    async with running(fake):
        r = rig(session, fake.endpoint())
        await r.prober.probe_once(the(r.fleet))
    view = r.prober.snapshot("ep")
    assert view["backend_queue"] == 7
    assert (view["state"], view["healthy"], view["supports_responses_api"]) == (
        "healthy",
        True,
        True,
    )
    assert (view["last_error"], view["consecutive_successes"]) == (None, 1)
    assert view["last_probe_at"].endswith("+00:00")
    assert r.prober.snapshot("nobody") == {}


async def test_kv_cache_use_is_read_and_forgotten_when_a_probe_fails(
    session: aiohttp.ClientSession,
) -> None:
    metrics = "vllm:num_requests_running 1\nvllm:kv_cache_usage_perc 0.42\n"
    fake = FakeBackend("vllm", models=["q"], metrics=metrics, responses=(400, "{}"))
    async with running(fake):
        r = rig(session, fake.endpoint())
        ep = the(r.fleet)
        await r.prober.probe_once(ep)
        assert (ep.kv_cache_usage, ep.backend_queue) == (0.42, 1)
        assert r.prober.snapshot("ep")["kv_cache_usage"] == 0.42
    await r.prober.probe_once(ep)  # the backend is gone: its last load is stale, not current
    assert (ep.kv_cache_usage, ep.backend_queue) == (None, None)


# --- Responses support ----------------------------------------------------------------------------


async def test_responses_detected_on_healthy_and_every_ten_minutes(
    session: aiohttp.ClientSession,
) -> None:
    fake = FakeBackend("vllm", responses=(422, '{"detail": []}'))
    async with running(fake):
        r = rig(session, fake.endpoint())
        ep = the(r.fleet)
        await r.prober.probe_once(ep)
        assert ep.supports_responses_api is True
        fake.responses = None  # the backend was downgraded: 404 now
        await r.prober.probe_once(ep)
        assert ep.supports_responses_api is True  # not re-asked before the recheck interval
        r.clock.now += RESPONSES_RECHECK_S
        await r.prober.probe_once(ep)
        assert ep.supports_responses_api is False
        fake.responses = (500, '{"error": "overloaded"}')
        r.clock.now += RESPONSES_RECHECK_S
        await r.prober.probe_once(ep)
        assert ep.supports_responses_api is False  # inconclusive keeps what was known
    posts = [s for s in fake.seen if s[0] == "POST"]
    assert len(posts) == 3
    assert [e for e, _ in r.log.lines if e.startswith("responses")] == [
        "responses_support_found",
        "responses_support_lost",
    ]


async def test_responses_redetected_on_every_return_to_healthy(
    session: aiohttp.ClientSession,
) -> None:
    fake = FakeBackend("ollama", models=["m"])  # no route: 404 page not found
    async with running(fake):
        r = rig(session, fake.endpoint(), rise=1, fall=1)
        ep = the(r.fleet)
        await r.prober.probe_once(ep)
        assert ep.supports_responses_api is False
        fake.status, fake.responses = 503, (400, '{"error": "model is required"}')
        await r.prober.probe_once(ep)
        assert ep.state is UNHEALTHY
        fake.status = 200
        await r.prober.probe_once(ep)  # back, well within ten minutes
    assert (ep.state, ep.supports_responses_api) == (HEALTHY, True)
    assert [e for e, _ in r.log.lines if e.startswith("responses")] == [
        "responses_support_absent",
        "responses_support_found",
    ]


# --- passive ejection and the half-open return ---------------------------------------------------


async def test_ejected_by_live_failures_returns_by_probe_after_cool_down(
    session: aiohttp.ClientSession,
) -> None:
    fake = FakeBackend("openai", models=["m"])
    async with running(fake):
        r = rig(session, fake.endpoint(), eject_after=3, eject_for=30.0)
        ep = the(r.fleet)
        health = PassiveHealth(3, 30.0, r.clock)
        await r.prober.probe_once(ep)
        assert [health.on_failure(ep) for _ in range(3)] == [False, False, True]
        assert (ep.state, ep.is_up) == (EJECTED, False)
        r.clock.now += 29.9
        await r.prober.probe_once(ep)  # the backend answers probes, but the cool-down holds
        assert ep.state is EJECTED
        r.clock.now += 0.1
        await r.prober.probe_once(ep)
    assert (ep.state, ep.live_failures, ep.is_up) == (HEALTHY, 0, True)
    assert r.log.changes("ep")[-1] == ("ejected", "healthy", 3)


async def test_ejected_and_dead_becomes_unhealthy(session: aiohttp.ClientSession) -> None:
    fake = FakeBackend("openai", models=["m"])
    async with running(fake):
        r = rig(session, fake.endpoint(), fall=2, rise=2)
        ep = the(r.fleet)
        await r.prober.probe_once(ep)
        PassiveHealth(1, 30.0, r.clock).on_failure(ep)
    r.clock.now += 60  # cool-down over, but the backend is gone
    for _ in range(2):
        await r.prober.probe_once(ep)
    assert ep.state is UNHEALTHY
    async with running(fake):
        await r.prober.probe_once(ep)
        assert ep.state is UNHEALTHY  # now it needs `rise` like any unhealthy endpoint
        await r.prober.probe_once(ep)
    assert ep.state is HEALTHY


# --- the background loop --------------------------------------------------------------------------


def probe_tasks() -> set[str]:
    return {t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("probe:")}


async def test_killed_backend_goes_down_and_comes_back(session: aiohttp.ClientSession) -> None:
    fake = FakeBackend("openai", models=["m"])
    async with running(fake):
        r = rig(session, fake.endpoint(), real_clock=True, rise=2, fall=3, **FAST)
        ep = the(r.fleet)
        await r.prober.start()
        await eventually(lambda: ep.state is HEALTHY)
    await eventually(lambda: ep.state is UNHEALTHY)
    async with running(fake):
        await eventually(lambda: ep.state is HEALTHY and len(r.log.changes("ep")) == 3)
        await r.prober.stop()
    # as observed: down after `fall` failed probes, back after `rise` good ones
    assert r.log.changes("ep") == [
        ("unknown", "healthy", 1),
        ("healthy", "unhealthy", 3),
        ("unhealthy", "healthy", 2),
    ]


async def test_hung_endpoint_times_out_while_others_stay_healthy(
    session: aiohttp.ClientSession,
) -> None:
    good = FakeBackend("openai", models=["m"])
    hung = FakeBackend("openai", models=["m"], hang=True)
    async with running(good, hung):
        r = rig(
            session,
            good.endpoint("good"),
            hung.endpoint("hung"),
            real_clock=True,
            interval=0.02,
            timeout=2.0,
            fall=1,
        )
        await r.prober.start()
        await eventually(lambda: len(hung.seen) == 1)  # its first probe hangs
        seen_before = len(good.seen)
        await eventually(lambda: len(good.seen) >= seen_before + 3)
        assert len(hung.seen) == 1  # still the one probe, not yet timed out
        assert the(r.fleet, "hung").state is UNKNOWN
        await eventually(lambda: the(r.fleet, "hung").state is UNHEALTHY)
        await r.prober.stop()
    assert r.log.changes("good") == [("unknown", "healthy", 1)]
    assert "no answer within 2.0s" in r.prober.snapshot("hung")["last_error"]


async def test_stop_cancels_every_task_even_mid_probe(session: aiohttp.ClientSession) -> None:
    fakes = [
        FakeBackend("ollama", models=["a"]),
        FakeBackend("vllm"),
        FakeBackend("openai", hang=True),
    ]
    async with running(*fakes):
        r = rig(
            session,
            *(f.endpoint(f"e{i}") for i, f in enumerate(fakes)),
            real_clock=True,
            interval=0.02,
            timeout=5.0,
        )
        await r.prober.start()
        assert probe_tasks() == {"probe:e0", "probe:e1", "probe:e2"}
        await eventually(lambda: all(f.seen for f in fakes))  # e2 is stuck in its probe
        await r.prober.stop()
        assert probe_tasks() == set()
        await r.prober.stop()  # idempotent
        views = [r.prober.snapshot(f"e{i}") for i in range(3)]
        await asyncio.sleep(0.05)  # several intervals: nothing probes any more
        assert [r.prober.snapshot(f"e{i}") for i in range(3)] == views


async def test_sync_follows_the_fleet(session: aiohttp.ClientSession) -> None:
    a, b, c = (FakeBackend("openai", models=[n]) for n in "abc")
    async with running(a, b, c):
        fleets = [Fleet.from_configs([a.endpoint("a"), b.endpoint("b")])]
        log = RecordingLog()
        prober = Prober(
            lambda: fleets[-1],
            ProbesConfig(**FAST),
            session,
            clock=asyncio.get_running_loop().time,
            rng=random.Random(1),
            log=log,
        )
        await prober.start()
        assert probe_tasks() == {"probe:a", "probe:b"}
        fleets.append(Fleet.from_configs([a.endpoint("a"), c.endpoint("c")]))  # a reload
        await prober.sync(ProbesConfig(interval=0.03, timeout=0.5))
        assert probe_tasks() == {"probe:a", "probe:c"}
        await eventually(lambda: the(fleets[-1], "c").state is HEALTHY)
        await eventually(lambda: the(fleets[-1], "a").state is HEALTHY)  # the new `a` object
        await prober.stop()
    assert probe_tasks() == set()


async def test_a_crash_in_one_round_does_not_end_the_loop(session: aiohttp.ClientSession) -> None:
    class Flaky(RecordingLog):
        def info(self, event: str, **kw: Any) -> None:
            if not any(e == "probe_crashed" for e, _ in self.lines):
                raise RuntimeError("log sink broke")
            super().info(event, **kw)

    fake = FakeBackend("openai", models=["m"])
    async with running(fake):
        fleet = Fleet.from_configs([fake.endpoint()])
        log = Flaky()
        prober = Prober(
            lambda: fleet,
            ProbesConfig(**FAST),
            session,
            clock=asyncio.get_running_loop().time,
            rng=random.Random(1),
            log=log,
        )
        await prober.start()
        await eventually(lambda: len(fake.seen) >= 3)
        await prober.stop()
    assert log.events("probe_crashed")[0]["error"] == "RuntimeError('log sink broke')"
