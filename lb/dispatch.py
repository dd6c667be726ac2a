"""The request path's first step: exact-path routes go straight to the middleware chain.

aiohttp's Application resolves every request through its UrlDispatcher, builds a match info,
freezes it and looks up the cached middleware chain: a few microseconds per request that a
gateway with a fixed set of hot routes (`POST /v1/chat/completions`, ...) need not pay. The
`Dispatcher` maps `METHOD raw-path` of every plain (parameterless) route to its handler wrapped
once in the app's middlewares, with a match info built once per route; every other request
(a parameter in the path, a query string, percent-escapes, `Expect: 100-continue`, an unknown
route) takes aiohttp's own `Application._handle`, so routing answers exactly as before.

A request aiohttp's own HTTP parser refuses (a malformed request line or header, conflicting
lengths, a TLS hello on the plain port) never reaches a route: aiohttp answers it from
`RequestHandler.handle_error`, in plain text. `GatewayProtocol` answers it in OpenAI's error shape
instead (400 `bad_request`, or the parser's own 4xx), with a request id, quoting only the first
line of the parser's reason, redacted; the connection is closed as before.

`GatewayRunner` is the AppRunner that serves through both (`fleetlb serve` and the tests).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import orjson
from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_urldispatcher import PlainResource, UrlMappingMatchInfo

from lb.errors import ApiError, BadRequest
from lb.observe import new_request_id
from lb.serverlog import parser_reason

REASON_CHARS = 200  # of the parser's reason, quoted to the client

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Dispatcher:
    """The server's request handler: a dict lookup for plain routes, aiohttp's router else."""

    __slots__ = ("_fallback", "_routes")

    def __init__(self, app: web.Application) -> None:
        self._fallback: Callable[[web.Request], Awaitable[web.StreamResponse]] = app._handle
        self._routes: dict[str, tuple[Handler, UrlMappingMatchInfo]] = {}
        for resource in app.router.resources():
            if not isinstance(resource, PlainResource):
                continue
            path = resource.canonical
            for route in resource:
                if route.method == hdrs.METH_ANY:
                    continue
                self._routes.setdefault(f"{route.method} {path}",
                                        (_chain(app, route.handler), _match_info(app, route)))

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        entry = self._routes.get(f"{request.method} {request.raw_path}")
        if entry is None or hdrs.EXPECT in request.headers:
            return await self._fallback(request)  # type: ignore[arg-type]
        handler, match_info = entry
        request._match_info = match_info  # type: ignore[attr-defined]
        return await handler(request)  # type: ignore[arg-type]


def _chain(app: web.Application, handler: Any) -> Handler:
    """`handler` inside the app's middlewares, outermost first (as Application builds it)."""
    for middleware in reversed(app.middlewares):
        handler = partial(middleware, handler=handler)
    return handler  # type: ignore[no-any-return]


def _match_info(app: web.Application, route: web.AbstractRoute) -> UrlMappingMatchInfo:
    """What `request.match_info` / `request.app` read: shared by every request of the route
    (no path parameters; one app, so `current_app` never changes)."""
    info = UrlMappingMatchInfo({}, route)
    info.add_app(app)
    info.freeze()
    return info


class GatewayProtocol(RequestHandler):
    """aiohttp's per-connection protocol, but for the answer to a request it cannot parse."""

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs; raises if bytes went out
        reason = parser_reason(message, REASON_CHARS)
        error: ApiError
        if 400 <= status < 500:
            error = BadRequest(f"fleetlb could not read this HTTP request: {reason or status}")
            error.status = status  # type: ignore[misc]
            error.code = "bad_request"  # type: ignore[misc]
        else:  # a failure outside every route (the middleware answers the rest)
            error = ApiError("internal error")
        rid = new_request_id()
        response = web.Response(status=error.status, body=orjson.dumps(error.body()),
                                content_type="application/json",
                                headers={"X-Request-ID": rid})
        response.force_close()
        return response


class GatewayServer(web.Server):
    """aiohttp's Server, whose connections are GatewayProtocol."""

    def __call__(self) -> RequestHandler:
        return GatewayProtocol(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """An AppRunner whose server dispatches through `Dispatcher`, with GatewayProtocol."""

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # the app's startup, and aiohttp's server settings
        return GatewayServer(Dispatcher(self.app), request_factory=made.request_factory,
                             handler_cancellation=made.handler_cancellation, loop=made._loop,
                             **made._kwargs)
