"""`/v1/responses` through fleetlb against a real llama-server: native (the server's own
`/v1/responses`) and translate (its Chat Completions), both held to the Open Responses spec.
"""

from __future__ import annotations

import json

import pytest

from lb.responses.conformance import problems

from .conftest import StartGateway, sdk
from .gateway import Backend
from .llama import MODEL_ALIAS
from .process import ServerProcess
from .wire import SseEvent, parse_sse, post_json

pytestmark = pytest.mark.real

MAX_OUTPUT_TOKENS = 12
MODES = ["native", "translate"]


def gateway_url(mode: str, llama_fleet: list[ServerProcess], fleetlb: StartGateway) -> str:
    return fleetlb([Backend(name="llama-0", url=llama_fleet[0].url, responses=mode)]).url


def request_body(stream: bool) -> dict[str, object]:
    return {
        "model": MODEL_ALIAS,
        "input": "Say something.",
        "max_output_tokens": MAX_OUTPUT_TOKENS,
        "stream": stream,
    }


def check_events(events: list[SseEvent]) -> list[dict[str, object]]:
    """The framing rules of the spec; returns the decoded event payloads."""
    assert events, "no events"
    assert events[-1].data == "[DONE]", "the stream must end with data: [DONE]"
    payloads = [json.loads(e.data) for e in events[:-1]]
    for event, payload in zip(events, payloads, strict=False):
        assert event.event == payload["type"], (event.event, payload.get("type"))
        assert problems(payload) == [], payload
    numbers = [p["sequence_number"] for p in payloads]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers), numbers
    return payloads


@pytest.mark.parametrize("mode", MODES)
def test_response_object_conforms(
    mode: str, llama_fleet: list[ServerProcess], fleetlb: StartGateway
) -> None:
    url = gateway_url(mode, llama_fleet, fleetlb)
    reply = post_json(url + "/v1/responses", request_body(stream=False))
    assert reply.status == 200, reply.body[:500]
    response = reply.json()
    assert problems(response) == []
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    texts = [
        part["text"]
        for item in response["output"]
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    ]
    assert texts and all(t.isascii() and t.isprintable() for t in texts)


@pytest.mark.parametrize("mode", MODES)
def test_event_stream_conforms(
    mode: str, llama_fleet: list[ServerProcess], fleetlb: StartGateway
) -> None:
    url = gateway_url(mode, llama_fleet, fleetlb)
    reply = post_json(url + "/v1/responses", request_body(stream=True))
    assert reply.status == 200, reply.body[:500]
    assert reply.headers["content-type"].startswith("text/event-stream")
    payloads = check_events(parse_sse(reply.body))
    types = [p["type"] for p in payloads]
    assert types[0] == "response.created"
    assert types[-1] == "response.incomplete"
    for kind in (
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ):
        assert kind in types, f"missing {kind}"
    deltas = "".join(str(p["delta"]) for p in payloads if p["type"] == "response.output_text.delta")
    done = next(p for p in payloads if p["type"] == "response.output_text.done")
    assert deltas == done["text"]


@pytest.mark.parametrize("mode", MODES)
def test_sdk_reads_responses(
    mode: str, llama_fleet: list[ServerProcess], fleetlb: StartGateway
) -> None:
    """The SDK parses object and events (status semantics are checked above, on the wire).

    Not `responses.stream(...).get_final_response()`: the SDK helper demands a
    `response.completed` event and rejects a conforming stream that ends `response.incomplete`.
    """
    url = gateway_url(mode, llama_fleet, fleetlb)
    with sdk(url) as client:
        response = client.responses.create(
            model=MODEL_ALIAS, input="Hi", max_output_tokens=MAX_OUTPUT_TOKENS
        )
        events = list(
            client.responses.create(
                model=MODEL_ALIAS, input="Hi", max_output_tokens=MAX_OUTPUT_TOKENS, stream=True
            )
        )
    assert response.output_text
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1]
    assert final.type in ("response.completed", "response.incomplete")
    assert deltas and deltas == final.response.output_text


def test_translate_mode_chains_previous_response_id(
    llama_fleet: list[ServerProcess], fleetlb: StartGateway
) -> None:
    """llama-server is stateless; in translate mode fleetlb keeps the conversation itself."""
    url = gateway_url("translate", llama_fleet, fleetlb)
    with sdk(url) as client:
        first = client.responses.create(
            model=MODEL_ALIAS, input="Hi", max_output_tokens=MAX_OUTPUT_TOKENS, store=True
        )
        second = client.responses.create(
            model=MODEL_ALIAS,
            input="And?",
            max_output_tokens=MAX_OUTPUT_TOKENS,
            previous_response_id=first.id,
        )
    assert second.previous_response_id == first.id
    assert second.output_text
