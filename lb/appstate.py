"""Typed keys for what hangs off the aiohttp Application and each Request."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from aiohttp import web

from lb.config import ProbesConfig
from lb.drain import Drain
from lb.endpoints import Endpoint
from lb.metrics import Metrics
from lb.observe import AccessLog, RequestIds, RequestRecord
from lb.responses.turn import ResponsesContext
from lb.runtime import RuntimeFactory, RuntimeHolder
from lb.shared.link import RedisLink
from lb.teams.gate import KeyGate, Ticket
from lb.teams.table import Team
from lb.upstream import Upstream


class ProbeView(Protocol):
    """What the app needs of the prober: its view per endpoint (last probe, latency, error) for
    /admin/endpoints, and after a reload, tasks matched to the new fleet and a probe right now."""

    def snapshot(self, name: str) -> dict[str, Any]: ...

    async def sync(self, config: ProbesConfig | None = None) -> None: ...

    async def probe_once(self, endpoint: Endpoint) -> object: ...


RUNTIME = web.AppKey("runtime", RuntimeHolder)
RUNTIME_FACTORY = web.AppKey("runtime_factory", RuntimeFactory)  # builds the next generation
RESPONSES = web.AppKey("responses", ResponsesContext)
PROBES = web.AppKey("probes", ProbeView)
UPSTREAM = web.AppKey("upstream", Upstream)
REDIS = web.AppKey("redis", RedisLink)  # only when [redis] is set
METRICS = web.AppKey("metrics", Metrics)
ACCESS_LOG = web.AppKey("access_log", AccessLog)
REQUEST_IDS = web.AppKey("request_ids", RequestIds)
DRAIN = web.AppKey("drain", Drain)
KEY_GATE = web.AppKey("key_gate", KeyGate)  # client keys' model access, limits and totals
RECORD = web.RequestKey("record", RequestRecord)  # filled along the request path
CLIENT = web.RequestKey("client", Team)  # whose key the request carries (set by the middleware)
TICKET = web.RequestKey("ticket", Ticket)  # the admitted model call, finished by the middleware
# the request's handler task, as lb.drain knows it (one current_task() per request)
HANDLER: web.RequestKey[asyncio.Task[Any]] = web.RequestKey("handler", asyncio.Task)


def record_of(request: web.Request) -> RequestRecord:
    return request[RECORD]
