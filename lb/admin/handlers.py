"""The status page's routes: its static files and `/admin/stats` (the ring's series and, per
model, the pool it routes to joined with its last minute of traffic)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from lb.admin.page import PAGE_HEADERS, Asset, load_assets
from lb.admin.ring import StatsRing
from lb.appstate import RUNTIME
from lb.errors import ApiError
from lb.handlers import Handler, json_response
from lb.runtime import Runtime


@dataclass(frozen=True, slots=True)
class AdminPage:
    ring: StatsRing
    wall_clock: Callable[[], float] = time.time  # `now`, so the page can age the probe times
    assets: dict[str, Asset] = field(default_factory=load_assets)


ADMIN = web.AppKey("admin_page", AdminPage)


def add_routes(app: web.Application, page: AdminPage) -> None:
    app[ADMIN] = page
    for path, asset in page.assets.items():
        app.router.add_get(path, _static(asset))
    app.router.add_get("/admin", _to_page)
    app.router.add_get("/admin/stats", admin_stats)


def _static(asset: Asset) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=asset.body, headers={"Content-Type": asset.content_type,
                                                      **PAGE_HEADERS})

    return handle


async def _to_page(request: web.Request) -> web.Response:
    # a plain response: the middleware turns raised HTTP exceptions into JSON errors; relative,
    # so a proxy's path prefix is kept
    return web.Response(status=308, headers={"Location": "admin/"})


async def admin_stats(request: web.Request) -> web.Response:
    page = request.app[ADMIN]
    stats = page.ring.snapshot()
    traffic: dict[str, dict[str, Any]] = stats.pop("models")
    stats["now"] = page.wall_clock()
    stats["models"] = models_view(request.app[RUNTIME].current, traffic)
    return json_response(stats)


def models_view(runtime: Runtime, traffic: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per model a client may ask for (its pool and strategy), then any other model
    with traffic in the window (a pool that is gone, `unknown`); names pass lb.redact."""
    rows = []
    for name in runtime.router.model_names():
        rows.append({"name": name, "strategy": runtime.router.strategy_name(name),
                     "members": _members(runtime, name), **_traffic(traffic.pop(name, None))})
    rows.extend({"name": name, "strategy": None, "members": [], **_traffic(seen)}
                for name, seen in sorted(traffic.items()) if seen["requests"])
    redact = runtime.redactor.text  # model names are backend text (discovered) or clients'
    for row in rows:
        row["name"] = redact(row["name"])
    return rows


def _members(runtime: Runtime, model: str) -> list[dict[str, Any]]:
    try:
        members = runtime.router.pool(model).members
    except ApiError:  # no member is usable right now
        return []
    ordered = sorted(members, key=lambda ep: (ep.config.priority, -ep.config.weight, ep.name))
    return [{"name": ep.name, "tier": ep.config.priority, "weight": ep.config.weight,
             "state": "draining" if ep.draining else str(ep.state)} for ep in ordered]


def _traffic(seen: dict[str, Any] | None) -> dict[str, Any]:
    return seen or {"requests": 0, "requests_per_s": 0.0, "error_rate": None,
                    "ttft_p50_ms": None, "ttft_p90_ms": None, "tokens_in_per_s": 0.0,
                    "tokens_out_per_s": 0.0}
