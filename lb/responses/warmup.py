"""A warm-up turn (`generate: false`, sent by Codex CLI as the first message of a WebSocket
session), pure: an empty, completed response that no backend was asked for.

OpenAI answers it without generating; sending it on would make the backend answer a whole
(~12k token) prompt for nothing. Its id can be continued like any other response.
"""

from __future__ import annotations

from typing import Any

from lb.responses.shape import complete_response

Json = dict[str, Any]


def is_warm_up(request: Json) -> bool:
    return request.get("generate") is False


def warm_up_events(request: Json, response_id: str, created_at: int) -> list[Json]:
    """response.created, response.in_progress, response.completed; the last holds the final
    response (output [], usage zero)."""
    base = {"id": response_id, "created_at": created_at, "status": "in_progress",
            "completed_at": None, "output": [], "usage": None, "service_tier": "default"}
    started = complete_response(base, request)
    final = complete_response({**base, "status": "completed", "completed_at": created_at,
                               "usage": {"input_tokens": 0, "output_tokens": 0,
                                         "total_tokens": 0}}, request)
    kinds = (("response.created", started), ("response.in_progress", started),
             ("response.completed", final))
    return [{"type": kind, "sequence_number": number, "response": snapshot}
            for number, (kind, snapshot) in enumerate(kinds)]
