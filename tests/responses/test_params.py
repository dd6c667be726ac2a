"""What translate mode drops (and says) and what it refuses, parameter by parameter."""

from typing import Any

import pytest

from lb.errors import BadRequest
from lb.responses.params import MAX_DROPPED_CHARS, check_params, dropped_value
from lb.responses.translate import translate_request

CODEX_FIRST_REQUEST = {  # the keys Codex CLI 0.171 sends, tools and input cut short
    "model": "m", "stream": True, "input": [{"type": "message", "role": "developer",
                                            "content": [{"type": "input_text", "text": "x"}]}],
    "tools": [{"type": "function", "name": "exec_command"}, {"type": "web_search"}],
    "tool_choice": "auto", "parallel_tool_calls": True, "reasoning": {"summary": "auto"},
    "store": False, "include": ["reasoning.encrypted_content"], "prompt_cache_key": "k",
    "client_metadata": {"turn_id": "t"},
}

# (case, request fields, what is dropped)
DROPPED: list[tuple[str, dict[str, Any], list[str]]] = [
    ("unknown top-level keys, in request order", {"seed": 1, "n": 2, "client_metadata": {}},
     ["seed", "n", "client_metadata"]),
    ("unknown include values", {"include": ["file_search_call.results",
                                            "reasoning.encrypted_content"]},
     ["include:file_search_call.results"]),
    ("unknown stream options", {"stream_options": {"include_usage": True,
                                                   "include_obfuscation": False}},
     ["stream_options.include_usage"]),
    ("unknown reasoning keys", {"reasoning": {"budget": 5, "effort": "low"}},
     ["reasoning.budget"]),
    ("verbosity and unknown text keys", {"text": {"verbosity": "low", "style": "x"}},
     ["text.style", "text.verbosity"]),
    ("the default verbosity is honoured", {"text": {"verbosity": "medium"}}, []),
    ("accepted and honoured by fleetlb itself", {
        "metadata": {"a": "b"}, "store": False, "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "k", "service_tier": "flex", "truncation": "auto",
        "safety_identifier": "u", "reasoning": {"summary": "auto"}, "max_tool_calls": None,
        "background": False, "conversation": None}, []),
]


@pytest.mark.parametrize(("request_", "dropped"), [c[1:] for c in DROPPED],
                         ids=[c[0] for c in DROPPED])
def test_what_is_dropped(request_: dict[str, Any], dropped: list[str]) -> None:
    assert check_params({"model": "m", "input": "hi", **request_}) == dropped


def test_codex_clis_request_is_served_saying_what_was_dropped() -> None:
    translation = translate_request(CODEX_FIRST_REQUEST, upstream_model="b")
    assert translation.dropped == ("client_metadata", "tools[1]:web_search")
    assert dropped_value(translation.dropped) == "client_metadata,tools[1]:web_search"
    body = translation.body
    assert [t["function"]["name"] for t in body["tools"]] == ["exec_command"]
    assert body["messages"] == [{"role": "system", "content": "x"}]
    for key in ("client_metadata", "include", "store", "prompt_cache_key", "reasoning",
                "reasoning_effort"):
        assert key not in body


@pytest.mark.parametrize(("request_", "param"), [
    ({"background": True}, "background"),
    ({"max_tool_calls": 3}, "max_tool_calls"),
    ({"conversation": {"id": "conv_1"}}, "conversation"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"include": "reasoning.encrypted_content"}, "include"),  # a known key of the wrong type
    ({"reasoning": {"summary": "verbose"}}, "reasoning.summary"),
    ({"truncation": "middle"}, "truncation"),
])
def test_what_would_change_the_answer_is_refused(request_: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        check_params({"model": "m", "input": "hi", **request_})
    assert caught.value.param == param


def test_the_header_value_is_one_safe_line_of_bounded_length() -> None:
    assert dropped_value(["bad key\r\nx-evil: 1", "a,b"]) == "bad?key??x-evil:?1,a?b"
    many = [f"key_{i}" for i in range(1000)]
    value = dropped_value(many)
    assert len(value) <= MAX_DROPPED_CHARS
    assert value.endswith(",...")
    assert value.startswith("key_0,key_1,")
