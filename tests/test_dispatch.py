"""lb.dispatch: plain routes skip aiohttp's router; every request answers as the router would."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from lb.dispatch import Dispatcher
from tests.conftest import GatewayFactory, SimFactory, endpoint
from tests.gateway_server import GatewayTestServer

KEY = "sk-test"
ORDER = web.RequestKey("order", list)
CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def keyed(sim: Any) -> dict[str, Any]:
    return {"server": {"api_keys": [KEY]}, "endpoints": [endpoint("a", sim)]}


async def test_the_table_holds_the_plain_routes_only(start_sim: SimFactory,
                                                     start_gateway: GatewayFactory) -> None:
    gw = await start_gateway(keyed(await start_sim("m1")))
    routes = Dispatcher(gw.app)._routes
    assert {"POST /v1/chat/completions", "POST /openai/v1/embeddings", "GET /v1/models",
            "POST /api/chat", "GET /healthz", "HEAD /healthz"} <= routes.keys()
    assert not [key for key in routes if "{" in key]  # /v1/responses/{id} stays on the router


async def test_every_shape_of_request_answers_as_the_router_does(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    gw = await start_gateway(keyed(await start_sim("m1")))
    auth = {"Authorization": f"Bearer {KEY}"}
    cases: list[tuple[str, str, dict[str, str], int]] = [
        ("POST", "/v1/chat/completions", auth, 200),  # the table
        ("POST", "/v1/chat/completions?x=1", auth, 200),  # a query string: the router
        ("POST", "/v1/chat%2Fcompletions", auth, 404),  # an escaped slash is not the route
        ("POST", "/v1/chat/completions", {**auth, "Expect": "100-continue"}, 200),
        ("GET", "/v1/chat/completions", auth, 405),
        ("POST", "/v1/nothing-here", auth, 404),
        ("POST", "/v1/chat/completions", {}, 401),  # the middleware runs on the fast path
        ("GET", "/v1/responses/resp_unknown", auth, 404),  # a parameter: the router
    ]
    async with aiohttp.ClientSession() as s:
        for method, path, headers, status in cases:
            async with s.request(method, gw.url + path, headers=headers, json=CHAT,
                                 skip_auto_headers=()) as resp:
                body = await resp.read()
                assert resp.status == status, (method, path, headers, body)
                assert resp.headers["X-Request-ID"]
                if status >= 400:  # OpenAI's error shape, from the one middleware
                    assert "error" in orjson.loads(body), body


async def test_request_app_and_match_info_on_the_fast_path() -> None:
    seen: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.Response:
        seen["app"] = request.app
        seen["route"] = request.match_info.route
        seen["order"] = list(request[ORDER])
        return web.Response(text="ok")

    @web.middleware
    async def outer(request: web.Request, handler: Any) -> web.StreamResponse:
        request[ORDER] = ["outer"]
        return await handler(request)

    @web.middleware
    async def inner(request: web.Request, handler: Any) -> web.StreamResponse:
        request[ORDER].append("inner")
        return await handler(request)

    app = web.Application(middlewares=[outer, inner])
    route = app.router.add_post("/x", handler)
    server = GatewayTestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            responses = await asyncio.gather(*[s.post(server.make_url("/x")) for _ in range(5)])
            assert [r.status for r in responses] == [200] * 5
            for r in responses:
                r.release()
    finally:
        await server.close()
    assert seen == {"app": app, "route": route, "order": ["outer", "inner"]}
