"""Responses <-> Chat Completions, pure: a Responses request becomes a Chat Completions request
(to_chat_request) and a Chat completion becomes a complete Response object (to_response).

The request side is a closed allowlist: a key or value that a Chat Completions backend cannot
honour is a 400 naming it, never a silent drop (a client asking for web_search must not get an
answer that merely looks searched).
"""

from __future__ import annotations

from typing import Any

import orjson

from lb.errors import BadGateway, BadRequest
from lb.responses.ids import IdMaker
from lb.responses.messages import Expander, MessageBuilder
from lb.responses.output import (
    finish_status,
    function_call_item,
    message_item,
    message_parts,
    reasoning_item,
    reasoning_text,
    text_part,
    usage_of,
)
from lb.responses.shape import complete_response

Json = dict[str, Any]

_NUMBER = (int, float)
TYPES: dict[str, tuple[type, ...]] = {
    "input": (str, list),
    "instructions": (str,),
    "previous_response_id": (str,),
    "tools": (list,),
    "tool_choice": (str, dict),
    "parallel_tool_calls": (bool,),
    "text": (dict,),
    "max_output_tokens": (int,),
    "temperature": _NUMBER,
    "top_p": _NUMBER,
    "presence_penalty": _NUMBER,
    "frequency_penalty": _NUMBER,
    "reasoning": (dict,),
    "user": (str,),
    "metadata": (dict,),
    "store": (bool,),
    "include": (list,),
    "prompt_cache_key": (str,),
    "service_tier": (str,),
    "truncation": (str,),
    "safety_identifier": (str,),
    "stream": (bool,),
    "stream_options": (dict,),
    "top_logprobs": (int,),
    "background": (bool,),
    "model": (str,),
}
# Every top-level key translate mode accepts (max_tool_calls only as null); others are refused.
# Accepted but only echoed in the response, not sent to the backend: metadata; store (fleetlb's
# own store honours it); include (there is never encrypted reasoning to include); prompt_cache_key
# (routing affinity uses it); service_tier (the response reports "default", the tier used);
# truncation ("auto" is echoed, but a backend refuses an over-long input rather than truncating
# it); safety_identifier; stream_options.include_obfuscation (no padding is ever added);
# reasoning.summary (no summaries: reasoning comes back as reasoning_text content).
ACCEPTED_KEYS = frozenset({*TYPES, "max_tool_calls"})
CHOICES: dict[str, frozenset[Any]] = {
    "service_tier": frozenset({"auto", "default", "flex", "priority"}),
    "truncation": frozenset({"auto", "disabled"}),
    "include": frozenset({"reasoning.encrypted_content", "message.output_text.logprobs"}),
    "reasoning.effort": frozenset({"none", "minimal", "low", "medium", "high", "xhigh"}),
    "reasoning.summary": frozenset({"auto", "concise", "detailed"}),
    "stream_options": frozenset({"include_obfuscation"}),
    "text": frozenset({"format", "verbosity"}),
    "reasoning": frozenset({"effort", "summary"}),
}
# Same meaning, same name or a new one, passed on when set.
SAMPLING = {
    "temperature": "temperature",
    "top_p": "top_p",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "max_output_tokens": "max_tokens",
    "user": "user",
}
MAX_TOP_LOGPROBS = 20  # the specification's range for top_logprobs
LOGPROBS_INCLUDE = "message.output_text.logprobs"


def to_chat_request(
    req: Json,
    *,
    upstream_model: str,
    history: list[Json] | None = None,
    expand_compaction: Expander | None = None,
) -> Json:
    """The Chat Completions request for a Responses request.

    history: the items of the previous responses along the previous_response_id chain (their
    input, then their output), oldest first; they go before this request's input. Compaction
    items are expanded with expand_compaction (none accepted without it). Raises BadRequest.
    """
    _check_request(req)
    chat: Json = {
        "model": upstream_model,
        "messages": _messages(req, history or [], expand_compaction),
    }
    for key, chat_key in SAMPLING.items():
        if req.get(key) is not None:
            chat[chat_key] = req[key]
    _add_tools(chat, req)
    _add_format(chat, req.get("text") or {})
    effort = (req.get("reasoning") or {}).get("effort")
    if effort is not None:
        chat["reasoning_effort"] = effort
    top = req.get("top_logprobs") or 0
    if top or LOGPROBS_INCLUDE in (req.get("include") or []):
        chat["logprobs"] = True
        if top:
            chat["top_logprobs"] = top
    if req.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # usage for the final event
    return chat


def _check_request(req: Json) -> None:
    _check_keys(req)
    if req.get("background"):
        raise BadRequest("background mode is not supported", param="background")
    if req.get("max_tool_calls") is not None:
        raise BadRequest(
            "max_tool_calls cannot be enforced over Chat Completions", param="max_tool_calls"
        )
    if not 0 <= (req.get("top_logprobs") or 0) <= MAX_TOP_LOGPROBS:
        raise BadRequest(f"top_logprobs must be 0 to {MAX_TOP_LOGPROBS}", param="top_logprobs")
    reasoning = req.get("reasoning") or {}
    for key in ("effort", "summary"):
        if reasoning.get(key) is not None and reasoning[key] not in CHOICES[f"reasoning.{key}"]:
            raise BadRequest(
                f"unsupported reasoning.{key} {reasoning[key]!r}", param=f"reasoning.{key}"
            )


def _check_keys(req: Json) -> None:
    """Every key known, of the right type, and (for closed sets) of a known value."""
    for key in sorted(req):
        if key not in ACCEPTED_KEYS:
            raise BadRequest(f"unsupported parameter {key!r}", param=key)
        value = req[key]
        types = TYPES.get(key)
        if value is None or types is None:
            continue
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise BadRequest(f"{key} has the wrong type", param=key)
        allowed = CHOICES.get(key)
        values = value if isinstance(value, list | dict) else [value]
        if allowed is not None and any(v not in allowed for v in values):
            raise BadRequest(f"unsupported value for {key}: {value!r:.200}", param=key)


def _messages(req: Json, history: list[Json], expand: Expander | None) -> list[Json]:
    builder = MessageBuilder(expand)
    if req.get("instructions"):
        builder.add_text("system", req["instructions"])
    first = len(builder.messages)
    for item in history:
        builder.add(item, "previous_response_id")
    given = req.get("input")
    if isinstance(given, str):
        builder.add_text("user", given)
    for index, item in enumerate(given if isinstance(given, list) else []):
        builder.add(item, f"input[{index}]")
    if len(builder.messages) == first:
        raise BadRequest("input is required (and must not be empty)", param="input")
    return builder.messages


def _add_tools(chat: Json, req: Json) -> None:
    tools = [_tool(tool, f"tools[{index}]") for index, tool in enumerate(req.get("tools") or [])]
    choice = req.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = _allowed_names(choice, tools)
        tools = [tool for tool in tools if tool["function"]["name"] in allowed]
        choice = choice.get("mode") or "auto"
    if choice is not None:
        choice = _tool_choice(choice, {tool["function"]["name"] for tool in tools})
    if not tools:
        return  # backends refuse tool_choice and parallel_tool_calls without tools
    chat["tools"] = tools
    if choice is not None:
        chat["tool_choice"] = choice
    if req.get("parallel_tool_calls") is not None:
        chat["parallel_tool_calls"] = req["parallel_tool_calls"]


def _tool(tool: Any, param: str) -> Json:
    kind = tool.get("type") if isinstance(tool, dict) else None
    if kind != "function":
        raise BadRequest(
            f"tools of type {kind!r} are not supported: only function tools can be "
            "served through Chat Completions",
            param=f"{param}.type",
        )
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest("a function tool needs a name", param=f"{param}.name")
    function: Json = {"name": name}
    for key in ("description", "parameters", "strict"):
        if tool.get(key) is not None:
            function[key] = tool[key]
    return {"type": "function", "function": function}


def _allowed_names(choice: Json, tools: list[Json]) -> set[str]:
    names: set[str] = set()
    for index, entry in enumerate(choice.get("tools") or []):
        if not isinstance(entry, dict) or entry.get("type") != "function":
            raise BadRequest(
                "allowed_tools may only name function tools", param=f"tool_choice.tools[{index}]"
            )
        names.add(str(entry.get("name")))
    if not names or not names <= {tool["function"]["name"] for tool in tools}:
        raise BadRequest("allowed_tools must name declared function tools", param="tool_choice")
    return names


def _tool_choice(choice: Any, names: set[str]) -> Any:
    if choice in ("none", "auto"):
        return choice
    if choice == "required" and names:
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        if choice.get("name") not in names:
            raise BadRequest(
                f"tool_choice names an undeclared tool {choice.get('name')!r}", param="tool_choice"
            )
        return {"type": "function", "function": {"name": choice["name"]}}
    raise BadRequest(f"unsupported tool_choice {choice!r:.200}", param="tool_choice")


def _add_format(chat: Json, text: Json) -> None:
    if text.get("verbosity") not in (None, "medium"):
        raise BadRequest(
            "text.verbosity cannot be honoured over Chat Completions (only the default 'medium')",
            param="text.verbosity",
        )
    fmt = text.get("format") or {}
    if not isinstance(fmt, dict):
        raise BadRequest("text.format must be an object", param="text.format")
    kind = fmt.get("type")
    if kind in (None, "text"):
        return
    if kind == "json_object":
        chat["response_format"] = {"type": "json_object"}
        return
    if kind != "json_schema":
        raise BadRequest(f"unsupported text.format {kind!r}", param="text.format.type")
    if not isinstance(fmt.get("schema"), dict):
        raise BadRequest("a json_schema format needs a schema", param="text.format.schema")
    schema: Json = {"name": fmt.get("name") or "response", "schema": fmt["schema"]}
    for key in ("description", "strict"):
        if fmt.get(key) is not None:
            schema[key] = fmt[key]
    chat["response_format"] = {"type": "json_schema", "json_schema": schema}


# ---- Chat completion -> Response object ----


def _arguments(arguments: Any) -> str:
    """A call's arguments as the JSON string both APIs specify; some backends send an object."""
    if arguments is None or isinstance(arguments, str):
        return arguments or ""
    return orjson.dumps(arguments).decode()


def to_response(
    chat: Json,
    *,
    request: Json,
    response_id: str,
    created_at: int,
    ids: IdMaker,
    completed_at: int | None = None,
) -> Json:
    """The complete Response object for a non-streaming Chat completion answering request."""
    choices = chat.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise BadGateway("the backend's chat completion has no choices")
    choice = choices[0]
    message = choice.get("message") or {}
    status, details = finish_status(choice.get("finish_reason"))
    output: list[Json] = []
    reasoning = reasoning_text(message)
    if reasoning:
        output.append(reasoning_item(ids.reasoning(), reasoning))
    parts = message_parts(message, choice.get("logprobs"))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        output.append(
            function_call_item(
                ids.function_call(),
                call.get("id") or ids.call(),
                function.get("name") or "",
                _arguments(function.get("arguments")),
            )
        )
    if parts or not output:
        output.insert(1 if reasoning else 0, message_item(ids.message(), parts or [text_part("")]))
    if status == "incomplete":
        output[-1]["status"] = "incomplete"
    base = {
        "id": response_id,
        "created_at": created_at,
        "status": status,
        "completed_at": created_at if completed_at is None else completed_at,
        "incomplete_details": details,
        "output": output,
        "service_tier": "default",
        "usage": usage_of(chat.get("usage")),
    }
    return complete_response(base, request)
