"""The openai SDK through fleetlb in front of two real llama-servers, and one of them dying."""

from __future__ import annotations

import json

import openai
import pytest

from .conftest import StartGateway, StartLlama, sdk
from .gateway import Backend
from .llama import MODEL_ALIAS
from .process import ServerProcess
from .tinymodel import HIDDEN
from .wire import EventStream, request

pytestmark = pytest.mark.real

MAX_TOKENS = 12
# A stream long enough to be still running when its backend is killed after its first event.
LONG_STREAM_TOKENS = 1900
ROUNDS = 6  # requests after the kill: with two endpoints, some would pick the dead one


def backends(servers: list[ServerProcess]) -> list[Backend]:
    return [Backend(name=f"llama-{i}", url=s.url) for i, s in enumerate(servers)]


def printable(text: str) -> bool:
    return text.isascii() and text.isprintable()


def chat(client: openai.OpenAI) -> str:
    reply = client.chat.completions.create(
        model=MODEL_ALIAS, messages=[{"role": "user", "content": "Hi"}], max_tokens=MAX_TOKENS
    )
    assert reply.choices[0].finish_reason == "length"
    return reply.choices[0].message.content or ""


def test_chat_plain_and_streamed(llama_fleet: list[ServerProcess], fleetlb: StartGateway) -> None:
    gateway = fleetlb(backends(llama_fleet))
    with sdk(gateway.url) as client:
        assert printable(chat(client))
        stream = client.chat.completions.create(
            model=MODEL_ALIAS,
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=MAX_TOKENS,
            stream=True,
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and printable(text)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_completions_embeddings_models(
    llama_fleet: list[ServerProcess], fleetlb: StartGateway
) -> None:
    gateway = fleetlb(backends(llama_fleet))
    with sdk(gateway.url) as client:
        completion = client.completions.create(
            model=MODEL_ALIAS, prompt="Once", max_tokens=MAX_TOKENS
        )
        embeddings = client.embeddings.create(model=MODEL_ALIAS, input=["a b", "c d"])
        models = [m.id for m in client.models.list()]
    assert completion.choices[0].finish_reason == "length"
    assert printable(completion.choices[0].text)
    assert [len(e.embedding) for e in embeddings.data] == [HIDDEN, HIDDEN]
    assert models == [MODEL_ALIAS]


def test_both_backends_serve_traffic(
    llama_fleet: list[ServerProcess], fleetlb: StartGateway
) -> None:
    gateway = fleetlb(backends(llama_fleet))
    body = {"model": MODEL_ALIAS, "prompt": "x", "max_tokens": 2}
    served = {
        request("POST", gateway.url + "/v1/completions", body).headers["x-fleetlb-endpoint"]
        for _ in range(12)
    }
    assert served == {"llama-0", "llama-1"}


def test_killed_backend_new_requests_keep_succeeding(
    start_llama: StartLlama, fleetlb: StartGateway
) -> None:
    servers = start_llama(2)
    gateway = fleetlb(backends(servers))
    with sdk(gateway.url) as client:
        chat(client)
        servers[0].kill()
        answers = [chat(client) for _ in range(ROUNDS)]
    assert all(printable(answer) for answer in answers)


def test_stream_on_killed_backend_ends_with_an_error_event(
    start_llama: StartLlama, fleetlb: StartGateway
) -> None:
    servers = start_llama(2)
    by_name = dict(zip(("llama-0", "llama-1"), servers, strict=True))
    gateway = fleetlb(backends(servers))
    body = {
        "model": MODEL_ALIAS,
        "messages": [{"role": "user", "content": "Tell a long story"}],
        "max_tokens": LONG_STREAM_TOKENS,
        "stream": True,
    }
    with EventStream(gateway.url + "/v1/chat/completions", body) as stream:
        assert stream.status == 200
        first = stream.next_event()
        assert first is not None and "choices" in json.loads(first.data)
        by_name[stream.headers["x-fleetlb-endpoint"]].kill()
        rest = stream.rest()
    payloads = [e.data for e in rest if e.data != "[DONE]"]
    assert payloads, "the stream ended without a terminal error event"
    last = json.loads(payloads[-1])
    assert "error" in last, f"last event is no error: {payloads[-1][:200]}"
    assert not any(
        c.get("finish_reason") == "length"
        for p in payloads
        for c in json.loads(p).get("choices", [])
    ), "a stream cut short must not claim a normal finish"
