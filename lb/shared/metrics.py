"""What the Redis edge exports at /metrics: failed calls per operation, whether Redis answers,
and responses served without being stored."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from lb.shared.link import RedisLink


class RedisCollector:
    """Read from the link (and the responses context) when scraped; nothing on the hot path."""

    def __init__(self, link: RedisLink, not_stored: Callable[[], int]) -> None:
        self._link = link
        self._not_stored = not_stored

    def describe(self) -> list[Metric]:
        return []  # computed at scrape time; nothing to pre-register

    def collect(self) -> Iterator[Metric]:
        errors = CounterMetricFamily(
            "fleetlb_redis_errors", "Redis calls that failed or were skipped while Redis was "
            "down, by operation.", labels=["op"])
        for op, n in sorted(self._link.errors.items()):
            errors.add_metric([op], n)
        up = GaugeMetricFamily("fleetlb_redis_up", "1 while Redis answers, 0 after a failed call "
                               "until one succeeds.")
        up.add_metric([], 1.0 if self._link.is_up else 0.0)
        not_stored = CounterMetricFamily(
            "fleetlb_responses_not_stored", "Responses served but not stored because the "
            "response store was unavailable (x-fleetlb-stored: false).")
        not_stored.add_metric([], self._not_stored())
        yield from (errors, up, not_stored)
