"""The one middleware: request id, request context, auth, error rendering and the access line.

Every error leaves here with the right status, in the shape of its route's API (Ollama's on
`/api/*`, OpenAI's elsewhere); nothing escapes as a traceback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import web

from lb.admin.page import PAGE_PATHS
from lb.appstate import ACCESS_LOG, DRAIN, HANDLER, METRICS, RECORD, REQUEST_IDS, RUNTIME
from lb.errors import (
    ApiError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ShuttingDown,
    Unauthorized,
)
from lb.observe import RequestIds, RequestRecord, begin_request
from lb.redact import NO_SECRETS, Redactor
from lb.teams.step import finish_call, identify

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_REQUEST_ID_CHARS = 128  # a longer client id is replaced: it would bloat every log line
# the status page's own files hold no data: the admin key guards the JSON they fetch
_OPEN_PATHS = frozenset({"/healthz", "/readyz", "/"}) | PAGE_PATHS
ErrorShape = Callable[[ApiError], dict[str, Any]]
# (path prefix, shape): the first match wins; OpenAI's shape for everything else
_SHAPES: tuple[tuple[str, ErrorShape], ...] = (("/api/", ApiError.ollama_body),)

log = structlog.get_logger("lb.access")


def request_id(request: web.Request, ids: RequestIds) -> str:
    given = request.headers.get("X-Request-ID")
    if given and len(given) <= MAX_REQUEST_ID_CHARS and given.isprintable():
        return given
    return ids.new()


def error_shape(path: str) -> ErrorShape:
    """How errors look on this route: each API family's clients parse their own shape."""
    for prefix, shape in _SHAPES:
        if path.startswith(prefix):
            return shape
    return ApiError.body


def error_response(exc: ApiError, rid: str, path: str = "/") -> web.Response:
    headers = {"X-Request-ID": rid, **exc.headers()}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    shape = error_shape(path)
    try:
        body = orjson.dumps(shape(exc))
    except orjson.JSONEncodeError:  # text that is not Unicode (a lone surrogate): say less
        body = orjson.dumps(_unicode(shape(exc)))
    return web.Response(status=exc.status, body=body, content_type="application/json",
                        headers=headers)


def _unicode(value: Any) -> Any:
    """`value` with every string made valid Unicode (what cannot be encoded becomes '?')."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode()
    if isinstance(value, dict):
        return {_unicode(k): _unicode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unicode(v) for v in value]
    return value


def _guard(request: web.Request) -> None:
    path = request.path
    if path in _OPEN_PATHS:
        return
    runtime = request.app[RUNTIME].current
    if path.startswith(("/admin", "/metrics")):
        runtime.admin_auth.check(request.headers.get("Authorization"))
    else:
        identify(request, runtime)  # the client key's team (lb.teams)


def _from_http(exc: web.HTTPException) -> ApiError:
    if exc.status == 404:
        return NotFound(f"Unknown route: {exc.reason}")
    if exc.status == 405:
        return MethodNotAllowed("Method not allowed for this route")
    if exc.status == 413:
        return PayloadTooLarge("Request body too large")
    err = ApiError(exc.text or exc.reason)
    err.status = exc.status  # type: ignore[misc]
    return err


@web.middleware
async def gateway_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    app = request.app
    rid = request_id(request, app[REQUEST_IDS])
    record = RequestRecord(rid, request.method, request.path, time.perf_counter())
    request[RECORD] = record
    begin_request(record)
    drain = app[DRAIN]
    task = drain.begin()  # a shutdown waits for the handler to finish
    if task is not None:
        request[HANDLER] = task
    try:
        _guard(request)
        response = await handler(request)
    except ApiError as exc:
        response = _failed(record, exc, rid, app[RUNTIME].current.redactor)
    except web.HTTPException as exc:
        response = _failed(record, _from_http(exc), rid)
    except asyncio.CancelledError:
        if not drain.cut_short():
            if not record.answered:  # else: it left while the handler finished its own work
                record.status, record.outcome = 499, "client_gone"
            _account(app, record)
            raise
        # the drain period is over and this request was still waiting for its backend
        response = _failed(record, ShuttingDown("fleetlb is shutting down: the request "
                                                "outlasted the drain period"), rid)
        record.outcome = "interrupted"
    except Exception:
        # a bug: logged once, as one JSON line with the request id (the record's context) and
        # the traceback inside it; the client learns only that it happened and under what id
        log.exception("unhandled_error")
        response = _failed(record, ApiError(f"internal error (request id {rid})"), rid)
    finally:
        drain.end(task)
        finish_call(request)  # the key's in-flight lease back, its tokens charged
    if not response.prepared:
        response.headers.setdefault("X-Request-ID", rid)
    record.status = response.status
    _account(app, record)
    return response


def _account(app: web.Application, record: RequestRecord) -> None:
    """The access line and the request metrics: the one place a finished request is counted."""
    app[ACCESS_LOG].write(record)
    app[METRICS].observe(record)


def _failed(record: RequestRecord, exc: ApiError, rid: str,
            redactor: Redactor = NO_SECRETS) -> web.Response:
    exc.redact(redactor.text)  # the last guard: the client's error and its access line
    record.outcome, record.error = "error", exc.message
    return error_response(exc, rid, record.path)
