"""The OpenAI-compatible surface of the simulated backend: Chat Completions, Completions,
Embeddings and Models, streamed and not, in OpenAI's exact shapes."""

from __future__ import annotations

import base64
import uuid
from typing import Any

from aiohttp import web

from lb.sim import text
from lb.sim.backend import SimBackend
from lb.sim.chunks import HOLE, ChunkTemplate
from lb.sim.kvcache import KvTurn
from lb.sim.replies import (
    ErrorReply,
    injected_failure,
    json_reply,
    openai_error,
    read_json_object,
)
from lb.sim.script import scripted_plan
from lb.sim.stream import SSE, SSE_DONE, ChunkStream, Pacer, sse_data


def _usage(plan: text.Plan, cached_tokens: int | None = None) -> dict[str, Any]:
    completion = plan.completion_tokens
    usage: dict[str, Any] = {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": plan.prompt_tokens + completion,
    }
    if cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return usage


def _choice(delta: dict[str, Any], finish: str | None, key: str = "delta") -> dict[str, Any]:
    return {"index": 0, key: delta, "logprobs": None, "finish_reason": finish}


def _tool_call(call: text.ToolCall, call_id: str) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


class OpenAiApi:
    def __init__(self, sim: SimBackend) -> None:
        self.sim = sim
        self.pacer = Pacer.of(sim.options)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/chat/completions", self.chat_completions)
        router.add_post("/v1/completions", self.completions)
        router.add_post("/v1/embeddings", self.embeddings)
        router.add_get("/v1/models", self.models)

    async def _model_request(self, request: web.Request) -> tuple[dict[str, Any], str]:
        """Parse, check the model, then let the fault knobs have their say."""
        body = await read_json_object(request, openai_error)
        model = body.get("model")
        if not isinstance(model, str):
            raise openai_error(
                400, "you must provide a model parameter", "invalid_request", "model"
            )
        served = self.sim.resolve(model)
        if served is None:
            raise openai_error(
                404, f"The model `{model}` does not exist.", "model_not_found", "model"
            )
        self.sim.mark_loaded(served)
        status = self.sim.injected_failure()
        if status is not None:
            raise injected_failure(status, openai_error)
        return body, model

    def _plan(self, body: dict[str, Any], prompt: str, user_text: str) -> text.Plan:
        raw = body.get("max_completion_tokens", body.get("max_tokens"))
        try:
            max_tokens = text.parse_max_tokens(raw)
        except ValueError as exc:
            raise openai_error(400, f"max_tokens {exc}", "invalid_request", "max_tokens") from exc
        return text.plan(max_tokens, body.get("tools"), user_text, text.count_tokens(prompt))

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        body, model = await self._model_request(request)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise openai_error(
                400, "messages must be a non-empty list", "invalid_request", "messages"
            )
        prompt = text.messages_text(messages)
        plan = scripted_plan(self.sim.behavior.tool_script, body.get("tools"), messages,
                             text.count_tokens(prompt)) or \
            self._plan(body, prompt, text.last_user_text(messages))
        async with self.sim.kv.turn(prompt) as turn:
            return await self._chat(request, body, model, plan, turn)

    async def _chat(self, request: web.Request, body: dict[str, Any], model: str,
                    plan: text.Plan, turn: KvTurn) -> web.StreamResponse:
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": self.sim.now(), "model": model}
        if body.get("stream"):
            return await self._stream_chat(request, head, plan, _include_usage(body), turn)
        await turn.pacer.whole_answer(request, plan.n_tokens)
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        if plan.tool_call:
            message["tool_calls"] = [_tool_call(plan.tool_call, f"call_{uuid.uuid4().hex[:24]}")]
        else:
            message["content"] = plan.answer()
        choice = _choice(message, plan.finish, key="message")
        return json_reply(
            {
                "id": head["id"],
                "object": "chat.completion",
                "created": head["created"],
                "model": model,
                "choices": [choice],
                "usage": _usage(plan, turn.cached_tokens),
            }
        )

    async def _stream_chat(
        self, request: web.Request, head: dict[str, Any], plan: text.Plan, include_usage: bool,
        turn: KvTurn,
    ) -> web.StreamResponse:
        base = {
            "id": head["id"],
            "object": "chat.completion.chunk",
            "created": head["created"],
            "model": head["model"],
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            obj = {**base, "choices": [_choice(delta, finish)]}
            if include_usage:
                obj["usage"] = None  # OpenAI puts the key on every chunk once usage is asked for
            return obj

        stream = await ChunkStream.open(request, self.sim.behavior, SSE)
        pacer = turn.pacer
        await pacer.first_token()
        if plan.tool_call:
            await self._stream_tool_call(stream, plan.tool_call, chunk, pacer)
        elif plan.reply is not None:
            await stream.send(sse_data(chunk({"role": "assistant", "content": ""})))
            for piece in plan.pieces():
                await stream.send(sse_data(chunk({"content": piece})))
        else:
            await stream.send(sse_data(chunk({"role": "assistant", "content": ""})))
            template = ChunkTemplate.of(chunk({"content": HOLE}), before=b"data: ", after=b"\n\n")
            await self._stream_tokens(stream, template, plan.n_tokens, pacer)
        await stream.send(sse_data(chunk({}, plan.finish)))
        if include_usage:
            usage = _usage(plan, turn.cached_tokens)
            await stream.send(sse_data({**base, "choices": [], "usage": usage}))
        await stream.send(SSE_DONE)
        return stream.finish()

    async def _stream_tokens(self, stream: ChunkStream, template: ChunkTemplate, n: int,
                             pacer: Pacer | None = None) -> None:
        pacer = pacer or self.pacer
        for i in range(n):
            if i:
                await pacer.next_token()
            await stream.send(template.fill(text.token_json(i)))

    async def _stream_tool_call(self, stream: ChunkStream, call: text.ToolCall, chunk: Any,
                                pacer: Pacer) -> None:
        """OpenAI's tool-call deltas: id, type and name with empty arguments, then fragments."""
        first = {
            "index": 0,
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        await stream.send(
            sse_data(chunk({"role": "assistant", "content": None, "tool_calls": [first]}))
        )
        for fragment in call.fragments:
            await pacer.next_token()
            delta = {"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}
            await stream.send(sse_data(chunk(delta)))

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body, model = await self._model_request(request)
        prompt = body.get("prompt")
        if isinstance(prompt, list):
            prompt = " ".join(p for p in prompt if isinstance(p, str))
        if not isinstance(prompt, str):
            raise openai_error(
                400, "prompt must be a string or a list of strings", "invalid_request", "prompt"
            )
        plan = self._plan({**body, "tools": None}, prompt, "")
        head = {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": self.sim.now(),
            "model": model,
        }
        if body.get("stream"):
            return await self._stream_completion(request, head, plan, _include_usage(body))
        await self.pacer.whole_answer(request, plan.n_tokens)
        choice = {
            "index": 0,
            "text": text.answer_text(plan.n_tokens),
            "logprobs": None,
            "finish_reason": plan.finish,
        }
        return json_reply({**head, "choices": [choice], "usage": _usage(plan)})

    async def _stream_completion(
        self, request: web.Request, head: dict[str, Any], plan: text.Plan, include_usage: bool
    ) -> web.StreamResponse:
        def chunk(token: str, finish: str | None) -> dict[str, Any]:
            obj = {
                **head,
                "choices": [{"index": 0, "text": token, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:
                obj["usage"] = None
            return obj

        stream = await ChunkStream.open(request, self.sim.behavior, SSE)
        await self.pacer.first_token()
        template = ChunkTemplate.of(chunk(HOLE, None), before=b"data: ", after=b"\n\n")
        await self._stream_tokens(stream, template, plan.n_tokens)
        await stream.send(sse_data(chunk("", plan.finish)))
        if include_usage:
            await stream.send(sse_data({**head, "choices": [], "usage": _usage(plan)}))
        await stream.send(SSE_DONE)
        return stream.finish()

    async def embeddings(self, request: web.Request) -> web.Response:
        body, model = await self._model_request(request)
        inputs = _embedding_inputs(body.get("input"))
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for i, item in enumerate(inputs):
            vector: Any = text.embedding(item)
            if as_base64:
                vector = base64.b64encode(text.embedding_bytes(vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": vector})
        tokens = sum(text.count_tokens(i) if isinstance(i, str) else len(i) for i in inputs)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return json_reply({"object": "list", "data": data, "model": model, "usage": usage})

    async def models(self, request: web.Request) -> web.Response:
        created = int(self.sim.started_at)
        owner = self.sim.options.name
        data = [
            {
                "id": self.sim.listed_name(m),
                "object": "model",
                "created": created,
                "owned_by": owner,
            }
            for m in self.sim.options.models
        ]
        return json_reply({"object": "list", "data": data})


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _embedding_inputs(raw: Any) -> list[Any]:
    """A string, a list of strings, a token list, or a list of token lists."""
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw:
        if all(isinstance(i, int) for i in raw):
            return [raw]
        if all(isinstance(i, str | list) for i in raw):
            return raw
    raise openai_error(
        400, "input must be a string or a non-empty list", "invalid_request", "input"
    )


__all__ = ["ErrorReply", "OpenAiApi"]
