import random
from typing import Any

import pytest

from lb.responses.ids import IdMaker
from lb.responses.items import input_items
from lb.responses.shape import problems


def items(given: Any) -> list[dict[str, Any]]:
    return input_items({"model": "m", "input": given}, IdMaker(random.Random(4)))


def test_a_string_is_one_user_message() -> None:
    (item,) = items("hi")
    assert item["id"].startswith("msg_")
    assert {k: v for k, v in item.items() if k != "id"} == {
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_text", "text": "hi"}],
    }
    assert problems(item) == []


@pytest.mark.parametrize(
    ("given", "prefix", "expected"),
    [
        (
            {"role": "assistant", "content": "yo", "phase": "final_answer"},
            "msg_",
            {
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "phase": "final_answer",
                "content": [
                    {"type": "output_text", "text": "yo", "annotations": [], "logprobs": []}
                ],
            },
        ),
        (
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "d"}],
            },
            "msg_",
            {
                "type": "message",
                "role": "developer",
                "status": "completed",
                "content": [{"type": "input_text", "text": "d"}],
            },
        ),
        (
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            "fc_",
            {
                "type": "function_call",
                "call_id": "c",
                "name": "f",
                "arguments": "{}",
                "status": "completed",
            },
        ),
        (
            {"type": "function_call_output", "call_id": "c", "output": "ok"},
            "fco_",
            {"type": "function_call_output", "call_id": "c", "output": "ok", "status": "completed"},
        ),
        (
            {"type": "reasoning", "summary": [], "encrypted_content": "e"},
            "rs_",
            {"type": "reasoning", "summary": [], "encrypted_content": "e"},
        ),
        (
            {"type": "compaction", "encrypted_content": "sealed"},
            "cmp_",
            {"type": "compaction", "encrypted_content": "sealed"},
        ),
    ],
)
def test_items_get_ids_and_statuses(
    given: dict[str, Any], prefix: str, expected: dict[str, Any]
) -> None:
    (item,) = items([given])
    assert item.pop("id").startswith(prefix)
    assert item == expected


def test_own_ids_and_unknown_keys_are_kept_and_nothing_is_mutated() -> None:
    given = {"type": "message", "id": "msg_mine", "role": "user", "content": "x", "x_k": 1}
    (item,) = items([given])
    assert (item["id"], item["x_k"]) == ("msg_mine", 1)
    assert given["content"] == "x"
    assert items(None) == []
    for item in items(
        [
            {"role": "user", "content": "a"},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": ""},
        ]
    ):
        assert problems(item) == []
