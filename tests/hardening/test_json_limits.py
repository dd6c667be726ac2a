"""JSON nested deeper than lb.nesting allows is a 400 naming the limit, in each surface's own
shape (Ollama's on /api/*, over WebSocket an error message); at the limit it is served, even
through the paths that re-serialise the body (a model rewrite, Responses translation)."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from lb.nesting import MAX_JSON_DEPTH
from tests.conftest import GatewayFactory, SimFactory, endpoint

KEY = "sk-test"
AUTH = {"Authorization": f"Bearer {KEY}"}


def deep(levels: int) -> str:
    """A placeholder for `levels` lists one inside the other (see `encode`)."""
    return f"<deep {levels}>"


def encode(body: dict[str, Any]) -> bytes:
    """The body as JSON, each placeholder written out (by hand: no encoder nests 1,000 deep)."""
    text = orjson.dumps(body).decode()
    while "<deep " in text:
        start = text.index('"<deep ')
        end = text.index('>"', start) + 2
        levels = int(text[start + 7 : end - 2])
        text = text[:start] + "[" * levels + "1" + "]" * levels + text[end:]
    return text.encode()


def bodies(levels: int) -> dict[str, dict[str, Any]]:
    return {
        "/v1/chat/completions": {"model": "alias", "max_tokens": 2,
                                 "messages": [{"role": "user", "content": "hi"}],
                                 "metadata": {"x": deep(levels - 2)}},
        "/v1/responses": {"model": "alias", "input": "hi", "max_output_tokens": 2,
                          "metadata": {"x": deep(levels - 2)},
                          "tools": [{"type": "function", "name": "f",
                                     "parameters": {"type": "object", "x": deep(levels - 4)}}]},
        "/api/chat": {"model": "alias", "stream": False, "options": {"x": deep(levels - 2)},
                      "messages": [{"role": "user", "content": "hi"}]},
    }


async def gateway(start_sim: SimFactory, start_gateway: GatewayFactory) -> Any:
    sim = await start_sim("m1", kind="ollama")
    # the alias makes fleetlb rewrite (re-serialise) every body it forwards
    return await start_gateway({"server": {"api_keys": [KEY]},
                                "endpoints": [endpoint("a", sim, kind="ollama")],
                                "models": [{"name": "alias", "upstream": "m1"}]})


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH + 1, 300, 1000])
async def test_too_deep_is_a_400_naming_the_limit(levels: int, start_sim: SimFactory,
                                                 start_gateway: GatewayFactory) -> None:
    gw = await gateway(start_sim, start_gateway)
    async with aiohttp.ClientSession() as s:
        for path, body in bodies(levels).items():
            async with s.post(gw.url + path, data=encode(body), headers=AUTH) as resp:
                assert resp.status == 400, path
                error = (await resp.json())["error"]
                if path.startswith("/api/"):
                    assert isinstance(error, str) and str(MAX_JSON_DEPTH) in error
                else:
                    assert error["code"] == "json_too_deep"
                    assert str(MAX_JSON_DEPTH) in error["message"]


async def test_at_the_limit_is_served_through_rewrite_and_translation(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    gw = await gateway(start_sim, start_gateway)
    async with aiohttp.ClientSession() as s:
        for path, body in bodies(MAX_JSON_DEPTH).items():
            async with s.post(gw.url + path, data=encode(body), headers=AUTH) as resp:
                assert resp.status == 200, (path, await resp.text())
            async with s.post(gw.url + path, data=encode({**body, "stream": True}),
                              headers=AUTH) as resp:
                assert resp.status == 200, path
                text = await resp.text()
                assert "response.failed" not in text, (path, text[-500:])
                assert 'data: {"error"' not in text and '{"error":"' not in text, path
                assert text.rstrip().endswith("[DONE]") or '"done":true' in text, path


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 500])
async def test_websocket_message_nesting(levels: int, start_sim: SimFactory,
                                         start_gateway: GatewayFactory) -> None:
    gw = await gateway(start_sim, start_gateway)
    message = {"type": "response.create", **bodies(levels)["/v1/responses"]}
    async with aiohttp.ClientSession() as s, s.ws_connect(gw.url + "/v1/responses",
                                                          headers=AUTH) as ws:
        await ws.send_str(encode(message).decode())
        events = []
        while True:
            event = orjson.loads((await ws.receive(timeout=20)).data)
            events.append(event)
            if event["type"] in ("error", "response.completed", "response.incomplete",
                                 "response.failed"):
                break
    if levels <= MAX_JSON_DEPTH:
        assert events[-1]["type"] == "response.incomplete"  # max_output_tokens: 2
    else:
        assert events[-1]["type"] == "error"
        assert events[-1]["error"]["code"] == "json_too_deep"
        assert str(MAX_JSON_DEPTH) in events[-1]["error"]["message"]
