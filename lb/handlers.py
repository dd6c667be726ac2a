"""Thin HTTP handlers per API surface: parse just enough, route, forward, relay."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from lb.appstate import DRAIN, HANDLER, METRICS, PROBES, RUNTIME, record_of
from lb.errors import BadGateway, PayloadTooLarge
from lb.forward import Exchange
from lb.metrics import CONTENT_TYPE
from lb.observe import RequestRecord
from lb.payload import SESSION_HEADER, parse_payload
from lb.relay import PASSTHROUGH, StreamFraming, relay
from lb.responses.modes import model_mode
from lb.routing import ANY_KIND, EMBEDDINGS
from lb.runtime import Runtime
from lb.teams.step import admit_call, allowed, with_limit_headers
from lb.teams.usage import usage_for
from lb.upstream import UpstreamCall, forwardable_headers

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPENAI_PATHS = ("/chat/completions", "/completions", "/embeddings")


def json_response(data: Any, status: int = 200) -> web.Response:
    try:
        body = orjson.dumps(data)
    except orjson.JSONEncodeError as exc:  # only a backend's document could be unwritable
        raise BadGateway(f"fleetlb cannot write this answer as JSON: {exc}") from exc
    return web.Response(body=body, status=status, content_type="application/json")


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole request body, refusing more than `limit` bytes before reading them all."""
    length = request.content_length
    if length is not None:
        if length > limit:
            raise PayloadTooLarge(f"Request body of {length} bytes exceeds the {limit} byte limit")
        return await request.read()  # the length is known and allowed: aiohttp's one read
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"Request body exceeds the {limit} byte limit")
    return bytes(body)


def openai_proxy(path: str) -> Handler:
    is_generation = path != "/embeddings"  # embeddings: no prompt prefix worth following
    surface = ANY_KIND if is_generation else EMBEDDINGS

    async def handle(request: web.Request) -> web.StreamResponse:
        runtime = request.app[RUNTIME].current
        record = record_of(request)
        payload = parse_payload(await read_body(request, runtime.config.server.max_body_bytes))
        record.model, record.stream = payload.model, payload.stream
        ticket = await admit_call(request, payload.model)
        plan = runtime.router.plan(payload.model,
                                   payload.session_key(request.headers.get(SESSION_HEADER)),
                                   surface, payload.routing_text if is_generation else None)
        body, framing = usage_for(ticket, payload, plan.pool.upstream, record)
        call = UpstreamCall("POST", "/v1" + path, forwardable_headers(request.headers),
                            body, record.request_id)
        exchange = await runtime.forwarder.open(plan, lambda _endpoint: call)
        return await deliver(request, runtime, exchange, record, framing)

    return handle


async def deliver(request: web.Request, runtime: Runtime, exchange: Exchange,
                  record: RequestRecord, framing: StreamFraming = PASSTHROUGH,
                  headers: dict[str, str] | None = None) -> web.StreamResponse:
    """Relay one exchange; the lease is released and the outcome recorded on every path."""
    record.endpoint, record.attempts = exchange.endpoint.name, exchange.attempts
    if exchange.response.status < 400:
        headers = with_limit_headers(request, headers)
    abort = True  # cancelled (client gone) unless relay returns
    drain, task = request.app[DRAIN], request.get(HANDLER)
    drain.relaying(task, exchange)  # a drain that runs out of time interrupts it
    try:
        response, outcome = await relay(request, exchange, record, framing, headers)
        abort = (outcome.client_gone or outcome.broken is not None or outcome.interrupted
                 or outcome.failed)
    finally:
        drain.relayed(task)
        exchange.close(abort=abort)
    if outcome.broken is not None:
        record.outcome, record.error = "upstream_failed", outcome.broken.message
        runtime.forwarder.count_failure(exchange.endpoint, outcome.broken)
    elif outcome.client_gone:
        record.outcome = "client_gone"
    elif outcome.interrupted:
        record.outcome = "interrupted"
    elif outcome.failed:
        record.outcome, record.error = "error", "fleetlb could not relay the rest of the stream"
    else:
        runtime.forwarder.succeeded(exchange.endpoint)
    return response


async def list_models(request: web.Request) -> web.Response:
    router = request.app[RUNTIME].current.router
    data = []
    for name in router.model_names():
        if not allowed(request, name):
            continue
        members = router.pool(name).members
        data.append({"id": name, "object": "model", "created": 0, "owned_by": "fleetlb",
                     "fleetlb": {"endpoints": len(members),
                                 "healthy": sum(1 for ep in members if ep.is_up),
                                 "responses": model_mode(members)}})
    return json_response({"object": "list", "data": data})


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    fleet = request.app[RUNTIME].current.fleet
    ready = any(ep.is_up and ep.served_models for ep in fleet)
    return json_response({"status": "ready" if ready else "no usable endpoint"},
                         status=200 if ready else 503)


async def admin_endpoints(request: web.Request) -> web.Response:
    fleet = request.app[RUNTIME].current.fleet
    prober = request.app.get(PROBES)
    rows = [{
        "name": ep.name, "url": ep.config.url, "kind": ep.config.kind,
        "healthy": ep.is_up, "state": ep.state.value, "in_flight": ep.in_flight,
        "max_in_flight": ep.config.max_in_flight, "weight": ep.config.weight,
        "priority": ep.config.priority, "models": sorted(ep.served_models),
        "responses": ep.config.responses, "supports_responses_api": ep.supports_responses_api,
        "loaded_models": sorted(ep.loaded_models), "backend_queue": ep.backend_queue,
        "kv_cache_usage": ep.kv_cache_usage,
        "live_failures": ep.live_failures, "draining": ep.draining,
        **(prober.snapshot(ep.name) if prober is not None else {}),
    } for ep in fleet]
    return json_response({"endpoints": rows})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format (the middleware asks for the admin key when one is set)."""
    return web.Response(body=request.app[METRICS].exposition(),
                        headers={"Content-Type": CONTENT_TYPE})
