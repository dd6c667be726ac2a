"""Handlers of Ollama's native API: model calls routed to Ollama endpoints (warm first) with the
same pools, failover, queueing and relay as `/v1`, and the fleet-wide /api/tags, /ps, /version."""

from __future__ import annotations

from aiohttp import web

from lb import __version__
from lb.appstate import RUNTIME, UPSTREAM, record_of
from lb.endpoints import Endpoint
from lb.errors import NoUsableEndpoint
from lb.handlers import Handler, deliver, json_response, read_body
from lb.ollama.admin import FLEET_CALLS, fleet_call
from lb.ollama.aggregate import backend_versions, merge_ps, merge_tags, model_name, oldest_version
from lb.ollama.fanout import gather_json
from lb.payload import SESSION_HEADER, parse_payload
from lb.routing import EMBEDDINGS_STRATEGY, Surface
from lb.teams.step import admit_call, allowed
from lb.upstream import UpstreamCall, forwardable_headers

OLLAMA = Surface("Ollama", kinds=frozenset({"ollama"}), is_warm_first=True)
# embed, embeddings, show: the same endpoints, balanced as embeddings are by default
OLLAMA_OTHER = Surface("Ollama", kinds=frozenset({"ollama"}), is_warm_first=True,
                       default_strategy=EMBEDDINGS_STRATEGY)
MODEL_CALLS = ("/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/api/show")
_STREAMED_BY_DEFAULT = frozenset({"/api/chat", "/api/generate"})  # unless "stream": false
_GENERATION = _STREAMED_BY_DEFAULT  # the calls a prompt prefix is worth following for


def add_routes(router: web.UrlDispatcher) -> None:
    for path in MODEL_CALLS:
        router.add_post(path, ollama_proxy(path))
    router.add_get("/api/tags", tags)
    router.add_get("/api/ps", ps)
    router.add_get("/api/version", version)
    for path, method in FLEET_CALLS.items():
        router.add_route(method, path, fleet_call(path))
    router.add_get("/", running)


def ollama_proxy(path: str) -> Handler:
    is_generation = path in _GENERATION
    surface = OLLAMA if is_generation else OLLAMA_OTHER

    async def handle(request: web.Request) -> web.StreamResponse:
        runtime = request.app[RUNTIME].current
        record = record_of(request)
        payload = parse_payload(await read_body(request, runtime.config.server.max_body_bytes))
        record.model = payload.model
        record.stream = path in _STREAMED_BY_DEFAULT and payload.data.get("stream") is not False
        await admit_call(request, payload.model)
        plan = runtime.router.plan(payload.model,
                                   payload.session_key(request.headers.get(SESSION_HEADER)),
                                   surface, payload.routing_text if is_generation else None)
        call = UpstreamCall("POST", path, forwardable_headers(request.headers),
                            payload.for_upstream(plan.pool.upstream), record.request_id)
        exchange = await runtime.forwarder.open(plan, lambda _endpoint: call)
        return await deliver(request, runtime, exchange, record)

    return handle


def _listed(request: web.Request) -> list[Endpoint]:
    """The Ollama endpoints whose lists count: up (healthy or not yet probed), not draining."""
    return [ep for ep in request.app[RUNTIME].current.fleet
            if ep.config.kind == "ollama" and ep.is_up]


async def _gather(request: web.Request, path: str) -> list[tuple[str, object]]:
    timeout_s = request.app[RUNTIME].current.config.ollama.fanout_timeout
    return await gather_json(request.app[UPSTREAM], _listed(request), path, timeout_s)


async def tags(request: web.Request) -> web.Response:
    models = merge_tags(await _gather(request, "/api/tags"))
    return json_response({"models": [m for m in models if allowed(request, model_name(m))]})


async def ps(request: web.Request) -> web.Response:
    models = merge_ps(await _gather(request, "/api/ps"))
    return json_response({"models": [m for m in models if allowed(request, model_name(m))]})


async def version(request: web.Request) -> web.Response:
    versions = backend_versions(await _gather(request, "/api/version"))
    oldest = oldest_version(versions)
    if oldest is None:
        raise NoUsableEndpoint("no Ollama endpoint answered /api/version")
    return json_response({"version": oldest,
                          "fleetlb": {"version": __version__, "endpoints": versions}})


async def running(request: web.Request) -> web.Response:
    """Ollama's `GET /` heartbeat (the ollama CLI checks it before anything else)."""
    return web.Response(text="fleetlb is running")
