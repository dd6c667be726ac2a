import json
import random
import re
from collections.abc import Callable
from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from lb.responses.freeform import custom_arguments
from lb.responses.ids import IdMaker
from lb.responses.shape import problems
from lb.responses.stream import DONE, ChatToResponsesStream, encode
from lb.responses.tools import tool_table

Json = dict[str, Any]
Splitter = Callable[[str], list[str]]
REQUEST = {"model": "client-name", "input": "hi", "stream": True}
USAGE = {
    "prompt_tokens": 9,
    "completion_tokens": 5,
    "total_tokens": 14,
    "completion_tokens_details": {"reasoning_tokens": 2},
}
TERMINAL = {"response.completed", "response.incomplete", "response.failed"}
# An agent's tools: calls of these come back namespaced or as custom tool calls; the plain
# function names of the scenarios (get_weather, get_time) are not declared and come back as is.
AGENT_TOOLS = tool_table([
    {"type": "namespace", "name": "multi_agent_v1", "tools": [
        {"type": "function", "name": "spawn_agent"}]},
    {"type": "custom", "name": "apply_patch"},
])
PATCH = '*** Begin Patch\n+say "hi" \\o/ é\n*** End Patch'


def machine() -> ChatToResponsesStream:
    return ChatToResponsesStream(
        REQUEST,
        response_id="resp_1",
        created_at=1000,
        ids=IdMaker(random.Random(5)),
        clock=lambda: 1003.7,
        tools=AGENT_TOOLS,
    )


def delta_chunk(delta: Json, finish: str | None = None, **choice: Any) -> Json:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1000,
        "model": "backend-name",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, **choice}],
    }


def chunks(scenario: list[tuple[Any, ...]], split: Splitter) -> list[Json]:
    """The chat chunks a backend would send for scenario, its texts cut by split."""
    out = [delta_chunk({"role": "assistant", "content": ""})]
    for step in scenario:
        kind = step[0]
        if kind in ("reasoning_content", "reasoning", "content"):
            out += [delta_chunk({kind: piece}) for piece in split(step[1])]
        elif kind == "tool":
            _, index, call_id, name, arguments = step
            out.append(
                delta_chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": call_id,
                                "type": "function",
                                "function": {"name": name, "arguments": ""},
                            }
                        ]
                    }
                )
            )
            out += [
                delta_chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                for piece in split(arguments)
            ]
        elif kind == "finish":
            out.append(delta_chunk({}, step[1]))
        elif kind == "usage":
            out.append(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion.chunk",
                    "choices": [],
                    "usage": step[1],
                }
            )
        elif kind == "error":
            out.append({"error": {"message": step[1], "type": "server_error", "code": 500}})
    return out


def run(
    scenario: list[tuple[Any, ...]],
    split: Splitter = lambda text: [text],
) -> tuple[list[Json], Json]:
    stream = machine()
    events = stream.start()
    for chunk in chunks(scenario, split):
        events += stream.feed(chunk)
    events += stream.finish()
    return events, stream.response


# Within one item, each event type as a letter, and what an item's events must spell.
LETTERS = {
    "response.content_part.added": "P",
    "response.output_text.delta": "D",
    "response.output_text.done": "T",
    "response.content_part.done": "Q",
    "response.reasoning.delta": "R",
    "response.reasoning.done": "S",
    "response.function_call_arguments.delta": "A",
    "response.function_call_arguments.done": "B",
    "response.custom_tool_call_input.delta": "C",
    "response.custom_tool_call_input.done": "E",
    "response.output_item.done": "X",
}
GRAMMAR = {
    "message": ("PD*TQX", "PD*"),
    "reasoning": ("PR*SQX", "PR*"),
    "function_call": ("A*BX", "A*"),
    "custom_tool_call": ("C*EX", "C*"),
}  # (finished, cut short by an error)
TEXT_OF = {
    "message": ("delta", "text"),
    "reasoning": ("delta", "text"),
    "function_call": ("delta", "arguments"),
    "custom_tool_call": ("delta", "input"),
}


def check_events(events: list[Json]) -> None:
    """Everything the specification says about a stream's events, in one place."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        assert problems(event) == [], event
        json.loads(encode(event).split(b"\ndata: ", 1)[1])  # encodable
    types = [e["type"] for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] in TERMINAL
    assert all(t not in TERMINAL for t in types[:-1])
    for snapshot in events[:2]:
        response = snapshot["response"]
        assert (
            response["status"],
            response["output"],
            response["usage"],
            response["completed_at"],
        ) == ("in_progress", [], None, None)
    position = 2
    final = events[-1]["response"]
    while events[position]["type"] == "response.output_item.added":
        position = check_item(events, position, final)
    if types[-1] == "response.failed":
        assert types[position:] == ["error", "response.failed"]
    else:
        assert position == len(events) - 1
    assert len(final["output"]) == sum(t == "response.output_item.added" for t in types)


def check_item(events: list[Json], start: int, final: Json) -> int:
    """Check one item's events, from its output_item.added; return where the next one starts."""
    added = events[start]
    item, index = added["item"], added["output_index"]
    assert item["status"] == "in_progress"
    assert index == sum(e["type"] == "response.output_item.added" for e in events[:start])
    end = start + 1
    while events[end]["type"] in LETTERS:
        end += 1
        if events[end - 1]["type"] == "response.output_item.done":
            break
    own = events[start + 1 : end]
    spelled = "".join(LETTERS[e["type"]] for e in own)
    finished, cut = GRAMMAR[item["type"]]
    assert re.fullmatch(finished, spelled) or re.fullmatch(cut, spelled), spelled
    for event in own:
        assert event["output_index"] == index
        assert event.get("item_id", item["id"]) == item["id"]
        assert event.get("content_index", 0) == 0
    delta_key, done_key = TEXT_OF[item["type"]]
    streamed = "".join(e[delta_key] for e in own if e["type"].endswith(".delta"))
    final_item = final["output"][index]
    assert final_item["id"] == item["id"]
    assert _text_of(final_item) == streamed
    if re.fullmatch(finished, spelled):
        done = [e for e in own if e["type"].endswith(".done") and done_key in e]
        assert done[0][done_key] == streamed
        assert own[-1]["item"] == final_item
        for part_done in (e for e in own if e["type"] == "response.content_part.done"):
            assert part_done["part"] == final_item["content"][0]
    return end


def _text_of(item: Json) -> str:
    if item["type"] == "function_call":
        return str(item["arguments"])
    if item["type"] == "custom_tool_call":
        return str(item["input"])
    return str(item["content"][0]["text"])


def shapes(response: Json) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for item in response["output"]:
        detail: tuple[Any, ...] = ()
        if item["type"] in ("function_call", "custom_tool_call"):
            detail = (item["call_id"], item.get("namespace"), item["name"])
        out.append((item["type"], item["status"], *detail, _text_of(item)))
    return out


ARGS = '{"city": "Oslo", "unit": "celsius"}'
SCENARIOS: dict[str, tuple[list[tuple[Any, ...]], str, list[tuple[Any, ...]]]] = {
    "text only": (
        [("content", "Hello, wörld! 👋"), ("finish", "stop"), ("usage", USAGE)],
        "response.completed",
        [("message", "completed", "Hello, wörld! 👋")],
    ),
    "one tool call": (
        [("tool", 0, "call_a", "get_weather", ARGS), ("finish", "tool_calls")],
        "response.completed",
        [("function_call", "completed", "call_a", None, "get_weather", ARGS)],
    ),
    "two tool calls": (
        [
            ("tool", 0, "call_a", "get_weather", ARGS),
            ("tool", 1, "call_b", "get_time", "{}"),
            ("finish", "tool_calls"),
            ("usage", USAGE),
        ],
        "response.completed",
        [
            ("function_call", "completed", "call_a", None, "get_weather", ARGS),
            ("function_call", "completed", "call_b", None, "get_time", "{}"),
        ],
    ),
    "text and a tool call": (
        [
            ("content", "Let me check."),
            ("tool", 0, "call_a", "get_weather", ARGS),
            ("finish", "tool_calls"),
        ],
        "response.completed",
        [
            ("message", "completed", "Let me check."),
            ("function_call", "completed", "call_a", None, "get_weather", ARGS),
        ],
    ),
    "reasoning and text": (
        [
            ("reasoning_content", "The user greets; greet back."),
            ("content", "Hi there!"),
            ("finish", "stop"),
            ("usage", USAGE),
        ],
        "response.completed",
        [
            ("reasoning", "completed", "The user greets; greet back."),
            ("message", "completed", "Hi there!"),
        ],
    ),
    "reasoning under its newer name": (
        [
            ("reasoning", "Hmm, weather."),
            ("tool", 0, "call_a", "get_weather", ARGS),
            ("finish", "tool_calls"),
        ],
        "response.completed",
        [
            ("reasoning", "completed", "Hmm, weather."),
            ("function_call", "completed", "call_a", None, "get_weather", ARGS),
        ],
    ),
    "length cut-off": (
        [("content", "Once upon a time"), ("finish", "length"), ("usage", USAGE)],
        "response.incomplete",
        [("message", "incomplete", "Once upon a time")],
    ),
    "length cut-off in a tool call": (
        [("content", "Sure."), ("tool", 0, "call_a", "get_weather", '{"ci'), ("finish", "length")],
        "response.incomplete",
        [
            ("message", "completed", "Sure."),
            ("function_call", "incomplete", "call_a", None, "get_weather", '{"ci'),
        ],
    ),
    "a custom tool call": (
        [("tool", 0, "call_p", "apply_patch", custom_arguments(PATCH)), ("finish", "tool_calls")],
        "response.completed",
        [("custom_tool_call", "completed", "call_p", None, "apply_patch", PATCH)],
    ),
    "text, a namespaced call and a custom call": (
        [
            ("content", "Two things."),
            ("tool", 0, "call_s", "multi_agent_v1__spawn_agent", ARGS),
            ("tool", 1, "call_p", "apply_patch", custom_arguments(PATCH)),
            ("finish", "tool_calls"),
            ("usage", USAGE),
        ],
        "response.completed",
        [
            ("message", "completed", "Two things."),
            ("function_call", "completed", "call_s", "multi_agent_v1", "spawn_agent", ARGS),
            ("custom_tool_call", "completed", "call_p", None, "apply_patch", PATCH),
        ],
    ),
    "a custom call that is not our object": (
        [("tool", 0, "call_p", "apply_patch", "raw patch text"), ("finish", "tool_calls")],
        "response.completed",
        [("custom_tool_call", "completed", "call_p", None, "apply_patch", "raw patch text")],
    ),
    "length cut-off in a custom call": (
        [("tool", 0, "call_p", "apply_patch", '{"input": "*** Beg'), ("finish", "length")],
        "response.incomplete",
        [("custom_tool_call", "incomplete", "call_p", None, "apply_patch", "*** Beg")],
    ),
    "mid-stream error in a custom call": (
        [("tool", 0, "call_p", "apply_patch", '{"input": "half'), ("error", "boom")],
        "response.failed",
        [("custom_tool_call", "incomplete", "call_p", None, "apply_patch", "half")],
    ),
    "mid-stream error": (
        [
            ("reasoning_content", "Thinking"),
            ("content", "Partial answ"),
            ("error", "CUDA out of memory"),
            ("content", "ignored"),
            ("finish", "stop"),
        ],
        "response.failed",
        [("reasoning", "completed", "Thinking"), ("message", "incomplete", "Partial answ")],
    ),
}


def splitters(texts: list[str]) -> list[Splitter]:
    """Every way of cutting the texts that matters: whole, every single character, chunks of
    2 and 3, and a cut at every position."""
    found: list[Splitter] = [lambda t: [t], list]
    found += [lambda t, n=n: [t[i : i + n] for i in range(0, len(t), n)] or [""] for n in (2, 3)]
    longest = max((len(t) for t in texts), default=0)
    found += [lambda t, p=p: [t[:p], t[p:]] if 0 < p < len(t) else [t] for p in range(1, longest)]
    return found


@pytest.mark.parametrize("name", SCENARIOS)
def test_stream_scenario_at_every_split(name: str) -> None:
    scenario, terminal, expected = SCENARIOS[name]
    texts = [step[-1] for step in scenario if isinstance(step[-1], str)]
    first: Json | None = None
    for split in splitters(texts):
        events, response = run(scenario, split)
        check_events(events)
        assert events[-1]["type"] == terminal
        assert problems(response) == []
        assert shapes(response) == expected
        assert response is events[-1]["response"]
        if first is None:
            first = response
        assert response == first  # however the backend cut its chunks


def test_completed_response_has_usage_times_and_echo() -> None:
    events, response = run(SCENARIOS["reasoning and text"][0])
    assert response["status"] == "completed"
    assert (response["id"], response["created_at"], response["completed_at"]) == (
        "resp_1",
        1000,
        1003,
    )
    assert response["usage"] == {
        "input_tokens": 9,
        "output_tokens": 5,
        "total_tokens": 14,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 2},
    }
    assert response["model"] == "client-name"
    assert response["incomplete_details"] is None
    assert events[0]["response"]["id"] == "resp_1"


def test_length_cut_off_reports_why() -> None:
    events, response = run(SCENARIOS["length cut-off"][0])
    assert events[-1]["type"] == "response.incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["completed_at"] == 1003


def test_error_event_and_failed_response() -> None:
    events, response = run(SCENARIOS["mid-stream error"][0])
    error = events[-2]
    assert error["error"] == {
        "type": "server_error",
        "code": "500",
        "message": "CUDA out of memory",
        "param": None,
    }
    assert response["status"] == "failed"
    assert response["error"] == {"code": "500", "message": "CUDA out of memory"}
    assert response["completed_at"] is None


@pytest.mark.parametrize(
    "chunk",
    [
        {"object": "error", "message": "vLLM failed", "type": "BadRequestError", "code": 400},
        {"error": "a plain string"},
    ],
)
def test_other_error_chunks_fail_the_stream(chunk: Json) -> None:
    stream = machine()
    events = stream.start() + stream.feed(delta_chunk({"content": "x"})) + stream.feed(chunk)
    check_events(events)
    assert events[-1]["type"] == "response.failed"
    assert stream.is_done


def test_fail_from_the_relay_mid_item_and_then_nothing_more() -> None:
    stream = machine()
    events = stream.start() + stream.feed(
        delta_chunk(
            {"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": '{"a'}}]}
        )
    )
    events += stream.fail("upstream_error", "the backend went away")
    check_events(events)
    assert shapes(stream.response) == [("function_call", "incomplete", "c", None, "f", '{"a')]
    assert stream.finish() == []
    assert stream.fail("x", "y") == []
    assert stream.feed(delta_chunk({"content": "late"})) == []


def test_fail_before_anything_still_starts_the_stream() -> None:
    events = machine().fail("upstream_error", "no", param="model", error_type="model_error")
    check_events(events)
    assert events[2]["error"] == {
        "type": "model_error",
        "code": "upstream_error",
        "message": "no",
        "param": "model",
    }


def test_an_empty_answer_is_an_empty_message() -> None:
    stream = machine()
    events = stream.feed(delta_chunk({"role": "assistant"}, "stop")) + stream.finish()
    check_events(events)  # feed started the stream by itself
    assert shapes(stream.response) == [("message", "completed", "")]
    assert stream.finish() == []
    assert stream.start() == []


def test_a_tool_call_whose_name_comes_later_is_announced_with_it() -> None:
    stream = machine()
    events = stream.start()
    for call in (
        {"index": 0, "id": "call_x", "function": {"arguments": ""}},
        {"index": 0, "function": {"arguments": '{"q":'}},
        {"index": 0, "function": {"name": "search", "arguments": ' "cats"}'}},
    ):
        events += stream.feed(delta_chunk({"tool_calls": [call]}))
    events += stream.finish()
    check_events(events)
    assert shapes(stream.response) == [
        ("function_call", "completed", "call_x", None, "search", '{"q": "cats"}')
    ]


def test_a_tool_call_that_never_gets_a_name_still_appears() -> None:
    stream = machine()
    events = (
        stream.start()
        + stream.feed(delta_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}))
        + stream.finish()
    )
    check_events(events)
    (item,) = stream.response["output"]
    assert (item["name"], item["arguments"]) == ("", "{}")
    assert item["call_id"].startswith("call_")


def test_whole_tool_calls_without_index_in_one_delta() -> None:
    # Ollama sends each call whole; some backends leave out the index
    stream = machine()
    events = stream.start() + stream.feed(
        delta_chunk(
            {
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "function": {"name": "a", "arguments": "{}"}},
                    {"id": "call_2", "function": {"name": "b", "arguments": '{"x":1}'}},
                ],
            },
            "tool_calls",
        )
    )
    events += stream.finish()
    check_events(events)
    assert shapes(stream.response) == [
        ("function_call", "completed", "call_1", None, "a", "{}"),
        ("function_call", "completed", "call_2", None, "b", '{"x":1}'),
    ]


def test_interleaved_tool_calls_fail_rather_than_garble() -> None:
    stream = machine()
    events = stream.start()
    for call in (
        {"index": 0, "id": "c0", "function": {"name": "a", "arguments": "{"}},
        {"index": 1, "id": "c1", "function": {"name": "b", "arguments": "{"}},
        {"index": 0, "function": {"arguments": "}"}},
    ):
        events += stream.feed(delta_chunk({"tool_calls": [call]}))
    check_events(events)
    assert events[-1]["type"] == "response.failed"


def test_reasoning_and_content_in_one_delta_keep_their_order() -> None:
    stream = machine()
    events = (
        stream.start()
        + stream.feed(delta_chunk({"reasoning_content": "so", "content": "Yes"}, "stop"))
        + stream.finish()
    )
    check_events(events)
    assert shapes(stream.response) == [
        ("reasoning", "completed", "so"),
        ("message", "completed", "Yes"),
    ]


def test_text_after_a_tool_call_is_a_new_message() -> None:
    events, response = run(
        [("content", "A"), ("tool", 0, "c", "f", "{}"), ("content", "B"), ("finish", "stop")]
    )
    check_events(events)
    assert [i["type"] for i in response["output"]] == ["message", "function_call", "message"]


def test_logprobs_are_streamed_and_kept() -> None:
    logprobs = {
        "content": [{"token": "Hi", "logprob": -0.5, "bytes": [72, 105], "top_logprobs": []}]
    }
    stream = machine()
    events = stream.start() + stream.feed(delta_chunk({"content": "Hi"}, logprobs=logprobs))
    events += stream.finish()
    check_events(events)
    expected = [{"token": "Hi", "logprob": -0.5, "bytes": [72, 105], "top_logprobs": []}]
    assert next(e for e in events if e["type"].endswith("text.delta"))["logprobs"] == expected
    assert stream.response["output"][0]["content"][0]["logprobs"] == expected


def test_response_before_the_end_is_an_in_progress_snapshot() -> None:
    stream = machine()
    stream.feed(delta_chunk({"content": "x"}))
    snapshot = stream.response
    assert snapshot["status"] == "in_progress"
    assert len(snapshot["output"]) == 1
    assert not stream.is_done


def test_encode_writes_one_sse_event() -> None:
    event = {
        "type": "response.output_text.delta",
        "sequence_number": 3,
        "item_id": "m",
        "output_index": 0,
        "content_index": 0,
        "delta": "a\nb\r\n\u2028",
        "logprobs": [],
    }
    raw = encode(event)
    head, data = raw.split(b"\n", 1)
    assert head == b"event: response.output_text.delta"
    assert data.startswith(b"data: ")
    assert data.endswith(b"\n\n")
    assert data.count(b"\n") == 2  # the JSON is one line
    assert json.loads(data[6:]) == event
    assert DONE == b"data: [DONE]\n\n"
    assert encode({"type": "custom"}).startswith(b"event: custom\ndata: ")


# chunks of every kind, mixed: text_delta must take only the plain-text ones
MIXED_CHUNKS: list[Json] = [
    delta_chunk({"role": "assistant", "content": ""}),
    delta_chunk({"content": "plain"}),  # before any item: the generic path opens the message
    delta_chunk({"content": "more"}),
    delta_chunk({"role": "assistant", "content": ' "quoted" \\ \n\u2028 é'}),
    delta_chunk({"content": "x", "reasoning_content": None, "tool_calls": []}),
    delta_chunk({"content": "with logprobs"},
                logprobs={"content": [{"token": "w", "logprob": -0.5, "bytes": [119],
                                       "top_logprobs": []}]}),
    delta_chunk({"reasoning_content": "think", "content": "then say"}),
    delta_chunk({"content": "after reasoning"}),
    delta_chunk({"content": "last words"}, "stop"),
    {**delta_chunk({"content": "counted"}), "usage": USAGE},
    delta_chunk({"content": 5}),  # not text: the generic path ignores it
    delta_chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                 "function": {"name": "get_weather", "arguments": "{}"}}]}),
    delta_chunk({"content": "a new message"}),
    {"object": "error", "message": "backend broke", "code": "boom"},
]


def test_text_delta_writes_what_the_generic_path_writes() -> None:
    by_feed, fast = machine(), machine()
    expected = [b"".join(map(encode, by_feed.start()))]
    got = [b"".join(map(encode, fast.start()))]
    taken = 0
    for chunk in MIXED_CHUNKS:
        expected.append(b"".join(map(encode, by_feed.feed(chunk))))
        text = fast.text_delta(chunk)
        taken += text is not None
        got.append(text if text is not None else b"".join(map(encode, fast.feed(chunk))))
    expected.append(b"".join(map(encode, by_feed.finish())))
    got.append(b"".join(map(encode, fast.finish())))
    assert got == expected
    assert fast.response == by_feed.response
    assert taken == 4  # "more", the quoted one, the one with empty extras, "after reasoning"
    assert machine().text_delta(delta_chunk({"content": "no item open yet"})) is None


@pytest.mark.parametrize("name", [n for n, s in SCENARIOS.items() if s[1] != "response.failed"])
def test_events_and_final_response_parse_as_the_openai_sdk_models(name: str) -> None:
    # The SDK's models are stricter than the specification in places (cache_write_tokens);
    # what it knows of our events must validate. It does not know response.reasoning.*.
    events, response = run(SCENARIOS[name][0])
    Response.model_validate(response)
    adapter: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
    for event in events:
        if not event["type"].startswith("response.reasoning."):
            adapter.validate_python(event)
