"""What the Open Responses specification requires of a response object, an output item, a content
part and a streaming event; problems(obj) lists every way obj falls short ([] when it conforms).

Beyond the specification's closed set of 24 event types, the legal set holds OpenAI's two events
of custom (freeform) tool calls, `response.custom_tool_call_input.delta` / `.done`, and the item
types `custom_tool_call` / `custom_tool_call_output`: agent clients (Codex CLI) declare custom
tools and expect their calls in that form, and the OpenAI SDK's event union includes them.

Used by the tests of this package and by the integration tests on what reaches a client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Check = Callable[[Any, str], list[str]]

SPEC_EVENT_TYPES = frozenset(
    {
        "response.created",
        "response.queued",
        "response.in_progress",
        "response.completed",
        "response.failed",
        "response.incomplete",
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_text.delta",
        "response.output_text.done",
        "response.output_text.annotation.added",
        "response.refusal.delta",
        "response.refusal.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.reasoning.delta",
        "response.reasoning.done",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_part.done",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "error",
    }
)
# OpenAI's, for custom tools (see the module docstring)
CUSTOM_TOOL_EVENT_TYPES = frozenset(
    {"response.custom_tool_call_input.delta", "response.custom_tool_call_input.done"}
)
EVENT_TYPES = SPEC_EVENT_TYPES | CUSTOM_TOOL_EVENT_TYPES
RESPONSE_STATUSES = frozenset(
    {
        "queued",
        "in_progress",
        "completed",
        "failed",
        "incomplete",
        "cancelled",
    }
)
ITEM_STATUSES = frozenset({"in_progress", "completed", "incomplete"})
MESSAGE_ROLES = frozenset({"user", "assistant", "system", "developer"})


def _is(test: Callable[[Any], bool], what: str) -> Check:
    def check(value: Any, path: str) -> list[str]:
        return [] if test(value) else [f"{path}: expected {what}, got {value!r:.80}"]

    return check


def _nullable(check: Check) -> Check:
    return lambda value, path: [] if value is None else check(value, path)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


STR = _is(lambda v: isinstance(v, str), "a string")
INT = _is(_is_int, "an integer")
NUM = _is(_is_num, "a number")
BOOL = _is(lambda v: isinstance(v, bool), "a boolean")
LIST = _is(lambda v: isinstance(v, list), "an array")
DICT = _is(lambda v: isinstance(v, dict), "an object")
STATUS = _is(lambda v: v in RESPONSE_STATUSES, f"one of {sorted(RESPONSE_STATUSES)}")
ITEM_STATUS = _is(lambda v: v in ITEM_STATUSES, f"one of {sorted(ITEM_STATUSES)}")
ROLE = _is(lambda v: v in MESSAGE_ROLES, f"one of {sorted(MESSAGE_ROLES)}")
TRUNCATION = _is(lambda v: v in ("auto", "disabled"), "'auto' or 'disabled'")
TOOL_CHOICE = _is(
    lambda v: (
        v in ("none", "auto", "required")
        or (isinstance(v, dict) and isinstance(v.get("type"), str))
    ),
    "a tool choice",
)
OUTPUT = _is(lambda v: isinstance(v, str | list), "a string or an array")


def _fields(spec: tuple[tuple[str, Check], ...]) -> Check:
    """Check that obj is an object holding every key of spec, each passing its check."""

    def check(obj: Any, path: str) -> list[str]:
        if not isinstance(obj, dict):
            return [f"{path}: expected an object, got {obj!r:.80}"]
        found: list[str] = []
        for key, check_value in spec:
            if key not in obj:
                found.append(f"{path}.{key}: missing")
            else:
                found += check_value(obj[key], f"{path}.{key}")
        return found

    return check


def _each(check: Check) -> Check:
    def check_all(value: Any, path: str) -> list[str]:
        if not isinstance(value, list):
            return [f"{path}: expected an array, got {value!r:.80}"]
        return [p for i, v in enumerate(value) for p in check(v, f"{path}[{i}]")]

    return check_all


def _by_type(table: dict[str, Check], what: str) -> Check:
    def check(obj: Any, path: str) -> list[str]:
        kind = obj.get("type") if isinstance(obj, dict) else None
        if kind not in table:
            return [f"{path}.type: unknown {what} type {kind!r:.80}"]
        return table[kind](obj, path)

    return check


PART = _by_type(
    {
        "output_text": _fields((("text", STR), ("annotations", LIST), ("logprobs", LIST))),
        "input_text": _fields((("text", STR),)),
        "text": _fields((("text", STR),)),
        "summary_text": _fields((("text", STR),)),
        "reasoning_text": _fields((("text", STR),)),
        "refusal": _fields((("refusal", STR),)),
        "input_image": _fields((("image_url", _nullable(STR)),)),
        "input_file": _fields(()),
    },
    "content part",
)


def _reasoning_item(obj: Any, path: str) -> list[str]:
    found = _fields((("id", STR), ("summary", _each(PART))))(obj, path)
    if "content" in obj:
        found += _each(PART)(obj["content"], f"{path}.content")
    if "encrypted_content" in obj:  # optional, but a string when present (null is not allowed)
        found += STR(obj["encrypted_content"], f"{path}.encrypted_content")
    return found


ITEM = _by_type(
    {
        "message": _fields(
            (("id", STR), ("status", ITEM_STATUS), ("role", ROLE), ("content", _each(PART)))
        ),
        "function_call": _fields(
            (
                ("id", STR),
                ("call_id", STR),
                ("name", STR),
                ("arguments", STR),
                ("status", ITEM_STATUS),
            )
        ),
        "function_call_output": _fields(
            (("id", STR), ("call_id", STR), ("output", OUTPUT), ("status", ITEM_STATUS))
        ),
        "custom_tool_call": _fields(
            (("id", STR), ("call_id", STR), ("name", STR), ("input", STR), ("status", ITEM_STATUS))
        ),
        "custom_tool_call_output": _fields((("id", STR), ("call_id", STR), ("output", OUTPUT))),
        "reasoning": _reasoning_item,
        "compaction": _fields((("id", STR), ("encrypted_content", STR))),
    },
    "item",
)

FUNCTION_TOOL = _fields(
    (
        ("type", STR),
        ("name", STR),
        ("description", _nullable(STR)),
        ("parameters", _nullable(DICT)),
        ("strict", _nullable(BOOL)),
    )
)


def _tool(tool: Any, path: str) -> list[str]:
    """Function tools need all five keys; a native backend's other tools are its own business."""
    if isinstance(tool, dict) and tool.get("type") != "function":
        return []
    return FUNCTION_TOOL(tool, path)


USAGE = _fields(
    (
        ("input_tokens", INT),
        ("output_tokens", INT),
        ("total_tokens", INT),
        ("input_tokens_details", _fields((("cached_tokens", INT),))),
        ("output_tokens_details", _fields((("reasoning_tokens", INT),))),
    )
)
RESPONSE_FIELDS: tuple[tuple[str, Check], ...] = (
    ("id", STR),
    ("object", _is(lambda v: v == "response", "'response'")),
    ("created_at", INT),
    ("completed_at", _nullable(INT)),
    ("status", STATUS),
    ("incomplete_details", _nullable(_fields((("reason", STR),)))),
    ("model", STR),
    ("previous_response_id", _nullable(STR)),
    ("instructions", _nullable(OUTPUT)),
    ("output", _each(ITEM)),
    ("error", _nullable(_fields((("code", STR), ("message", STR))))),
    ("tools", _each(_tool)),
    ("tool_choice", TOOL_CHOICE),
    ("truncation", TRUNCATION),
    ("parallel_tool_calls", BOOL),
    ("text", _fields((("format", _fields((("type", STR),))),))),
    ("top_p", NUM),
    ("presence_penalty", NUM),
    ("frequency_penalty", NUM),
    ("top_logprobs", INT),
    ("temperature", NUM),
    ("reasoning", _nullable(_fields((("effort", _nullable(STR)), ("summary", _nullable(STR)))))),
    ("user", _nullable(STR)),
    ("usage", _nullable(USAGE)),
    ("max_output_tokens", _nullable(INT)),
    ("max_tool_calls", _nullable(INT)),
    ("store", BOOL),
    ("background", BOOL),
    ("service_tier", STR),
    ("metadata", DICT),
    ("safety_identifier", _nullable(STR)),
    ("prompt_cache_key", _nullable(STR)),
)
REQUIRED_RESPONSE_KEYS = tuple(key for key, _ in RESPONSE_FIELDS)
RESPONSE = _fields(RESPONSE_FIELDS)

_AT_ITEM = (("item_id", STR), ("output_index", INT))
_AT_PART = (*_AT_ITEM, ("content_index", INT))
_AT_SUMMARY = (*_AT_ITEM, ("summary_index", INT))
_SNAPSHOT = (("response", RESPONSE),)
_ITEM_EVENT = (("output_index", INT), ("item", ITEM))
_PART_EVENT = (*_AT_PART, ("part", PART))
_SUMMARY_PART_EVENT = (*_AT_SUMMARY, ("part", PART))
EVENT_FIELDS: dict[str, tuple[tuple[str, Check], ...]] = {
    "response.created": _SNAPSHOT,
    "response.queued": _SNAPSHOT,
    "response.in_progress": _SNAPSHOT,
    "response.completed": _SNAPSHOT,
    "response.failed": _SNAPSHOT,
    "response.incomplete": _SNAPSHOT,
    "response.output_item.added": _ITEM_EVENT,
    "response.output_item.done": _ITEM_EVENT,
    "response.content_part.added": _PART_EVENT,
    "response.content_part.done": _PART_EVENT,
    "response.output_text.delta": (*_AT_PART, ("delta", STR), ("logprobs", LIST)),
    "response.output_text.done": (*_AT_PART, ("text", STR), ("logprobs", LIST)),
    "response.output_text.annotation.added": (
        *_AT_PART,
        ("annotation_index", INT),
        ("annotation", _nullable(DICT)),
    ),
    "response.refusal.delta": (*_AT_PART, ("delta", STR)),
    "response.refusal.done": (*_AT_PART, ("refusal", STR)),
    "response.function_call_arguments.delta": (*_AT_ITEM, ("delta", STR)),
    "response.function_call_arguments.done": (*_AT_ITEM, ("arguments", STR)),
    "response.reasoning.delta": (*_AT_PART, ("delta", STR)),
    "response.reasoning.done": (*_AT_PART, ("text", STR)),
    "response.reasoning_summary_part.added": _SUMMARY_PART_EVENT,
    "response.reasoning_summary_part.done": _SUMMARY_PART_EVENT,
    "response.reasoning_summary_text.delta": (*_AT_SUMMARY, ("delta", STR)),
    "response.reasoning_summary_text.done": (*_AT_SUMMARY, ("text", STR)),
    "response.custom_tool_call_input.delta": (*_AT_ITEM, ("delta", STR)),
    "response.custom_tool_call_input.done": (*_AT_ITEM, ("input", STR)),
    "error": (
        (
            "error",
            _fields(
                (
                    ("type", STR),
                    ("code", _nullable(STR)),
                    ("message", STR),
                    ("param", _nullable(STR)),
                )
            ),
        ),
    ),
}
EVENTS = {kind: _fields((("sequence_number", INT), *spec)) for kind, spec in EVENT_FIELDS.items()}


def problems(obj: Any) -> list[str]:
    """Every way obj (a response object, an output item or a streaming event) breaks the
    specification, as "path: reason" lines; [] when it conforms.
    """
    if not isinstance(obj, dict):
        return [f"$: expected an object, got {obj!r:.80}"]
    if obj.get("object") == "response":
        return RESPONSE(obj, "response")
    kind = obj.get("type")
    if isinstance(kind, str) and (kind in EVENTS):
        return EVENTS[kind](obj, kind)
    if isinstance(kind, str) and kind.startswith("response."):
        return [f"type: {kind!r} is not one of the specification's event types"]
    return ITEM(obj, "item")
