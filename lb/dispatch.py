"""The request path's first step: exact-path routes go straight to the middleware chain.

aiohttp's Application resolves every request through its UrlDispatcher, builds a match info,
freezes it and looks up the cached middleware chain: a few microseconds per request that a
gateway with a fixed set of hot routes (`POST /v1/chat/completions`, ...) need not pay. The
`Dispatcher` maps `METHOD raw-path` of every plain (parameterless) route to its handler wrapped
once in the app's middlewares, with a match info built once per route; every other request
(a parameter in the path, a query string, percent-escapes, `Expect: 100-continue`, an unknown
route) takes aiohttp's own `Application._handle`, so routing answers exactly as before.

`GatewayRunner` is the AppRunner that serves through it (`fleetlb serve` and the tests).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from aiohttp import hdrs, web
from aiohttp.web_urldispatcher import PlainResource, UrlMappingMatchInfo

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


class GatewayRunner(web.AppRunner):
    """An AppRunner whose server dispatches through `Dispatcher`."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.request_handler = Dispatcher(self.app)  # read by each new connection
        return server
