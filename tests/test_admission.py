"""The bounded wait for a free slot."""

from __future__ import annotations

import asyncio

import pytest

from lb.admission import Admission
from lb.config import EndpointConfig
from lb.endpoints import Endpoint, Fleet
from lb.errors import RateLimited


def fleet_of(*names: str) -> Fleet:
    return Fleet(Endpoint(EndpointConfig(name=n, url="http://127.0.0.1:1", max_in_flight=1))
                 for n in names)


async def test_release_wakes_a_waiter_of_that_pool() -> None:
    fleet = fleet_of("a", "b")
    a, b = fleet.get("a"), fleet.get("b")
    assert a is not None and b is not None
    admission = Admission(fleet, max_queued=10, timeout_s=5)
    lease_a, lease_b = fleet.lease(a), fleet.lease(b)
    waiting = asyncio.create_task(admission.wait_for_slot((a,), admission.deadline()))
    await asyncio.sleep(0)
    lease_b.release()  # another pool's slot: must not wake it
    await asyncio.sleep(0)
    assert not waiting.done() and admission.queued == 1
    lease_a.release()
    await waiting
    assert admission.queued == 0 and a.in_flight == 0


async def test_deadline_and_full_queue_give_429() -> None:
    fleet = fleet_of("a")
    a = fleet.get("a")
    assert a is not None
    admission = Admission(fleet, max_queued=1, timeout_s=0.05)
    with fleet.lease(a):
        waiter = asyncio.create_task(admission.wait_for_slot((a,), admission.deadline()))
        await asyncio.sleep(0)
        with pytest.raises(RateLimited, match="too many requests are waiting"):
            await admission.wait_for_slot((a,), admission.deadline())
        with pytest.raises(RateLimited) as info:
            await waiter
    assert info.value.headers() == {"Retry-After": "1"}
    assert admission.queued == 0 and a.in_flight == 0


def test_lease_release_is_idempotent() -> None:
    fleet = fleet_of("a")
    a = fleet.get("a")
    assert a is not None
    lease = fleet.lease(a)
    assert a.in_flight == 1 and not a.has_capacity
    lease.release()
    lease.release()
    assert a.in_flight == 0
