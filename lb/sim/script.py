"""A scripted agent turn for the simulated backend, pure: offered one of the script's tools, the
model calls it with the script's arguments; handed that call's output, it answers quoting it.

That is a whole agent turn (an agent client such as Codex CLI runs the command, sends the output
back, and prints the answer) without a real model. Set `SimBehavior.tool_script` to use it; Chat
Completions (messages) and the Responses API (input items) both follow it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lb.sim.text import Plan, ToolCall, content_text, tool_name


@dataclass(slots=True, frozen=True)
class ToolScript:
    tools: tuple[str, ...]  # the first of these names the request offers is called
    arguments: str  # the call's arguments, a JSON object as a string
    reply_prefix: str = "The tool said: "  # the answer: this, then the tool's output


def scripted_plan(script: ToolScript | None, tools: Any, conversation: Any,
                  prompt_tokens: int) -> Plan | None:
    """The plan the script makes for this request; None when it has nothing to say (no script,
    no scripted tool offered and no tool output to quote)."""
    if script is None:
        return None
    output = last_tool_output(conversation)
    if output is not None:
        reply = script.reply_prefix + output
        return Plan(len(reply.split()), "stop", prompt_tokens, reply=reply)
    offered = {tool_name(t) for t in tools} if isinstance(tools, list) else set()
    name = next((n for n in script.tools if n in offered), None)
    if name is None:
        return None
    arguments = script.arguments
    third = max(len(arguments) // 3, 1)
    fragments = (arguments[:third], arguments[third : 2 * third], arguments[2 * third :])
    return Plan(0, "tool_calls", prompt_tokens, ToolCall(name, arguments, fragments))


def last_tool_output(conversation: Any) -> str | None:
    """The output the conversation ends with: a Chat `tool` message or a Responses
    `function_call_output` item; None when it ends otherwise."""
    if not isinstance(conversation, list) or not conversation:
        return None
    last = conversation[-1]
    if not isinstance(last, dict):
        return None
    if last.get("role") == "tool":
        return content_text(last.get("content"))
    if last.get("type") in ("function_call_output", "custom_tool_call_output"):
        output = last.get("output")
        return output if isinstance(output, str) else content_text(output)
    return None
