import base64
import functools
import random
import zlib
from typing import Any

import orjson
import pytest

from lb.errors import BadRequest
from lb.responses.compaction import MAX_ENCRYPTED_CHARS, compact, expand, seal
from lb.responses.ids import IdMaker
from lb.responses.shape import problems
from lb.responses.translate import to_chat_request

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
Json = dict[str, Any]

CONVERSATION: list[Json] = [
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Plan a trip"}]},
    {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
    {
        "type": "message",
        "id": "msg_1",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": "Where to?", "annotations": []}],
    },
    {"type": "message", "role": "user", "content": "Oslo, ünïcode ✓"},
    {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "c1",
        "name": "weather",
        "arguments": '{"city":"Oslo"}',
        "status": "completed",
    },
    {"type": "function_call_output", "call_id": "c1", "output": "cold"},
]


def compacted(items: list[Json], keep_last: int, key: bytes = KEY) -> Json:
    return compact(
        items, key=key, keep_last=keep_last, ids=IdMaker(random.Random(2)), created_at=1234
    )


@pytest.mark.parametrize("keep_last", [0, 1, 2, 5, 6, 10])
def test_compact_then_expand_gives_back_the_conversation(keep_last: int) -> None:
    result = compacted(CONVERSATION, keep_last)
    sealed, *kept = result["output"]
    assert result["object"] == "response.compaction"
    assert result["id"].startswith("resp_")
    assert result["created_at"] == 1234
    assert result["usage"]["total_tokens"] == 0
    assert problems(sealed) == []
    assert sealed["id"].startswith("cmp_")
    assert kept == CONVERSATION[len(CONVERSATION) - min(keep_last, len(CONVERSATION)) :]
    assert expand(sealed, key=KEY) + kept == CONVERSATION
    assert "Plan a trip" not in sealed["encrypted_content"]  # opaque to the client


def test_a_compacted_conversation_translates_like_the_original() -> None:
    result = compacted(CONVERSATION, keep_last=2)
    follow_up = {"role": "user", "content": "And tomorrow?"}
    expander = functools.partial(expand, key=KEY)
    original = to_chat_request(
        {"model": "m", "input": [*CONVERSATION, follow_up]}, upstream_model="b"
    )
    again = to_chat_request(
        {"model": "m", "input": [*result["output"], follow_up]},
        upstream_model="b",
        expand_compaction=expander,
    )
    assert again == original


def test_compacting_twice_does_not_nest() -> None:
    first = compacted(CONVERSATION, keep_last=3)
    second = compacted([*first["output"], {"role": "user", "content": "more"}], keep_last=1)
    sealed, kept = second["output"]
    inner = expand(sealed, key=KEY)
    assert all(item.get("type") != "compaction" for item in inner)
    assert [*inner, kept] == [*CONVERSATION, {"role": "user", "content": "more"}]


def _reseal(content: str, change: Any) -> str:
    """Rebuild encrypted_content with its payload changed but the old tag kept."""
    version, payload, tag = content.split(".")
    items = orjson.loads(zlib.decompress(base64.urlsafe_b64decode(payload + "==")))
    change(items)
    forged = base64.urlsafe_b64encode(zlib.compress(orjson.dumps(items))).rstrip(b"=").decode()
    return f"{version}.{forged}.{tag}"


GOOD = seal(CONVERSATION, key=KEY)


def _flip(text: str, at: int) -> str:
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]


@pytest.mark.parametrize(
    "content",
    [
        _flip(GOOD, 10),  # a payload character
        _flip(GOOD, len(GOOD) - 5),  # a tag character
        _reseal(GOOD, lambda items: items[0].update(content="Plan a heist")),
        _reseal(GOOD, lambda items: items.pop()),
        seal(CONVERSATION, key=OTHER_KEY),
        GOOD.replace("fc1.", "fc2.", 1),
        GOOD.rsplit(".", 1)[0],
        GOOD + ".extra",
        GOOD[: len(GOOD) // 2],
        "fc1.%%%.###",
        "fc1.é.é",
        "",
        "x" * (MAX_ENCRYPTED_CHARS + 1),
    ],
)
def test_tampering_is_detected(content: str) -> None:
    with pytest.raises(BadRequest) as caught:
        expand({"type": "compaction", "id": "cmp_1", "encrypted_content": content}, key=KEY)
    assert caught.value.param == "encrypted_content"


@pytest.mark.parametrize(
    "item",
    [
        {"type": "compaction", "id": "cmp_1"},
        {"type": "compaction", "id": "cmp_1", "encrypted_content": None},
        {"type": "compaction", "id": "cmp_1", "encrypted_content": 5},
    ],
)
def test_a_compaction_item_without_content_is_refused(item: Json) -> None:
    with pytest.raises(BadRequest):
        expand(item, key=KEY)


def test_a_payload_that_is_not_a_list_of_items_is_refused_even_when_signed() -> None:
    for payload in ({"a": 1}, [1, 2]):
        content = seal(payload, key=KEY)  # type: ignore[arg-type]
        with pytest.raises(BadRequest):
            expand({"type": "compaction", "encrypted_content": content}, key=KEY)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="keep_last"):
        compacted(CONVERSATION, keep_last=-1)
    with pytest.raises(ValueError, match="key"):
        compacted(CONVERSATION, keep_last=0, key=b"short")
    with pytest.raises(BadRequest) as caught:
        compacted([CONVERSATION[0], "text"], keep_last=0)  # type: ignore[list-item]
    assert caught.value.param == "input[1]"
