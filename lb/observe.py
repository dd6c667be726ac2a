"""structlog setup (JSON lines or console), the per-request record, and the access line.

Request context (`request_id`, `model`, `endpoint`, `attempt`, `stream`) lives on the request's
`RequestRecord`, set once per request in a ContextVar; a structlog processor copies it into every
line logged while serving the request, so binding costs nothing unless something is logged. The
access line, written once per request, skips structlog's processor chain: one orjson render into
a buffer flushed within FLUSH_AFTER_S. Keys and bodies are never logged.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import random
import sys
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, Protocol

import orjson
import structlog

from lb.config import Priority
from lb.usage import Usage

if TYPE_CHECKING:
    from lb.balancing import RouteNote

LogFormat = Literal["json", "console"]


def configure_logging(fmt: LogFormat = "json", level: int = logging.INFO, *,
                      stream: BinaryIO | None = None, cache: bool = True) -> None:
    """JSON lines (or console text) to stdout; `stream`/`cache` let tests read what is logged."""
    shared: list[Any] = [
        add_request_context,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "console":
        renderer: list[Any] = [structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())]
        factory: Any = structlog.PrintLoggerFactory(sys.stdout)
    else:
        renderer = [structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer(serializer=orjson.dumps)]
        factory = structlog.BytesLoggerFactory(stream or sys.stdout.buffer)
    structlog.configure(
        processors=[*shared, *renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=cache,
    )
    # aiohttp and asyncio log through the stdlib; keep their warnings, in the same stream
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(name)s %(message)s")


@dataclass(slots=True)
class RequestRecord:
    """What the access line says about one request; filled in along the request path."""

    request_id: str
    method: str
    path: str
    started: float  # perf_counter
    model: str | None = None
    endpoint: str | None = None
    attempts: int = 0
    stream: bool = False
    status: int = 0
    ttfb_s: float | None = None
    bytes_out: int = 0
    outcome: str = "ok"  # ok | error | upstream_failed | client_gone | interrupted
    error: str | None = None
    usage: Usage | None = None  # when the backend reported token counts
    key: str | None = None  # the client key's name (lb.teams), never the key itself
    priority: Priority = "interactive"  # the key's, for the admission queue
    dropped: str | None = None  # what translation did not send to the backend (x-fleetlb-dropped)
    route: RouteNote | None = None  # what the strategy said about its choice (cache_aware)
    answered: bool = False  # the whole answer went out: a hang-up after it is not client_gone

    def context(self) -> dict[str, Any]:
        """The request context every log line of this request carries."""
        fields: dict[str, Any] = {"request_id": self.request_id}
        if self.model is not None:
            fields["model"] = self.model
            fields["stream"] = self.stream
        if self.endpoint is not None:
            fields["endpoint"] = self.endpoint
            fields["attempt"] = self.attempts
        return fields

    def access_fields(self) -> dict[str, Any]:
        return self._add_access({})

    def access_line(self, timestamp: str) -> dict[str, Any]:
        """The whole JSON access line: context, access fields, event, level and timestamp, in
        one dict (it is written for every request)."""
        line = self._add_access(self.context())
        line["event"], line["level"], line["timestamp"] = "access", "info", timestamp
        return line

    def _add_access(self, fields: dict[str, Any]) -> dict[str, Any]:
        ttfb_s = self.ttfb_s
        fields.update({
            "method": self.method, "path": self.path, "status": self.status,
            "duration_ms": round((time.perf_counter() - self.started) * 1000, 3),
            "ttfb_ms": None if ttfb_s is None else round(ttfb_s * 1000, 3),
            "attempts": self.attempts, "bytes": self.bytes_out, "outcome": self.outcome,
            "key": self.key})
        if self.error:
            fields["error"] = self.error
        if self.dropped:
            fields["dropped"] = self.dropped
        route = self.route
        if route is not None and route.reason:
            fields["route"] = route.label
        usage = self.usage
        if usage is not None:
            fields["tokens_in"], fields["tokens_out"] = usage.input_tokens, usage.output_tokens
        return fields


# A ContextVar is a key, not state: each request's task sees only its own record.
_CURRENT: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar(
    "fleetlb_request", default=None)


def begin_request(record: RequestRecord) -> None:
    """Make `record` the context of every line logged by this request's task from now on."""
    _CURRENT.set(record)


def current_record() -> RequestRecord | None:
    return _CURRENT.get()


def add_request_context(logger: Any, method: str,
                        event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the current request's context, under what the line itself says."""
    record = _CURRENT.get()
    if record is None:
        return event
    return {**record.context(), **event}


def new_request_id() -> str:
    return os.urandom(16).hex()  # as unique as uuid4, a third of its cost


class RequestIds:
    """The ids of requests that did not bring one: 128 bits from a generator seeded once from the
    OS. An id must be unique, not secret, and os.urandom is a getrandom(2) call per request."""

    __slots__ = ("_bits",)

    def __init__(self, seed: bytes | None = None) -> None:
        self._bits = random.Random(seed if seed is not None else os.urandom(32)).getrandbits

    def new(self) -> str:
        return self._bits(128).to_bytes(16).hex()


class AccessLog(Protocol):
    def write(self, record: RequestRecord) -> None: ...

    def flush(self) -> None: ...


FLUSH_AFTER_S = 0.1  # an access line reaches the journal this soon; one write() per burst
_BUFFER_LIMIT = 64 << 10  # flush at once past this many buffered bytes


class JsonAccessLog:
    """Access lines as JSON, the same shape structlog renders, buffered and flushed in bursts."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._pending: list[bytes] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._prefix = ""

    def write(self, record: RequestRecord) -> None:
        line = orjson.dumps(record.access_line(self._timestamp())) + b"\n"
        self._pending.append(line)
        self._size += len(line)
        if self._size > _BUFFER_LIMIT:
            self.flush()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(FLUSH_AFTER_S, self.flush)
            except RuntimeError:  # no loop (a test, a CLI): write at once
                self.flush()

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._size = 0
            self._stream.write(data)
            self._stream.flush()

    def _timestamp(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:  # strftime once a second, not once a request
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return "%s.%06dZ" % (self._prefix, (now - second) * 1e6)  # noqa: UP031 (faster)


class StructlogAccessLog:
    """Access lines through structlog's own chain (the console format, for people)."""

    def __init__(self) -> None:
        self._log = structlog.get_logger("lb.access")

    def write(self, record: RequestRecord) -> None:
        self._log.info("access", **record.access_fields())

    def flush(self) -> None:
        return None


def access_log_for(fmt: LogFormat, stream: BinaryIO | None = None) -> AccessLog:
    if fmt == "console":
        return StructlogAccessLog()
    return JsonAccessLog(stream or sys.stdout.buffer)
