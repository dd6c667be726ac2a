"""cache_aware through the real gateway: conversations stick to their KV cache, and say so."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp

from tests.conftest import GatewayFactory, SimFactory, endpoint

KEY, ADMIN = "sk-test", "adm"
SYSTEM = "You are the agent of a shared fleet. Follow the house rules closely. " * 40


def cache_config(sims: list[Any]) -> dict[str, Any]:
    return {"server": {"api_keys": [KEY], "admin_key": ADMIN},
            "endpoints": [endpoint(f"e{i}", sim) for i, sim in enumerate(sims)],
            "models": [{"name": "m1", "strategy": "cache_aware",
                        "cache_aware": {"cache_threshold": 0.3, "max_map_bytes": 1 << 20}}]}


async def test_chat_turns_follow_their_history(
        start_sim: SimFactory, start_gateway: GatewayFactory,
        log_lines: Callable[[], list[dict[str, Any]]]) -> None:
    sims = [await start_sim("m1") for _ in range(3)]
    gw = await start_gateway(cache_config(sims))
    client = gw.openai()
    owners: dict[int, set[str]] = {}
    for turn in range(3):
        for conv in range(4):
            messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
            for t in range(turn + 1):
                messages.append({"role": "user", "content": f"conversation {conv} turn {t} " * 40})
                if t < turn:
                    messages.append({"role": "assistant", "content": f"answer {conv} {t} " * 40})
            raw = await client.chat.completions.with_raw_response.create(
                model="m1", messages=messages, max_tokens=2)  # type: ignore[arg-type]
            route = raw.headers["x-fleetlb-route"]
            assert route.startswith("cache_aware;")
            owners.setdefault(conv, set()).add(raw.headers["x-fleetlb-endpoint"])
            if turn:
                assert route.startswith("cache_aware;matched="), route
    assert all(len(eps) == 1 for eps in owners.values()), owners  # each stayed where it began
    access = [line for line in log_lines() if line["event"] == "access"]
    assert all(line["route"].startswith("cache_aware;") for line in access)
    async with aiohttp.ClientSession() as session, session.get(
            gw.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
        text = await resp.text()
    counts = {line.split("reason=")[1].split('"')[1]: float(line.rsplit(" ", 1)[1])
              for line in text.splitlines() if line.startswith("fleetlb_route_decisions_total")}
    assert counts["prefix"] >= 8  # every follow-up, and new ones that found the system prompt
    assert sum(counts.values()) == 12


async def test_responses_follow_ups_route_on_the_stored_history(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sims = [await start_sim("m1") for _ in range(2)]
    gw = await start_gateway(cache_config(sims))
    client = gw.openai()
    raw = await client.responses.with_raw_response.create(
        model="m1", instructions=SYSTEM, input="first question " * 60, max_output_tokens=3)
    first = raw.parse()
    owner = raw.headers["x-fleetlb-endpoint"]
    previous = first.id
    for turn in range(3):
        raw = await client.responses.with_raw_response.create(
            model="m1", instructions=SYSTEM, input=f"follow-up {turn} " * 60,
            previous_response_id=previous, max_output_tokens=3)
        assert raw.headers["x-fleetlb-mode"] == "translate"
        assert raw.headers["x-fleetlb-route"].startswith("cache_aware;matched=")
        assert raw.headers["x-fleetlb-endpoint"] == owner
        previous = raw.parse().id


async def test_the_default_is_cache_aware_for_generation_and_not_for_embeddings(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sims = [await start_sim("m1") for _ in range(2)]
    gw = await start_gateway({"server": {"api_keys": [KEY]},
                              "endpoints": [endpoint(f"e{i}", s) for i, s in enumerate(sims)]})
    client = gw.openai()
    chat = await client.chat.completions.with_raw_response.create(
        model="m1", messages=[{"role": "user", "content": SYSTEM}], max_tokens=1)
    completion = await client.completions.with_raw_response.create(
        model="m1", prompt=SYSTEM, max_tokens=1)
    response = await client.responses.with_raw_response.create(
        model="m1", input=SYSTEM, max_output_tokens=1)
    embedding = await client.embeddings.with_raw_response.create(model="m1", input=SYSTEM)
    for raw in (chat, completion, response):
        assert raw.headers["x-fleetlb-route"].startswith("cache_aware;")
    assert "x-fleetlb-route" not in embedding.headers
