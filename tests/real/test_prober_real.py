"""The prober against real servers: models discovered, Responses support told apart from a
chat-only server (a real llama-server behind a proxy that passes only chat and models).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from lb.config import EndpointConfig, ProbesConfig
from lb.endpoints import Endpoint, Fleet, HealthState
from probes.__main__ import probe_fleet

from .conftest import StartGateway
from .gateway import Backend
from .llama import MODEL_ALIAS
from .process import ServerProcess
from .wire import request

pytestmark = pytest.mark.real

PROBES = ProbesConfig(timeout=30.0)  # generous: vLLM answers slowly while the machine is busy
CHAT_ONLY_PATHS = ("/v1/chat/completions", "/v1/models")
# Seconds to wait for the gateway's background prober to have looked at every endpoint.
DISCOVERY_WAIT_S = 60.0


@pytest.fixture
async def chat_only_url(llama_fleet: list[ServerProcess]) -> AsyncIterator[str]:
    """A server offering a real llama-server's chat and models routes and nothing else (404)."""
    backend_url = llama_fleet[0].url
    session = aiohttp.ClientSession()

    async def forward(request: web.Request) -> web.Response:
        if request.path not in CHAT_ONLY_PATHS:
            raise web.HTTPNotFound()
        async with session.request(
            request.method,
            backend_url + request.path,
            data=await request.read(),
            headers={"Content-Type": "application/json"},
        ) as upstream:
            return web.Response(
                status=upstream.status,
                body=await upstream.read(),
                content_type=upstream.content_type,
            )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()
    await session.close()


def fleet_of(**urls_by_kind: tuple[str, str]) -> Fleet:
    return Fleet.from_configs(
        EndpointConfig(name=name, url=url, kind=kind) for name, (kind, url) in urls_by_kind.items()
    )


async def test_llama_and_chat_only_server(
    llama_fleet: list[ServerProcess], chat_only_url: str
) -> None:
    fleet = fleet_of(llama=("openai", llama_fleet[0].url), chat_only=("openai", chat_only_url))
    results = await probe_fleet(fleet, PROBES)
    assert all(r.ok for r in results.values()), results
    llama, chat_only = fleet.get("llama"), fleet.get("chat_only")
    assert isinstance(llama, Endpoint) and isinstance(chat_only, Endpoint)
    assert llama.state is HealthState.HEALTHY and chat_only.state is HealthState.HEALTHY
    assert llama.discovered_models == chat_only.discovered_models == {MODEL_ALIAS}
    assert llama.supports_responses_api is True
    assert chat_only.supports_responses_api is False


async def test_vllm(vllm_fleet: list[ServerProcess]) -> None:
    fleet = fleet_of(vllm=("vllm", vllm_fleet[0].url))
    results = await probe_fleet(fleet, PROBES)
    endpoint = fleet.get("vllm")
    assert endpoint is not None and results["vllm"].ok, results
    assert endpoint.discovered_models == {MODEL_ALIAS}
    assert endpoint.supports_responses_api is True


def test_gateway_admin_shows_what_its_prober_found(
    llama_fleet: list[ServerProcess], fleetlb: StartGateway
) -> None:
    """Endpoints configured without models: the gateway's own prober must discover them."""
    gateway = fleetlb([Backend(name="llama-0", url=llama_fleet[0].url, models=())])
    deadline = time.monotonic() + DISCOVERY_WAIT_S
    rows: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        rows = json.loads(request("GET", gateway.url + "/admin/endpoints").body)["endpoints"]
        if rows and rows[0].get("supports_responses_api") is not None and rows[0]["models"]:
            break
        time.sleep(0.5)
    assert rows[0]["models"] == [MODEL_ALIAS], rows
    assert rows[0]["supports_responses_api"] is True, rows
