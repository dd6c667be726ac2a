"""One Responses request ("turn"): what each endpoint is sent, and what its answer becomes.

A turn resolves `previous_response_id` once (translate-mode history from the store, or the native
owner that must serve the follow-up), then builds per endpoint either a native `/v1/responses` call
or a translated `/v1/chat/completions` call, so failover may cross modes.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from lb import nesting
from lb.endpoints import Endpoint
from lb.errors import (
    BadGateway,
    BadRequest,
    NotImplementedApi,
    PreviousResponseNotFound,
    StoreUnavailable,
)
from lb.payload import Payload
from lb.prefix import routing_text
from lb.relay import PASSTHROUGH, StreamFraming
from lb.responses.compaction import expand, expand_all
from lb.responses.framing import NormalizedFraming, TranslatedFraming
from lb.responses.ids import IdMaker
from lb.responses.items import input_items
from lb.responses.modes import Mode, mode_of, serves_responses
from lb.responses.normalize import EventNormalizer, normalize_response
from lb.responses.store import ResponseStore, StoredResponse
from lb.responses.stream import ChatToResponsesStream
from lb.responses.translate import ChatRequest, to_response, translate_request
from lb.routing import AttemptPlan
from lb.upstream import UpstreamCall

Json = dict[str, Any]

log = structlog.get_logger("lb.responses")


@dataclass(slots=True, eq=False)
class ResponsesContext:
    """The app-wide collaborators of /v1/responses."""

    store: ResponseStore
    ids: IdMaker
    compaction_key: bytes
    normalize: bool
    wall_clock: Callable[[], float] = time.time
    store_is_up: Callable[[], bool] = lambda: True  # a shared store (Redis) may be unreachable
    not_stored: int = 0  # responses served but not stored because the store was unavailable

    def expander(self) -> Callable[[Json], list[Json]]:
        return functools.partial(expand, key=self.compaction_key)


@dataclass(slots=True, eq=False)
class Turn:
    ctx: ResponsesContext
    payload: Payload
    request: Json  # the client's body as a dict (for WebSocket: without its `type`)
    upstream_model: str
    request_id: str
    headers: Mapping[str, str]
    previous: StoredResponse | None = None
    response_id: str = ""
    created_at: int = 0
    _translation: ChatRequest | None = field(default=None, repr=False)
    _chat_bodies: dict[bool, bytes] = field(default_factory=dict, repr=False)
    _native_body: bytes | None = field(default=None, repr=False)

    @property
    def history(self) -> list[Json]:
        previous = self.previous
        return previous.conversation() if previous and previous.mode == "translate" else []

    @property
    def stores(self) -> bool:
        return self.request.get("store") is not False

    def conversation_input(self) -> list[Json]:
        """What this turn's model saw before answering: the history, then the new input."""
        return [*self.history, *input_items(self.request, self.ctx.ids)]

    def restrict(self, plan: AttemptPlan) -> AttemptPlan:
        """Only endpoints that can serve this turn; a native follow-up only its owner."""
        previous = self.previous
        if previous is not None and previous.mode == "native":
            owned = plan.only(lambda ep: ep.name == previous.endpoint and
                              mode_of(ep) == "native")
            if not owned.pool.members:
                raise PreviousResponseNotFound(
                    f"Previous response '{previous.id}' belongs to endpoint "
                    f"'{previous.endpoint}', which no longer serves it",
                    param="previous_response_id")
            return owned
        able = plan.only(serves_responses)
        if not able.pool.members:
            raise NotImplementedApi(f"The model '{plan.pool.name}' does not support the "
                                    "Responses API on any endpoint")
        return able.with_prompt(self.routing_text)

    def routing_text(self, limit: int) -> bytes:
        """What cache_aware hashes: instructions, the stored history, then the new input."""
        return routing_text(self.request, self.history, limit)

    def call_for(self, endpoint: Endpoint) -> UpstreamCall:
        if mode_of(endpoint) == "native":
            return UpstreamCall("POST", "/v1/responses", self.headers, self.native_body(),
                                self.request_id)
        return UpstreamCall("POST", "/v1/chat/completions", self.headers,
                            self.chat_body(takes_cache_key=endpoint.config.kind == "openai"),
                            self.request_id)

    @property
    def translation(self) -> ChatRequest:
        """This turn as a Chat Completions request (made once; raises BadRequest)."""
        if self._translation is None:
            self._translation = translate_request(
                self.request, upstream_model=self.upstream_model, history=self.history,
                expand_compaction=self.ctx.expander())
        return self._translation

    @property
    def dropped(self) -> tuple[str, ...]:
        """What translation did not send to the backend (the x-fleetlb-dropped header)."""
        return self.translation.dropped if self._translation is not None else ()

    def chat_body(self, *, takes_cache_key: bool = False) -> bytes:
        """OpenAI's own Chat Completions take prompt_cache_key; vLLM, Ollama and llama.cpp have
        no such field (their prefix caches need no key)."""
        body = self._chat_bodies.get(takes_cache_key)
        if body is None:
            chat = self.translation.body
            key = self.request.get("prompt_cache_key")
            if takes_cache_key and isinstance(key, str):
                chat = {**chat, "prompt_cache_key": key}
            body = self._chat_bodies[takes_cache_key] = orjson.dumps(chat)
        return body

    def native_body(self) -> bytes:
        """Byte for byte unless the model is rewritten, the history is ours, or the input holds
        our compaction items (a backend cannot open them)."""
        if self._native_body is None:
            history = self.history
            items = self.request.get("input")
            has_compaction = isinstance(items, list) and any(
                isinstance(i, dict) and i.get("type") == "compaction" for i in items)
            if not history and not has_compaction:
                self._native_body = self.payload.for_upstream(self.upstream_model)
            else:
                body = {k: v for k, v in self.request.items() if k != "previous_response_id"}
                body["model"] = self.upstream_model
                body["input"] = expand_all(self.conversation_input(),
                                           key=self.ctx.compaction_key)
                self._native_body = orjson.dumps(body)
        return self._native_body

    def stream_framing(self, mode: Mode) -> StreamFraming:
        if mode == "translate":
            translation = self.translation
            return TranslatedFraming(ChatToResponsesStream(
                translation.echo(self.request), response_id=self.response_id,
                created_at=self.created_at, ids=self.ctx.ids, clock=self.ctx.wall_clock,
                tools=translation.tools))
        if self.ctx.normalize:
            return NormalizedFraming(EventNormalizer(self.request, clock=self.ctx.wall_clock))
        return PASSTHROUGH

    def body_answer(self, mode: Mode, body: bytes) -> Json:
        """A whole (non-streamed, 2xx) upstream body as the Response object the client gets."""
        try:
            data = nesting.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadGateway("the backend's answer is not JSON") from exc
        if not isinstance(data, dict):
            raise BadGateway("the backend's answer is not a JSON object")
        if mode == "translate":
            translation = self.translation
            return to_response(data, request=translation.echo(self.request),
                               response_id=self.response_id, created_at=self.created_at,
                               ids=self.ctx.ids, tools=translation.tools)
        if self.ctx.normalize:
            return normalize_response(data, self.request)
        return data

    async def remember(self, mode: Mode, endpoint: Endpoint, response: Json | None,
                       response_id: str | None) -> bool:
        """Store what a follow-up needs: the conversation (translate) or the owner (native).

        False when it should have been stored and the store was unavailable: the answer is
        served all the same (`x-fleetlb-stored: false`), counted in `not_stored`."""
        if not self.stores or response_id is None:
            return True
        if mode == "translate":
            if response is None or response.get("status") not in ("completed", "incomplete"):
                return True
            record = StoredResponse(response_id, self.payload.model, "translate", endpoint.name,
                                    self.conversation_input(), response)
        else:
            record = StoredResponse(response_id, self.payload.model, "native", endpoint.name)
        try:
            await self.ctx.store.put(record)
        except StoreUnavailable:
            self.ctx.not_stored += 1
            log.warning("response_not_stored", response_id=response_id,
                        reason="the response store is unavailable")
            return False
        return True


async def start_turn(ctx: ResponsesContext, payload: Payload, request: Json,
                     upstream_model: str, request_id: str,
                     headers: Mapping[str, str],
                     local: Mapping[str, StoredResponse] | None = None) -> Turn:
    """Resolve `previous_response_id` (connection-local state first, then the store)."""
    turn = Turn(ctx, payload, request, upstream_model, request_id, headers,
                response_id=ctx.ids.response(), created_at=int(ctx.wall_clock()))
    turn.previous = await find_previous(ctx, request.get("previous_response_id"), local)
    return turn


async def find_previous(ctx: ResponsesContext, previous_id: Any,
                        local: Mapping[str, StoredResponse] | None = None,
                        ) -> StoredResponse | None:
    if previous_id is None:
        return None
    if not isinstance(previous_id, str) or not previous_id:
        raise BadRequest("previous_response_id must be a string", param="previous_response_id")
    previous = (local or {}).get(previous_id) or await ctx.store.get(previous_id)
    if previous is None:
        raise PreviousResponseNotFound(f"Previous response with id '{previous_id}' not found.",
                                       param="previous_response_id")
    return previous
