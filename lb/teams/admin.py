"""GET /admin/keys: per key name its models, priority, limits, in-flight, current window and
totals since start (the admin page reads this shape; fields may be added, never renamed)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from lb.appstate import KEY_GATE, RUNTIME
from lb.handlers import json_response


async def admin_keys(request: web.Request) -> web.Response:
    gate = request.app[KEY_GATE]
    now = gate.clock()
    rows: list[dict[str, Any]] = []
    for team in request.app[RUNTIME].current.keys.teams:
        totals = gate.stats.of(team.name)
        window = await gate.limits.window(team.name, now)
        limits = team.limits
        rows.append({
            "name": team.name,
            "models": list(team.models) if team.models is not None else None,
            "priority": team.priority,
            "limits": {"rpm": limits.rpm, "tpm": limits.tpm,
                       "max_in_flight": limits.max_in_flight},
            "in_flight": totals.in_flight,
            "window": {"requests": window.requests, "tokens": window.tokens},
            "totals": {"requests": totals.requests, "tokens": totals.tokens,
                       "rate_limited": totals.rate_limited_total,
                       "input_tokens": totals.input_tokens,
                       "output_tokens": totals.output_tokens,
                       "rate_limited_by": dict(totals.rate_limited)},
        })
    return json_response({"keys": rows})
