"""Responses <-> Chat Completions, pure: a Responses request becomes a Chat Completions request
(translate_request) and a Chat completion becomes a complete Response object (to_response).

The request side is lenient where it can be and strict where it must: lb.responses.params says
which parameters are sent, dropped (and said) or refused; lb.responses.tools which tools the
backend gets and how their calls come back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from lb.errors import BadGateway, BadRequest
from lb.responses.ids import IdMaker
from lb.responses.messages import Expander, MessageBuilder
from lb.responses.output import (
    finish_status,
    message_item,
    message_parts,
    reasoning_item,
    reasoning_text,
    text_part,
    usage_of,
)
from lb.responses.params import check_params
from lb.responses.shape import complete_response
from lb.responses.tools import ToolTable, call_item, chat_tool_choice, tool_table

Json = dict[str, Any]

# Same meaning, same name or a new one, passed on when set.
SAMPLING = {
    "temperature": "temperature",
    "top_p": "top_p",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "max_output_tokens": "max_tokens",
    "user": "user",
}
LOGPROBS_INCLUDE = "message.output_text.logprobs"


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A translated request: the Chat body, what was not sent (and is said), and the tools' way
    back."""

    body: Json
    dropped: tuple[str, ...]
    tools: ToolTable

    def echo(self, request: Json) -> Json:
        """The request as the response object echoes it: only the tools the model had."""
        if len(self.tools.served) == len(request.get("tools") or ()):
            return request
        return {**request, "tools": self.tools.served}


def to_chat_request(
    req: Json,
    *,
    upstream_model: str,
    history: list[Json] | None = None,
    expand_compaction: Expander | None = None,
) -> Json:
    """The Chat Completions body for a Responses request (see translate_request)."""
    return translate_request(
        req, upstream_model=upstream_model, history=history, expand_compaction=expand_compaction
    ).body


def translate_request(
    req: Json,
    *,
    upstream_model: str,
    history: list[Json] | None = None,
    expand_compaction: Expander | None = None,
) -> ChatRequest:
    """The Chat Completions request for a Responses request.

    history: the items of the previous responses along the previous_response_id chain (their
    input, then their output), oldest first; they go before this request's input. Compaction
    items are expanded with expand_compaction (none accepted without it). Raises BadRequest.
    """
    dropped = check_params(req)
    table = tool_table(req.get("tools"))
    builder = MessageBuilder(expand_compaction, table)
    chat: Json = {"model": upstream_model, "messages": _messages(req, history or [], builder)}
    for key, chat_key in SAMPLING.items():
        if req.get(key) is not None:
            chat[chat_key] = req[key]
    _add_tools(chat, req, table)
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
    return ChatRequest(chat, (*dropped, *table.dropped, *builder.dropped), table)


def _messages(req: Json, history: list[Json], builder: MessageBuilder) -> list[Json]:
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
    messages = builder.finish()
    if len(messages) == first:
        raise BadRequest("input is required (and must not be empty)", param="input")
    return messages


def _add_tools(chat: Json, req: Json, table: ToolTable) -> None:
    choice, allowed = chat_tool_choice(req.get("tool_choice"), table)
    tools = table.functions
    if allowed is not None:
        tools = [tool for tool in tools if tool["function"]["name"] in allowed]
    if not tools:
        return  # backends refuse tool_choice and parallel_tool_calls without tools
    chat["tools"] = tools
    if choice is not None:
        chat["tool_choice"] = choice
    if req.get("parallel_tool_calls") is not None:
        chat["parallel_tool_calls"] = req["parallel_tool_calls"]


def _add_format(chat: Json, text: Json) -> None:
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
    tools: ToolTable | None = None,
) -> Json:
    """The complete Response object for a non-streaming Chat completion answering request;
    tools maps the calls back to the client's tools (none: plain function tools)."""
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
    table = tools or ToolTable()
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        name = function.get("name") or ""
        item_id = ids.make("ctc") if table.lookup(name).kind == "custom" else ids.function_call()
        output.append(
            call_item(
                table, item_id, call.get("id") or ids.call(), name,
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
