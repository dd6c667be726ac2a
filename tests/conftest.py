"""Shared fixtures: simulated backends and the gateway as real servers on 127.0.0.1."""

from __future__ import annotations

import io
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import ollama
import openai
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from lb.app import build_app
from lb.appstate import ACCESS_LOG, RUNTIME
from lb.config import parse_config
from lb.endpoints import Fleet
from lb.observe import JsonAccessLog, configure_logging
from lb.serverlog import server_options
from lb.sim import BEHAVIOR_KEY, SimBehavior, SimOptions, build_sim_app
from lb.sim.faults import FaultyBackend
from tests.gateway_server import GatewayTestServer


@dataclass
class Sim:
    server: TestServer
    behavior: SimBehavior

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


@dataclass
class Gateway:
    server: TestServer
    app: web.Application
    clients: list[openai.AsyncOpenAI] = field(default_factory=list)
    ollama_clients: list[ollama.AsyncClient] = field(default_factory=list)

    def openai(self, key: str = "sk-test", prefix: str = "/v1") -> openai.AsyncOpenAI:
        """The official SDK pointed at this gateway (closed when the test ends)."""
        client = openai.AsyncOpenAI(base_url=self.url + prefix, api_key=key, max_retries=0,
                                    timeout=20)
        self.clients.append(client)
        return client

    def ollama(self, key: str | None = "sk-test") -> ollama.AsyncClient:
        """The official Ollama client pointed at this gateway (closed when the test ends)."""
        headers = {"Authorization": f"Bearer {key}"} if key else None
        client = ollama.AsyncClient(host=self.url, headers=headers, timeout=20)
        self.ollama_clients.append(client)
        return client

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def fleet(self) -> Fleet:
        return self.app[RUNTIME].current.fleet

    def in_flight(self) -> dict[str, int]:
        return {ep.name: ep.in_flight for ep in self.fleet}


SimFactory = Callable[..., Awaitable[Sim]]
FaultyFactory = Callable[..., Awaitable[FaultyBackend]]
GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def start_sim() -> AsyncIterator[SimFactory]:
    servers: list[TestServer] = []

    async def start(*models: str, **options: Any) -> Sim:
        app = build_sim_app(SimOptions(models=models or ("m1",), **options))
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return Sim(server, app[BEHAVIOR_KEY])

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
def log_buffer() -> io.BytesIO:
    """Where a test's gateways write their access lines (and structlog, with `log_lines`)."""
    return io.BytesIO()


@pytest.fixture
def access_log(log_buffer: io.BytesIO) -> JsonAccessLog:
    return JsonAccessLog(log_buffer)


@pytest.fixture
async def start_gateway(access_log: JsonAccessLog) -> AsyncIterator[GatewayFactory]:
    gateways: list[Gateway] = []

    async def start(config: dict[str, Any], **kwargs: Any) -> Gateway:
        # health is set by each test unless it asks for the real prober
        kwargs.setdefault("active_probes", False)
        config = {"store": {"kind": "memory"}, **config}
        kwargs.setdefault("access_log", access_log)
        app = build_app(parse_config(config, env=kwargs.pop("env", {})), **kwargs)
        server = GatewayTestServer(app, host="127.0.0.1")
        options = server_options(app[ACCESS_LOG], app[RUNTIME].current.config.timeouts.client_idle)
        options.pop("handler_cancellation")  # TestServer sets it itself
        await server.start_server(**options)
        gateway = Gateway(server, app)
        gateways.append(gateway)
        return gateway

    yield start
    for gateway in gateways:
        # every scenario must leave the in-flight counts exact
        for client in gateway.clients:
            await client.close()
        for ollama_client in gateway.ollama_clients:
            await ollama_client.close()
        leaked = {k: v for k, v in gateway.in_flight().items() if v}
        await gateway.server.close()
        assert not leaked, f"in-flight not back to 0: {leaked}"


def endpoint(name: str, sim: Sim | str, models: tuple[str, ...] = ("m1",),
             **extra: Any) -> dict[str, Any]:
    url = sim if isinstance(sim, str) else sim.url
    return {"name": name, "url": url, "models": list(models), **extra}


def dead_url() -> str:
    """A loopback URL where nothing listens (connect refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def log_lines(log_buffer: io.BytesIO, access_log: JsonAccessLog,
              ) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    buffer = log_buffer
    configure_logging("json", stream=buffer, cache=False)

    def lines() -> list[dict[str, Any]]:
        access_log.flush()
        return [orjson.loads(line) for line in buffer.getvalue().splitlines() if line]

    yield lines
    configure_logging("json", stream=io.BytesIO(), cache=False)


@pytest.fixture
async def start_faulty() -> AsyncIterator[FaultyFactory]:
    """Misbehaving backends (lb.sim.faults) on 127.0.0.1, closed when the test ends."""
    backends: list[FaultyBackend] = []

    async def start(fault: str = "ok", **options: Any) -> FaultyBackend:
        backend = await FaultyBackend(fault=fault, **options).start()  # type: ignore[arg-type]
        backends.append(backend)
        return backend

    yield start
    for backend in backends:
        await backend.close()
