import json
import random
from typing import Any

import orjson
import pytest

from lb.errors import StreamBroken
from lb.responses.framing import NormalizedFraming, TranslatedFraming, event_data
from lb.responses.ids import IdMaker
from lb.responses.normalize import EventNormalizer
from lb.responses.shape import problems
from lb.responses.stream import DONE, ChatToResponsesStream
from lb.sse import SseDecoder

Json = dict[str, Any]


def translated() -> TranslatedFraming:
    return TranslatedFraming(
        ChatToResponsesStream(
            {"model": "m", "input": "hi"},
            response_id="resp_1",
            created_at=1,
            ids=IdMaker(random.Random(1)),
            clock=lambda: 2,
        )
    )


def sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def chunk(delta: Json, finish: str | None = None) -> bytes:
    return sse({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def read(stream: bytes) -> list[Json]:
    """The client's view: each event's JSON, checked against its `event:` line and the spec."""
    decoder = SseDecoder()
    raw = decoder.feed(stream)
    assert decoder.flush() == b""
    assert raw[-1] == DONE
    assert stream.count(DONE) == 1
    events = []
    for one in raw[:-1]:
        head, data, blank = one.split(b"\n", 2)
        assert blank == b"\n"
        event = json.loads(data.removeprefix(b"data: "))
        assert head == b"event: " + event["type"].encode()
        assert problems(event) == []
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


@pytest.mark.parametrize(
    ("raw", "data"),
    [
        (b"data: {}\n\n", b"{}"),
        (b"event: x\ndata: {}\n\n", b"{}"),
        (b"data: {}\r\n\r\n", "{}"),
        (b"data: {\ndata: }\n\n", "{\n}"),
        (b": keep-alive\n\n", None),
        (b"\n", None),
        (b"data: [DONE]\n\n", b"[DONE]"),
    ],
)
def test_event_data(raw: bytes, data: str | bytes | None) -> None:
    assert event_data(raw) == data


def test_a_translated_stream_end_to_end() -> None:
    framing = translated()
    out = framing.start()
    out += framing.events(
        [chunk({"role": "assistant", "content": ""}), b": ping\n\n", chunk({"content": "Hel"})]
    )
    out += framing.events(
        [
            chunk({"content": "lo"}, "stop"),
            sse({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}),
            b"data: [DONE]\n\n",
        ]
    )
    out += framing.end(b"")
    assert framing.end(b"") == b""
    events = read(out)
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "Hello"
    assert events[-1]["response"]["usage"]["total_tokens"] == 3


def test_a_translated_stream_without_done_is_finished_by_end() -> None:
    framing = translated()
    out = framing.events([chunk({"content": "x"}, "length")]) + framing.end(b"")
    assert read(out)[-1]["type"] == "response.incomplete"


def test_a_broken_translated_stream_ends_with_error_and_failed() -> None:
    framing = translated()
    out = framing.events([chunk({"content": "par"})])
    out += framing.fail(StreamBroken("the backend closed the connection"))
    assert framing.end(b"") == b""
    events = read(out)
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2]["error"]["code"] == "upstream_error"
    assert events[-2]["error"]["message"] == "the backend closed the connection"


def test_a_chunk_that_is_not_json_fails_the_translated_stream() -> None:
    framing = translated()
    out = framing.events([chunk({"content": "a"}), b"data: {oops\n\n", chunk({"content": "b"})])
    out += framing.end(b"")
    events = read(out)
    assert events[-1]["type"] == "response.failed"


def test_a_native_stream_is_normalised_and_ends_with_one_done() -> None:
    normalizer = EventNormalizer({"model": "m"}, clock=lambda: 5)
    framing = NormalizedFraming(normalizer)
    created = {"type": "response.created", "response": {"id": "resp_n", "status": "in_progress"}}
    out = framing.events(
        [
            b"event: response.created\ndata: " + orjson.dumps(created) + b"\n\n",
            b"event: response.reasoning_text.delta\r\ndata: "
            + orjson.dumps(
                {
                    "type": "response.reasoning_text.delta",
                    "item_id": "rs",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": "x",
                }
            )
            + b"\r\n\r\n",
            sse({"type": "response.web_search_call.searching"}),
            b"event: response.output_text.delta\ndata: "
            + orjson.dumps({"item_id": "m", "output_index": 1, "content_index": 0, "delta": "y"})
            + b"\n\n",
            b"data: not json\n\n",
            sse([1, 2]),
            b": comment\n\n",
        ]
    )
    out += framing.events(
        [
            sse(
                {"type": "response.completed", "response": {"id": "resp_n", "status": "completed"}}
            ),
            b"data: [DONE]\n\n",
        ]
    )
    out += framing.end(b"")
    assert framing.fail(StreamBroken("late")) == b""
    events = read(out)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.reasoning.delta",
        "response.output_text.delta",
        "response.completed",
    ]
    assert normalizer.dropped == 1
    assert framing.unreadable == 2
    assert normalizer.response_id == "resp_n"


def test_a_broken_native_stream_ends_with_error_and_failed() -> None:
    framing = NormalizedFraming(EventNormalizer())
    out = framing.events([sse({"type": "response.created", "response": {"id": "resp_n"}})])
    out += framing.fail(StreamBroken("idle for too long"))
    events = read(out)
    assert [e["type"] for e in events] == ["response.created", "error", "response.failed"]


def generic_only(raw: list[bytes]) -> bytes:
    """What the generic path alone writes for these events (one per call, as they arrive)."""
    framing = translated()
    return b"".join(framing._translate([one]) for one in raw) + framing.end(b"")


def as_sent(raw: list[bytes]) -> tuple[bytes, TranslatedFraming]:
    framing = translated()
    return b"".join(framing.events([one]) for one in raw) + framing.end(b""), framing


def body(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def plain(text: Any, **top: Any) -> bytes:
    return body({"id": "c1", "object": "chat.completion.chunk", "created": 7,
                 "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
                 **top})


@pytest.mark.parametrize("name", ["alike", "decoy", "changing", "imposters", "spaced"])
def test_event_shapes_write_what_the_generic_path_writes(name: str) -> None:
    texts = [f" tok{i}" for i in range(40)] + ['"quoted" \\ é', "\u2028", "x" * 20]
    events = {
        "alike": [plain(t) for t in texts],
        # a "content" after the delta's, with the same text, must not be taken for it
        "decoy": [plain(t, x={"content": texts[0]}) for t in texts],
        # a field that changes every chunk: no shape matches twice, all still right
        "changing": [plain(t, created=i) for i, t in enumerate(texts)],
        # events in the learnt shape whose middle is not one string, or not a text
        "imposters": [plain(" a"), plain(" b"),
                      b'data: {"id":"c1","object":"chat.completion.chunk","created":7,'
                      b'"choices":[{"index":0,"delta":{"content":" c","tool_calls":[{"index":0,'
                      b'"id":"call_1","function":{"name":"f","arguments":"{}"}}]},'
                      b'"finish_reason":null}]}\n\n',
                      plain(5), plain(""), plain(None), plain(" d")],
        "spaced": [b'data: {"choices": [{"delta": {"content": "%b"}}]}\n\n' % t.encode()
                   for t in ("one", "two", "three")],
    }[name]
    raw = [chunk({"role": "assistant", "content": ""}), *events, chunk({}, "stop"), DONE]
    sent, framing = as_sent(raw)
    assert sent == generic_only(raw)
    if name in ("alike", "decoy", "spaced"):
        assert framing._hits >= len(events) - 2  # the shape was learnt, and used
    if name == "changing":
        assert framing._hits == 0 and framing._learnt == 2  # given up after two
