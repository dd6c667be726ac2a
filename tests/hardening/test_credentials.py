"""No configured secret leaves the gateway: a backend that refuses fleetlb's key (401/403) is a
configuration fault (502 upstream_auth_failed, nothing of its answer relayed), and every piece of
backend text fleetlb quotes passes lb.redact, on every surface and in every log line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest

from lb.sim.faults import FaultyBackend
from tests.conftest import FaultyFactory, GatewayFactory, endpoint

CLIENT_KEY = "sk-client-0123456789abcdef"
ADMIN_KEY = "admin-key-fedcba9876543210"
ENDPOINT_KEY = "endpoint-key-55aa55aa55aa"
COMPACTION_KEY = "compaction-key-77bb77bb"
SECRETS = (CLIENT_KEY, ADMIN_KEY, ENDPOINT_KEY, COMPACTION_KEY)
CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}


def config(*backends: FaultyBackend, kind: str = "openai") -> dict[str, Any]:
    return {
        "server": {"api_keys": [CLIENT_KEY], "admin_key": ADMIN_KEY},
        "responses": {"compaction_key": COMPACTION_KEY},
        "endpoints": [endpoint(f"e{i}", b.url, kind=kind, api_key_env="EP_KEY")
                      for i, b in enumerate(backends)],
    }


async def call(session: aiohttp.ClientSession, method: str, url: str, body: Any = None,
               key: str = CLIENT_KEY) -> tuple[int, str]:
    """(status, everything the client received: headers and body) of one request."""
    async with session.request(method, url, json=body,
                               headers={"Authorization": f"Bearer {key}"}) as resp:
        text = await resp.text(errors="replace")
        return resp.status, str(list(resp.headers.items())) + text


async def test_a_401_that_echoes_the_key_is_a_502_and_counts_against_the_endpoint(
        start_faulty: FaultyFactory, start_gateway: GatewayFactory,
        log_lines: Callable[[], list[dict[str, Any]]]) -> None:
    a, b = await start_faulty("auth_echo"), await start_faulty("auth_echo")
    gw = await start_gateway(config(a, b), env={"EP_KEY": ENDPOINT_KEY})
    async with aiohttp.ClientSession() as s:
        for stream in (False, True):
            async with s.post(gw.url + "/v1/chat/completions", json={**CHAT, "stream": stream},
                              headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as resp:
                body = await resp.json()
                assert resp.status == 502
                assert body["error"]["code"] == "upstream_auth_failed"
                assert "X-Echo-Authorization" not in resp.headers
                assert "realm" not in resp.headers.get("WWW-Authenticate", "")
                assert ENDPOINT_KEY not in str(body) + str(resp.headers)
    # the key did reach the backends (so the echo was real), and each refusal counted
    assert all(r.headers["authorization"] == f"Bearer {ENDPOINT_KEY}"
               for r in a.requests + b.requests)
    assert all(ep.live_failures >= 1 for ep in gw.fleet)
    access = [line for line in log_lines() if line["event"] == "access"]
    assert [line["status"] for line in access] == [502, 502]
    assert not any(secret in orjson.dumps(line).decode()
                   for line in log_lines() for secret in SECRETS)


@pytest.mark.parametrize("status", [400, 404, 422, 500, 503])
async def test_error_answers_that_echo_the_request_are_redacted(
        status: int, start_faulty: FaultyFactory, start_gateway: GatewayFactory,
        log_lines: Callable[[], list[dict[str, Any]]]) -> None:
    backend = await start_faulty("error_echo", echo_status=status)
    gw = await start_gateway(config(backend), env={"EP_KEY": ENDPOINT_KEY})
    async with aiohttp.ClientSession() as s:
        got, seen = await call(s, "POST", gw.url + "/v1/chat/completions", CHAT)
    assert got == (status if status < 500 else 502)
    assert "[redacted]" in seen  # the backend did quote the key: it was taken out
    assert not any(secret in seen for secret in SECRETS)
    assert not any(secret in orjson.dumps(line).decode()
                   for line in log_lines() for secret in SECRETS)


async def test_no_secret_reaches_any_surface_or_log(
        start_faulty: FaultyFactory, start_gateway: GatewayFactory,
        log_lines: Callable[[], list[dict[str, Any]]]) -> None:
    """Every surface in front of backends that quote what they receive, with the client's own
    key pasted into the prompt as well."""
    openai_backends = [await start_faulty(f) for f in ("auth_echo", "error_echo")]
    ollama_backend = await start_faulty("error_echo", echo_status=500)
    cfg = config(*openai_backends)
    cfg["endpoints"].append(endpoint("ol", ollama_backend.url, kind="ollama",
                                     api_key_env="EP_KEY"))
    cfg["ollama"] = {"allow_admin": True}
    gw = await start_gateway(cfg, env={"EP_KEY": ENDPOINT_KEY})
    leaky = {**CHAT, "messages": [{"role": "user", "content": f"my key is {CLIENT_KEY}"}]}
    seen: list[str] = []
    async with aiohttp.ClientSession() as s:
        for method, path, body in [
            ("POST", "/v1/chat/completions", leaky),
            ("POST", "/v1/chat/completions", {**leaky, "stream": True}),
            ("POST", "/v1/completions", {"model": "m1", "prompt": CLIENT_KEY}),
            ("POST", "/v1/embeddings", {"model": "m1", "input": CLIENT_KEY}),
            ("POST", "/v1/responses", {"model": "m1", "input": CLIENT_KEY}),
            ("POST", "/v1/responses", {"model": "m1", "input": CLIENT_KEY, "stream": True}),
            ("POST", "/api/chat", leaky),
            ("POST", "/api/generate", {"model": "m1", "prompt": CLIENT_KEY}),
            ("POST", "/api/pull", {"model": "m1", "stream": False}),
            ("GET", "/api/tags", None),
        ]:
            seen.append((await call(s, method, gw.url + path, body))[1])
        for path in ("/admin/endpoints", "/metrics"):
            seen.append((await call(s, "GET", gw.url + path, key=ADMIN_KEY))[1])
        seen.append((await call(s, "GET", gw.url + "/v1/models", key="wrong-" + CLIENT_KEY))[1])
    leaks = [(secret, text[:300]) for text in seen for secret in SECRETS if secret in text]
    assert not leaks
    logged = [orjson.dumps(line).decode() for line in log_lines()]
    assert len([line for line in logged if '"access"' in line]) == len(seen)
    assert not [line for line in logged for secret in SECRETS if secret in line]
