from typing import Any

import pytest

from lb.errors import BadRequest
from lb.responses.messages import MessageBuilder


def built(*items: Any) -> list[dict[str, Any]]:
    builder = MessageBuilder()
    for index, item in enumerate(items):
        builder.add(item, f"input[{index}]")
    return builder.messages


def call(call_id: str) -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": "f", "arguments": "{}"}


def output(call_id: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": "ok"}


def test_calls_of_separate_turns_stay_in_separate_assistant_messages() -> None:
    messages = built(
        {"role": "user", "content": "a"},
        call("1"),
        output("1"),
        call("2"),
        call("3"),
        output("2"),
        output("3"),
    )
    assert [(m["role"], [c["id"] for c in m.get("tool_calls", [])]) for m in messages] == [
        ("user", []),
        ("assistant", ["1"]),
        ("tool", []),
        ("assistant", ["2", "3"]),
        ("tool", []),
        ("tool", []),
    ]


def test_reasoning_between_text_and_calls_does_not_split_the_turn() -> None:
    messages = built(
        {"role": "assistant", "content": "Let me see."},
        {"type": "reasoning", "id": "rs", "summary": []},
        call("1"),
    )
    assert messages == [
        {
            "role": "assistant",
            "content": "Let me see.",
            "tool_calls": [
                {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        }
    ]


def test_mixed_parts_stay_a_list_and_empty_content_is_an_empty_string() -> None:
    messages = built(
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "see"},
                {"type": "input_image", "image_url": "https://x/y.png"},
            ],
        },
        {"role": "assistant", "content": []},
    )
    assert messages[0]["content"] == [
        {"type": "text", "text": "see"},
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
    ]
    assert messages[1]["content"] == ""


@pytest.mark.parametrize("item", [None, 3, "text", ["list"]])
def test_an_item_that_is_not_an_object_is_refused(item: Any) -> None:
    with pytest.raises(BadRequest) as caught:
        built(item)
    assert caught.value.param == "input[0]"


def test_an_item_without_type_or_role_is_refused() -> None:
    with pytest.raises(BadRequest) as caught:
        built({"content": "x"})
    assert caught.value.param == "input[0].type"
