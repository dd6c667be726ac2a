"""Ollama's native API on the simulated backend: discovery (/api/tags, /api/ps, /api/version,
/api/show), generation as NDJSON streams or one object (/api/chat, /api/generate) and embeddings
(/api/embed, /api/embeddings), with Ollama's bare `{"error": "..."}` errors. Model management
(/api/pull, ...) is in `ollama_models`."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from lb.sim import text
from lb.sim.backend import SimBackend
from lb.sim.chunks import HOLE, ChunkTemplate
from lb.sim.ollama_models import OllamaModels
from lb.sim.replies import injected_failure, json_reply, ollama_error, read_json_object
from lb.sim.stream import NDJSON, ChunkStream, Pacer, ndjson_line

OLLAMA_VERSION = "0.9.3"
MODEL_SIZE_BYTES = 4_920_753_328  # what an 8B Q4_K_M model weighs; reported by tags and ps
CONTEXT_LENGTH = 4096  # tokens, Ollama's default num_ctx
KEEP_ALIVE_S = 300.0  # Ollama unloads an idle model after 5 minutes; /api/ps shows the deadline
LOAD_DURATION_NS = 1_000_000  # reported model load time: the model is always warm here
INSTANT_TOKEN_NS = 1_000  # reported time per token when the simulator runs unpaced
DETAILS = {
    "parent_model": "",
    "format": "gguf",
    "family": "llama",
    "families": ["llama"],
    "parameter_size": "8.0B",
    "quantization_level": "Q4_K_M",
}

Piece = Callable[[str], dict[str, Any]]  # the content-bearing part of one NDJSON object


def _chat_piece(content: str) -> dict[str, Any]:
    return {"message": {"role": "assistant", "content": content}}


def _generate_piece(content: str) -> dict[str, Any]:
    return {"response": content}


def timestamp(seconds: float) -> str:
    """RFC 3339 in UTC with a `Z`, as Ollama writes `created_at`."""
    return (
        datetime.fromtimestamp(seconds, UTC)
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z")
    )


class OllamaApi:
    def __init__(self, sim: SimBackend) -> None:
        self.sim = sim
        self.pacer = Pacer.of(sim.options)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/", self.root)
        router.add_get("/api/tags", self.tags)
        router.add_get("/api/ps", self.ps)
        router.add_get("/api/version", self.version)
        router.add_post("/api/show", self.show)
        router.add_post("/api/chat", self.chat)
        router.add_post("/api/generate", self.generate)
        router.add_post("/api/embed", self.embed)
        router.add_post("/api/embeddings", self.embeddings)
        OllamaModels(self.sim).add_routes(router)

    async def root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def version(self, request: web.Request) -> web.Response:
        return json_reply({"version": OLLAMA_VERSION})

    def _entry(self, model: str) -> dict[str, Any]:
        name = self.sim.listed_name(model)
        digest = hashlib.sha256(name.encode()).hexdigest()
        return {
            "name": name,
            "model": name,
            "modified_at": timestamp(self.sim.started_at),
            "size": MODEL_SIZE_BYTES,
            "digest": digest,
            "details": DETAILS,
        }

    async def tags(self, request: web.Request) -> web.Response:
        return json_reply({"models": [self._entry(m) for m in self.sim.models]})

    async def ps(self, request: web.Request) -> web.Response:
        expires_at = timestamp(self.sim.clock() + KEEP_ALIVE_S)
        models = [
            {
                **self._entry(m),
                "expires_at": expires_at,
                "size_vram": MODEL_SIZE_BYTES,
                "context_length": CONTEXT_LENGTH,
            }
            for m in self.sim.loaded
        ]
        for entry in models:
            del entry["modified_at"]
        return json_reply({"models": models})

    def _lookup(self, body: dict[str, Any]) -> tuple[str, str]:
        model = body.get("model") or body.get("name")  # `name` is the older spelling
        if not isinstance(model, str) or not model:
            raise ollama_error(400, "model is required")
        served = self.sim.resolve(model)
        if served is None:
            raise ollama_error(404, f'model "{model}" not found, try pulling it first')
        return model, served

    async def show(self, request: web.Request) -> web.Response:
        _, served = self._lookup(await read_json_object(request, ollama_error))
        info = {
            "general.architecture": "llama",
            "general.parameter_count": 8_030_261_248,
            "llama.context_length": CONTEXT_LENGTH,
            "llama.embedding_length": text.EMBEDDING_DIM,
        }
        return json_reply(
            {
                "license": "",
                "modelfile": f"FROM {self.sim.listed_name(served)}\n",
                "parameters": "",
                "template": "{{ .Prompt }}",
                "details": DETAILS,
                "model_info": info,
                "capabilities": ["completion", "tools"],
                "modified_at": timestamp(self.sim.started_at),
            }
        )

    async def _model_request(self, request: web.Request) -> tuple[dict[str, Any], str]:
        body = await read_json_object(request, ollama_error)
        model, served = self._lookup(body)
        self.sim.mark_loaded(served)
        status = self.sim.injected_failure()
        if status is not None:
            raise injected_failure(status, ollama_error)
        return body, model

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body, model = await self._model_request(request)
        messages = body.get("messages")
        if messages is not None and not isinstance(messages, list):
            raise ollama_error(400, "messages must be a list")
        if not messages:
            return self._loaded(model, _chat_piece)  # Ollama's way to preload a model
        plan = _plan(body, text.messages_text(messages), text.last_user_text(messages))
        return await self._answer(request, body, model, plan, _chat_piece)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        body, model = await self._model_request(request)
        prompt = body.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            raise ollama_error(400, "prompt must be a string")
        if not prompt:
            return self._loaded(model, _generate_piece)
        plan = _plan({**body, "tools": None}, f"{body.get('system') or ''} {prompt}", "")
        return await self._answer(request, body, model, plan, _generate_piece)

    def _loaded(self, model: str, piece: Piece) -> web.Response:
        head = {"model": model, "created_at": timestamp(self.sim.clock())}
        return json_reply({**head, **piece(""), "done": True, "done_reason": "load"})

    async def _answer(
        self, request: web.Request, body: dict[str, Any], model: str, plan: text.Plan, piece: Piece
    ) -> web.StreamResponse:
        head = {"model": model, "created_at": timestamp(self.sim.clock())}
        done_reason = "length" if plan.finish == "length" else "stop"
        final = {**head, **piece(""), "done": True, "done_reason": done_reason, **self._stats(plan)}
        if body.get("stream", True) is not False:
            return await self._stream(request, head, plan, piece, final)
        await self.pacer.whole_answer(request, plan.n_tokens)
        return json_reply({**final, **_whole(plan, piece)})

    async def _stream(
        self,
        request: web.Request,
        head: dict[str, Any],
        plan: text.Plan,
        piece: Piece,
        final: dict[str, Any],
    ) -> web.StreamResponse:
        stream = await ChunkStream.open(request, self.sim.behavior, NDJSON)
        await self.pacer.first_token()
        if plan.tool_call:
            await stream.send(ndjson_line({**head, **_whole(plan, piece), "done": False}))
        else:
            template = ChunkTemplate.of({**head, **piece(HOLE), "done": False}, after=b"\n")
            for i in range(plan.n_tokens):
                if i:
                    await self.pacer.next_token()
                await stream.send(template.fill(text.token_json(i)))
        await stream.send(ndjson_line(final))
        return stream.finish()

    def _stats(self, plan: text.Plan) -> dict[str, int]:
        tokens = plan.completion_tokens
        prompt_ns = int(self.pacer.ttft_s * 1e9) or plan.prompt_tokens * INSTANT_TOKEN_NS
        eval_ns = (
            int(max(tokens - 1, 0) * self.pacer.token_gap_s * 1e9) or tokens * INSTANT_TOKEN_NS
        )
        return {
            "total_duration": LOAD_DURATION_NS + prompt_ns + eval_ns,
            "load_duration": LOAD_DURATION_NS,
            "prompt_eval_count": plan.prompt_tokens,
            "prompt_eval_duration": prompt_ns,
            "eval_count": tokens,
            "eval_duration": eval_ns,
        }

    async def embed(self, request: web.Request) -> web.Response:
        body, model = await self._model_request(request)
        raw = body.get("input")
        inputs = [raw] if isinstance(raw, str) else raw
        if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            raise ollama_error(400, "input must be a string or a list of strings")
        tokens = sum(text.count_tokens(i) for i in inputs)
        return json_reply(
            {
                "model": model,
                "embeddings": [text.embedding(i) for i in inputs],
                "total_duration": LOAD_DURATION_NS,
                "load_duration": LOAD_DURATION_NS,
                "prompt_eval_count": tokens,
            }
        )

    async def embeddings(self, request: web.Request) -> web.Response:
        body, _ = await self._model_request(request)
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise ollama_error(400, "prompt must be a string")
        return json_reply({"embedding": text.embedding(prompt) if prompt else []})


def _plan(body: dict[str, Any], prompt: str, user_text: str) -> text.Plan:
    """Ollama's `options.num_predict`: a positive cap, or -1 / absent for no cap."""
    options = body.get("options")
    limit = options.get("num_predict") if isinstance(options, dict) else None
    capped = isinstance(limit, int) and not isinstance(limit, bool) and limit > 0
    return text.plan(
        limit if capped else None, body.get("tools"), user_text, text.count_tokens(prompt)
    )


def _whole(plan: text.Plan, piece: Piece) -> dict[str, Any]:
    """The content of a whole answer: all tokens, or Ollama's tool call (arguments as an object)."""
    call = plan.tool_call
    if call is None:
        return piece(text.answer_text(plan.n_tokens))
    message = piece("")
    message["message"]["tool_calls"] = [
        {"function": {"name": call.name, "arguments": orjson.loads(call.arguments)}}
    ]
    return message
