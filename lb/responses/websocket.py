"""WebSocket mode of /v1/responses: `response.create` messages in, one event per message out.

Turns run one at a time per connection. `store: false` responses live in connection-local memory
and never leak to another connection; a continuation whose previous turn failed finds nothing.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from lb import nesting
from lb.appstate import DRAIN, HANDLER, RESPONSES, RUNTIME, record_of
from lb.errors import ApiError, BadRequest, JsonTooDeep, PreviousResponseNotFound
from lb.forward import Exchange
from lb.observe import RequestRecord
from lb.payload import parse_payload
from lb.relay import RelayOutcome, pump_sse
from lb.responses.framing import final_response
from lb.responses.modes import mode_of
from lb.responses.params import dropped_value
from lb.responses.store import StoredResponse
from lb.responses.turn import Turn, start_turn
from lb.responses.warmup import is_warm_up, warm_up_events
from lb.teams.step import admit_turn
from lb.upstream import forwardable_headers

CONNECTION_LIMIT_S = 3600.0  # the specification lets servers close a connection after 60 min
# Every turn streams: a client's `stream` / `stream_options` (Codex CLI sends `stream: true`)
# ask for nothing more and are ignored. Background mode would change the answer: refused.
_STREAM_KEYS = frozenset({"type", "stream", "stream_options"})

log = structlog.get_logger("lb.responses.websocket")


class EventSink:
    """Our own Responses SSE bytes -> one WebSocket text message per event.

    `[DONE]` has no WebSocket form, and a failed turn is told by `response.failed` alone (the
    specification forbids sending both it and an error envelope).
    """

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws

    async def write(self, data: bytes) -> None:
        for block in data.split(b"\n\n"):
            start = block.find(b"data: ")
            if start < 0:
                continue
            payload = block[start + 6:]
            if payload == b"[DONE]" or payload.startswith(b'{"type":"error"'):
                continue
            await self._ws.send_str(payload.decode())


class Connection:
    """One WebSocket client: its local store and its turns, in order."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        self._request = request
        self._ws = ws
        self._local: dict[str, StoredResponse] = {}
        self._evicted: set[str] = set()
        self._turns = 0
        self._busy = False  # a turn is under way
        self._leaving = False  # fleetlb is shutting down: close after the turn under way

    async def serve(self) -> None:
        deadline = time.monotonic() + CONNECTION_LIMIT_S
        async for message in self._ws:
            if message.type != WSMsgType.TEXT:
                continue
            if time.monotonic() > deadline:
                await self._error(400, "websocket_connection_limit_reached",
                                  "This connection reached its 60 minute limit; open a new one")
                await self._ws.close()
                return
            self._turns += 1
            self._busy = True
            try:
                await self.turn(message.data)
            finally:
                self._busy = False
            if self._leaving:
                await self._close_going_away()
                return

    async def going_away(self, now: bool) -> None:
        """The gateway drains (lb.drain.Session): close when idle or `now`, else after the turn."""
        self._leaving = True
        if now or not self._busy:
            await self._close_going_away()

    async def _close_going_away(self) -> None:
        await self._ws.close(code=WSCloseCode.GOING_AWAY, message=b"fleetlb is shutting down")

    async def turn(self, text: str) -> None:
        record = record_of(self._request)
        previous_id: Any = None
        try:
            body = self._create_body(text)
            previous_id = body.get("previous_response_id")
            if previous_id in self._evicted:
                raise PreviousResponseNotFound(
                    f"Previous response with id '{previous_id}' not found.",
                    param="previous_response_id")
            await self._run(body, record)
        except ApiError as exc:
            self._evict(previous_id)
            await self._error(exc.status, str(exc.code), exc.message, exc.param, exc.type)

    def _evict(self, previous_id: Any) -> None:
        """A failed continuation evicts what it continued: its next continuation finds nothing
        (a translated one that answered no call of it, a native one its backend refused)."""
        if isinstance(previous_id, str):
            self._evicted.add(previous_id)
            self._local.pop(previous_id, None)

    def _create_body(self, text: str) -> dict[str, Any]:
        try:
            message = nesting.loads(text)
        except nesting.TooDeep as exc:
            raise JsonTooDeep(f"message is nested too deeply: {exc}") from None
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"message is not valid JSON: {exc}") from None
        if not isinstance(message, dict) or message.get("type") != "response.create":
            raise BadRequest("expected a message of type 'response.create'", param="type")
        if message.get("background"):
            raise BadRequest("background mode is not used in WebSocket mode", param="background")
        return {k: v for k, v in message.items() if k not in _STREAM_KEYS}

    async def _run(self, body: dict[str, Any], record: RequestRecord) -> None:
        runtime, ctx = self._request.app[RUNTIME].current, self._request.app[RESPONSES]
        payload = parse_payload(orjson.dumps({**body, "stream": True}))
        record.model, record.stream = payload.model, True
        structlog.contextvars.bind_contextvars(turn=self._turns)
        ticket = await admit_turn(self._request, payload.model)  # each turn, the key's limits
        record.usage = None
        try:
            plan = runtime.router.plan(payload.model, payload.session_key(None))
            turn = await start_turn(ctx, payload, payload.data, plan.pool.upstream,
                                    f"{record.request_id}-{self._turns}",
                                    forwardable_headers(self._request.headers), self._local)
            if is_warm_up(turn.request):
                await self._warm_up(turn)
                return
            exchange = await runtime.forwarder.open(turn.restrict(plan), turn.call_for)
            await self._stream(turn, exchange, record)
        finally:
            ticket.finish(record.usage)

    async def _stream(self, turn: Turn, exchange: Exchange, record: RequestRecord) -> None:
        mode = mode_of(exchange.endpoint) or "translate"
        if exchange.response.status >= 300 or not exchange.is_sse:
            self._evict(turn.request.get("previous_response_id"))
            await self._upstream_refused(exchange)
            return
        if mode == "translate" and turn.dropped:  # no headers here: the access line says it
            record.dropped = dropped_value(turn.dropped)
            log.info("responses.dropped", dropped=record.dropped, turn=self._turns)
        framing = turn.stream_framing(mode)
        outcome = RelayOutcome()
        drain, task = self._request.app[DRAIN], self._request.get(HANDLER)
        drain.relaying(task, exchange)  # a drain out of time ends the turn: response.failed
        try:
            await pump_sse(EventSink(self._ws), exchange, record, framing, outcome)
        finally:
            drain.relayed(task)
            exchange.close(abort=outcome.broken is not None or outcome.interrupted)
        final = final_response(framing)
        if outcome.broken is not None or final is None or final.get("status") == "failed":
            self._evict(turn.request.get("previous_response_id"))
            return
        self._local[final["id"]] = StoredResponse(
            final["id"], turn.payload.model, "translate", exchange.endpoint.name,
            turn.conversation_input(), final)
        await turn.remember(mode, exchange.endpoint, final, final["id"])

    async def _warm_up(self, turn: Turn) -> None:
        """`generate: false`: an empty response, kept to be continued; no backend is asked."""
        events = warm_up_events(turn.request, turn.response_id, turn.created_at)
        for event in events:
            await self._ws.send_str(orjson.dumps(event).decode())
        final = events[-1]["response"]
        record = StoredResponse(final["id"], turn.payload.model, "translate", "",
                                turn.conversation_input(), final)
        self._local[final["id"]] = record
        if turn.stores:
            await self._request.app[RESPONSES].store.put(record)

    async def _upstream_refused(self, exchange: Exchange) -> None:
        status = exchange.response.status
        try:
            body = exchange.body if exchange.body is not None else \
                await exchange.response.read()
        finally:
            exchange.close()
        body = exchange.redactor.bytes(body)  # the backend may quote what it was sent
        try:
            error = nesting.loads(body).get("error") or {}
        except (orjson.JSONDecodeError, AttributeError):
            error = {}
        if not isinstance(error, dict):
            error = {"message": str(error)}
        await self._error(status, str(error.get("code") or "upstream_error"),
                          str(error.get("message") or f"the backend answered {status}"),
                          error.get("param"), str(error.get("type") or "invalid_request_error"))

    async def _error(self, status: int, code: str, message: str, param: str | None = None,
                     type_: str = "invalid_request_error") -> None:
        await self._ws.send_str(orjson.dumps({
            "type": "error", "status": status,
            "error": {"type": type_, "code": code, "message": message, "param": param},
        }).decode())


async def websocket(request: web.Request) -> web.StreamResponse:
    """GET /v1/responses with an Upgrade header: the WebSocket mode of the Responses API."""
    ws = web.WebSocketResponse(heartbeat=30.0,
                               max_msg_size=request.app[RUNTIME].current.config.server.max_body_bytes)
    if not ws.can_prepare(request).ok:
        raise BadRequest("GET /v1/responses is the WebSocket mode: send an Upgrade request")
    await ws.prepare(request)
    connection = Connection(request, ws)
    drain = request.app[DRAIN]
    drain.holding(connection)
    try:
        await connection.serve()
    finally:
        drain.released()
        await ws.close()
    return ws
