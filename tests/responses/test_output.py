from typing import Any

import pytest

from lb.responses.output import (
    finish_status,
    logprobs_of,
    message_parts,
    reasoning_item,
    reasoning_text,
    usage_of,
)


@pytest.mark.parametrize(
    ("reason", "status", "details"),
    [
        ("stop", "completed", None),
        ("tool_calls", "completed", None),
        (None, "completed", None),
        ("function_call", "completed", None),
        ("length", "incomplete", {"reason": "max_output_tokens"}),
        ("content_filter", "incomplete", {"reason": "content_filter"}),
        (7, "completed", None),
    ],
)
def test_finish_status(reason: Any, status: str, details: Any) -> None:
    assert finish_status(reason) == (status, details)


@pytest.mark.parametrize(
    ("message", "text"),
    [
        ({"reasoning_content": "a"}, "a"),
        ({"reasoning": "b"}, "b"),
        ({"reasoning_content": "a", "reasoning": "b"}, "a"),
        ({"reasoning_content": None, "reasoning": "b"}, "b"),
        ({"reasoning": {"effort": "low"}}, None),
        ({}, None),
        ({"reasoning_content": ""}, ""),
    ],
)
def test_reasoning_text(message: dict[str, Any], text: str | None) -> None:
    assert reasoning_text(message) == text


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (None, None),
        ("junk", None),
        ({}, (0, 0, 0, 0, 0)),
        ({"prompt_tokens": 3, "completion_tokens": 4}, (3, 4, 7, 0, 0)),
        (
            {
                "prompt_tokens": 3,
                "completion_tokens": 4,
                "total_tokens": 9,
                "prompt_tokens_details": {"cached_tokens": 2},
                "completion_tokens_details": {"reasoning_tokens": 1},
            },
            (3, 4, 9, 2, 1),
        ),
        (
            {
                "prompt_tokens": None,
                "prompt_tokens_details": None,
                "completion_tokens_details": {"reasoning_tokens": None},
            },
            (0, 0, 0, 0, 0),
        ),
    ],
)
def test_usage_of(usage: Any, expected: tuple[int, ...] | None) -> None:
    found = usage_of(usage)
    if expected is None:
        assert found is None
        return
    assert found is not None
    assert (
        found["input_tokens"],
        found["output_tokens"],
        found["total_tokens"],
        found["input_tokens_details"]["cached_tokens"],
        found["output_tokens_details"]["reasoning_tokens"],
    ) == expected


@pytest.mark.parametrize(
    ("chat", "expected"),
    [
        (None, []),
        ({"content": None}, []),
        ({"content": ["junk"]}, []),
        (
            {
                "content": [
                    {
                        "token": "a",
                        "logprob": -1.0,
                        "bytes": [97],
                        "top_logprobs": [{"token": "b", "logprob": -2.0, "bytes": None}, "junk"],
                    }
                ]
            },
            [
                {
                    "token": "a",
                    "logprob": -1.0,
                    "bytes": [97],
                    "top_logprobs": [{"token": "b", "logprob": -2.0, "bytes": []}],
                }
            ],
        ),
        (
            {"content": [{"token": "a"}]},
            [{"token": "a", "logprob": 0.0, "bytes": [], "top_logprobs": []}],
        ),
    ],
)
def test_logprobs_of(chat: Any, expected: list[dict[str, Any]]) -> None:
    assert logprobs_of(chat) == expected


def test_message_parts_and_reasoning_item() -> None:
    assert message_parts({"content": None}, None) == []
    assert message_parts({"content": "x", "refusal": "no"}, None) == [
        {"type": "output_text", "text": "x", "annotations": [], "logprobs": []},
        {"type": "refusal", "refusal": "no"},
    ]
    assert reasoning_item("rs_1", None, "in_progress")["content"] == []
