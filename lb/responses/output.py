"""Output items of a translated response, built from Chat Completions pieces: message, function
call and reasoning items, content parts, logprobs, usage and the finish status.

Shared by the non-streaming translation (translate.to_response) and the stream state machine.
"""

from __future__ import annotations

from typing import Any

from lb.responses.shape import complete_usage

Json = dict[str, Any]

# Chat finish reasons that cut the answer short, and the reason the specification reports.
INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


def finish_status(finish_reason: Any) -> tuple[str, Json | None]:
    """The response status and incomplete_details for a Chat finish_reason."""
    reason = INCOMPLETE_REASONS.get(finish_reason)
    if reason is None:
        return "completed", None
    return "incomplete", {"reason": reason}


def reasoning_text(message: Json) -> str | None:
    """The reasoning a backend put beside the content: vLLM and llama.cpp say reasoning_content,
    newer vLLM and Ollama say reasoning.
    """
    text = message.get("reasoning_content")
    if text is None:
        text = message.get("reasoning")
    return text if isinstance(text, str) else None


def text_part(text: str, logprobs: list[Json] | None = None) -> Json:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs or []}


def message_item(item_id: str, content: list[Json], status: str = "completed") -> Json:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": content,
    }


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str = "completed"
) -> Json:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def reasoning_item(item_id: str, text: str | None, status: str = "completed") -> Json:
    content = [] if text is None else [{"type": "reasoning_text", "text": text}]
    return {"type": "reasoning", "id": item_id, "summary": [], "content": content, "status": status}


def logprobs_of(chat_logprobs: Any) -> list[Json]:
    """Chat `choice.logprobs` -> the specification's LogProb list (same fields, bytes never
    null).
    """
    if not isinstance(chat_logprobs, dict):
        return []
    return [
        _logprob(entry) for entry in chat_logprobs.get("content") or [] if isinstance(entry, dict)
    ]


def _logprob(entry: Json) -> Json:
    return {
        "token": entry.get("token") or "",
        "logprob": entry.get("logprob") or 0.0,
        "bytes": entry.get("bytes") or [],
        "top_logprobs": [
            {
                "token": top.get("token") or "",
                "logprob": top.get("logprob") or 0.0,
                "bytes": top.get("bytes") or [],
            }
            for top in entry.get("top_logprobs") or []
            if isinstance(top, dict)
        ],
    }


def message_parts(message: Json, chat_logprobs: Any) -> list[Json]:
    """The content parts of the assistant message item: its text, and a refusal if any."""
    parts: list[Json] = []
    content = message.get("content")
    if isinstance(content, list):  # some backends answer with parts, as the request may send
        content = "".join(p.get("text") or "" for p in content if isinstance(p, dict))
    if content:
        parts.append(text_part(content, logprobs_of(chat_logprobs)))
    if message.get("refusal"):
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    return parts


def usage_of(usage: Any) -> Json | None:
    """Chat usage -> Responses usage, details included (zeros where the backend said nothing)."""
    if not isinstance(usage, dict):
        return None
    input_tokens = int(usage.get("prompt_tokens") or 0)
    output_tokens = int(usage.get("completion_tokens") or 0)
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return complete_usage(
        {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": int(usage.get("total_tokens") or input_tokens + output_tokens),
            "input_tokens_details": {"cached_tokens": prompt_details.get("cached_tokens")},
            "output_tokens_details": {
                "reasoning_tokens": completion_details.get("reasoning_tokens")
            },
        }
    )
