"""An agent's tools through fleetlb in translate mode, with the official openai SDK streaming:
a custom (freeform) tool and a namespaced function, called by the scripted simulated backend,
come back as the client declared them, and their outputs go back to the backend."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from lb.responses.freeform import custom_arguments
from lb.responses.shape import problems
from lb.sim.script import ToolScript
from tests.conftest import Gateway, GatewayFactory, Sim, SimFactory, endpoint
from tests.gateway.test_responses_api import raw_events
from tests.responses.test_stream import check_events

KEY = "sk-test"
PATCH = '*** Begin Patch\n*** Add File: hello.txt\n+say "hi"\n*** End Patch'
TOOLS: list[Any] = [
    {"type": "custom", "name": "apply_patch", "description": "Edit files",
     "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/s"}},
    {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents",
     "tools": [{"type": "function", "name": "spawn_agent",
                "parameters": {"type": "object", "properties": {"task": {"type": "string"}}}}]},
    {"type": "web_search"},
]


async def setup(start_sim: SimFactory, start_gateway: GatewayFactory,
                script: ToolScript) -> tuple[Sim, Gateway]:
    sim = await start_sim("m1", responses=False)
    sim.behavior.tool_script = script
    gw = await start_gateway({"server": {"api_keys": [KEY]},
                              "endpoints": [endpoint("a", sim, responses="translate")]})
    return sim, gw


def chats(sim: Sim) -> list[dict[str, Any]]:
    return [r.json() for r in sim.behavior.requests if r.path == "/v1/chat/completions"]


async def test_a_custom_tool_call_streams_as_custom_tool_call_events_and_its_output_returns(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sim, gw = await setup(start_sim, start_gateway,
                          ToolScript(("apply_patch",), custom_arguments(PATCH), "Patched: "))
    client = gw.openai()
    # the SDK parses every event of the stream (custom tool call events included) ...
    stream = await client.responses.create(model="m1", input="fix it", tools=TOOLS, stream=True)
    parsed = [event.type async for event in stream]
    # ... and on the wire the events conform, in the specification's order (tests/responses)
    events = await raw_events(gw, {"model": "m1", "input": "fix it", "tools": TOOLS})
    check_events(events)
    types = [e["type"] for e in events]
    assert parsed == types
    assert "response.custom_tool_call_input.delta" in types
    assert "".join(e["delta"] for e in events
                   if e["type"] == "response.custom_tool_call_input.delta") == PATCH
    done = next(e for e in events if e["type"] == "response.custom_tool_call_input.done")
    assert done["input"] == PATCH
    final = events[-1]["response"]
    call = final["output"][0]
    assert (call["type"], call["name"], call["input"]) == ("custom_tool_call", "apply_patch",
                                                           PATCH)
    assert [t["type"] for t in final["tools"]] == ["custom", "namespace"]  # web_search dropped
    assert chats(sim)[0] == chats(sim)[1]  # the same request twice: the SDK's, then ours
    offered = chats(sim)[0]["tools"]
    assert [t["function"]["name"] for t in offered] == ["apply_patch",
                                                        "multi_agent_v1__spawn_agent"]
    second = await client.responses.create(
        model="m1", previous_response_id=final["id"], tools=TOOLS,  # type: ignore[arg-type]
        input=[{"type": "custom_tool_call_output", "call_id": call["call_id"],
                "output": "Done!"}])
    assert second.output_text == "Patched: Done!"
    messages = chats(sim)[2]["messages"]
    assert messages[-2]["tool_calls"][0]["function"] == {"name": "apply_patch",
                                                         "arguments": custom_arguments(PATCH)}
    assert messages[-1] == {"role": "tool", "tool_call_id": call["call_id"], "content": "Done!"}


async def test_a_namespaced_call_comes_back_with_its_namespace_and_the_drop_is_said(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    _, gw = await setup(start_sim, start_gateway,
                        ToolScript(("multi_agent_v1__spawn_agent",), '{"task": "tests"}'))
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as s, \
            s.post(gw.url + "/v1/responses", json={
                "model": "m1", "input": "go", "tools": TOOLS, "client_metadata": {"a": "b"},
                "include": ["reasoning.encrypted_content"], "store": False}) as resp:
        body = orjson.loads(await resp.read())
        dropped = resp.headers.get("x-fleetlb-dropped")
    assert resp.status == 200, body
    assert dropped == "client_metadata,tools[2]:web_search"
    assert problems(body) == []
    call = body["output"][0]
    assert (call["type"], call["namespace"], call["name"], call["arguments"]) == (
        "function_call", "multi_agent_v1", "spawn_agent", '{"task": "tests"}')


async def test_prompt_cache_key_reaches_only_backends_that_take_it(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    openai_sim = await start_sim("m1", responses=False)
    vllm_sim = await start_sim("m2", responses=False, kind="vllm")
    gw = await start_gateway({"server": {"api_keys": [KEY]}, "endpoints": [
        endpoint("openai", openai_sim, ("m1",), responses="translate", kind="openai"),
        endpoint("vllm", vllm_sim, ("m2",), responses="translate", kind="vllm")]})
    client = gw.openai()
    for model in ("m1", "m2"):
        await client.responses.create(model=model, input="hi", prompt_cache_key="session-7")
    assert chats(openai_sim)[0]["prompt_cache_key"] == "session-7"
    assert "prompt_cache_key" not in chats(vllm_sim)[0]
