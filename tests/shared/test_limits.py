"""lb.shared.limits: per-key windows and leases in a real redis-server, shared by two limiters
(two instances), and failing open when Redis is gone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from pydantic import SecretStr

from lb.config import RedisConfig
from lb.shared.limits import SharedLimits, decision_of
from lb.shared.link import RedisLink
from lb.teams.table import KeyLimits
from tests.fleetlb_process import eventually
from tests.redis_server import RedisServer

BOUND_S = 5.0  # "it ended": far above [redis] timeout
Make = Callable[..., SharedLimits]


@pytest.fixture
async def make_limits(redis_server: RedisServer) -> AsyncIterator[Make]:
    made: list[tuple[RedisLink, SharedLimits]] = []

    def make(lease_ttl_s: float = 30.0) -> SharedLimits:
        link = RedisLink(RedisConfig(url=SecretStr(redis_server.url), timeout=0.5))
        limits = SharedLimits(link, lease_ttl_s=lease_ttl_s)
        made.append((link, limits))
        return limits

    yield make
    for link, _ in made:
        await link.close()


async def test_rpm_is_one_limit_across_instances(make_limits: Make) -> None:
    a, b = make_limits(), make_limits()
    rpm3 = KeyLimits(rpm=3)
    decisions = [await a.admit("team", rpm3, 0), await b.admit("team", rpm3, 0),
                 await a.admit("team", rpm3, 0)]
    assert all(d.admitted for d in decisions)
    assert [d.requests.remaining for d in decisions if d.requests] == [2, 1, 0]
    for limits in (a, b):
        refused = await limits.admit("team", rpm3, 0)
        assert not refused.admitted and refused.refused_by == "rpm"
        assert refused.retry_after_s > 0
        assert refused.requests is not None and refused.requests.limit == 3
    # other keys have their own windows
    assert (await b.admit("other", rpm3, 0)).admitted
    view = await b.window("team", 0)
    assert view.requests == 3


async def test_max_in_flight_leases_are_shared_and_returned(make_limits: Make) -> None:
    a, b = make_limits(), make_limits()
    two = KeyLimits(max_in_flight=2)
    assert (await a.admit("team", two, 0)).admitted
    assert (await b.admit("team", two, 0)).admitted
    refused = await a.admit("team", two, 0)
    assert refused.refused_by == "max_in_flight" and refused.retry_after_s > 0
    assert (await a.window("team", 0)).in_flight == 2
    b.finish("team", 0, 0)
    await b.flush()
    assert (await a.admit("team", two, 0)).admitted


async def test_the_next_call_carries_the_end_of_the_last_one(make_limits: Make) -> None:
    limits = make_limits()
    one = KeyLimits(max_in_flight=1, tpm=100)
    for _ in range(3):  # a sequential client never meets its own previous call
        assert (await limits.admit("team", one, 0)).admitted
        limits.finish("team", 40, 0)  # not flushed: the next admit sends it
    refused = await limits.admit("team", one, 0)  # 120 tokens charged before deciding
    assert refused.refused_by == "tpm"
    assert (await limits.window("team", 0)).in_flight == 0


async def test_leases_of_a_dead_instance_expire(make_limits: Make) -> None:
    dying, alive = make_limits(lease_ttl_s=0.3), make_limits()
    one = KeyLimits(max_in_flight=1)
    assert (await dying.admit("team", one, 0)).admitted  # and never finishes nor renews
    assert not (await alive.admit("team", one, 0)).admitted

    async def freed() -> bool:
        return (await alive.window("team", 0)).in_flight == 0

    await eventually(freed, "the dead instance's lease did not expire")
    assert (await alive.admit("team", one, 0)).admitted


async def test_renewal_extends_live_leases(redis_server: RedisServer, make_limits: Make) -> None:
    limits = make_limits(lease_ttl_s=60.0)
    assert (await limits.admit("team", KeyLimits(max_in_flight=5), 0)).admitted
    key = "fleetlb:leases:{team}"
    link = RedisLink(RedisConfig(url=SecretStr(redis_server.url)))
    try:
        (_, before), = await link.client.zrange(key, 0, -1, withscores=True)
        await asyncio.sleep(0.01)  # Redis's clock moves on (a millisecond is enough)
        await limits.renew()
        (_, after), = await link.client.zrange(key, 0, -1, withscores=True)
        assert after > before
        limits.finish("team", 0, 0)
        await limits.flush()
        assert await link.client.zcard(key) == 0
    finally:
        await link.close()


async def test_tokens_are_charged_at_the_end_and_shared(make_limits: Make) -> None:
    a, b = make_limits(), make_limits()
    tpm = KeyLimits(tpm=100)
    first = await a.admit("team", tpm, 0)
    assert first.admitted and first.tokens is not None and first.tokens.remaining == 100
    a.finish("team", 120, 0)  # a call may overshoot: its usage is known only at its end
    await a.flush()
    refused = await b.admit("team", tpm, 0)
    assert refused.refused_by == "tpm" and refused.tokens is not None
    assert refused.tokens.remaining == 0
    assert (await b.window("team", 0)).tokens == 120


async def test_unlimited_keys_never_reach_redis(make_limits: Make) -> None:
    limits = make_limits()
    for _ in range(3):
        assert (await limits.admit("default", KeyLimits(), 0)).admitted
        limits.finish("default", 50, 0)
    await limits.flush()
    assert (await limits.window("default", 0)).requests == 0


async def test_fail_open_when_redis_is_gone(redis_server: RedisServer, make_limits: Make) -> None:
    a = make_limits()
    strict = KeyLimits(rpm=1, tpm=1, max_in_flight=1)
    assert (await a.admit("team", strict, 0)).admitted
    redis_server.kill()
    async with asyncio.timeout(BOUND_S):
        for _ in range(5):
            decision = await a.admit("team", strict, 0)
            assert decision.admitted and decision.requests is None  # no headers to promise
            a.finish("team", 10, 0)
        await a.flush()
        await a.renew()
        view = await a.window("team", 0)
    assert view.in_flight == 1  # what this instance knows: the first call, still going
    assert a._link.errors["limits"] >= 1
    redis_server.start()  # empty again: counting starts over once the backoff has passed

    async def enforced_again() -> bool:
        return not (await a.admit("team", KeyLimits(rpm=1), 0)).admitted

    await eventually(enforced_again, "limits did not come back with Redis")


async def test_start_and_stop_flush_what_is_queued(redis_server: RedisServer,
                                                   make_limits: Make) -> None:
    a, b = make_limits(), make_limits()
    one = KeyLimits(max_in_flight=1)
    await a.start()
    assert (await a.admit("team", one, 0)).admitted
    a.finish("team", 0, 0)  # the background task sends it

    async def returned() -> bool:
        return (await b.window("team", 0)).in_flight == 0

    await eventually(returned, "the lease was not returned by the flusher")
    assert (await a.admit("team", one, 0)).admitted
    await a.stop()  # shutdown returns the leases still held
    assert (await b.window("team", 0)).in_flight == 0


@pytest.mark.parametrize(("raw", "refused", "remaining", "waits"), [
    ([b"", 1, 0, 0, 0, 0, 30_000], None, 9, False),
    ([b"rpm", 10, 0, 0, 0, 0, 30_000], "rpm", 0, True),
    ([b"rpm", 0, 20, 0, 0, 0, 60_000 * 7 + 1], "rpm", 0, True),
    ([b"max_in_flight", 3, 0, 0, 0, 2, 5], "max_in_flight", 7, True),
])
def test_decision_of_the_script_reply(raw: list[object], refused: str | None, remaining: int,
                                      waits: bool) -> None:
    decision = decision_of(raw, KeyLimits(rpm=10, max_in_flight=2))
    assert decision.refused_by == refused and decision.admitted is (refused is None)
    assert decision.requests is not None and decision.requests.remaining == remaining
    assert (decision.retry_after_s > 0) is waits
    assert decision.tokens is None  # no tpm: no token headers
