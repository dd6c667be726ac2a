"""The Open Responses surface of the simulated backend: POST /v1/responses (streamed or not) and
the stored-response routes. State is per app, like one vLLM replica: a `previous_response_id` this
instance did not store is unknown here."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from lb.sim import text
from lb.sim.backend import SimBackend, StoredResponse
from lb.sim.replies import injected_failure, json_reply, read_json_object, responses_error
from lb.sim.responses_body import ResponseRun, echo_fields, input_items, items_text
from lb.sim.script import scripted_plan
from lb.sim.stream import SSE, SSE_DONE, ChunkStream, Pacer, sse_event

DEFAULT_ITEMS_LIMIT = 20  # input_items page size when the client names none (OpenAI's default)
MAX_ITEMS_LIMIT = 100


class ResponsesApi:
    def __init__(self, sim: SimBackend) -> None:
        self.sim = sim

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/responses", self.create)
        router.add_get("/v1/responses/{id}", self.retrieve)
        router.add_delete("/v1/responses/{id}", self.delete)
        router.add_get("/v1/responses/{id}/input_items", self.input_items)
        router.add_post("/v1/responses/{id}/cancel", self.cancel)

    async def create(self, request: web.Request) -> web.StreamResponse:
        body = await read_json_object(request, responses_error)
        run, items = self._start(body)
        status = self.sim.injected_failure()
        if status is not None:
            raise injected_failure(status, responses_error)
        prompt = f"{run.echo.get('instructions') or ''} {items_text(items)}"
        async with self.sim.kv.turn(prompt) as turn:
            run.cached_tokens = turn.cached_tokens or 0
            if body.get("stream"):
                return await self._stream(request, run, items, turn.pacer)
            await turn.pacer.whole_answer(request, len(run.deltas()))
        final = run.finish(self.sim.now())
        self._store(run, final, items)
        return json_reply(final)

    def _start(self, body: dict[str, Any]) -> tuple[ResponseRun, list[dict[str, Any]]]:
        """Validate like a real server, before any generation: `{}` is a 400."""
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise responses_error(400, "model is required", "invalid_request", "model")
        raw_input = body.get("input")
        if raw_input is not None and not isinstance(raw_input, str | list):
            raise responses_error(
                400, "input must be a string or a list of items", "invalid_request", "input"
            )
        served = self.sim.resolve(model)
        if served is None:
            raise responses_error(
                404, f"The model `{model}` does not exist.", "model_not_found", "model"
            )
        self.sim.mark_loaded(served)
        previous_tokens = self._previous_tokens(body.get("previous_response_id"))
        try:
            max_tokens = text.parse_max_tokens(body.get("max_output_tokens"))
        except ValueError as exc:
            raise responses_error(
                400, f"max_output_tokens {exc}", "invalid_request", "max_output_tokens"
            ) from exc
        items = input_items(raw_input)
        echo = echo_fields(body)
        prompt = f"{echo['instructions'] or ''} {items_text(items)}"
        prompt_tokens = text.count_tokens(prompt) + previous_tokens
        plan = scripted_plan(self.sim.behavior.tool_script, body.get("tools"), raw_input,
                             prompt_tokens) or \
            text.plan(max_tokens, body.get("tools"), text.last_user_text(items), prompt_tokens)
        return ResponseRun(model, echo, plan, self.sim.now()), items

    def _previous_tokens(self, previous_id: Any) -> int:
        """What the previous turn adds to the prompt; 404 when this instance does not have it."""
        if previous_id is None:
            return 0
        stored = self.sim.responses.get(previous_id) if isinstance(previous_id, str) else None
        if stored is None:
            raise responses_error(
                404,
                f"Previous response with id '{previous_id}' not found.",
                "previous_response_not_found",
                "previous_response_id",
            )
        return int(stored.response["usage"]["total_tokens"])

    async def _stream(
        self, request: web.Request, run: ResponseRun, items: list[dict[str, Any]], pacer: Pacer
    ) -> web.StreamResponse:
        stream = await ChunkStream.open(request, self.sim.behavior, SSE)
        await pacer.first_token()
        for event in run.opening():
            await stream.send(sse_event(event["type"], event))
        for i, piece in enumerate(run.deltas()):
            if i:
                await pacer.next_token()
            event = run.delta(piece)
            await stream.send(sse_event(event["type"], event))
        for event in run.closing(self.sim.now()):
            await stream.send(sse_event(event["type"], event))
        self._store(run, run.snapshot(), items)
        await stream.send(SSE_DONE)
        return stream.finish()

    def _store(self, run: ResponseRun, final: dict[str, Any], items: list[dict[str, Any]]) -> None:
        if final["store"] is not False:
            self.sim.responses[run.id] = StoredResponse(final, items)

    def _stored(self, request: web.Request) -> tuple[str, StoredResponse]:
        response_id = request.match_info["id"]
        stored = self.sim.responses.get(response_id)
        if stored is None:
            raise responses_error(
                404, f"Response with id '{response_id}' not found.", "not_found", "id"
            )
        return response_id, stored

    async def retrieve(self, request: web.Request) -> web.Response:
        return json_reply(self._stored(request)[1].response)

    async def delete(self, request: web.Request) -> web.Response:
        response_id, _ = self._stored(request)
        del self.sim.responses[response_id]
        return json_reply({"id": response_id, "object": "response", "deleted": True})

    async def cancel(self, request: web.Request) -> web.Response:
        self._stored(request)
        raise responses_error(
            400, "Only responses created with background=true can be cancelled.", "invalid_request"
        )

    async def input_items(self, request: web.Request) -> web.Response:
        _, stored = self._stored(request)
        items = list(stored.input_items)
        if request.query.get("order", "desc") == "desc":
            items.reverse()
        try:
            limit = min(
                max(int(request.query.get("limit", DEFAULT_ITEMS_LIMIT)), 1), MAX_ITEMS_LIMIT
            )
        except ValueError as exc:
            raise responses_error(
                400, "limit must be an integer", "invalid_request", "limit"
            ) from exc
        page = items[:limit]
        return json_reply(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(items) > limit,
            }
        )
