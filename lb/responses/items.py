"""A request's input as the specification's items, each with an id and a status: what
`GET /v1/responses/{id}/input_items` lists and what a stored conversation keeps.
"""

from __future__ import annotations

from typing import Any

from lb.responses.ids import IdMaker
from lb.responses.shape import ITEM_ID_PREFIXES

Json = dict[str, Any]


_WITH_STATUS = frozenset({"message", "function_call", "function_call_output", "custom_tool_call"})


def input_items(request: Json, ids: IdMaker) -> list[Json]:
    """The input of a request that to_chat_request accepted, as items; a string input is one
    user message. Items keep their own ids and unknown keys; compaction items stay sealed.
    """
    given = request.get("input")
    if isinstance(given, str):
        given = [{"type": "message", "role": "user", "content": given}]
    return [_item(item, ids) for item in given or [] if isinstance(item, dict)]


def _item(item: Json, ids: IdMaker) -> Json:
    out = dict(item)
    kind = out.setdefault("type", "message")
    if kind == "message" and isinstance(out.get("content"), str):
        text = out["content"]
        out["content"] = [
            {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            if out.get("role") == "assistant"
            else {"type": "input_text", "text": text}
        ]
    if kind in _WITH_STATUS and not out.get("status"):
        out["status"] = "completed"
    if not out.get("id"):
        out["id"] = ids.make(ITEM_ID_PREFIXES.get(kind, "item"))
    return out
