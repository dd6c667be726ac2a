"""Native mode: bring a backend's own Responses events and bodies up to the specification.

Known aliases are renamed, missing required fields filled (response snapshots, items, parts,
the indices llama.cpp leaves out), sequence numbers made 0..n-1, and events outside the closed set
dropped and counted. Unknown fields inside objects are kept. Events are changed in place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lb.responses.shape import (
    EVENT_TYPES,
    TERMINAL_STATUSES,
    complete_item,
    complete_part,
    complete_response,
    fallback_item_id,
)

Json = dict[str, Any]

# Names backends use for events the specification names otherwise.
ALIASES = {
    # OpenAI and vLLM name reasoning text events after the part type
    "response.reasoning_text.delta": "response.reasoning.delta",
    "response.reasoning_text.done": "response.reasoning.done",
    # vLLM's own events for reasoning content parts (vllm-project/vllm#24938)
    "response.reasoning_part.added": "response.content_part.added",
    "response.reasoning_part.done": "response.content_part.done",
    # the name the specification's own descriptions give the summary text events
    "response.reasoning_summary.delta": "response.reasoning_summary_text.delta",
    "response.reasoning_summary.done": "response.reasoning_summary_text.done",
}
# The status a snapshot that left it out has, by the event that carries it.
STATUS_OF = {
    "response.created": "in_progress",
    "response.queued": "queued",
    "response.in_progress": "in_progress",
    "response.completed": "completed",
    "response.failed": "failed",
    "response.incomplete": "incomplete",
}
ITEM_EVENTS = frozenset({"response.output_item.added", "response.output_item.done"})
# Events about one content part of an item (they carry content_index).
PART_EVENTS = frozenset(
    {
        "response.content_part.added",
        "response.content_part.done",
        "response.output_text.delta",
        "response.output_text.done",
        "response.output_text.annotation.added",
        "response.refusal.delta",
        "response.refusal.done",
        "response.reasoning.delta",
        "response.reasoning.done",
    }
)
LOGPROB_EVENTS = frozenset({"response.output_text.delta", "response.output_text.done"})
SUMMARY_EVENTS = frozenset(
    {
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_part.done",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
    }
)


def normalize_response(body: Json, request: Json | None = None, *, now: int | None = None) -> Json:
    """A native non-streaming response body, filled up to the specification."""
    return complete_response(_cut_short(body, request), request, now=now)


def _cut_short(snapshot: Json, request: Json | None) -> Json:
    """llama.cpp reports `completed` when it stopped at `max_output_tokens`; the specification
    says `incomplete` with `incomplete_details.reason = "max_output_tokens"`."""
    limit = (request or {}).get("max_output_tokens")
    usage = snapshot.get("usage")
    if (snapshot.get("status") != "completed" or not isinstance(limit, int)
            or not isinstance(usage, dict)):
        return snapshot
    produced = usage.get("output_tokens")
    if not isinstance(produced, int) or produced < limit:
        return snapshot
    return {**snapshot, "status": "incomplete",
            "incomplete_details": {"reason": "max_output_tokens"}}


class EventNormalizer:
    """Fed a backend's parsed Responses events one by one, returns them conforming (or nothing,
    for an event outside the specification; `dropped` counts those, `dropped_types` by name).
    """

    def __init__(
        self, request: Json | None = None, *, clock: Callable[[], float] | None = None
    ) -> None:
        self._request = request
        self._clock = clock
        self._seq = 0
        self.dropped = 0
        self.dropped_types: dict[str, int] = {}
        self.response_id: str | None = None  # from the first snapshot: who owns this response
        self._snapshot: Json | None = None
        self._index_of: dict[str, int] = {}  # item id -> output_index
        self._parts: dict[str, int] = {}  # item id -> content parts added so far
        self._last_item: tuple[str, int] | None = None
        self._next_index = 0
        self.is_done = False  # a terminal snapshot went by

    @property
    def snapshot(self) -> Json | None:
        """The latest response snapshot seen (the final response once the stream is done)."""
        return self._snapshot

    def feed(self, event: Json) -> list[Json]:
        kind = event.get("type")
        kind = ALIASES.get(kind, kind) if isinstance(kind, str) else kind
        if kind not in EVENT_TYPES:
            self.dropped += 1
            name = str(kind)[:100]
            self.dropped_types[name] = self.dropped_types.get(name, 0) + 1
            return []
        event["type"] = kind
        event["sequence_number"] = self._seq
        self._seq += 1
        if kind in STATUS_OF:
            self._fix_snapshot(event)
        elif kind in ITEM_EVENTS:
            self._fix_item_event(event, kind == "response.output_item.added")
        elif kind == "error":
            event["error"] = _error_payload(event)
        else:
            self._locate(event, kind)
        return [event]

    def _fix_snapshot(self, event: Json) -> None:
        snapshot = event.get("response")
        snapshot = snapshot if isinstance(snapshot, dict) else {}
        now = int(self._clock()) if self._clock is not None else None
        if not snapshot.get("id") and self.response_id:
            snapshot = {**snapshot, "id": self.response_id}
        if not snapshot.get("status"):
            snapshot = {**snapshot, "status": STATUS_OF[event["type"]]}
        snapshot = _cut_short(snapshot, self._request)
        if snapshot["status"] == "incomplete" and event["type"] == "response.completed":
            event["type"] = "response.incomplete"
        event["response"] = snapshot = complete_response(snapshot, self._request, now=now)
        self.response_id = self.response_id or snapshot["id"] or None
        self._snapshot = snapshot
        self.is_done = self.is_done or snapshot["status"] in TERMINAL_STATUSES

    def _fix_item_event(self, event: Json, is_added: bool) -> None:
        item = event.get("item")
        index = event.get("output_index")
        if not isinstance(index, int):
            last = self._last_item[1] if self._last_item else 0
            index = self._next_index if is_added else self._index_of.get(_item_id(item), last)
        fallback = fallback_item_id(item, self.response_id or "", index)
        item = complete_item(item, fallback, "in_progress" if is_added else "completed")
        event["output_index"] = index
        event["item"] = item
        if isinstance(item, dict):
            self._index_of[item["id"]] = index
            self._last_item = (item["id"], index)
        self._next_index = max(self._next_index, index + 1)

    def _locate(self, event: Json, kind: str) -> None:
        """Fill item_id, output_index and content_index (or summary_index) when left out."""
        item_id = event.get("item_id")
        if not isinstance(item_id, str):
            item_id = event["item_id"] = self._last_item[0] if self._last_item else ""
        if not isinstance(event.get("output_index"), int):
            event["output_index"] = self._index_of.get(
                item_id, self._last_item[1] if self._last_item else 0
            )
        if kind in PART_EVENTS:
            self._fix_content_index(event, kind, item_id)
            if "part" in event:
                event["part"] = complete_part(event["part"])
        elif kind in SUMMARY_EVENTS and not isinstance(event.get("summary_index"), int):
            event["summary_index"] = 0
        if kind in LOGPROB_EVENTS and not isinstance(event.get("logprobs"), list):
            event["logprobs"] = []

    def _fix_content_index(self, event: Json, kind: str, item_id: str) -> None:
        """content_index names a part that content_part.added announced. llama.cpp leaves it out;
        some vLLM versions count it up with every delta (vllm-project/vllm#35184).
        """
        added = self._parts.get(item_id, 0)
        index = event.get("content_index")
        if kind == "response.content_part.added":
            if not isinstance(index, int):
                index = event["content_index"] = added
            self._parts[item_id] = max(added, index + 1)
        elif not isinstance(index, int) or (added and index >= added):
            event["content_index"] = max(added - 1, 0)

    def fail(
        self, code: str, message: str, *, error_type: str = "server_error", param: str | None = None
    ) -> list[Json]:
        """The backend broke mid-stream: an `error` event, then response.failed (unless the
        response already ended).
        """
        if self.is_done:
            return []
        error = {"type": error_type, "code": code, "message": message, "param": param}
        failed = {
            **(self._snapshot or {}),
            "status": "failed",
            "completed_at": None,
            "error": {"code": code, "message": message},
        }
        return [
            *self.feed({"type": "error", "error": error}),
            *self.feed({"type": "response.failed", "response": failed}),
        ]


def _item_id(item: Any) -> str:
    """The id an item has, or will get: a function call without one takes its call_id."""
    if not isinstance(item, dict):
        return ""
    call_id = item.get("call_id") if item.get("type") == "function_call" else None
    return str(item.get("id") or call_id or "")


def _error_payload(event: Json) -> Json:
    """The specification's {type, code, message, param}; OpenAI puts them on the event itself."""
    error = event.get("error")
    if isinstance(error, dict):
        source, kind = error, error.get("type")
    else:
        source, kind, error = event, None, {}
    code, param = source.get("code"), source.get("param")
    return {
        **error,
        "type": str(kind or "server_error"),
        "code": None if code is None else str(code),
        "message": str(source.get("message") or "the backend failed"),
        "param": param if isinstance(param, str) else None,
    }
