"""structlog setup (JSON lines or console) and the per-request record behind the access line.

Request context (`request_id`, `model`, `endpoint`, `attempt`, `stream`) is bound in contextvars
once per request; every line logged while serving it carries it. Keys and bodies are never logged.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

import orjson
import structlog

from lb.usage import Usage

LogFormat = Literal["json", "console"]


def configure_logging(fmt: LogFormat = "json", level: int = logging.INFO, *,
                      stream: BinaryIO | None = None, cache: bool = True) -> None:
    """JSON lines (or console text) to stdout; `stream`/`cache` let tests read what is logged."""
    shared: list[Any] = [
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

    def access_fields(self) -> dict[str, Any]:
        now = time.perf_counter()
        return {
            "method": self.method, "path": self.path, "status": self.status,
            "duration_ms": round((now - self.started) * 1000, 3),
            "ttfb_ms": None if self.ttfb_s is None else round(self.ttfb_s * 1000, 3),
            "attempts": self.attempts, "bytes": self.bytes_out, "outcome": self.outcome,
            **({"error": self.error} if self.error else {}),
            **({"tokens_in": self.usage.input_tokens, "tokens_out": self.usage.output_tokens}
               if self.usage else {}),
        }
