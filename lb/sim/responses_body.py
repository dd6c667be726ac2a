"""Open Responses objects and events for one simulated response: the response object with every
required field, its output items, and the streaming event sequence with its sequence numbers.
Pure: the handler decides when each event is written."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from lb.sim import text

# Request fields echoed on the response object, with the value used when the request leaves them
# out or sends null (the specification forbids null for the non-None defaults).
ECHO_DEFAULTS: dict[str, Any] = {
    "previous_response_id": None,
    "instructions": None,
    "tool_choice": "auto",
    "truncation": "disabled",
    "parallel_tool_calls": True,
    "text": {"format": {"type": "text"}},
    "temperature": 1.0,
    "top_p": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "top_logprobs": 0,
    "reasoning": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "store": True,
    "background": False,
    "service_tier": "default",
    "metadata": {},
    "safety_identifier": None,
    "prompt_cache_key": None,
}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def echo_fields(body: dict[str, Any]) -> dict[str, Any]:
    echo = {
        k: (default if body.get(k) is None else body[k]) for k, default in ECHO_DEFAULTS.items()
    }
    echo["tools"] = function_tools(body.get("tools"))
    return echo


def function_tools(raw: Any) -> list[dict[str, Any]]:
    """Function tools with all five keys; other tool types are not the simulator's business."""
    if not isinstance(raw, list):
        return []
    return [
        {
            "type": "function",
            "name": t.get("name"),
            "description": t.get("description"),
            "parameters": t.get("parameters"),
            "strict": t.get("strict"),
        }
        for t in raw
        if isinstance(t, dict) and t.get("type") == "function"
    ]


def input_items(raw: Any) -> list[dict[str, Any]]:
    """The request's `input` as stored items, each with an id, as `input_items` lists them."""
    if isinstance(raw, str):
        raw = [{"role": "user", "content": [{"type": "input_text", "text": raw}]}]
    items = []
    for item in raw or []:
        if isinstance(item, dict):
            items.append({"type": "message", **item, "id": item.get("id") or new_id("msg")})
    return items


def items_text(items: list[dict[str, Any]]) -> str:
    return " ".join(text.content_text(i.get("content")) + str(i.get("output", "")) for i in items)


def usage(input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached_tokens},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def _text_part(content: str) -> dict[str, Any]:
    return {"type": "output_text", "text": content, "annotations": [], "logprobs": []}


@dataclass(slots=True)
class ResponseRun:
    """One response from creation to its terminal state."""

    model: str
    echo: dict[str, Any]
    plan: text.Plan
    created_at: int
    id: str = field(default_factory=lambda: new_id("resp"))
    item_id: str = ""
    call_id: str = field(default_factory=lambda: new_id("call"))
    sequence_number: int = 0
    status: str = "in_progress"
    output: list[dict[str, Any]] = field(default_factory=list)
    completed_at: int | None = None
    cached_tokens: int = 0  # prompt tokens the KV-cache model found cached (lb/sim/kvcache.py)

    def __post_init__(self) -> None:
        self.item_id = new_id("fc" if self.plan.tool_call else "msg")

    @property
    def is_incomplete(self) -> bool:
        return self.plan.finish == "length"

    def snapshot(self) -> dict[str, Any]:
        done = self.completed_at is not None
        details = {"reason": "max_output_tokens"} if done and self.is_incomplete else None
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "completed_at": self.completed_at,
            "status": self.status,
            "incomplete_details": details,
            "model": self.model,
            "output": list(self.output),
            "error": None,
            **self.echo,
            "usage": usage(self.plan.prompt_tokens, self.plan.completion_tokens,
                           self.cached_tokens) if done else None,
        }

    def event(self, event_type: str, **fields: Any) -> dict[str, Any]:
        event = {"type": event_type, "sequence_number": self.sequence_number, **fields}
        self.sequence_number += 1
        return event

    def _where(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "output_index": 0}

    def item(self, status: str) -> dict[str, Any]:
        call = self.plan.tool_call
        if call:
            arguments = call.arguments if status != "in_progress" else ""
            return {
                "type": "function_call",
                "id": self.item_id,
                "call_id": self.call_id,
                "name": call.name,
                "arguments": arguments,
                "status": status,
            }
        content = (
            [_text_part(self.plan.answer())] if status != "in_progress" else []
        )
        return {
            "type": "message",
            "id": self.item_id,
            "status": status,
            "role": "assistant",
            "content": content,
        }

    def opening(self) -> list[dict[str, Any]]:
        events = [
            self.event("response.created", response=self.snapshot()),
            self.event("response.in_progress", response=self.snapshot()),
            self.event("response.output_item.added", output_index=0, item=self.item("in_progress")),
        ]
        if not self.plan.tool_call:
            events.append(
                self.event(
                    "response.content_part.added",
                    **self._where(),
                    content_index=0,
                    part=_text_part(""),
                )
            )
        return events

    def deltas(self) -> list[str]:
        """The pieces streamed one per token: answer tokens, or tool-call argument fragments."""
        call = self.plan.tool_call
        return list(call.fragments) if call else self.plan.pieces()

    def delta(self, piece: str) -> dict[str, Any]:
        if self.plan.tool_call:
            return self.event(
                "response.function_call_arguments.delta", **self._where(), delta=piece
            )
        return self.event(
            "response.output_text.delta", **self._where(), content_index=0, delta=piece, logprobs=[]
        )

    def finish(self, now: int) -> dict[str, Any]:
        """Move to the terminal state; the final response object."""
        item_status = "incomplete" if self.is_incomplete else "completed"
        self.output = [self.item(item_status)]
        self.status = item_status
        self.completed_at = now
        return self.snapshot()

    def closing(self, now: int) -> list[dict[str, Any]]:
        final = self.finish(now)
        item = self.output[0]
        if self.plan.tool_call:
            events = [
                self.event(
                    "response.function_call_arguments.done",
                    **self._where(),
                    name=item["name"],
                    arguments=item["arguments"],
                )
            ]
        else:
            part = item["content"][0]
            events = [
                self.event(
                    "response.output_text.done",
                    **self._where(),
                    content_index=0,
                    text=part["text"],
                    logprobs=[],
                ),
                self.event(
                    "response.content_part.done", **self._where(), content_index=0, part=part
                ),
            ]
        events.append(self.event("response.output_item.done", output_index=0, item=item))
        terminal = "response.incomplete" if self.is_incomplete else "response.completed"
        events.append(self.event(terminal, response=final))
        return events
