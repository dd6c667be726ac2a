from typing import Any

import pytest

from lb.responses.conformance import (
    CUSTOM_TOOL_EVENT_TYPES,
    EVENT_FIELDS,
    EVENT_TYPES,
    REQUIRED_RESPONSE_KEYS,
    SPEC_EVENT_TYPES,
    problems,
)
from lb.responses.shape import complete_response


def test_the_closed_set_has_24_event_types_plus_custom_tools_and_each_has_its_fields() -> None:
    assert len(SPEC_EVENT_TYPES) == 24
    assert EVENT_TYPES == SPEC_EVENT_TYPES | CUSTOM_TOOL_EVENT_TYPES
    assert {
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done",
    } == CUSTOM_TOOL_EVENT_TYPES
    assert EVENT_FIELDS.keys() == EVENT_TYPES
    assert len(REQUIRED_RESPONSE_KEYS) == len(set(REQUIRED_RESPONSE_KEYS)) == 32


def _good_response() -> dict[str, Any]:
    return complete_response({"id": "resp_1", "created_at": 1}, {"model": "m"})


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: r.pop("temperature"), "response.temperature: missing"),
        (lambda r: r.update(temperature=None), "response.temperature: expected a number"),
        (lambda r: r.update(top_logprobs=1.5), "response.top_logprobs: expected an integer"),
        (lambda r: r.update(created_at=True), "response.created_at: expected an integer"),
        (lambda r: r.update(status="done"), "response.status: expected one of"),
        (lambda r: r.update(truncation=None), "response.truncation"),
        (lambda r: r.update(text=None), "response.text: expected an object"),
        (lambda r: r.update(service_tier=None), "response.service_tier"),
        (lambda r: r.update(tools=[{"type": "function", "name": "f"}]), "response.tools[0].strict"),
        (
            lambda r: r.update(usage={"input_tokens": 1, "output_tokens": 1, "total_tokens": 2}),
            "response.usage.input_tokens_details: missing",
        ),
        (
            lambda r: r.update(
                output=[
                    {
                        "type": "message",
                        "id": "m",
                        "status": "completed",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": "x"}],
                    }
                ]
            ),
            "response.output[0].content[0].annotations: missing",
        ),
        (
            lambda r: r.update(
                output=[{"type": "reasoning", "id": "r", "summary": [], "encrypted_content": None}]
            ),
            "response.output[0].encrypted_content: expected a string",
        ),
        (
            lambda r: r.update(
                output=[
                    {
                        "type": "function_call",
                        "id": "f",
                        "call_id": "c",
                        "name": "n",
                        "arguments": "{}",
                        "status": "done",
                    }
                ]
            ),
            "response.output[0].status",
        ),
        (
            lambda r: r.update(output=[{"type": "web_search_call", "id": "w"}]),
            "response.output[0].type: unknown item type",
        ),
        (lambda r: r.update(error={"message": "x"}), "response.error.code: missing"),
    ],
)
def test_problems_finds_each_broken_field(change: Any, expected: str) -> None:
    resp = _good_response()
    change(resp)
    found = problems(resp)
    assert any(expected in p for p in found), found


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            {
                "type": "response.output_text.delta",
                "item_id": "m",
                "output_index": 0,
                "content_index": 0,
                "delta": "x",
                "logprobs": [],
            },
            "sequence_number: missing",
        ),
        (
            {
                "type": "response.output_text.delta",
                "sequence_number": 1,
                "item_id": "m",
                "output_index": 0,
                "content_index": 0,
                "delta": "x",
            },
            "logprobs: missing",
        ),
        (
            {"type": "response.reasoning_text.delta", "sequence_number": 1},
            "is not one of the specification's event types",
        ),
        ({"type": "error", "sequence_number": 1, "error": {"message": "m"}}, "error.error.type"),
        (
            {
                "type": "response.function_call_arguments.done",
                "sequence_number": 1,
                "item_id": "f",
                "arguments": "{}",
            },
            "output_index: missing",
        ),
        (
            {"type": "response.created", "sequence_number": 0, "response": {"object": "response"}},
            "response.created.response.id: missing",
        ),
        (
            {
                "type": "response.content_part.added",
                "sequence_number": 0,
                "item_id": "m",
                "output_index": 0,
                "content_index": 0,
                "part": {"type": "output_text", "text": ""},
            },
            "part.annotations: missing",
        ),
        ("not a dict", "expected an object"),
    ],
)
def test_problems_checks_events(event: Any, expected: str) -> None:
    found = problems(event)
    assert any(expected in p for p in found), found


def test_a_conforming_event_and_item_have_no_problems() -> None:
    assert (
        problems(
            {
                "type": "response.output_item.added",
                "sequence_number": 2,
                "output_index": 0,
                "item": {
                    "type": "function_call",
                    "id": "fc_1",
                    "call_id": "c",
                    "name": "f",
                    "arguments": "",
                    "status": "in_progress",
                },
            }
        )
        == []
    )
    assert problems({"type": "compaction", "id": "cmp_1", "encrypted_content": "x"}) == []
    assert (
        problems(
            {
                "type": "error",
                "sequence_number": 0,
                "error": {"type": "server_error", "code": None, "message": "m", "param": None},
            }
        )
        == []
    )
