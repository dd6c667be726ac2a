"""What aiohttp's HTTP server itself would log, as fleetlb's own lines.

aiohttp answers a request its parser refuses (a bad request line, framing, an oversized header)
before any middleware runs, and logs a multi-line traceback for each at error level: one bad
client could flood the journal. `ServerLog` stands in for its `aiohttp.server` logger: such a
request becomes one access line (its status, `outcome="bad_request"`), anything else one JSON line.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from aiohttp.http_exceptions import HttpProcessingError

from lb.observe import AccessLog, RequestRecord, new_request_id
from lb.redact import NO_SECRETS

_ERROR_CHARS = 200  # how much of the parser's complaint (it may quote the client) is kept

log = structlog.get_logger("lb.server")


class ServerLog:
    """Passed to aiohttp as the server's `logger` (see `server_options`)."""

    __slots__ = ("_access_log",)

    def __init__(self, access_log: AccessLog) -> None:
        self._access_log = access_log

    def exception(self, msg: str, *args: Any, exc_info: BaseException | None = None,
                  **_: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self._bad_request(exc_info)
            return
        # aiohttp's own last resort (a response that could not be written): one line, the
        # traceback inside it
        log.error("server_error", message=_format(msg, args), exc_info=exc_info)

    def debug(self, msg: str, *args: Any, exc_info: BaseException | None = None,
              **_: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):  # non-HTTP bytes on a fresh connection
            self._bad_request(exc_info)

    def info(self, msg: str, *args: Any, **_: Any) -> None:
        return None

    def warning(self, msg: str, *args: Any, **_: Any) -> None:
        log.warning("server_warning", message=_format(msg, args))

    def error(self, msg: str, *args: Any, exc_info: BaseException | None = None,
              **_: Any) -> None:
        log.error("server_error", message=_format(msg, args), exc_info=exc_info)

    def _bad_request(self, exc: HttpProcessingError) -> None:
        record = RequestRecord(new_request_id(), "-", "-", time.perf_counter())
        record.status = exc.code if 400 <= exc.code < 500 else 400
        record.outcome = "bad_request"
        record.error = parser_reason(exc.message, _ERROR_CHARS) or type(exc).__name__
        self._access_log.write(record)


def parser_reason(message: str | None, limit: int) -> str:
    """The first line of aiohttp's parser error, without the bytes it quotes (`... reading:
    b'...'` may hold a header's value, a key among them), redacted."""
    line = (message or "").strip().split("\n", 1)[0]
    return NO_SECRETS.text(line.split(" b'", 1)[0].split(' b"', 1)[0].rstrip(": ."), limit)


def _format(msg: str, args: tuple[Any, ...]) -> str:
    try:
        return msg % args if args else msg
    except (TypeError, ValueError):
        return msg


def server_options(access_log: AccessLog, client_idle_s: float = 75.0) -> dict[str, Any]:
    """The keyword arguments every fleetlb server runner gets (the CLI's and the tests').

    `client_idle_s` is aiohttp's keep-alive timeout (3,630 s by default): it also closes a
    connection whose request head never completes, since that is a connection with no request
    under way ([timeouts] client_idle)."""
    return {"logger": ServerLog(access_log), "access_log": None, "handler_cancellation": True,
            "keepalive_timeout": client_idle_s}
