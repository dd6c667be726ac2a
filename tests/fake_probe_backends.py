"""Fake Ollama, vLLM and OpenAI-compatible backends for the probe tests.

Real aiohttp servers on 127.0.0.1 that record what they received and can be failed (5xx), hung
(the request is accepted and never answered), slowed down, stopped and restarted on the same port.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from lb.config import EndpointConfig

Handler = Callable[[], Awaitable[web.StreamResponse]]


@dataclass(eq=False)
class FakeBackend:
    kind: str = "openai"
    models: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    metrics: str = ""  # vLLM's /metrics body
    responses: tuple[int, str] | None = None  # (status, JSON body) of POST /v1/responses; None: 404
    responses_text: str | None = None  # a non-JSON body for POST /v1/responses instead
    status: int = 200  # of every other route; 503 makes the liveness check fail
    raw: dict[str, str] = field(
        default_factory=dict
    )  # path -> a 200 text body, overriding the kind
    hang: bool = False  # accept requests and never answer them
    delay_s: float = 0.0
    port: int = 0  # 0 until the first start, then kept so a restart reuses it
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, auth
    _runner: web.AppRunner | None = None
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def endpoint(self, name: str = "ep", **extra: object) -> EndpointConfig:
        return EndpointConfig.model_validate(
            {"name": name, "url": self.url, "kind": self.kind, **extra}
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._release = asyncio.Event()
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._release.set()  # lets hung handlers finish so the shutdown does not wait for them
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path, request.headers.get("Authorization")))
        if self.hang:
            await self._release.wait()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if (request.method, request.path) == ("POST", "/v1/responses"):
            return self._responses()
        if request.path in self.raw:
            return web.Response(text=self.raw[request.path])
        body = self._routes().get((request.method, request.path))
        if body is None:
            return self._not_found()
        if self.status != 200:
            return web.json_response({"error": "backend broken"}, status=self.status)
        return web.json_response(body) if not isinstance(body, str) else web.Response(text=body)

    def _routes(self) -> dict[tuple[str, str], object]:
        listing = {"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]}
        if self.kind == "ollama":
            return {
                ("GET", "/"): "Ollama is running",
                ("GET", "/api/tags"): {"models": [{"name": m, "model": m} for m in self.models]},
                ("GET", "/api/ps"): {"models": [{"name": m, "model": m} for m in self.loaded]},
            }
        if self.kind == "vllm":
            return {
                ("GET", "/health"): "",
                ("GET", "/v1/models"): listing,
                ("GET", "/metrics"): self.metrics,
            }
        return {("GET", "/v1/models"): listing}

    def _responses(self) -> web.Response:
        if self.responses_text is not None:
            return web.Response(text=self.responses_text, content_type="text/html")
        if self.responses is None:
            return self._not_found()
        status, body = self.responses
        return web.Response(status=status, text=body, content_type="application/json")

    def _not_found(self) -> web.Response:
        if self.kind == "ollama":  # Ollama's Go router
            return web.Response(status=404, text="404 page not found")
        return web.json_response({"detail": "Not Found"}, status=404)  # FastAPI (vLLM)


@asynccontextmanager
async def running(*backends: FakeBackend) -> AsyncIterator[None]:
    for backend in backends:
        await backend.start()
    try:
        yield
    finally:
        for backend in backends:
            await backend.stop()


async def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    backend = FakeBackend()
    await backend.start()
    await backend.stop()
    return backend.port


async def eventually(predicate: Callable[[], bool], ceiling_s: float = 10.0) -> None:
    """Wait until `predicate()` holds; the ceiling only turns a hang into a named failure."""
    async with asyncio.timeout(ceiling_s):
        # polling: the states waited on are plain fields other tasks write, with no event to await
        while not predicate():
            await asyncio.sleep(0.005)
