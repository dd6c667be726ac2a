"""Ollama's model management on the simulated backend: /api/pull, /push and /create stream
progress (NDJSON, or one final object with `"stream": false`); /api/copy and /api/delete answer
200 with an empty body. Pull, create and copy add the model to what the backend serves; delete
removes it. The fault knobs apply as to model requests."""

from __future__ import annotations

import hashlib
from typing import Any

from aiohttp import web

from lb.sim.backend import SimBackend
from lb.sim.replies import injected_failure, json_reply, ollama_error, read_json_object
from lb.sim.stream import NDJSON, ChunkStream, ndjson_line

LAYER_BYTES = 4_920_753_328  # what a pull reports downloading: one 8B Q4_K_M layer


class OllamaModels:
    def __init__(self, sim: SimBackend) -> None:
        self.sim = sim

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/api/pull", self.pull)
        router.add_post("/api/push", self.push)
        router.add_post("/api/create", self.create)
        router.add_post("/api/copy", self.copy)
        router.add_delete("/api/delete", self.delete)

    async def _body(self, request: web.Request) -> dict[str, Any]:
        body = await read_json_object(request, ollama_error)
        status = self.sim.injected_failure()
        if status is not None:
            raise injected_failure(status, ollama_error)
        return body

    @staticmethod
    def _model(body: dict[str, Any], field: str = "model") -> str:
        name = body.get(field) or (body.get("name") if field == "model" else None)
        if not isinstance(name, str) or not name:
            raise ollama_error(400, f"{field} is required")
        return name

    async def pull(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        model = self._model(body)
        digest = "sha256:" + hashlib.sha256(model.encode()).hexdigest()
        steps: list[dict[str, Any]] = [
            {"status": "pulling manifest"},
            {"status": f"pulling {digest[7:19]}", "digest": digest, "total": LAYER_BYTES},
            {"status": f"pulling {digest[7:19]}", "digest": digest, "total": LAYER_BYTES,
             "completed": LAYER_BYTES},
            {"status": "verifying sha256 digest"},
            {"status": "writing manifest"},
        ]
        return await self._progress(request, body, steps, model)

    async def push(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        model = self._model(body)
        if self.sim.resolve(model) is None:
            raise ollama_error(404, f'model "{model}" not found')
        steps = [{"status": "retrieving manifest"}, {"status": "pushing manifest"}]
        return await self._progress(request, body, steps, None)

    async def create(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        model = self._model(body)
        steps = [{"status": "gathering model components"}, {"status": "writing manifest"}]
        return await self._progress(request, body, steps, model)

    async def _progress(self, request: web.Request, body: dict[str, Any],
                        steps: list[dict[str, Any]], adds: str | None) -> web.StreamResponse:
        if body.get("stream", True) is False:
            if adds is not None:
                self.sim.add_model(adds)
            return json_reply({"status": "success"})
        stream = await ChunkStream.open(request, self.sim.behavior, NDJSON)
        for step in steps:
            await stream.send(ndjson_line(step))
        if adds is not None:
            self.sim.add_model(adds)
        await stream.send(ndjson_line({"status": "success"}))
        return stream.finish()

    async def copy(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        source, destination = self._model(body, "source"), self._model(body, "destination")
        if self.sim.resolve(source) is None:
            raise ollama_error(404, f'model "{source}" not found')
        self.sim.add_model(destination)
        return web.Response()

    async def delete(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        model = self._model(body)
        if not self.sim.remove_model(model):
            raise ollama_error(404, f"model '{model}' not found")
        return web.Response()
