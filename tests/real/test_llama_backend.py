"""llama-server with the tiny model, asked directly: what the gateway tests take for granted."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer

from .conftest import sdk
from .llama import MODEL_ALIAS
from .process import ServerProcess
from .tinymodel import HIDDEN, TinyModel
from .wire import parse_sse, post_json, request

pytestmark = pytest.mark.real

MAX_TOKENS = 12  # short answers: the model never ends on its own, so "length" is the end
PROMPT = "Say something."


def printable(text: str) -> bool:
    return text.isascii() and text.isprintable()


def test_serves_the_model_under_its_alias(llama_fleet: list[ServerProcess]) -> None:
    with sdk(llama_fleet[0].url) as client:
        assert [m.id for m in client.models.list()] == [MODEL_ALIAS]


def test_chat_stops_at_max_tokens_with_printable_text(llama_fleet: list[ServerProcess]) -> None:
    with sdk(llama_fleet[0].url) as client:
        reply = client.chat.completions.create(
            model=MODEL_ALIAS,
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=MAX_TOKENS,
        )
    choice = reply.choices[0]
    assert choice.finish_reason == "length"
    assert choice.message.content and printable(choice.message.content)
    assert reply.usage is not None and reply.usage.completion_tokens == MAX_TOKENS


def test_chat_streams_deltas_then_length(llama_fleet: list[ServerProcess]) -> None:
    with sdk(llama_fleet[0].url) as client:
        stream = client.chat.completions.create(
            model=MODEL_ALIAS,
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=MAX_TOKENS,
            stream=True,
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert text and printable(text)
    assert finishes[-1] == "length"


def test_completions_stop_at_max_tokens(llama_fleet: list[ServerProcess]) -> None:
    with sdk(llama_fleet[0].url) as client:
        reply = client.completions.create(model=MODEL_ALIAS, prompt=PROMPT, max_tokens=MAX_TOKENS)
    assert reply.choices[0].finish_reason == "length"
    assert printable(reply.choices[0].text)


def test_embeddings_have_the_hidden_size(llama_fleet: list[ServerProcess]) -> None:
    with sdk(llama_fleet[0].url) as client:
        reply = client.embeddings.create(model=MODEL_ALIAS, input=["one two", "three four"])
    assert [len(item.embedding) for item in reply.data] == [HIDDEN, HIDDEN]
    assert reply.data[0].embedding != reply.data[1].embedding


def test_tokenizes_like_the_hf_tokenizer(
    llama_fleet: list[ServerProcess], tiny_model: TinyModel
) -> None:
    text = "Hello world, the tiny model says: 42!"
    hf_ids = Tokenizer.from_file(str(tiny_model.hf_dir / "tokenizer.json")).encode(text).ids
    reply = post_json(llama_fleet[0].url + "/tokenize", {"content": text})
    assert reply.status == 200
    assert reply.json()["tokens"] == hf_ids


def test_responses_answers_a_response_object(llama_fleet: list[ServerProcess]) -> None:
    with sdk(llama_fleet[0].url) as client:
        response = client.responses.create(
            model=MODEL_ALIAS, input=PROMPT, max_output_tokens=MAX_TOKENS
        )
    assert response.object == "response"
    assert printable(response.output_text)


def test_responses_streams_events(llama_fleet: list[ServerProcess]) -> None:
    body = {"model": MODEL_ALIAS, "input": PROMPT, "max_output_tokens": MAX_TOKENS, "stream": True}
    reply = post_json(llama_fleet[0].url + "/v1/responses", body)
    assert reply.status == 200
    types = [event.event for event in parse_sse(reply.body) if event.event]
    assert types[0] == "response.created"
    assert "response.output_text.delta" in types
    assert types[-1] in ("response.completed", "response.incomplete")


def test_responses_is_stateless(llama_fleet: list[ServerProcess]) -> None:
    body = {
        "model": MODEL_ALIAS,
        "input": PROMPT,
        "max_output_tokens": MAX_TOKENS,
        "previous_response_id": "resp_unknown",
    }
    assert post_json(llama_fleet[0].url + "/v1/responses", body).status == 400


def test_health_answers(llama_fleet: list[ServerProcess]) -> None:
    assert request("GET", llama_fleet[1].url + "/health").status == 200
