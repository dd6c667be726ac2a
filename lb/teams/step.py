"""The request-path step of client keys (aiohttp side): the middleware identifies the key, each
model call is admitted (model access, limits) before it is routed, successful answers carry the
x-ratelimit-* headers, and the call is finished (lease back, tokens charged) when the request ends.
"""

from __future__ import annotations

from aiohttp import web

from lb.appstate import CLIENT, KEY_GATE, RECORD, TICKET
from lb.runtime import Runtime
from lb.teams.gate import Ticket
from lb.teams.table import Team


def identify(request: web.Request, runtime: Runtime) -> Team:
    """Whose key this is (raises Unauthorized); the access line and the queue learn it."""
    team = runtime.keys.identify(request.headers.get("Authorization"))
    request[CLIENT] = team
    record = request[RECORD]
    record.key, record.priority = team.name, team.priority
    return team


async def admit_call(request: web.Request, model: str) -> Ticket:
    """Admit this request's model call; finished by the middleware when the request ends."""
    gate, team = request.app[KEY_GATE], request[CLIENT]
    ticket = gate.admit_now(team, model) or await gate.admit(team, model)  # as admit_turn does
    request[TICKET] = ticket
    return ticket


async def admit_turn(request: web.Request, model: str) -> Ticket:
    """Admit one call the caller finishes itself (a WebSocket turn)."""
    return await request.app[KEY_GATE].admit(request[CLIENT], model)


def allowed(request: web.Request, model: str) -> bool:
    """Whether this request's key may see `model` in a model list."""
    team = request.get(CLIENT)
    return team is None or team.allows(model)


def finish_call(request: web.Request) -> None:
    ticket = request.get(TICKET)
    if ticket is not None:
        ticket.finish(request[RECORD].usage)


def with_limit_headers(request: web.Request,
                       headers: dict[str, str] | None) -> dict[str, str] | None:
    """`headers` plus the key's x-ratelimit-* headers (a new dict), or `headers` as they are.

    A successful model call's answer tells the key's remaining quota, as OpenAI does (the SDKs
    read it to back off before they hit 429); callers build the answer's headers with it
    (`handlers.deliver`, the Responses handler), rather than a signal run for every response."""
    ticket = request.get(TICKET)
    more = ticket.headers() if ticket is not None else None
    if not more:
        return headers
    return {**headers, **more} if headers else more
