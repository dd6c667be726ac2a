import copy
from typing import Any

import pytest

from lb.responses.shape import (
    REQUIRED_RESPONSE_KEYS,
    complete_item,
    complete_part,
    complete_response,
    fallback_item_id,
    problems,
)


def test_an_empty_object_becomes_a_conforming_response() -> None:
    resp = complete_response({"id": "resp_1", "created_at": 5}, {"model": "m"})
    assert problems(resp) == []
    assert set(REQUIRED_RESPONSE_KEYS) <= resp.keys()
    assert resp["temperature"] == 1.0
    assert resp["top_p"] == 1.0
    assert resp["presence_penalty"] == 0.0
    assert resp["frequency_penalty"] == 0.0
    assert resp["top_logprobs"] == 0
    assert resp["service_tier"] == "default"
    assert resp["truncation"] == "disabled"
    assert resp["text"] == {"format": {"type": "text"}}
    assert resp["completed_at"] == 5  # finished without completed_at: created_at stands in
    assert resp["model"] == "m"


@pytest.mark.parametrize(
    ("given", "request_", "key", "expected"),
    [
        ({"temperature": None}, {"temperature": 0.2}, "temperature", 0.2),
        ({"temperature": 0.7}, {"temperature": 0.2}, "temperature", 0.7),
        ({"top_logprobs": None}, None, "top_logprobs", 0),
        ({"service_tier": None}, {"service_tier": "auto"}, "service_tier", "auto"),
        ({"truncation": None}, {}, "truncation", "disabled"),
        (
            {"text": None},
            {"text": {"format": {"type": "json_object"}}},
            "text",
            {"format": {"type": "json_object"}},
        ),
        (
            {"text": {"verbosity": "low"}},
            None,
            "text",
            {"verbosity": "low", "format": {"type": "text"}},
        ),
        ({}, {"instructions": "be brief"}, "instructions", "be brief"),
        ({"instructions": None}, {"instructions": "x"}, "instructions", None),
        ({}, {"metadata": {"a": "b"}}, "metadata", {"a": "b"}),
        ({"metadata": None}, None, "metadata", {}),
        ({}, {"reasoning": {"effort": "low"}}, "reasoning", {"effort": "low", "summary": None}),
        ({"created_at": 1756274867.0}, None, "created_at", 1756274867),
        ({"completed_at": 9.5}, None, "completed_at", 9),
        ({"status": "in_progress"}, None, "completed_at", None),
        ({"error": {"message": "boom"}, "status": None}, None, "status", "failed"),
        (
            {"error": {"message": "boom"}},
            None,
            "error",
            {"message": "boom", "code": "server_error"},
        ),
        (
            {"usage": {"input_tokens": 3, "output_tokens": 4}},
            None,
            "usage",
            {
                "input_tokens": 3,
                "output_tokens": 4,
                "total_tokens": 7,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
        ),
        (
            {},
            {"tools": [{"type": "function", "name": "f"}]},
            "tools",
            [
                {
                    "type": "function",
                    "name": "f",
                    "description": None,
                    "parameters": None,
                    "strict": None,
                }
            ],
        ),
        ({"tools": [{"type": "web_search"}]}, None, "tools", [{"type": "web_search"}]),
        ({"x_vendor": {"keep": True}}, None, "x_vendor", {"keep": True}),
    ],
)
def test_complete_response_fills_from_the_response_then_request_then_default(
    given: dict[str, Any], request_: dict[str, Any] | None, key: str, expected: Any
) -> None:
    resp = complete_response({"id": "resp_1", "created_at": 1, **given}, request_)
    assert resp[key] == expected
    assert problems(resp) == []


def test_complete_response_does_not_touch_its_inputs() -> None:
    obj = {
        "id": "resp_1",
        "created_at": 1,
        "output": [
            {
                "type": "message",
                "id": "m",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "hi"}],
            }
        ],
    }
    request = {"model": "m", "tools": [{"type": "function", "name": "f"}]}
    before = copy.deepcopy((obj, request))
    complete_response(obj, request)
    assert (obj, request) == before


def test_output_items_get_ids_statuses_and_annotations() -> None:
    resp = complete_response(
        {
            "id": "resp_abc",
            "created_at": 1,
            "output": [
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "x"}],
                },
                {"type": "function_call", "call_id": "fc_7", "name": "f", "arguments": "{}"},
                {"type": "reasoning", "encrypted_content": None, "content": None},
            ],
        }
    )
    message, call, reasoning = resp["output"]
    assert message["id"] == "msg_abc_0"
    assert message["status"] == "completed"
    assert message["content"][0] == {
        "type": "output_text",
        "text": "x",
        "annotations": [],
        "logprobs": [],
    }
    assert call["id"] == "fc_7"  # llama.cpp: no id, but its call_id names the item's events
    assert reasoning == {"type": "reasoning", "id": "rs_abc_2", "summary": []}
    assert problems(resp) == []


def test_fallback_ids_and_parts() -> None:
    assert fallback_item_id({"type": "message"}, "resp_x", 3) == "msg_x_3"
    assert fallback_item_id({"type": "odd"}, "resp_x", 0) == "item_x_0"
    assert fallback_item_id(None, "resp_x", 0) == "item_x_0"
    part = {"type": "output_text", "text": "a", "annotations": [], "logprobs": []}
    assert complete_part(part) is part
    assert complete_part({"type": "refusal", "refusal": "no"}) == {
        "type": "refusal",
        "refusal": "no",
    }
    assert complete_item("junk", "id") == "junk"
    assert complete_item({"type": "compaction", "encrypted_content": "e"}, "c") == {
        "type": "compaction",
        "encrypted_content": "e",
        "id": "c",
    }
