"""Prometheus metrics: one registry per app. Request metrics are recorded once per request from the
access record; endpoint gauges are read from the live fleet at scrape time, costing nothing per
request. Labelled children are cached per (model, endpoint, api) so a request does no `.labels()`.

Label values stay bounded: a model is a label only once routing knew it (anything else counts as
"unknown"), endpoints come from the config, `api` from a fixed table, statuses are HTTP codes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from lb.endpoints import Fleet
from lb.observe import RequestRecord

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


@dataclass(slots=True, eq=False)
class _Series:
    """The children of one (model, endpoint, api): what a request updates, ready to use."""

    labels: tuple[str, str, str]
    duration: Histogram
    ttfb: Histogram
    by_status: dict[int, Counter] = field(default_factory=dict)
    stream_failures: Counter | None = None
    tokens: tuple[Counter, Counter] | None = None


class Metrics:
    """The app's metrics; implements the forwarder's `ForwardObserver` (retries, queue waits)."""

    def __init__(self, fleet: Callable[[], Fleet], knows_model: Callable[[str], bool]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._knows_model = knows_model
        reg = self.registry
        self._requests = Counter("fleetlb_requests", "Requests answered, by final status.",
                                 ["model", "endpoint", "api", "status"], registry=reg)
        self._duration = Histogram("fleetlb_request_duration_seconds",
                                   "Time from request to the last byte of the answer.",
                                   ["model", "endpoint", "api"], registry=reg,
                                   buckets=DURATION_BUCKETS_S)
        self._ttfb = Histogram("fleetlb_time_to_first_byte_seconds",
                               "Time from request to the first body byte sent to the client.",
                               ["model", "endpoint", "api"], registry=reg, buckets=TTFB_BUCKETS_S)
        self._retries = Counter("fleetlb_retries", "Attempts on another endpoint after a failure.",
                                ["model"], registry=reg)
        self._stream_failures = Counter("fleetlb_stream_failures",
                                        "Bodies that broke after their first byte was sent.",
                                        ["model", "endpoint"], registry=reg)
        self._tokens = Counter("fleetlb_tokens", "Tokens, as reported by backends in `usage`.",
                               ["model", "endpoint", "kind"], registry=reg)
        self._queue_wait = Histogram("fleetlb_queue_wait_seconds",
                                     "Time requests waited for a free endpoint slot.",
                                     registry=reg, buckets=QUEUE_BUCKETS_S)
        self._reloads = Counter("fleetlb_config_reloads", "Config reloads (SIGHUP), by result.",
                                ["result"], registry=reg)
        for result in ("ok", "error"):
            self._reloads.labels(result)
        reg.register(FleetCollector(fleet))
        self._series: dict[tuple[str, str, str], _Series] = {}
        self._retry_children: dict[str, Counter] = {}

    def observe(self, record: RequestRecord) -> None:
        """Count one finished request (called with its access line)."""
        duration_s = time.perf_counter() - record.started
        key = (self._model_label(record), record.endpoint or "", api_of(record.path))
        series = self._series.get(key) or self._add_series(key)
        status = series.by_status.get(record.status)
        if status is None:
            status = series.by_status[record.status] = self._requests.labels(*key, record.status)
        status.inc()
        series.duration.observe(duration_s)
        if record.ttfb_s is not None:
            series.ttfb.observe(record.ttfb_s)
        if record.outcome == "upstream_failed":
            if series.stream_failures is None:
                series.stream_failures = self._stream_failures.labels(key[0], key[1])
            series.stream_failures.inc()
        if record.usage is not None:
            if series.tokens is None:
                series.tokens = (self._tokens.labels(key[0], key[1], "input"),
                                 self._tokens.labels(key[0], key[1], "output"))
            series.tokens[0].inc(record.usage.input_tokens)
            series.tokens[1].inc(record.usage.output_tokens)

    def retried(self, model: str) -> None:
        child = self._retry_children.get(model)
        if child is None:
            child = self._retry_children[model] = self._retries.labels(model)
        child.inc()

    def waited(self, seconds: float) -> None:
        self._queue_wait.observe(seconds)

    def config_reloaded(self, ok: bool) -> None:
        self._reloads.labels("ok" if ok else "error").inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def _model_label(self, record: RequestRecord) -> str:
        model = record.model
        if model is None:
            return ""
        if record.endpoint is not None:  # it was routed, so a pool serves it
            return model
        return model if self._knows_model(model) else UNKNOWN_MODEL

    def _add_series(self, key: tuple[str, str, str]) -> _Series:
        series = _Series(key, self._duration.labels(*key), self._ttfb.labels(*key))
        self._series[key] = series
        return series


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
