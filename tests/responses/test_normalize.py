import copy
from typing import Any

import pytest

from lb.responses.normalize import ALIASES, EventNormalizer, normalize_response
from lb.responses.shape import problems

Json = dict[str, Any]


def normalize(
    events: list[Json], request: Json | None = None
) -> tuple[list[Json], EventNormalizer]:
    normalizer = EventNormalizer(request, clock=lambda: 2000.9)
    out: list[Json] = []
    for event in copy.deepcopy(events):
        out += normalizer.feed(event)
    return out, normalizer


def assert_conforms(events: list[Json]) -> None:
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        assert problems(event) == [], event


VLLM_SNAPSHOT = {
    "id": "resp_v",
    "created_at": 1756274867.0,
    "error": None,
    "incomplete_details": None,
    "instructions": None,
    "metadata": None,
    "model": "qwen",
    "object": "response",
    "output": [],
    "parallel_tool_calls": True,
    "temperature": 1.0,
    "tool_choice": "auto",
    "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
    "top_p": 1.0,
    "background": False,
    "max_output_tokens": 1000,
    "max_tool_calls": None,
    "previous_response_id": None,
    "prompt": None,
    "prompt_cache_key": None,
    "reasoning": None,
    "safety_identifier": None,
    "service_tier": "auto",
    "status": "in_progress",
    "text": None,
    "top_logprobs": None,
    "truncation": "disabled",
    "usage": None,
    "user": None,
}
REASONING_PART = {"text": "Hmm", "type": "reasoning_text"}
VLLM_REASONING = {
    "id": "rs_v",
    "summary": [],
    "type": "reasoning",
    "content": [REASONING_PART],
    "encrypted_content": None,
    "status": "completed",
}
VLLM_MESSAGE = {
    "id": "msg_v",
    "type": "message",
    "role": "assistant",
    "status": "completed",
    "content": [{"type": "output_text", "text": "Hi", "annotations": [], "logprobs": []}],
}
VLLM_STREAM: list[Json] = [
    {"type": "response.created", "sequence_number": 0, "response": VLLM_SNAPSHOT},
    {"type": "response.in_progress", "sequence_number": 1, "response": VLLM_SNAPSHOT},
    {
        "type": "response.output_item.added",
        "sequence_number": 2,
        "output_index": 0,
        "item": {**VLLM_REASONING, "content": [], "status": "in_progress"},
    },
    {
        "type": "response.reasoning_part.added",
        "sequence_number": 3,
        "item_id": "rs_v",
        "output_index": 0,
        "content_index": 0,
        "part": {"text": "", "type": "reasoning_text"},
    },
    {
        "type": "response.reasoning_text.delta",
        "sequence_number": 4,
        "item_id": "rs_v",
        "output_index": 0,
        "content_index": 0,
        "delta": "Hm",
    },
    {
        "type": "response.reasoning_text.delta",
        "sequence_number": 5,
        "item_id": "rs_v",
        "output_index": 0,
        "content_index": 0,
        "delta": "m",
    },
    {
        "type": "response.reasoning_text.done",
        "sequence_number": 6,
        "item_id": "rs_v",
        "output_index": 0,
        "content_index": 0,
        "text": "Hmm",
    },
    {
        "type": "response.reasoning_part.done",
        "sequence_number": 7,
        "item_id": "rs_v",
        "output_index": 0,
        "content_index": 0,
        "part": REASONING_PART,
    },
    {
        "type": "response.output_item.done",
        "sequence_number": 8,
        "output_index": 0,
        "item": VLLM_REASONING,
    },
    {
        "type": "response.web_search_call.in_progress",
        "sequence_number": 9,
        "output_index": 1,
        "item_id": "ws_1",
    },
    {
        "type": "response.output_item.added",
        "sequence_number": 10,
        "output_index": 1,
        "item": {**VLLM_MESSAGE, "content": [], "status": "in_progress"},
    },
    {
        "type": "response.content_part.added",
        "sequence_number": 11,
        "item_id": "msg_v",
        "output_index": 1,
        "content_index": 0,
        "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []},
    },
    {
        "type": "response.output_text.delta",
        "sequence_number": 12,
        "item_id": "msg_v",
        "output_index": 1,
        "content_index": 0,
        "delta": "Hi",
        "logprobs": [],
    },
    {
        "type": "response.output_text.done",
        "sequence_number": 13,
        "item_id": "msg_v",
        "output_index": 1,
        "content_index": 0,
        "text": "Hi",
        "logprobs": [],
    },
    {
        "type": "response.content_part.done",
        "sequence_number": 14,
        "item_id": "msg_v",
        "output_index": 1,
        "content_index": 0,
        "part": VLLM_MESSAGE["content"][0],
    },
    {
        "type": "response.output_item.done",
        "sequence_number": 15,
        "output_index": 1,
        "item": VLLM_MESSAGE,
    },
    {
        "type": "response.completed",
        "sequence_number": 16,
        "response": {
            **VLLM_SNAPSHOT,
            "status": "completed",
            "output": [VLLM_REASONING, VLLM_MESSAGE],
            "usage": {
                "input_tokens": 5,
                "output_tokens": 3,
                "total_tokens": 8,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 2},
            },
        },
    },
]


def test_a_vllm_stream_is_made_to_conform() -> None:
    events, normalizer = normalize(VLLM_STREAM)
    assert_conforms(events)
    assert [e["type"] for e in events][3:8] == [
        "response.content_part.added",
        "response.reasoning.delta",
        "response.reasoning.delta",
        "response.reasoning.done",
        "response.content_part.done",
    ]
    assert normalizer.dropped == 1
    assert normalizer.dropped_types == {"response.web_search_call.in_progress": 1}
    assert normalizer.response_id == "resp_v"
    assert normalizer.is_done
    final = events[-1]["response"]
    assert final["created_at"] == 1756274867
    assert final["completed_at"] == 2000  # vLLM leaves it out: the clock says when it ended
    assert final["text"] == {"format": {"type": "text"}}
    assert final["top_logprobs"] == 0
    assert final["service_tier"] == "auto"
    assert final["tools"][0]["strict"] is None
    assert final["prompt"] is None  # a field the specification does not know stays
    assert "encrypted_content" not in final["output"][0]  # null is not allowed; absent is


# What llama-server's /v1/responses streams: no sequence numbers, output or content indices,
# function call items without id, minimal snapshots, and reasoning events left half done.
LLAMA_STREAM: list[Json] = [
    {
        "type": "response.created",
        "response": {"id": "resp_l", "object": "response", "status": "in_progress"},
    },
    {
        "type": "response.in_progress",
        "response": {"id": "resp_l", "object": "response", "status": "in_progress"},
    },
    {
        "type": "response.output_item.added",
        "item": {
            "id": "rs_l",
            "summary": [],
            "type": "reasoning",
            "content": [],
            "encrypted_content": "",
            "status": "in_progress",
        },
    },
    {"type": "response.reasoning_text.delta", "delta": "hmm", "item_id": "rs_l"},
    {
        "type": "response.output_item.added",
        "item": {
            "content": [],
            "id": "msg_l",
            "role": "assistant",
            "status": "in_progress",
            "type": "message",
        },
    },
    {
        "type": "response.content_part.added",
        "item_id": "msg_l",
        "part": {"type": "output_text", "text": ""},
    },
    {"type": "response.output_text.delta", "item_id": "msg_l", "delta": "Hi"},
    {
        "type": "response.output_item.added",
        "item": {
            "arguments": "",
            "call_id": "fc_abc",
            "name": "f",
            "type": "function_call",
            "status": "in_progress",
        },
    },
    {"type": "response.function_call_arguments.delta", "delta": "{}", "item_id": "fc_abc"},
    {
        "type": "response.output_item.done",
        "item": {
            "id": "rs_l",
            "summary": [],
            "type": "reasoning",
            "encrypted_content": "",
            "content": [{"text": "hmm", "type": "reasoning_text"}],
        },
    },
    {"type": "response.output_text.done", "item_id": "msg_l", "text": "Hi"},
    {
        "type": "response.content_part.done",
        "item_id": "msg_l",
        "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": "Hi"},
    },
    {
        "type": "response.output_item.done",
        "item": {
            "type": "message",
            "status": "completed",
            "id": "msg_l",
            "role": "assistant",
            "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": "Hi"}],
        },
    },
    {
        "type": "response.output_item.done",
        "item": {
            "type": "function_call",
            "status": "completed",
            "arguments": "{}",
            "call_id": "fc_abc",
            "name": "f",
        },
    },
    {
        "type": "response.completed",
        "response": {
            "id": "resp_l",
            "object": "response",
            "created_at": 1999,
            "status": "completed",
            "model": "gguf",
            "output": [
                {
                    "type": "reasoning",
                    "id": "rs_l",
                    "summary": [],
                    "encrypted_content": "",
                    "content": [{"text": "hmm", "type": "reasoning_text"}],
                },
                {
                    "type": "message",
                    "status": "completed",
                    "id": "msg_l",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Hi"}],
                },
                {
                    "type": "function_call",
                    "status": "completed",
                    "arguments": "{}",
                    "call_id": "fc_abc",
                    "name": "f",
                },
            ],
            "usage": {"input_tokens": 4, "output_tokens": 6, "total_tokens": 10},
        },
    },
]


def test_a_llama_cpp_stream_gets_its_missing_fields() -> None:
    events, normalizer = normalize(LLAMA_STREAM, {"model": "client-name", "temperature": 0.5})
    assert_conforms(events)
    assert normalizer.dropped == 0
    where = [
        (e["type"].removeprefix("response."), e.get("output_index"), e.get("content_index"))
        for e in events[2:-1]
    ]
    assert where == [
        ("output_item.added", 0, None),
        ("reasoning.delta", 0, 0),
        ("output_item.added", 1, None),
        ("content_part.added", 1, 0),
        ("output_text.delta", 1, 0),
        ("output_item.added", 2, None),
        ("function_call_arguments.delta", 2, None),
        ("output_item.done", 0, None),
        ("output_text.done", 1, 0),
        ("content_part.done", 1, 0),
        ("output_item.done", 1, None),
        ("output_item.done", 2, None),
    ]
    call_added, call_done = events[7]["item"], events[13]["item"]
    assert call_added["id"] == call_done["id"] == events[8]["item_id"] == "fc_abc"
    first, final = events[0]["response"], events[-1]["response"]
    assert (first["created_at"], first["model"], first["temperature"]) == (2000, "client-name", 0.5)
    assert final["output"][2]["id"] == "fc_abc"
    assert final["usage"]["output_tokens_details"] == {"reasoning_tokens": 0}
    assert final["completed_at"] == 2000


@pytest.mark.parametrize(("alias", "name"), sorted(ALIASES.items()))
def test_known_aliases_are_renamed(alias: str, name: str) -> None:
    events, normalizer = normalize(
        [
            {
                "type": alias,
                "item_id": "x",
                "output_index": 0,
                "content_index": 0,
                "summary_index": 0,
                "delta": "d",
                "text": "t",
                "part": {"type": "reasoning_text", "text": "t"},
            }
        ]
    )
    assert events[0]["type"] == name
    assert problems(events[0]) == []
    assert normalizer.dropped == 0


@pytest.mark.parametrize(
    "event",
    [
        {"type": "response.web_search_call.searching", "item_id": "ws", "output_index": 0},
        {"type": "response.mcp_call.in_progress"},
        {"type": "keepalive"},
        {"type": "response.output_text_annotation.added"},
        {"no_type": True},
        {"type": 7},
    ],
)
def test_events_outside_the_closed_set_are_dropped_and_counted(event: Json) -> None:
    events, normalizer = normalize(
        [{"type": "response.created", "response": {"id": "r"}}, event, event]
    )
    assert [e["type"] for e in events] == ["response.created"]
    assert normalizer.dropped == 2
    assert sum(normalizer.dropped_types.values()) == 2


def test_content_index_counted_up_per_delta_points_back_at_the_part() -> None:
    events, _ = normalize(
        [
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {"type": "reasoning", "id": "rs", "summary": []},
            },
            {
                "type": "response.reasoning_part.added",
                "item_id": "rs",
                "output_index": 0,
                "content_index": 0,
                "part": {"type": "reasoning_text", "text": ""},
            },
            *(
                {
                    "type": "response.reasoning_text.delta",
                    "item_id": "rs",
                    "output_index": 0,
                    "content_index": n,
                    "delta": "x",
                }
                for n in (8, 9)
            ),
            {
                "type": "response.reasoning_text.done",
                "item_id": "rs",
                "output_index": 0,
                "content_index": 10,
                "text": "xx",
            },
        ]
    )
    assert [e["content_index"] for e in events[1:]] == [0, 0, 0, 0]


def test_sequence_numbers_are_renumbered_from_zero() -> None:
    given = [
        {"type": "response.created", "sequence_number": 5, "response": {"id": "r"}},
        {"type": "response.in_progress", "sequence_number": 5, "response": {"id": "r"}},
        {
            "type": "response.output_text.delta",
            "sequence_number": "9",
            "item_id": "m",
            "output_index": 0,
            "content_index": 0,
            "delta": "x",
        },
    ]
    events, _ = normalize(given)
    assert [e["sequence_number"] for e in events] == [0, 1, 2]


def test_unknown_fields_inside_objects_are_kept() -> None:
    events, _ = normalize(
        [
            {
                "type": "response.created",
                "x_event": 1,
                "response": {"id": "r", "x_vendor": {"a": [1]}},
            },
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {
                    "type": "message",
                    "id": "m",
                    "role": "assistant",
                    "content": [],
                    "x_item": "y",
                },
            },
            {
                "type": "response.content_part.added",
                "item_id": "m",
                "output_index": 0,
                "content_index": 0,
                "part": {"type": "output_text", "text": "", "x_part": True},
            },
            {
                "type": "response.output_text.delta",
                "item_id": "m",
                "output_index": 0,
                "content_index": 0,
                "delta": "x",
                "obfuscation": "pad",
            },
        ]
    )
    assert events[0]["x_event"] == 1
    assert events[0]["response"]["x_vendor"] == {"a": [1]}
    assert events[1]["item"]["x_item"] == "y"
    assert events[1]["item"]["status"] == "in_progress"
    assert events[2]["part"] == {
        "type": "output_text",
        "text": "",
        "x_part": True,
        "annotations": [],
        "logprobs": [],
    }
    assert events[3]["obfuscation"] == "pad"
    assert events[3]["logprobs"] == []
    for event in events:
        assert problems(event) == []


@pytest.mark.parametrize(
    ("event", "payload"),
    [
        (
            {"type": "error", "code": "rate_limit_exceeded", "message": "slow down", "param": None},
            {
                "type": "server_error",
                "code": "rate_limit_exceeded",
                "message": "slow down",
                "param": None,
            },
        ),
        (
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "code": 400,
                    "message": "bad",
                    "param": "input",
                    "extra": 1,
                },
            },
            {
                "type": "invalid_request_error",
                "code": "400",
                "message": "bad",
                "param": "input",
                "extra": 1,
            },
        ),
        (
            {"type": "error", "error": "oops"},
            {"type": "server_error", "code": None, "message": "the backend failed", "param": None},
        ),
    ],
)
def test_error_events_get_the_specification_payload(event: Json, payload: Json) -> None:
    events, _ = normalize([event])
    assert events[0]["error"] == payload
    assert problems(events[0]) == []


def test_fail_mid_stream_then_nothing_after_the_end() -> None:
    normalizer = EventNormalizer({"model": "m"}, clock=lambda: 10)
    events = normalizer.feed(
        {
            "type": "response.created",
            "response": {"id": "resp_n", "status": "in_progress", "created_at": 9},
        }
    )
    events += normalizer.fail("upstream_error", "the backend went away")
    assert_conforms(events)
    assert [e["type"] for e in events] == ["response.created", "error", "response.failed"]
    failed = events[-1]["response"]
    assert (failed["id"], failed["status"], failed["completed_at"]) == ("resp_n", "failed", None)
    assert failed["error"] == {"code": "upstream_error", "message": "the backend went away"}
    assert normalizer.fail("again", "no") == []


def test_fail_before_any_event() -> None:
    events = EventNormalizer().fail("upstream_error", "no")
    assert_conforms(events)


def test_a_non_streaming_body_is_normalised() -> None:
    body = copy.deepcopy(LLAMA_STREAM[-1]["response"])
    before = copy.deepcopy(body)
    resp = normalize_response(body, {"model": "client-name", "tools": []}, now=2001)
    assert problems(resp) == []
    assert body == before
    assert resp["completed_at"] == 2001
    assert resp["output"][1]["content"][0]["annotations"] == []


@pytest.mark.parametrize(("produced", "limit", "status"), [
    (8, 8, "incomplete"),  # stopped at the limit: llama.cpp says completed, the spec incomplete
    (3, 8, "completed"),
    (8, None, "completed"),
])
def test_completed_at_the_token_limit_is_incomplete(produced: int, limit: int | None,
                                                    status: str) -> None:
    request = {"model": "m", "input": "x", **({"max_output_tokens": limit} if limit else {})}
    body = {"id": "resp_1", "object": "response", "status": "completed", "output": [],
            "usage": {"input_tokens": 2, "output_tokens": produced, "total_tokens": produced + 2}}
    assert normalize_response(dict(body), request)["status"] == status
    normalizer = EventNormalizer(request)
    events = normalizer.feed({"type": "response.completed", "response": dict(body)})
    assert events[0]["type"] == f"response.{status}"
    assert events[0]["response"]["status"] == status
    if status == "incomplete":
        assert events[0]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert problems(events[0]) == []


def test_a_native_custom_tool_call_stream_is_kept_and_made_to_conform() -> None:
    item = {"type": "custom_tool_call", "id": "ctc_1", "call_id": "call_1", "name": "apply_patch",
            "input": ""}
    done_item = {**item, "input": "*** Begin Patch", "status": "completed"}
    events, normalizer = normalize([
        {"type": "response.created", "response": {"id": "r"}},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.custom_tool_call_input.delta", "item_id": "ctc_1", "delta": "*** Begin"},
        {"type": "response.custom_tool_call_input.delta", "delta": " Patch"},
        {"type": "response.custom_tool_call_input.done", "item_id": "ctc_1",
         "input": "*** Begin Patch"},
        {"type": "response.output_item.done", "output_index": 0, "item": done_item},
        {"type": "response.completed", "response": {"id": "r", "output": [done_item]}},
    ])
    assert normalizer.dropped == 0
    assert_conforms(events)
    assert [(e.get("item_id"), e.get("output_index")) for e in events[2:5]] == [("ctc_1", 0)] * 3
    assert events[1]["item"]["status"] == "in_progress"
