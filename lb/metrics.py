"""Prometheus metrics: one registry per app. Request metrics are recorded once per request from the
access record into plain numbers per (model, endpoint, api); endpoint gauges are read from the live
fleet. Both become metric families only when scraped, so a request pays a dict lookup and a few
additions.

Label values stay bounded: a model is a label only once routing knew it (anything else counts as
"unknown"), endpoints come from the config, `api` from a fixed table, statuses are HTTP codes.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from lb.config import Priority
from lb.endpoints import Fleet
from lb.observe import RequestRecord
from lb.teams.stats import KeyStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # the classic text format, every scraper
UNKNOWN_MODEL = "unknown"  # a name no pool serves: never a label of its own (clients choose it)
DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                      120.0, 300.0, 900.0)  # up to [timeouts] total: generations run minutes
TTFB_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                  30.0, 60.0)  # up to [timeouts] first_byte
QUEUE_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_API_NAMES = {"/chat/completions": "chat_completions", "/completions": "completions",
              "/embeddings": "embeddings", "/models": "models", "/responses": "responses"}
API_BY_PATH = {
    **{prefix + path: api for prefix in ("/v1", "/openai/v1") for path, api in _API_NAMES.items()},
    "/api/chat": "ollama_chat", "/api/generate": "ollama_generate", "/api/embed": "ollama_embed",
    "/api/embeddings": "ollama_embed", "/api/tags": "ollama_tags",
    "/healthz": "health", "/readyz": "health", "/metrics": "metrics",
}
_API_PREFIXES = (("/v1/responses/", "responses"), ("/openai/v1/responses/", "responses"),
                 ("/admin/", "admin"))


def api_of(path: str) -> str:
    """The `api` label of a request path (a fixed set)."""
    api = API_BY_PATH.get(path)
    if api is not None:
        return api
    for prefix, name in _API_PREFIXES:
        if path.startswith(prefix):
            return name
    return "other"


class RequestStats(Protocol):
    """Where each finished model request is also counted (the status page's ring)."""

    def count(self, model: str, is_error: bool, ttft_s: float | None,
              tokens_in: int, tokens_out: int) -> None: ...


class NoStats:
    """The null `RequestStats`: nothing keeps per-second history."""

    __slots__ = ()

    def count(self, model: str, is_error: bool, ttft_s: float | None,
              tokens_in: int, tokens_out: int) -> None:
        return None


class Buckets:
    """A histogram kept as plain counts: one observation is a bisect and two additions (the event
    loop is one thread: no lock). Cumulated into Prometheus buckets only when scraped."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le: a value on a bound counts there
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        running = list(accumulate(self.counts))
        les = [*map(floatToGoString, self.bounds), "+Inf"]
        return [(le, float(n)) for le, n in zip(les, running, strict=True)]


@dataclass(slots=True, eq=False)
class _Series:
    """What requests of one (model, endpoint, api) added up to."""

    duration: Buckets = field(default_factory=lambda: Buckets(DURATION_BUCKETS_S))
    ttfb: Buckets = field(default_factory=lambda: Buckets(TTFB_BUCKETS_S))
    by_status: dict[tuple[int, str], int] = field(default_factory=dict)  # (status, key name)
    stream_failures: int = 0
    tokens: dict[str, list[int]] = field(default_factory=dict)  # key name -> [input, output]


class Metrics:
    """The app's metrics; implements the forwarder's `ForwardObserver` (retries, queue waits).

    Counters are plain numbers updated on the request path and turned into metric families by
    `collect()` when scraped, which is cheaper per request than prometheus-client's own metric
    objects (a lock and a label lookup per update).
    """

    def __init__(self, fleet: Callable[[], Fleet], knows_model: Callable[[str], bool],
                 stats: RequestStats | None = None) -> None:
        self._knows_model = knows_model
        self._stats = stats or NoStats()
        self._series: dict[tuple[str, str, str], _Series] = {}
        self._retries: dict[str, int] = {}
        self._routes: dict[tuple[str, str], int] = {}  # (model, prefix|balance|miss) -> count
        self._queue_wait = Buckets(QUEUE_BUCKETS_S)
        self._reloads = {"ok": 0, "error": 0}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self.registry.register(FleetCollector(fleet))

    def observe(self, record: RequestRecord) -> None:
        """Count one finished request (called with its access line)."""
        duration_s = time.perf_counter() - record.started
        key = (self._model_label(record), record.endpoint or "", api_of(record.path))
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series()
        by_status = series.by_status
        team = record.key or ""
        status = (record.status, team)
        by_status[status] = by_status.get(status, 0) + 1
        series.duration.observe(duration_s)
        if record.ttfb_s is not None:
            series.ttfb.observe(record.ttfb_s)
        if record.outcome == "upstream_failed":
            series.stream_failures += 1
        route = record.route
        if route is not None and route.reason:
            route_key = (key[0], route.reason)
            self._routes[route_key] = self._routes.get(route_key, 0) + 1
        usage = record.usage
        if usage is not None:
            counts = series.tokens.get(team)
            if counts is None:
                counts = series.tokens[team] = [0, 0]
            counts[0] += usage.input_tokens
            counts[1] += usage.output_tokens
        if key[0]:  # a model request (not a probe of /healthz or the status page polling)
            self._stats.count(key[0], record.status >= 500 or record.outcome == "upstream_failed",
                              record.ttfb_s, usage.input_tokens if usage else 0,
                              usage.output_tokens if usage else 0)

    def retried(self, model: str) -> None:
        self._retries[model] = self._retries.get(model, 0) + 1

    def waited(self, seconds: float) -> None:
        self._queue_wait.observe(seconds)

    def config_reloaded(self, ok: bool) -> None:
        self._reloads["ok" if ok else "error"] += 1

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def describe(self) -> list[Metric]:
        return []  # computed at scrape time; nothing to pre-register

    def collect(self) -> Iterator[Metric]:
        yield from self._request_families()
        retries = CounterMetricFamily("fleetlb_retries",
                                      "Attempts on another endpoint after a failure.",
                                      labels=["model"])
        for model, n in self._retries.items():
            retries.add_metric([model], n)
        queue = HistogramMetricFamily("fleetlb_queue_wait_seconds",
                                      "Time requests waited for a free endpoint slot.")
        queue.add_metric([], self._queue_wait.cumulative(), self._queue_wait.total)
        reloads = CounterMetricFamily("fleetlb_config_reloads",
                                      "Config reloads (SIGHUP), by result.", labels=["result"])
        for result, n in self._reloads.items():
            reloads.add_metric([result], n)
        routes = CounterMetricFamily("fleetlb_route_decisions",
                                     "cache_aware choices: the longest cached prefix (prefix), "
                                     "the least loaded instead (balance), no useful match (miss).",
                                     labels=["model", "reason"])
        for (model, reason), n in self._routes.items():
            routes.add_metric([model, reason], n)
        yield from (retries, queue, reloads, routes)

    def _request_families(self) -> Iterator[Metric]:
        labels = ["model", "endpoint", "api"]
        requests = CounterMetricFamily("fleetlb_requests", "Requests answered, by final status.",
                                       labels=[*labels, "status", "key"])
        duration = HistogramMetricFamily("fleetlb_request_duration_seconds",
                                         "Time from request to the last byte of the answer.",
                                         labels=labels)
        ttfb = HistogramMetricFamily("fleetlb_time_to_first_byte_seconds",
                                     "Time from request to the first body byte sent.",
                                     labels=labels)
        failures: dict[tuple[str, str], int] = {}
        tokens: dict[tuple[str, str, str], tuple[int, int]] = {}
        for key, series in self._series.items():
            for (status, team), n in series.by_status.items():
                requests.add_metric([*key, str(status), team], n)
            duration.add_metric(list(key), series.duration.cumulative(), series.duration.total)
            ttfb.add_metric(list(key), series.ttfb.cumulative(), series.ttfb.total)
            pair = (key[0], key[1])  # these two are not broken down by api
            if series.stream_failures:
                failures[pair] = failures.get(pair, 0) + series.stream_failures
            for team, (inputs, outputs) in series.tokens.items():
                before = tokens.get((*pair, team), (0, 0))
                tokens[(*pair, team)] = (before[0] + inputs, before[1] + outputs)
        stream_failures = CounterMetricFamily(
            "fleetlb_stream_failures", "Bodies that broke after their first byte was sent.",
            labels=["model", "endpoint"])
        for pair, n in failures.items():
            stream_failures.add_metric(list(pair), n)
        token_family = CounterMetricFamily("fleetlb_tokens",
                                           "Tokens, as reported by backends in `usage`.",
                                           labels=["model", "endpoint", "kind", "key"])
        for (model, endpoint, team), (inputs, outputs) in tokens.items():
            token_family.add_metric([model, endpoint, "input", team], inputs)
            token_family.add_metric([model, endpoint, "output", team], outputs)
        yield from (requests, duration, ttfb, stream_failures, token_family)

    def _model_label(self, record: RequestRecord) -> str:
        model = record.model
        if model is None:
            return ""
        if record.endpoint is not None:  # it was routed, so a pool serves it
            return model
        return model if self._knows_model(model) else UNKNOWN_MODEL


class KeyCollector:
    """Per-key gauges and counters (lb.teams) and the admission queue's depth per priority, read
    when scraped."""

    def __init__(self, stats: Callable[[], KeyStats],
                 queue_depth: Callable[[], dict[Priority, int]]) -> None:
        self._stats = stats
        self._queue_depth = queue_depth

    def describe(self) -> list[Metric]:
        return []  # computed at scrape time; nothing to pre-register

    def collect(self) -> Iterator[Metric]:
        limited = CounterMetricFamily("fleetlb_rate_limited",
                                      "Calls refused because their key was over a limit.",
                                      labels=["key", "limit"])
        in_flight = GaugeMetricFamily("fleetlb_key_in_flight",
                                      "Model calls of each client key being served now.",
                                      labels=["key"])
        for name, totals in self._stats().items():
            in_flight.add_metric([name], totals.in_flight)
            for limit, n in totals.rate_limited.items():
                limited.add_metric([name, limit], n)
        depth = GaugeMetricFamily("fleetlb_queue_depth",
                                  "Requests waiting for a free endpoint slot, by priority.",
                                  labels=["priority"])
        for priority, n in self._queue_depth().items():
            depth.add_metric([priority], n)
        yield from (limited, in_flight, depth)


class FleetCollector:
    """Per-endpoint gauges read from the current fleet when scraped."""

    def __init__(self, fleet: Callable[[], Fleet]) -> None:
        self._fleet = fleet

    def describe(self) -> list[Metric]:
        return []  # computed at scrape time; nothing to pre-register

    def collect(self) -> Iterator[Metric]:
        in_flight = GaugeMetricFamily("fleetlb_in_flight", "Requests being served per endpoint.",
                                      labels=["endpoint"])
        up = GaugeMetricFamily("fleetlb_endpoint_up",
                               "1 when the endpoint takes traffic (healthy or not probed yet).",
                               labels=["endpoint"])
        responses = GaugeMetricFamily("fleetlb_endpoint_supports_responses",
                                      "1 when the prober found a native /v1/responses.",
                                      labels=["endpoint"])
        for ep in self._fleet():
            in_flight.add_metric([ep.name], ep.in_flight)
            up.add_metric([ep.name], 1.0 if ep.is_up else 0.0)
            responses.add_metric([ep.name], 1.0 if ep.supports_responses_api else 0.0)
        yield from (in_flight, up, responses)
