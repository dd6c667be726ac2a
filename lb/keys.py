"""Typed keys for what hangs off the aiohttp Application and each Request."""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from lb.observe import RequestRecord
from lb.responses.turn import ResponsesContext
from lb.runtime import RuntimeHolder
from lb.upstream import Upstream


class ProbeView(Protocol):
    """What the prober shows per endpoint (last probe, latency, error) for /admin/endpoints."""

    def snapshot(self, name: str) -> dict[str, Any]: ...


RUNTIME = web.AppKey("runtime", RuntimeHolder)
RESPONSES = web.AppKey("responses", ResponsesContext)
PROBES = web.AppKey("probes", ProbeView)
UPSTREAM = web.AppKey("upstream", Upstream)
RECORD = web.RequestKey("record", RequestRecord)  # filled along the request path


def record_of(request: web.Request) -> RequestRecord:
    return request[RECORD]
