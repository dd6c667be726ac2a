"""The simulated backend's scripted agent turn (lb.sim.script), over both of its APIs."""

from __future__ import annotations

import pytest

from lb.sim.script import ToolScript, scripted_plan
from tests.conftest import GatewayFactory, SimFactory, endpoint

SCRIPT = ToolScript(tools=("shell", "exec_command"), arguments='{"cmd": "ls"}',
                    reply_prefix="Said: ")
TOOLS = [{"type": "function", "function": {"name": "exec_command"}}]


def test_offered_a_scripted_tool_it_calls_it() -> None:
    plan = scripted_plan(SCRIPT, TOOLS, [{"role": "user", "content": "go"}], 3)
    assert plan is not None and plan.tool_call is not None
    assert (plan.tool_call.name, plan.tool_call.arguments) == ("exec_command", '{"cmd": "ls"}')
    assert "".join(plan.tool_call.fragments) == '{"cmd": "ls"}'


@pytest.mark.parametrize("last", [
    {"role": "tool", "tool_call_id": "c", "content": "a.txt b.txt"},
    {"type": "function_call_output", "call_id": "c", "output": "a.txt b.txt"},
    {"type": "function_call_output", "call_id": "c",
     "output": [{"type": "input_text", "text": "a.txt b.txt"}]},
])
def test_handed_the_output_it_quotes_it(last: dict[str, object]) -> None:
    plan = scripted_plan(SCRIPT, TOOLS, [{"role": "user", "content": "go"}, last], 3)
    assert plan is not None and plan.tool_call is None
    assert plan.answer() == "Said: a.txt b.txt"
    assert "".join(plan.pieces()) == plan.answer()


def test_without_a_scripted_tool_or_script_it_has_nothing_to_say() -> None:
    user = [{"role": "user", "content": "go"}]
    assert scripted_plan(SCRIPT, [{"type": "function", "name": "other"}], user, 1) is None
    assert scripted_plan(None, TOOLS, user, 1) is None


async def test_the_turn_through_the_gateway_in_translate_mode(
        start_sim: SimFactory, start_gateway: GatewayFactory) -> None:
    sim = await start_sim("m1", responses=False)
    sim.behavior.tool_script = SCRIPT
    gw = await start_gateway({"endpoints": [endpoint("a", sim, responses="translate")]})
    client = gw.openai()
    tools = [{"type": "function", "name": "exec_command", "parameters": {"type": "object"}}]
    first = await client.responses.create(model="m1", input="go", tools=tools)  # type: ignore[arg-type]
    call = first.output[0]
    assert call.type == "function_call" and call.arguments == '{"cmd": "ls"}'
    stream = await client.responses.create(
        model="m1", previous_response_id=first.id, stream=True,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "a.txt"}])
    events = [event async for event in stream]
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "Said: a.txt"
