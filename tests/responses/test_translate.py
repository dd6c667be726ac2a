import copy
import random
from typing import Any

import pytest
from openai.types.responses import Response

from lb.errors import BadGateway, BadRequest
from lb.responses.ids import IdMaker
from lb.responses.shape import problems
from lb.responses.translate import to_chat_request, to_response

FN = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
FN2 = {"type": "function", "name": "get_time"}
NESTED_FN = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather", "parameters": FN["parameters"]},
}
USER_HI = {"role": "user", "content": "hi"}
PNG = "data:image/png;base64,iVBORw0KGgo="
CALL_C = {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}


def chat(**request: Any) -> dict[str, Any]:
    return to_chat_request({"model": "client-name", **request}, upstream_model="backend-name")


# (case, request fields, expected chat fields, chat keys that must be absent)
ACCEPTED: list[tuple[str, dict[str, Any], dict[str, Any], tuple[str, ...]]] = [
    (
        "string input",
        {"input": "hi"},
        {"model": "backend-name", "messages": [USER_HI]},
        ("stream", "tools", "max_tokens"),
    ),
    (
        "instructions become the system message",
        {"instructions": "Be terse.", "input": "hi"},
        {"messages": [{"role": "system", "content": "Be terse."}, USER_HI]},
        (),
    ),
    (
        "text parts join into one string",
        {
            "input": [
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "a"},
                        {"type": "input_text", "text": "b"},
                    ],
                }
            ]
        },
        {"messages": [{"role": "user", "content": "a\nb"}]},
        (),
    ),
    (
        "an image by URL",
        {
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "what?"},
                        {"type": "input_image", "image_url": "https://x/cat.png", "detail": "low"},
                    ],
                }
            ]
        },
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://x/cat.png", "detail": "low"},
                        },
                    ],
                }
            ]
        },
        (),
    ),
    (
        "an image as a data: URL",
        {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": PNG}]}]},
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": PNG}}]}
            ]
        },
        (),
    ),
    (
        "an inline file",
        {
            "input": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "input_file",
                            "filename": "a.pdf",
                            "file_data": "data:application/pdf;base64,JV",
                        }
                    ],
                }
            ]
        },
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "file",
                            "file": {
                                "file_data": "data:application/pdf;base64,JV",
                                "filename": "a.pdf",
                            },
                        }
                    ],
                }
            ]
        },
        (),
    ),
    (
        "developer and system roles",
        {
            "input": [
                {"type": "message", "role": "developer", "content": "dev"},
                {
                    "type": "message",
                    "role": "system",
                    "content": [{"type": "input_text", "text": "sys"}],
                },
                USER_HI,
            ]
        },
        {
            "messages": [
                {"role": "system", "content": "dev"},
                {"role": "system", "content": "sys"},
                USER_HI,
            ]
        },
        (),
    ),
    (
        "assistant output with phase, status and id",
        {
            "input": [
                USER_HI,
                {
                    "type": "message",
                    "role": "assistant",
                    "id": "msg_1",
                    "status": "completed",
                    "phase": "final_answer",
                    "content": [
                        {"type": "output_text", "text": "hello", "annotations": []},
                        {"type": "refusal", "refusal": "no more"},
                    ],
                },
            ]
        },
        {"messages": [USER_HI, {"role": "assistant", "content": "hello\nno more"}]},
        (),
    ),
    (
        "function calls merge into the assistant message before them",
        {
            "input": [
                USER_HI,
                {"role": "assistant", "content": "Let me look."},
                {
                    "type": "function_call",
                    "call_id": "c1",
                    "name": "get_weather",
                    "arguments": '{"city":"Oslo"}',
                    "id": "fc_1",
                    "status": "completed",
                },
                {"type": "function_call", "call_id": "c2", "name": "get_time", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "cold"},
                {
                    "type": "function_call_output",
                    "call_id": "c2",
                    "output": [
                        {"type": "input_text", "text": "noon"},
                        {"type": "input_text", "text": "!"},
                    ],
                },
            ]
        },
        {
            "messages": [
                USER_HI,
                {
                    "role": "assistant",
                    "content": "Let me look.",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                        },
                        {
                            "id": "c2",
                            "type": "function",
                            "function": {"name": "get_time", "arguments": "{}"},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "cold"},
                {"role": "tool", "tool_call_id": "c2", "content": "noon\n!"},
            ]
        },
        (),
    ),
    (
        "a function call on its own opens an assistant message",
        {
            "input": [
                USER_HI,
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": ""},
            ]
        },
        {
            "messages": [
                USER_HI,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}
                    ],
                },
            ]
        },
        (),
    ),
    (
        "reasoning items are not sent",
        {
            "input": [
                USER_HI,
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
                {"role": "assistant", "content": "yo"},
            ]
        },
        {"messages": [USER_HI, {"role": "assistant", "content": "yo"}]},
        (),
    ),
    (
        "flat function tools become nested",
        {"input": "hi", "tools": [FN, {**FN2, "strict": True, "description": None}]},
        {
            "tools": [
                NESTED_FN,
                {"type": "function", "function": {"name": "get_time", "strict": True}},
            ]
        },
        (),
    ),
    (
        "tool_choice auto",
        {"input": "hi", "tools": [FN], "tool_choice": "auto"},
        {"tool_choice": "auto"},
        (),
    ),
    (
        "tool_choice none",
        {"input": "hi", "tools": [FN], "tool_choice": "none"},
        {"tool_choice": "none"},
        (),
    ),
    (
        "tool_choice required",
        {"input": "hi", "tools": [FN], "tool_choice": "required"},
        {"tool_choice": "required"},
        (),
    ),
    (
        "tool_choice names a function",
        {
            "input": "hi",
            "tools": [FN, FN2],
            "tool_choice": {"type": "function", "name": "get_time"},
        },
        {"tool_choice": {"type": "function", "function": {"name": "get_time"}}},
        (),
    ),
    (
        "allowed_tools narrows the tools",
        {
            "input": "hi",
            "tools": [FN, FN2],
            "tool_choice": {
                "type": "allowed_tools",
                "mode": "required",
                "tools": [{"type": "function", "name": "get_weather"}],
            },
        },
        {"tools": [NESTED_FN], "tool_choice": "required"},
        (),
    ),
    (
        "tool_choice without tools is not sent",
        {"input": "hi", "tool_choice": "none", "parallel_tool_calls": False},
        {},
        ("tools", "tool_choice", "parallel_tool_calls"),
    ),
    (
        "parallel_tool_calls",
        {"input": "hi", "tools": [FN], "parallel_tool_calls": False},
        {"parallel_tool_calls": False},
        ("tool_choice",),
    ),
    (
        "json_schema format",
        {
            "input": "hi",
            "text": {
                "format": {
                    "type": "json_schema",
                    "name": "answer",
                    "schema": {"type": "object"},
                    "strict": True,
                    "description": None,
                },
                "verbosity": "medium",
            },
        },
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
            }
        },
        (),
    ),
    (
        "json_schema format without a name",
        {"input": "hi", "text": {"format": {"type": "json_schema", "schema": {"type": "object"}}}},
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": {"type": "object"}},
            }
        },
        (),
    ),
    (
        "json_object format",
        {"input": "hi", "text": {"format": {"type": "json_object"}}},
        {"response_format": {"type": "json_object"}},
        (),
    ),
    (
        "text format",
        {"input": "hi", "text": {"format": {"type": "text"}}},
        {},
        ("response_format",),
    ),
    (
        "sampling and limits",
        {
            "input": "hi",
            "max_output_tokens": 64,
            "temperature": 0.2,
            "top_p": 0.9,
            "presence_penalty": 0.5,
            "frequency_penalty": -0.5,
            "user": "u-1",
        },
        {
            "max_tokens": 64,
            "temperature": 0.2,
            "top_p": 0.9,
            "presence_penalty": 0.5,
            "frequency_penalty": -0.5,
            "user": "u-1",
        },
        ("max_output_tokens",),
    ),
    (
        "reasoning effort",
        {"input": "hi", "reasoning": {"effort": "high", "summary": "auto"}},
        {"reasoning_effort": "high"},
        ("reasoning",),
    ),
    (
        "fields that are only echoed",
        {
            "input": "hi",
            "metadata": {"k": "v"},
            "store": False,
            "prompt_cache_key": "conv-1",
            "service_tier": "auto",
            "truncation": "auto",
            "safety_identifier": "s",
            "include": ["reasoning.encrypted_content"],
            "background": False,
            "max_tool_calls": None,
            "previous_response_id": "resp_1",
            "stream_options": {"include_obfuscation": False},
        },
        {"messages": [USER_HI]},
        (
            "metadata",
            "store",
            "prompt_cache_key",
            "service_tier",
            "truncation",
            "safety_identifier",
            "include",
            "background",
            "logprobs",
            "previous_response_id",
        ),
    ),
    (
        "stream asks for usage",
        {"input": "hi", "stream": True},
        {"stream": True, "stream_options": {"include_usage": True}},
        (),
    ),
    ("stream false", {"input": "hi", "stream": False}, {}, ("stream", "stream_options")),
    ("top_logprobs", {"input": "hi", "top_logprobs": 3}, {"logprobs": True, "top_logprobs": 3}, ()),
    (
        "include logprobs",
        {"input": "hi", "include": ["message.output_text.logprobs"]},
        {"logprobs": True},
        ("top_logprobs",),
    ),
    (
        "nulls are as good as absent",
        {
            "input": "hi",
            "temperature": None,
            "tools": None,
            "text": None,
            "reasoning": None,
            "instructions": None,
        },
        {"messages": [USER_HI]},
        ("temperature", "tools", "response_format", "reasoning_effort"),
    ),
]


@pytest.mark.parametrize(
    ("request_", "expected", "absent"),
    [case[1:] for case in ACCEPTED],
    ids=[case[0] for case in ACCEPTED],
)
def test_request_translation(
    request_: dict[str, Any], expected: dict[str, Any], absent: tuple[str, ...]
) -> None:
    before = copy.deepcopy(request_)
    result = chat(**request_)
    for key, value in expected.items():
        assert result[key] == value, key
    for key in absent:
        assert key not in result
    assert request_ == before  # encrypted_content and everything else untouched


# (case, request fields, the param the 400 names)
REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("conversations", {"input": "hi", "conversation": "conv_1"}, "conversation"),
    ("prompt templates", {"input": "hi", "prompt": {"id": "p"}}, "prompt"),
    ("a tool that is not an object", {"input": "hi", "tools": ["f"]}, "tools[0].type"),
    ("a nameless function", {"input": "hi", "tools": [{"type": "function"}]}, "tools[0].name"),
    ("background mode", {"input": "hi", "background": True}, "background"),
    ("max_tool_calls", {"input": "hi", "max_tool_calls": 2}, "max_tool_calls"),
    ("item references", {"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ("an item that is not an object", {"input": ["hi"]}, "input[0]"),
    (
        "unknown content parts",
        {"input": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
        "input[0].content[0].type",
    ),
    (
        "an image by file id",
        {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]},
        "input[0].content[0].image_url",
    ),
    (
        "a file by URL",
        {
            "input": [
                {"role": "user", "content": [{"type": "input_file", "file_url": "https://x/a.pdf"}]}
            ]
        },
        "input[0].content[0].file_data",
    ),
    (
        "an image from the assistant",
        {"input": [{"role": "assistant", "content": [{"type": "input_image", "image_url": PNG}]}]},
        "input[0].content[0].type",
    ),
    (
        "a text part without text",
        {"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
        "input[0].content[0].text",
    ),
    ("the tool role", {"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    (
        "an unknown phase",
        {"input": [{"role": "assistant", "content": "x", "phase": "draft"}]},
        "input[0].phase",
    ),
    ("content that is a number", {"input": [{"role": "user", "content": 3}]}, "input[0].content"),
    (
        "a call without call_id",
        {"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
        "input[0].call_id",
    ),
    (
        "a call without a name",
        {"input": [{"type": "function_call", "call_id": "c", "arguments": "{}"}]},
        "input[0].name",
    ),
    (
        "a call with object arguments",
        {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}]},
        "input[0].arguments",
    ),
    (
        "an output that is a number",
        {"input": [CALL_C, {"type": "function_call_output", "call_id": "c", "output": 3}]},
        "input[1].output",
    ),
    (
        "an output that answers no call",
        {"input": [USER_HI, {"type": "function_call_output", "call_id": "c", "output": "x"}]},
        "input[1].call_id",
    ),
    (
        "an audio part in a call's output",
        {"input": [CALL_C, {"type": "function_call_output", "call_id": "c",
                            "output": [{"type": "input_audio"}]}]},
        "input[1].output[0]",
    ),
    (
        "a forced hosted tool, even when declared",
        {"input": "hi", "tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search"}},
        "tool_choice",
    ),
    (
        "required when only hosted tools were declared",
        {"input": "hi", "tools": [{"type": "web_search"}], "tool_choice": "required"},
        "tool_choice",
    ),
    ("a tool without a type", {"input": "hi", "tools": [{"name": "x"}]}, "tools[0].type"),
    ("conversation of the wrong type", {"input": "hi", "conversation": 3}, "conversation"),
    (
        "compaction without an expander",
        {"input": [{"type": "compaction", "id": "cmp_1", "encrypted_content": "x"}]},
        "input[0]",
    ),
    ("no input", {}, "input"),
    ("empty input", {"input": []}, "input"),
    ("only instructions", {"instructions": "x", "input": []}, "input"),
    ("input of the wrong type", {"input": {"role": "user"}}, "input"),
    ("temperature of the wrong type", {"input": "hi", "temperature": "hot"}, "temperature"),
    ("a boolean is not a number", {"input": "hi", "max_output_tokens": True}, "max_output_tokens"),
    ("stream of the wrong type", {"input": "hi", "stream": "yes"}, "stream"),
    ("unknown truncation", {"input": "hi", "truncation": "middle"}, "truncation"),
    ("unknown effort", {"input": "hi", "reasoning": {"effort": "extreme"}}, "reasoning.effort"),
    ("unknown summary", {"input": "hi", "reasoning": {"summary": "long"}}, "reasoning.summary"),
    ("top_logprobs out of range", {"input": "hi", "top_logprobs": 21}, "top_logprobs"),
    (
        "unknown format",
        {"input": "hi", "text": {"format": {"type": "grammar"}}},
        "text.format.type",
    ),
    (
        "format that is not an object",
        {"input": "hi", "text": {"format": "json_object"}},
        "text.format",
    ),
    (
        "json_schema without schema",
        {"input": "hi", "text": {"format": {"type": "json_schema", "name": "x"}}},
        "text.format.schema",
    ),
    (
        "tool_choice of an undeclared function",
        {"input": "hi", "tools": [FN], "tool_choice": {"type": "function", "name": "nope"}},
        "tool_choice",
    ),
    (
        "tool_choice of a built-in tool",
        {"input": "hi", "tools": [FN], "tool_choice": {"type": "web_search"}},
        "tool_choice",
    ),
    ("required without tools", {"input": "hi", "tool_choice": "required"}, "tool_choice"),
    ("unknown tool_choice", {"input": "hi", "tools": [FN], "tool_choice": "any"}, "tool_choice"),
    (
        "allowed_tools naming undeclared tools",
        {
            "input": "hi",
            "tools": [FN],
            "tool_choice": {
                "type": "allowed_tools",
                "tools": [{"type": "function", "name": "nope"}],
            },
        },
        "tool_choice",
    ),
]


@pytest.mark.parametrize(
    ("request_", "param"), [case[1:] for case in REFUSED], ids=[case[0] for case in REFUSED]
)
def test_request_that_cannot_be_honoured_is_a_400_naming_the_field(
    request_: dict[str, Any], param: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        chat(**request_)
    assert caught.value.param == param
    assert caught.value.status == 400


def test_history_goes_between_instructions_and_the_new_input() -> None:
    history = [
        {"type": "message", "role": "user", "content": "first"},
        {
            "type": "message",
            "role": "assistant",
            "id": "msg_1",
            "status": "completed",
            "content": [{"type": "output_text", "text": "one", "annotations": []}],
        },
    ]
    result = to_chat_request(
        {"model": "m", "instructions": "sys", "input": "second"},
        upstream_model="b",
        history=history,
    )
    assert result["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "one"},
        {"role": "user", "content": "second"},
    ]


def test_history_alone_is_enough_input() -> None:
    # input is optional in the specification: a follow-up may only continue the chain
    result = to_chat_request(
        {"model": "m", "previous_response_id": "resp_0"}, upstream_model="b", history=[USER_HI]
    )
    assert result["messages"] == [USER_HI]


def test_compaction_items_are_expanded_in_place() -> None:
    seen: list[dict[str, Any]] = []

    def expand(item: dict[str, Any]) -> list[dict[str, Any]]:
        seen.append(item)
        return [{"role": "user", "content": "old"}, {"role": "assistant", "content": "older"}]

    compaction = {"type": "compaction", "id": "cmp_1", "encrypted_content": "sealed"}
    result = to_chat_request(
        {"model": "m", "input": [compaction, USER_HI]}, upstream_model="b", expand_compaction=expand
    )
    assert seen == [compaction]
    assert result["messages"] == [
        {"role": "user", "content": "old"},
        {"role": "assistant", "content": "older"},
        USER_HI,
    ]


def test_a_compaction_the_expander_refuses_names_the_item() -> None:
    def expand(item: dict[str, Any]) -> list[dict[str, Any]]:
        raise BadRequest("altered", param="encrypted_content")

    with pytest.raises(BadRequest) as caught:
        to_chat_request(
            {"model": "m", "input": [USER_HI, {"type": "compaction", "encrypted_content": "x"}]},
            upstream_model="b",
            expand_compaction=expand,
        )
    assert caught.value.param == "input[1].encrypted_content"


# ---- Chat completion -> Response object ----

REQUEST = {"model": "client-name", "input": "hi"}
USAGE = {
    "prompt_tokens": 11,
    "completion_tokens": 7,
    "total_tokens": 18,
    "prompt_tokens_details": {"cached_tokens": 4},
    "completion_tokens_details": {"reasoning_tokens": 3},
}


def completion(
    message: dict[str, Any],
    finish: str | None = "stop",
    usage: dict[str, Any] | None = USAGE,
    **choice: Any,
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "backend-name",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", **message},
                "finish_reason": finish,
                **choice,
            }
        ],
        "usage": usage,
    }


def respond(
    chat_completion: dict[str, Any],
    request: dict[str, Any] | None = None,
) -> dict[str, Any]:
    resp = to_response(
        chat_completion,
        request=request or REQUEST,
        response_id="resp_1",
        created_at=1000,
        ids=IdMaker(random.Random(3)),
        completed_at=1002,
    )
    assert problems(resp) == []
    Response.model_validate(resp)  # OpenAI's SDK models are stricter in places
    return resp


def shapes(resp: dict[str, Any]) -> list[tuple[Any, ...]]:
    """What each output item is, without its random id."""
    out = []
    for item in resp["output"]:
        if item["type"] == "message":
            out.append(
                (
                    "message",
                    item["status"],
                    *[p.get("text", p.get("refusal")) for p in item["content"]],
                )
            )
        elif item["type"] == "function_call":
            out.append(
                ("function_call", item["status"], item["call_id"], item["name"], item["arguments"])
            )
        else:
            out.append(("reasoning", item["status"], item["content"][0]["text"]))
    return out


CALLS = [
    {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
    },
    {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}},
]
RESPONSES: list[tuple[str, dict[str, Any], str, list[tuple[Any, ...]]]] = [
    ("text", completion({"content": "Hello!"}), "completed", [("message", "completed", "Hello!")]),
    (
        "two tool calls",
        completion({"content": None, "tool_calls": CALLS}, "tool_calls"),
        "completed",
        [
            ("function_call", "completed", "call_1", "get_weather", '{"city":"Oslo"}'),
            ("function_call", "completed", "call_2", "get_time", ""),
        ],
    ),
    (
        "text and a tool call",
        completion({"content": "Checking.", "tool_calls": CALLS[:1]}, "tool_calls"),
        "completed",
        [
            ("message", "completed", "Checking."),
            ("function_call", "completed", "call_1", "get_weather", '{"city":"Oslo"}'),
        ],
    ),
    (
        "reasoning_content",
        completion({"reasoning_content": "Think.", "content": "42"}),
        "completed",
        [("reasoning", "completed", "Think."), ("message", "completed", "42")],
    ),
    (
        "reasoning (newer vLLM, Ollama)",
        completion({"reasoning": "Hmm.", "content": "ok", "tool_calls": CALLS[:1]}),
        "completed",
        [
            ("reasoning", "completed", "Hmm."),
            ("message", "completed", "ok"),
            ("function_call", "completed", "call_1", "get_weather", '{"city":"Oslo"}'),
        ],
    ),
    (
        "length",
        completion({"content": "Once upon"}, "length"),
        "incomplete",
        [("message", "incomplete", "Once upon")],
    ),
    (
        "length while reasoning",
        completion({"reasoning_content": "Let me"}, "length"),
        "incomplete",
        [("reasoning", "incomplete", "Let me")],
    ),
    (
        "content filter",
        completion({"content": ""}, "content_filter"),
        "incomplete",
        [("message", "incomplete", "")],
    ),
    ("empty answer", completion({"content": ""}), "completed", [("message", "completed", "")]),
    (
        "refusal",
        completion({"content": None, "refusal": "I can't."}),
        "completed",
        [("message", "completed", "I can't.")],
    ),
    (
        "arguments as an object",
        completion(
            {
                "content": None,
                "tool_calls": [{"id": "call_9", "function": {"name": "f", "arguments": {"a": 1}}}],
            },
            "tool_calls",
        ),
        "completed",
        [("function_call", "completed", "call_9", "f", '{"a":1}')],
    ),
    (
        "content as parts",
        completion({"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}),
        "completed",
        [("message", "completed", "ab")],
    ),
]


@pytest.mark.parametrize(
    ("chat_completion", "status", "output"),
    [case[1:] for case in RESPONSES],
    ids=[case[0] for case in RESPONSES],
)
def test_response_translation(
    chat_completion: dict[str, Any], status: str, output: list[tuple[Any, ...]]
) -> None:
    resp = respond(chat_completion)
    assert resp["status"] == status
    assert shapes(resp) == output
    assert resp["incomplete_details"] == (
        None
        if status == "completed"
        else {
            "reason": "content_filter"
            if "content_filter" in str(chat_completion)
            else "max_output_tokens"
        }
    )


def test_response_carries_ids_times_usage_and_model() -> None:
    resp = respond(
        completion(
            {
                "content": "Hi",
                "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}],
            }
        )
    )
    assert resp["id"] == "resp_1"
    assert resp["object"] == "response"
    assert (resp["created_at"], resp["completed_at"]) == (1000, 1002)
    assert resp["model"] == "client-name"  # what the client asked for, not the backend's name
    message, call = resp["output"]
    assert message["id"].startswith("msg_")
    assert call["id"].startswith("fc_")
    assert call["call_id"].startswith("call_")  # the backend gave none: one is made
    assert resp["usage"] == {
        "input_tokens": 11,
        "output_tokens": 7,
        "total_tokens": 18,
        "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 3},
    }


def test_usage_without_details_and_without_usage() -> None:
    resp = respond(completion({"content": "x"}, usage={"prompt_tokens": 2, "completion_tokens": 1}))
    assert resp["usage"] == {
        "input_tokens": 2,
        "output_tokens": 1,
        "total_tokens": 3,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    }
    assert respond(completion({"content": "x"}, usage=None))["usage"] is None


def test_logprobs_become_output_text_logprobs() -> None:
    logprobs = {
        "content": [
            {
                "token": "Hi",
                "logprob": -0.1,
                "bytes": [72, 105],
                "top_logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": None}],
            }
        ]
    }
    resp = respond(completion({"content": "Hi"}, logprobs=logprobs))
    assert resp["output"][0]["content"][0]["logprobs"] == [
        {
            "token": "Hi",
            "logprob": -0.1,
            "bytes": [72, 105],
            "top_logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": []}],
        }
    ]


def test_request_parameters_are_echoed() -> None:
    request = {
        "model": "client-name",
        "input": "hi",
        "instructions": "sys",
        "tools": [FN],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "parallel_tool_calls": False,
        "temperature": 0.3,
        "top_p": 0.8,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "top_logprobs": 2,
        "max_output_tokens": 99,
        "text": {"format": {"type": "json_object"}},
        "reasoning": {"effort": "low"},
        "user": "u",
        "metadata": {"a": "b"},
        "store": False,
        "prompt_cache_key": "k",
        "safety_identifier": "s",
        "truncation": "auto",
        "service_tier": "priority",
        "previous_response_id": "resp_0",
    }
    resp = respond(completion({"content": "x"}), request)
    for key in (
        "instructions",
        "tool_choice",
        "parallel_tool_calls",
        "temperature",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
        "top_logprobs",
        "max_output_tokens",
        "text",
        "user",
        "metadata",
        "store",
        "prompt_cache_key",
        "safety_identifier",
        "truncation",
        "previous_response_id",
    ):
        assert resp[key] == request[key], key
    assert resp["tools"] == [{**FN, "strict": None}]
    assert resp["reasoning"] == {"effort": "low", "summary": None}
    assert resp["service_tier"] == "default"  # what was used, whatever was asked
    assert resp["background"] is False


@pytest.mark.parametrize(
    "body",
    [
        {"choices": []},
        {},
        {"choices": None},
        {"choices": ["x"]},
    ],
)
def test_a_completion_without_choices_is_a_bad_gateway(body: dict[str, Any]) -> None:
    with pytest.raises(BadGateway):
        to_response(
            body, request=REQUEST, response_id="resp_1", created_at=1, ids=IdMaker(random.Random(1))
        )
