"""vLLM (CPU) with the tiny model, asked directly: serving, stateful /v1/responses, and the same
network as llama-server's GGUF.
"""

from __future__ import annotations

import pytest

from .conftest import sdk
from .llama import MODEL_ALIAS
from .process import ServerProcess
from .wire import parse_sse, post_json

pytestmark = pytest.mark.real

MAX_TOKENS = 12
PROMPT = "Say something."


def printable(text: str) -> bool:
    return text.isascii() and text.isprintable()


def test_serves_chat_completions_and_models(vllm_fleet: list[ServerProcess]) -> None:
    with sdk(vllm_fleet[0].url) as client:
        models = [m.id for m in client.models.list()]
        chat = client.chat.completions.create(
            model=MODEL_ALIAS,
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=MAX_TOKENS,
        )
        completion = client.completions.create(
            model=MODEL_ALIAS, prompt=PROMPT, max_tokens=MAX_TOKENS
        )
    assert models == [MODEL_ALIAS]
    assert chat.choices[0].finish_reason == "length"
    assert printable(chat.choices[0].message.content or "")
    assert completion.choices[0].finish_reason == "length"
    assert printable(completion.choices[0].text)


def test_responses_object_and_stream(vllm_fleet: list[ServerProcess]) -> None:
    body = {"model": MODEL_ALIAS, "input": PROMPT, "max_output_tokens": MAX_TOKENS}
    reply = post_json(vllm_fleet[0].url + "/v1/responses", body)
    assert reply.status == 200, reply.body[:500]
    assert reply.json()["object"] == "response"
    streamed = post_json(vllm_fleet[0].url + "/v1/responses", {**body, "stream": True})
    assert streamed.status == 200
    types = [e.event for e in parse_sse(streamed.body) if e.event]
    assert types[0] == "response.created"
    assert "response.output_text.delta" in types


def test_previous_response_id_works_only_on_the_replica_that_made_it(
    vllm_fleet: list[ServerProcess],
) -> None:
    owner, other = vllm_fleet
    first = {"model": MODEL_ALIAS, "input": "Hi", "max_output_tokens": MAX_TOKENS, "store": True}
    made = post_json(owner.url + "/v1/responses", first)
    assert made.status == 200, made.body[:500]
    follow = {**first, "input": "And?", "previous_response_id": made.json()["id"]}
    assert post_json(owner.url + "/v1/responses", follow).status == 200
    assert post_json(other.url + "/v1/responses", follow).status in (400, 404)


def test_same_network_as_the_gguf_in_llama_server(
    vllm_fleet: list[ServerProcess], llama_fleet: list[ServerProcess]
) -> None:
    """Greedy decoding of one prompt gives the same text in both engines: the GGUF's permuted
    Q/K and tokenizer are the Hugging Face model's. Logits are spread wide (std ~8), so float
    rounding differences between the engines cannot flip the argmax.
    """
    texts = []
    for server in (vllm_fleet[0], llama_fleet[0]):
        with sdk(server.url) as client:
            reply = client.completions.create(
                model=MODEL_ALIAS, prompt="The tiny model", max_tokens=8, temperature=0
            )
        texts.append(reply.choices[0].text)
    assert texts[0] == texts[1]
    assert texts[0]
