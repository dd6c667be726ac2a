"""The status page's routes over HTTP: open static files, key-guarded JSON, /admin/stats fed by
real requests through the gateway to simulated backends."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest

from lb.admin.page import ASSETS
from lb.endpoints import HealthState
from tests.conftest import GatewayFactory, SimFactory, endpoint

ADMIN = "adm-secret"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers,
                                                   allow_redirects=False) as resp:
        body: Any = await resp.json() if resp.content_type == "application/json" \
            else await resp.read()
        return resp.status, body, dict(resp.headers)


@pytest.fixture
async def gateway(start_sim: SimFactory, start_gateway: GatewayFactory) -> Any:
    a, b = await start_sim("m1", ttft_ms=5), await start_sim("m1")
    gw = await start_gateway({
        "server": {"admin_key": ADMIN},
        "endpoints": [endpoint("gpu-a", a, weight=3), endpoint("gpu-b", b, priority=1)],
        "models": [{"name": "m1", "strategy": "priority"}],
    })
    for ep in gw.fleet:
        ep.state = HealthState.HEALTHY
    return gw


@pytest.mark.parametrize("path", [*ASSETS, "/admin"])
async def test_page_files_need_no_key(gateway: Any, path: str) -> None:
    status, body, headers = await get(gateway.url + path)
    if path == "/admin":
        assert status == 308 and headers["Location"] == "admin/"
        return
    assert status == 200
    assert body  # the file itself
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"


async def test_the_page_itself_holds_no_data(gateway: Any) -> None:
    _, body, headers = await get(gateway.url + "/admin/")
    assert headers["Content-Type"].startswith("text/html")
    assert b"gpu-a" not in body and b"m1" not in body


@pytest.mark.parametrize("path", ["/admin/stats", "/admin/endpoints", "/admin/keys",
                                  "/admin/stats/", "/admin/static/x"])
@pytest.mark.parametrize("headers", [None, {"Authorization": "Bearer wrong"},
                                     {"Authorization": ADMIN}])
async def test_json_routes_refuse_without_the_admin_key(
        gateway: Any, path: str, headers: dict[str, str] | None) -> None:
    status, body, resp_headers = await get(gateway.url + path, headers)
    assert status == 401
    assert body["error"]["type"] == "invalid_request_error" or body["error"]["code"]
    assert resp_headers["WWW-Authenticate"] == "Bearer"
    assert "gpu-a" not in str(body)


async def test_stats_count_model_requests_and_show_each_pool(gateway: Any) -> None:
    client = gateway.openai()
    for _ in range(3):
        await client.chat.completions.create(model="m1", max_tokens=4,
                                             messages=[{"role": "user", "content": "hi"}])
    stream = await client.chat.completions.create(
        model="m1", max_tokens=4, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "hi"}])
    async for _ in stream:
        pass
    await get(gateway.url + "/healthz")  # not a model request: not in the page's numbers
    status, stats, _ = await get(gateway.url + "/admin/stats", AUTH)
    assert status == 200
    assert len(stats["requests"]) == stats["history_s"] == 600
    (m1,) = stats["models"]
    assert m1["name"] == "m1" and m1["strategy"] == "priority"
    assert m1["members"] == [
        {"name": "gpu-a", "tier": 0, "weight": 3, "state": "healthy"},
        {"name": "gpu-b", "tier": 1, "weight": 1, "state": "healthy"},
    ]
    assert m1["requests"] == 4  # the window includes the second still filling
    assert m1["error_rate"] == 0
    assert m1["ttft_p50_ms"] is not None and m1["ttft_p50_ms"] > 0
    assert m1["tokens_out_per_s"] > 0
    assert stats["now"] > 1.7e9  # wall clock seconds: the page ages probe times with it


async def test_failed_requests_count_as_errors(start_sim: SimFactory,
                                               start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1")
    gw = await start_gateway({"server": {"admin_key": ADMIN},
                              "endpoints": [endpoint("gpu-a", sim)]})
    client = gw.openai()
    await client.chat.completions.create(model="m1", max_tokens=1,
                                         messages=[{"role": "user", "content": "x"}])
    sim.behavior.fail_status = 500
    with pytest.raises(openai.APIStatusError):
        await client.chat.completions.create(model="m1", max_tokens=1,
                                             messages=[{"role": "user", "content": "x"}])
    # an unknown model is the client's mistake: a request, not an error
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="nope", max_tokens=1,
                                             messages=[{"role": "user", "content": "x"}])
    _, stats, _ = await get(gw.url + "/admin/stats", AUTH)
    by_name = {m["name"]: m for m in stats["models"]}
    assert by_name["m1"]["requests"] == 2 and by_name["m1"]["error_rate"] == 0.5
    unknown = by_name["unknown"]
    assert unknown["requests"] == 1 and unknown["error_rate"] == 0
    assert unknown["members"] == [] and unknown["strategy"] is None


async def test_gateway_without_admin_key_shows_stats_openly(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1")
    gw = await start_gateway({"endpoints": [endpoint("gpu-a", sim)]})
    status, stats, _ = await get(gw.url + "/admin/stats")
    assert status == 200
    assert [m["name"] for m in stats["models"]] == ["m1"]


async def test_model_names_from_backends_pass_redaction(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    secret = "backend-secret-123"
    sim = await start_sim("m1", f"echo-{secret}", "sk-abcdefghijklmnop")
    gw = await start_gateway({"server": {"admin_key": ADMIN},
                              "endpoints": [endpoint("gpu-a", sim, api_key_env="GPU_KEY")]},
                             env={"GPU_KEY": secret})
    ep = next(iter(gw.fleet))
    ep.set_discovered_models(["m1", f"echo-{secret}", "sk-abcdefghijklmnop"])
    gw.fleet.models_changed()
    status, stats, _ = await get(gw.url + "/admin/stats", AUTH)
    assert status == 200
    text = str(stats)
    assert secret not in text and "sk-abcdefghijklmnop" not in text
    assert "echo-[redacted]" in [m["name"] for m in stats["models"]]
