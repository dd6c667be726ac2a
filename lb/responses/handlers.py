"""HTTP handlers of the Open Responses API: create, retrieve, delete, input_items, cancel, compact.

Stored (translate-mode) responses are served from the store; natively served ones are routed to
the endpoint that owns them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from lb.appstate import RESPONSES, RUNTIME, record_of
from lb.balancing import PickRequest, SmoothWeighted
from lb.errors import BadRequest, ModelNotFound, NotFound
from lb.forward import Exchange
from lb.handlers import deliver, json_response, read_body
from lb.observe import RequestRecord
from lb.payload import SESSION_HEADER, parse_payload
from lb.relay import response_headers
from lb.responses.compaction import compact
from lb.responses.framing import final_response
from lb.responses.items import input_items
from lb.responses.modes import mode_of
from lb.responses.params import DROPPED_HEADER, dropped_value
from lb.responses.turn import ResponsesContext, Turn, find_previous, start_turn
from lb.responses.websocket import websocket
from lb.routing import AttemptPlan, Pool
from lb.runtime import Runtime
from lb.teams.step import admit_call, allowed, with_limit_headers
from lb.upstream import UpstreamCall, forwardable_headers

STORED_HEADER = "x-fleetlb-stored"  # "false": served, but a follow-up cannot continue from it
KEEP_LAST_ITEMS = 2  # what compaction leaves readable: the latest exchange, sealed before it


async def create_response(request: web.Request) -> web.StreamResponse:
    runtime, ctx, record = request.app[RUNTIME].current, request.app[RESPONSES], record_of(request)
    payload = parse_payload(await read_body(request, runtime.config.server.max_body_bytes))
    record.model, record.stream = payload.model, payload.stream
    await admit_call(request, payload.model)
    plan = runtime.router.plan(payload.model,
                               payload.session_key(request.headers.get(SESSION_HEADER)))
    turn = await start_turn(ctx, payload, payload.data, plan.pool.upstream, record.request_id,
                            forwardable_headers(request.headers))
    exchange = await runtime.forwarder.open(turn.restrict(plan), turn.call_for)
    return await answer(request, runtime, turn, exchange, record)


async def answer(request: web.Request, runtime: Runtime, turn: Turn, exchange: Exchange,
                 record: RequestRecord) -> web.StreamResponse:
    """The upstream answer as the client's Response (object or event stream), then stored."""
    mode = mode_of(exchange.endpoint) or "translate"
    headers: dict[str, str] = {"x-fleetlb-mode": mode}
    if mode == "translate" and turn.dropped:
        record.dropped = headers[DROPPED_HEADER] = dropped_value(turn.dropped)
    if exchange.response.status >= 300:
        return await deliver(request, runtime, exchange, record, headers=headers)
    if exchange.is_sse:
        if turn.stores and not turn.ctx.store_is_up():
            headers[STORED_HEADER] = "false"  # the put at the end is tried all the same
        framing = turn.stream_framing(mode)
        response = await deliver(request, runtime, exchange, record, framing, headers)
        final = final_response(framing)
        if record.outcome == "ok" and final is not None:
            record.status, record.answered = response.status, True
            # a client that hangs up now must not cancel the store write its follow-up needs
            remembering = turn.remember(mode, exchange.endpoint, final, final.get("id"))
            await (remembering if turn.ctx.store.puts_at_once else asyncio.shield(remembering))
        return response
    record.endpoint, record.attempts = exchange.endpoint.name, exchange.attempts
    try:
        body = exchange.body if exchange.body is not None else \
            await exchange.response.read()
    finally:
        exchange.close()
    answer_obj = turn.body_answer(mode, body)
    runtime.forwarder.succeeded(exchange.endpoint)
    if not await turn.remember(mode, exchange.endpoint, answer_obj, answer_obj.get("id")):
        headers[STORED_HEADER] = "false"
    out = json_response(answer_obj)
    out.headers.update(response_headers(exchange, record, with_limit_headers(request, headers)))
    out.headers.popall("Content-Length", None)
    return out


async def get_response(request: web.Request) -> web.StreamResponse:
    stored = await _stored(request)
    if stored.mode == "native":
        return await _to_owner(request, stored.endpoint, "GET")
    return json_response(stored.response)


async def delete_response(request: web.Request) -> web.StreamResponse:
    stored = await _stored(request)
    ctx = request.app[RESPONSES]
    if stored.mode == "native":
        response = await _to_owner(request, stored.endpoint, "DELETE")
        if response.status < 300:
            await ctx.store.delete(stored.id)
        return response
    await ctx.store.delete(stored.id)
    return json_response({"id": stored.id, "object": "response.deleted", "deleted": True})


async def list_input_items(request: web.Request) -> web.StreamResponse:
    stored = await _stored(request)
    if stored.mode == "native":
        return await _to_owner(request, stored.endpoint, "GET")
    items = stored.input_items
    if request.query.get("order", "desc") == "desc":
        items = items[::-1]
    return json_response({"object": "list", "data": items, "has_more": False,
                          "first_id": items[0]["id"] if items else None,
                          "last_id": items[-1]["id"] if items else None})


async def cancel_response(request: web.Request) -> web.StreamResponse:
    stored = await _stored(request)
    if stored.mode == "native":
        return await _to_owner(request, stored.endpoint, "POST")
    raise BadRequest("Only responses created with background=true can be cancelled; fleetlb "
                     "does not run background responses", param="response_id")


async def compact_conversation(request: web.Request) -> web.Response:
    runtime, ctx = request.app[RUNTIME].current, request.app[RESPONSES]
    payload = parse_payload(await read_body(request, runtime.config.server.max_body_bytes))
    if not allowed(request, payload.model):  # as if it did not exist; nothing is generated,
        raise ModelNotFound(f"The model '{payload.model}' does not exist", param="model")
    runtime.router.pool(payload.model)  # an unknown model is a 404, as for create
    items: list[dict[str, Any]] = []
    previous = await find_previous(ctx, payload.data.get("previous_response_id"))
    if previous is not None:
        if previous.mode == "native":
            raise BadRequest("a response stored by its backend (native mode) cannot be "
                             "compacted by fleetlb", param="previous_response_id")
        items = previous.conversation()
    items += input_items({"input": payload.data.get("input") or []}, ctx.ids)
    result = compact(items, key=ctx.compaction_key, keep_last=KEEP_LAST_ITEMS, ids=ctx.ids,
                     created_at=int(ctx.wall_clock()))
    return json_response(result)


async def _stored(request: web.Request) -> Any:
    ctx: ResponsesContext = request.app[RESPONSES]
    response_id = request.match_info["response_id"]
    stored = await ctx.store.get(response_id)
    if stored is None:
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
    return stored


async def _to_owner(request: web.Request, owner: str, method: str) -> web.StreamResponse:
    """Route a request about a natively served response to the endpoint that holds it."""
    runtime, record = request.app[RUNTIME].current, record_of(request)
    endpoint = runtime.fleet.get(owner)
    if endpoint is None or endpoint.draining:
        raise NotFound(f"The endpoint '{owner}' that held this response is gone",
                       param="response_id")
    record.endpoint = owner
    pool = Pool(owner, owner, (endpoint,), SmoothWeighted())
    call = UpstreamCall(method, request.path_qs.removeprefix("/openai"),
                        forwardable_headers(request.headers), await request.read(),
                        record.request_id)
    exchange = await runtime.forwarder.open(AttemptPlan(pool, PickRequest(owner)),
                                            lambda _ep: call)
    return await deliver(request, runtime, exchange, record, headers={"x-fleetlb-mode": "native"})


def add_routes(app: web.Application, prefix: str) -> None:
    base = prefix + "/responses"
    app.router.add_post(base, create_response)
    app.router.add_get(base, websocket)
    app.router.add_post(base + "/compact", compact_conversation)
    app.router.add_get(base + "/{response_id}", get_response)
    app.router.add_delete(base + "/{response_id}", delete_response)
    app.router.add_get(base + "/{response_id}/input_items", list_input_items)
    app.router.add_post(base + "/{response_id}/cancel", cancel_response)
