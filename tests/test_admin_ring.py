"""The status page's stats ring: bounded history, per-second and per-minute aggregation, with an
injected clock (no event loop, no sleeping)."""

from __future__ import annotations

import pytest

from lb.admin.ring import OTHER_MODELS, TTFT_BOUNDS_S, StatsRing, percentile


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ring(clock: Clock, **kw: int) -> StatsRing:
    return StatsRing(clock, **kw)


def test_series_has_one_point_per_second_and_stays_bounded() -> None:
    clock = Clock()
    stats = ring(clock, history_s=600)
    for _ in range(1500):  # 25 minutes of one request a second
        stats.count("m1", False, 0.05, 1, 2)
        clock.now += 1
    snap = stats.snapshot()
    assert len(snap["requests"]) == len(snap["errors"]) == len(snap["ttft_p90_ms"]) == 600
    assert snap["requests"] == [1] * 600  # the oldest 900 seconds fell out
    assert snap["history_s"] == 600


def test_slots_are_reused_so_memory_does_not_grow() -> None:
    clock = Clock()
    stats = ring(clock, history_s=10, window_s=5)
    for _ in range(100):
        stats.count("m1", False, None, 0, 0)
        clock.now += 1
    slots = stats._fleet._slots  # the fixed-size ring itself
    assert len(slots) == 10
    assert len(stats._models["m1"]._slots) == 5


def test_the_current_second_is_not_in_the_series_until_it_is_over() -> None:
    clock = Clock(50.3)
    stats = ring(clock, history_s=5)
    stats.count("m1", True, 0.2, 0, 0)
    assert stats.snapshot()["requests"] == [0, 0, 0, 0, 0]
    clock.now = 51.0
    snap = stats.snapshot()
    assert snap["requests"] == [0, 0, 0, 0, 1]
    assert snap["errors"] == [0, 0, 0, 0, 1]


def test_seconds_without_requests_are_zero_and_have_no_ttft() -> None:
    clock = Clock(100.0)
    stats = ring(clock, history_s=4)
    stats.count("m1", False, 0.1, 0, 0)
    clock.now = 102.5  # 101 saw nothing
    stats.count("m1", False, 0.1, 0, 0)
    clock.now = 103.0
    snap = stats.snapshot()
    assert snap["requests"] == [0, 1, 0, 1]
    assert snap["ttft_p90_ms"][0] is None and snap["ttft_p90_ms"][2] is None
    assert snap["ttft_p90_ms"][1] == pytest.approx(100, rel=0.15)


def test_a_stale_slot_from_a_previous_lap_reads_as_empty() -> None:
    clock = Clock(0.0)
    stats = ring(clock, history_s=3)
    stats.count("m1", False, None, 0, 0)  # second 0, slot 0
    clock.now = 4.0  # slot 0 would be second 3: it still holds second 0
    assert stats.snapshot()["requests"] == [0, 0, 0]


def test_per_model_window_adds_up_the_last_minute() -> None:
    clock = Clock(0.0)
    stats = ring(clock, window_s=60)
    clock.now = 200.0  # the gateway has been up longer than the window
    for i in range(10):
        stats.count("m1", i < 2, 0.01 * (i + 1), 100, 30)
    stats.count("m2", False, None, 0, 0)
    clock.now = 201.0
    models = stats.snapshot()["models"]
    m1 = models["m1"]
    assert m1["requests"] == 10
    assert m1["requests_per_s"] == pytest.approx(10 / 60)
    assert m1["error_rate"] == pytest.approx(0.2)
    assert m1["tokens_in_per_s"] == pytest.approx(1000 / 60)
    assert m1["tokens_out_per_s"] == pytest.approx(300 / 60)
    assert m1["ttft_p50_ms"] == pytest.approx(50, rel=0.15)
    assert m1["ttft_p90_ms"] == pytest.approx(90, rel=0.15)
    assert models["m2"]["ttft_p50_ms"] is None  # no first byte was ever timed
    assert models["m2"]["error_rate"] == 0


def test_requests_older_than_the_window_leave_the_model_rates() -> None:
    clock = Clock(0.0)
    stats = ring(clock, window_s=60)
    clock.now = 500.0
    stats.count("m1", True, 0.5, 10, 10)
    clock.now = 561.0  # 61 s later
    m1 = stats.snapshot()["models"]["m1"]
    assert m1["requests"] == 0 and m1["error_rate"] is None and m1["ttft_p90_ms"] is None


def test_rates_just_after_start_divide_by_the_time_up_not_the_whole_window() -> None:
    clock = Clock(1000.0)
    stats = ring(clock, window_s=60)
    stats.count("m1", False, None, 0, 0)
    stats.count("m1", False, None, 0, 0)
    clock.now = 1002.0  # the third second since the start has begun
    assert stats.snapshot()["models"]["m1"]["requests_per_s"] == pytest.approx(2 / 3)


def test_model_names_beyond_the_cap_share_one_ring() -> None:
    clock = Clock()
    stats = ring(clock, max_models=2)
    for name in ("a", "b", "c", "d"):
        stats.count(name, False, None, 0, 0)
    clock.now += 1
    models = stats.snapshot()["models"]
    assert set(models) == {"a", "b", OTHER_MODELS}
    assert models[OTHER_MODELS]["requests"] == 2
    assert stats.snapshot()["requests"][-1] == 4  # the fleet series counts every one


@pytest.mark.parametrize(("values", "q", "expected"), [
    ([], 0.5, None),
    ([0.02], 0.5, 0.02),
    ([0.02] * 99 + [5.0], 0.5, 0.02),
    ([0.02] * 50 + [5.0] * 50, 0.9, 5.0),
    ([1e-6], 0.9, TTFT_BOUNDS_S[0]),  # below the first bound: within the first bucket
    ([10_000.0], 0.5, TTFT_BOUNDS_S[-1]),  # past the last bound: that bound
])
def test_percentile_of_histogram(values: list[float], q: float, expected: float | None) -> None:
    clock = Clock()
    stats = ring(clock, history_s=2)
    for v in values:
        stats.count("m", False, v, 0, 0)
    counts = stats._fleet.slot(int(clock.now)).ttft
    got = percentile(counts, q)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, rel=0.26)  # one bucket is 25 % wide
