"""The shape of Open Responses objects: required keys, the closed set of event types, and filling a
response object (or item, or content part) up to the specification without dropping unknown keys.

The checks themselves (problems, EVENT_TYPES, REQUIRED_RESPONSE_KEYS) live in
lb.responses.conformance and are re-exported here.
"""

from __future__ import annotations

from typing import Any

from lb.responses.conformance import EVENT_TYPES, REQUIRED_RESPONSE_KEYS, problems

__all__ = [
    "EVENT_TYPES",
    "REQUIRED_RESPONSE_KEYS",
    "complete_item",
    "complete_part",
    "complete_response",
    "complete_text",
    "complete_tool",
    "complete_usage",
    "fallback_item_id",
    "problems",
]

TERMINAL_STATUSES = frozenset({"completed", "failed", "incomplete", "cancelled"})

# Keys the specification forbids to be null, with the value a request that did not set them gets
# (the same defaults OpenAI reports). A response that lacks one takes the request's value first.
NON_NULL_DEFAULTS: dict[str, Any] = {
    "temperature": 1.0,
    "top_p": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "top_logprobs": 0,
    "truncation": "disabled",
    "service_tier": "default",
    "parallel_tool_calls": True,
    "store": True,
    "background": False,
    "tool_choice": "auto",
}
# Nullable keys echoed from the request when the response lacks them.
ECHOED_NULLABLE = (
    "instructions",
    "previous_response_id",
    "user",
    "max_output_tokens",
    "max_tool_calls",
    "safety_identifier",
    "prompt_cache_key",
)
ITEM_ID_PREFIXES = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "reasoning": "rs",
    "compaction": "cmp",
    "custom_tool_call": "ctc",
    "custom_tool_call_output": "ctco",
}


def complete_response(
    obj: dict[str, Any], request: dict[str, Any] | None = None, *, now: int | None = None
) -> dict[str, Any]:
    """A copy of obj with every required key present, taken from obj, else the request, else the
    default. Unknown keys stay. `now` (integer seconds) dates a finished response lacking
    `completed_at`; without it `created_at` does.
    """
    req = request or {}
    resp = dict(obj)
    resp["object"] = "response"
    resp["id"] = resp.get("id") or ""
    resp["created_at"] = _seconds(resp.get("created_at"), now or 0)
    resp["model"] = resp.get("model") or req.get("model") or ""
    if not resp.get("status"):
        resp["status"] = "failed" if resp.get("error") else "completed"
    for key, default in NON_NULL_DEFAULTS.items():
        if resp.get(key) is None:
            value = req.get(key)
            resp[key] = default if value is None else value
    for key in ECHOED_NULLABLE:
        if key not in resp:
            resp[key] = req.get(key)
    _complete_finish(resp, now)
    resp["text"] = complete_text(resp.get("text") or req.get("text"))
    resp["reasoning"] = _complete_reasoning(resp.get("reasoning", req.get("reasoning")))
    tools = resp.get("tools")
    if tools is None:
        tools = req.get("tools") or []
    resp["tools"] = [complete_tool(t) for t in tools]
    if resp.get("metadata") is None:
        resp["metadata"] = req.get("metadata") or {}
    resp["usage"] = complete_usage(resp.get("usage"))
    rid = resp["id"]
    resp["output"] = [
        complete_item(item, fallback_item_id(item, rid, index))
        for index, item in enumerate(resp.get("output") or [])
    ]
    return resp


def _complete_finish(resp: dict[str, Any], now: int | None) -> None:
    """completed_at, incomplete_details and error: present, integer, and well formed."""
    completed_at = resp.get("completed_at")
    if completed_at is not None:
        resp["completed_at"] = _seconds(completed_at, resp["created_at"])
    elif resp["status"] == "completed":
        resp["completed_at"] = now if now is not None else resp["created_at"]
    else:
        resp["completed_at"] = None
    resp.setdefault("incomplete_details", None)
    error = resp.get("error")
    if isinstance(error, dict):
        error = dict(error)
        error["code"] = str(error.get("code") or "server_error")
        error["message"] = str(error.get("message") or "")
        resp["error"] = error
    else:
        resp["error"] = None


def _seconds(value: Any, default: int) -> int:
    """Integer seconds; some backends (vLLM) send floats."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return int(value)


def complete_text(text: Any) -> dict[str, Any]:
    if not isinstance(text, dict):
        return {"format": {"type": "text"}}
    if isinstance(text.get("format"), dict):
        return text
    return {**text, "format": {"type": "text"}}


def _complete_reasoning(reasoning: Any) -> dict[str, Any] | None:
    if not isinstance(reasoning, dict):
        return None
    return {**reasoning, "effort": reasoning.get("effort"), "summary": reasoning.get("summary")}


def complete_tool(tool: Any) -> Any:
    """A function tool with all five keys; other tools (a native backend's own) as they are."""
    if not isinstance(tool, dict) or tool.get("type") != "function":
        return tool
    return {
        **tool,
        "description": tool.get("description"),
        "parameters": tool.get("parameters"),
        "strict": tool.get("strict"),
    }


def complete_usage(usage: Any) -> dict[str, Any] | None:
    """Usage with all five keys and both details. `cache_write_tokens` is not the
    specification's, but OpenAI's own SDK models require it; an extra key harms no one.
    """
    if not isinstance(usage, dict):
        return None
    out = dict(usage)
    out["input_tokens"] = int(out.get("input_tokens") or 0)
    out["output_tokens"] = int(out.get("output_tokens") or 0)
    if not isinstance(out.get("total_tokens"), int):
        out["total_tokens"] = out["input_tokens"] + out["output_tokens"]
    out["input_tokens_details"] = _details(
        out.get("input_tokens_details"), "cached_tokens", "cache_write_tokens"
    )
    out["output_tokens_details"] = _details(out.get("output_tokens_details"), "reasoning_tokens")
    return out


def _details(details: Any, *keys: str) -> dict[str, Any]:
    out = dict(details) if isinstance(details, dict) else {}
    for key in keys:
        out[key] = int(out.get(key) or 0)
    return out


def fallback_item_id(item: Any, response_id: str, output_index: int) -> str:
    """The id of an item its backend sent without one: a function call's `call_id`, else derived
    from the response id and output index, so every event about the item agrees on it.
    """
    item_type = item.get("type") if isinstance(item, dict) else None
    call_id = item.get("call_id") if item_type in ("function_call", "custom_tool_call") else None
    if isinstance(call_id, str) and call_id:
        return call_id
    prefix = ITEM_ID_PREFIXES.get(str(item_type), "item")
    return f"{prefix}_{response_id.removeprefix('resp_')}_{output_index}"


_CALL_TEXT = {
    "function_call": "arguments",
    "function_call_output": "output",
    "custom_tool_call": "input",
    "custom_tool_call_output": "output",
}


def complete_item(item: Any, fallback_id: str, status: str = "completed") -> Any:
    """An output item with its required keys (`id`, `status`, parts' `annotations`...)."""
    if not isinstance(item, dict):
        return item
    out = dict(item)
    if not isinstance(out.get("id"), str) or not out["id"]:
        out["id"] = fallback_id
    kind = out.get("type")
    if kind == "message":
        out.setdefault("role", "assistant")
        out["content"] = [complete_part(p) for p in out.get("content") or []]
    elif kind in _CALL_TEXT:
        out.setdefault(_CALL_TEXT[kind], "")
    elif kind == "reasoning":
        if not isinstance(out.get("summary"), list):
            out["summary"] = []
        for key in ("content", "encrypted_content"):  # optional, but never null
            if key in out and out[key] is None:
                del out[key]
        return out
    if out.get("status") is None and kind != "compaction":
        out["status"] = status
    return out


def complete_part(part: Any) -> Any:
    """An output_text part gets `annotations: []` and `logprobs: []` when it lacks them."""
    if not isinstance(part, dict) or part.get("type") != "output_text":
        return part
    if isinstance(part.get("annotations"), list) and isinstance(part.get("logprobs"), list):
        return part
    return {
        **part,
        "text": part.get("text") or "",
        "annotations": part.get("annotations") or [],
        "logprobs": part.get("logprobs") or [],
    }
