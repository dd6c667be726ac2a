"""Per-key windows and limits (pure, the clock passed in); the admission queue's priority rule."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from lb.config import Priority
from lb.teams.gate import ResetText, duration
from lb.teams.limits import WINDOW_S, Decision, LocalLimits, Window
from lb.teams.priority import first_served
from lb.teams.table import KeyLimits


def decide(limits: LocalLimits, name: str, key: KeyLimits, now: float) -> Decision:
    return asyncio.run(limits.admit(name, key, now))


@pytest.mark.parametrize(("previous", "current", "at", "used"), [
    (0, 0, 0.0, 0.0),
    (0, 5, 30.0, 5.0),
    (10, 0, 0.0, 10.0),  # the previous minute wholly overlaps at the start of this one
    (10, 0, 30.0, 5.0),  # half of it still does
    (10, 4, 45.0, 6.5),
])
def test_window_weighs_the_previous_minute_by_its_overlap(previous: float, current: float,
                                                          at: float, used: float) -> None:
    w = Window(start=600.0, previous=previous, current=current)
    assert w.used(600.0 + at) == pytest.approx(used)


def test_window_rolls_one_minute_or_forgets_two() -> None:
    w = Window(start=0.0, current=7)
    w.roll(61.0)
    assert (w.start, w.previous, w.current) == (60.0, 7, 0)
    w.current = 3
    w.roll(185.0)  # more than a whole minute later: nothing overlaps
    assert (w.start, w.previous, w.current) == (180.0, 0, 0)


@pytest.mark.parametrize(("previous", "current", "at", "limit", "wait"), [
    (0, 2, 10.0, 5, 0.0),  # room now
    (0, 5, 10.0, 5, 62.0),  # full this minute: room as it slides out of the next one
    (6, 0, 0.0, 6, 10.0),  # 1/6 of the previous minute must slide out
    (4, 3, 0.0, 6, 30.0),  # used 7, needs <= 5: half of the previous minute
])
def test_window_wait_until_room(previous: float, current: float, at: float, limit: int,
                                wait: float) -> None:
    w = Window(start=0.0, previous=previous, current=current)
    assert w.wait_for(1.0, limit, at) == pytest.approx(wait)
    later = at + w.wait_for(1.0, limit, at)
    w.roll(later)
    assert w.used(later) + 1 <= limit + 1e-9


def test_rpm_refuses_then_recovers_as_the_minute_slides() -> None:
    limits, key = LocalLimits(), KeyLimits(rpm=3)
    now = 1200.0
    decisions = [decide(limits, "a", key, now + i) for i in range(4)]
    assert [d.admitted for d in decisions] == [True, True, True, False]
    refused = decisions[3]
    assert refused.refused_by == "rpm"
    assert refused.requests.remaining == 0
    retry = refused.retry_after_s
    assert 0 < retry <= 2 * WINDOW_S
    assert not decide(limits, "a", key, now + 3 + retry - 0.5).admitted
    assert decide(limits, "a", key, now + 3 + retry).admitted


def test_remaining_counts_down_and_reset_says_when_the_window_is_empty() -> None:
    limits, key = LocalLimits(), KeyLimits(rpm=10, tpm=1000)
    first = decide(limits, "a", key, 60.0)
    second = decide(limits, "a", key, 70.0)
    assert (first.requests.remaining, second.requests.remaining) == (9, 8)
    assert second.requests.reset_s == pytest.approx(110.0)
    assert second.tokens.remaining == 1000 and second.tokens.reset_s == 0


def test_tpm_admits_while_tokens_remain_and_charges_real_usage_at_the_end() -> None:
    limits, key = LocalLimits(), KeyLimits(tpm=100)
    assert decide(limits, "a", key, 0.0).admitted
    assert decide(limits, "a", key, 0.0).admitted  # a burst...
    limits.finish("a", 80, 1.0)
    limits.finish("a", 80, 1.0)  # ...overshoots by what was in flight
    refused = decide(limits, "a", key, 2.0)
    assert (refused.admitted, refused.refused_by) == (False, "tpm")
    assert refused.tokens.remaining == 0
    later = 2.0 + refused.retry_after_s
    assert decide(limits, "a", key, later).admitted


def test_max_in_flight_frees_a_slot_when_a_call_finishes() -> None:
    limits, key = LocalLimits(), KeyLimits(max_in_flight=2)
    assert [decide(limits, "a", key, 0.0).admitted for _ in range(3)] == [True, True, False]
    limits.finish("a", 0, 0.0)
    assert decide(limits, "a", key, 0.0).admitted
    view = asyncio.run(limits.window("a", 0.0))
    assert (view.in_flight, view.requests) == (2, 3)


def test_keys_are_counted_apart_and_unlimited_keys_still_count() -> None:
    limits = LocalLimits()
    assert decide(limits, "a", KeyLimits(rpm=1), 0.0).admitted
    assert not decide(limits, "a", KeyLimits(rpm=1), 0.0).admitted
    assert decide(limits, "b", KeyLimits(rpm=1), 0.0).admitted
    for _ in range(5):
        decide(limits, "free", KeyLimits(), 0.0)
    assert asyncio.run(limits.window("free", 0.0)).requests == 5
    assert asyncio.run(limits.window("never", 0.0)).requests == 0


def test_new_limits_apply_to_the_counts_already_made() -> None:
    limits = LocalLimits()
    for _ in range(3):
        decide(limits, "a", KeyLimits(rpm=3), 0.0)
    assert not decide(limits, "a", KeyLimits(rpm=3), 0.0).admitted
    assert decide(limits, "a", KeyLimits(rpm=4), 0.0).admitted
    assert not decide(limits, "a", KeyLimits(rpm=4), 0.0).admitted


@pytest.mark.parametrize(("seconds", "text"), [
    (0.0, "0ms"), (0.1204, "121ms"), (1.0, "1s"), (1.5, "1.5s"), (59.9991, "1m0s"),
    (60.0, "1m0s"), (110.25, "1m50.25s"), (-1.0, "0ms"),
])
def test_durations_are_spelt_as_openai_does(seconds: float, text: str) -> None:
    assert duration(seconds) == text
    assert ResetText()(seconds) == text


def test_the_kept_durations_spell_as_duration_does_and_stay_bounded() -> None:
    spell = ResetText()
    values = [i * 0.0173 for i in range(3 * ResetText.LIMIT)]  # more ms than it keeps
    for seconds in values + values[:50]:
        assert spell(seconds) == duration(seconds)
    assert len(spell._known) <= ResetText.LIMIT


@dataclass
class W:
    name: str
    priority: Priority
    since: float


@pytest.mark.parametrize(("queue", "now", "served"), [
    ([], 0.0, None),
    ([W("b1", "batch", 0.0), W("i1", "interactive", 1.0)], 2.0, "i1"),
    ([W("i1", "interactive", 0.0), W("i2", "interactive", 1.0)], 2.0, "i1"),
    ([W("b1", "batch", 0.0), W("b2", "batch", 1.0)], 2.0, "b1"),
    ([W("b1", "batch", 0.0), W("i1", "interactive", 1.0)], 5.0, "b1"),  # promoted by age
    ([W("b1", "batch", 1.0), W("i1", "interactive", 1.0)], 5.9, "i1"),
    ([W("i1", "interactive", 0.0), W("b1", "batch", 0.0)], 9.0, "i1"),  # older interactive first
])
def test_interactive_first_batch_promoted_after_waiting(queue: list[W], now: float,
                                                        served: str | None) -> None:
    chosen = first_served(queue, now, promote_after_s=5.0)
    assert (chosen.name if chosen else None) == served
