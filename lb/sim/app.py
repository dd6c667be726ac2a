"""Builds the simulated backend's aiohttp Application for one kind (openai, vllm, ollama): the
routes that kind serves, and the middleware that records every request and keeps the counters."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from lb.sim.backend import SimBackend
from lb.sim.ollama_api import OllamaApi
from lb.sim.openai_api import OpenAiApi
from lb.sim.options import RecordedRequest, SimBehavior, SimOptions
from lb.sim.replies import ErrorReply
from lb.sim.responses_api import ResponsesApi
from lb.sim.stream import ClientGone, StreamAborted, client_is_gone

BEHAVIOR_KEY = web.AppKey("sim_behavior", SimBehavior)
BACKEND_KEY = web.AppKey("sim_backend", SimBackend)
MAX_BODY_BYTES = 64 << 20  # above any body fleetlb forwards, so the gateway's limit is the one hit
HANG_POLL_S = 0.02  # how often a hung request looks whether its client left or hang was lifted
GONE_STATUS = 499  # nobody reads it: the status of an answer to a client that left

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _hang(request: web.Request, behavior: SimBehavior) -> None:
    """Hold the request while `hang` is on; ClientGone once the client gives up."""
    while behavior.hang:
        if client_is_gone(request):
            raise ClientGone(None)
        await asyncio.sleep(HANG_POLL_S)


def _tracker(behavior: SimBehavior) -> Middleware:
    @web.middleware
    async def track(request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        if behavior.record_limit > 0:
            headers = dict(request.headers)
            behavior.record(RecordedRequest(request.method, request.path, headers, body))
        behavior.active += 1
        try:
            await _hang(request, behavior)
            response = await handler(request)
        except ErrorReply as reply:
            response = reply.response
        except web.HTTPException:
            behavior.completed += 1
            raise
        except ClientGone as gone:
            behavior.disconnects += 1
            return gone.response or web.Response(status=GONE_STATUS)
        except StreamAborted as aborted:
            return aborted.response
        except asyncio.CancelledError:
            behavior.disconnects += 1  # aiohttp cancels handlers on disconnect when so configured
            raise
        finally:
            behavior.active -= 1
        behavior.completed += 1
        return response

    return track


async def _health(request: web.Request) -> web.Response:
    """vLLM's liveness answer: 200 with an empty body."""
    return web.Response()


def _metrics_route(sim: SimBackend, router: web.UrlDispatcher) -> None:
    """vLLM's load gauges, which least_loaded balancing reads. vLLM labels them with the base model;
    running excludes the scrape itself."""
    model = sim.options.models[0] if sim.options.models else ""

    async def metrics(request: web.Request) -> web.Response:
        running = max(sim.behavior.active - 1 - sim.kv.waiting, 0)
        lines = [
            "# HELP vllm:num_requests_running Number of requests currently running on GPU.",
            "# TYPE vllm:num_requests_running gauge",
            f'vllm:num_requests_running{{model_name="{model}"}} {running}',
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
            "# TYPE vllm:num_requests_waiting gauge",
            f'vllm:num_requests_waiting{{model_name="{model}"}} {sim.kv.waiting}',
            *sim.kv.metric_lines(model),
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    router.add_get("/metrics", metrics)


def build_sim_app(
    options: SimOptions,
    behavior: SimBehavior | None = None,
    *,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """A simulated backend; `app[BEHAVIOR_KEY]` holds the knobs to flip and the records."""
    behavior = behavior if behavior is not None else SimBehavior()
    sim = SimBackend(options, behavior, random.Random(options.seed), clock)
    app = web.Application(middlewares=[_tracker(behavior)], client_max_size=MAX_BODY_BYTES)
    app[BEHAVIOR_KEY] = behavior
    app[BACKEND_KEY] = sim
    OpenAiApi(sim).add_routes(app.router)
    if options.responses:
        ResponsesApi(sim).add_routes(app.router)
    if options.kind in ("openai", "vllm"):
        app.router.add_get("/health", _health)
    if options.kind == "vllm":
        _metrics_route(sim, app.router)
    if options.kind == "ollama":
        OllamaApi(sim).add_routes(app.router)
    return app
