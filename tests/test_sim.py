"""The simulated backend (lb.sim): pure pieces table-driven, every route, kind and knob against the
app running as a real server on 127.0.0.1, and `run` in a subprocess."""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import os
import random
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from openai.types.chat import ChatCompletionMessageParam

from lb.responses.conformance import EVENT_TYPES
from lb.sim import (
    BEHAVIOR_KEY,
    RecordedRequest,
    SimBehavior,
    SimOptions,
    build_sim_app,
    configure_parser,
)
from lb.sim.backend import SimBackend
from lb.sim.chunks import HOLE, ChunkTemplate
from lb.sim.responses_body import ECHO_DEFAULTS
from lb.sim.stream import split_pieces
from lb.sim.text import (
    DEFAULT_MAX_TOKENS,
    EMBEDDING_DIM,
    TOOL_ARGUMENTS,
    answer_text,
    embedding,
    last_user_text,
    parse_max_tokens,
    plan,
    token,
)

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
ROOT = Path(__file__).resolve().parent.parent
USER = [{"role": "user", "content": "hello there"}]
WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
]
RESPONSE_KEYS = {
    "id",
    "object",
    "created_at",
    "completed_at",
    "status",
    "incomplete_details",
    "model",
    "previous_response_id",
    "instructions",
    "output",
    "error",
    "tools",
    "tool_choice",
    "truncation",
    "parallel_tool_calls",
    "text",
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "top_logprobs",
    "reasoning",
    "usage",
    "max_output_tokens",
    "max_tool_calls",
    "store",
    "background",
    "service_tier",
    "metadata",
    "safety_identifier",
    "prompt_cache_key",
}
TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]
LEGAL_EVENTS = EVENT_TYPES  # the specification's closed set


def text_events(n_deltas: int) -> list[str]:
    return TEXT_EVENTS[:4] + ["response.output_text.delta"] * n_deltas + TEXT_EVENTS[5:]


@pytest.fixture
def sim(aiohttp_client: MakeClient) -> Callable[..., Awaitable[Client]]:
    """Start a simulated backend with these SimOptions fields; `client.app[BEHAVIOR_KEY]`."""

    async def start(**options: Any) -> Client:
        return await aiohttp_client(build_sim_app(SimOptions(**options)))

    return start


def behavior(client: Client) -> SimBehavior:
    assert client.app is not None
    return client.app[BEHAVIOR_KEY]


def sse_events(raw: bytes) -> list[tuple[str | None, bytes]]:
    """(event name, data) per SSE event of a whole body; LF or CRLF."""
    events = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        if not block:
            continue
        name, data = None, b""
        for line in block.split(b"\n"):
            if line.startswith(b"event: "):
                name = line[7:].decode()
            elif line.startswith(b"data: "):
                data = line[6:]
        events.append((name, data))
    return events


def sse_json(raw: bytes) -> list[Any]:
    """The JSON of each data event; the final [DONE] must be there and is dropped."""
    datas = [data for _, data in sse_events(raw)]
    assert datas[-1] == b"[DONE]"
    return [orjson.loads(d) for d in datas[:-1]]


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait for a condition the server reaches after the client moved on (no timing asserted)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


async def read_until_broken(resp: aiohttp.ClientResponse) -> tuple[bytes, bool]:
    """The bytes received, and whether the body ended abnormally."""
    received = b""
    try:
        async for piece in resp.content.iter_any():
            received += piece
    except aiohttp.ClientPayloadError:
        return received, True
    return received, False


# --- pure pieces -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"a",
        b"\n",
        b"\r\n",
        b"data: [DONE]\n\n",
        b"data: {}\r\n\r\n",
        b'event: x\r\ndata: {"a":1}\r\n\r\n',
        b"no newline at all",
        b"\r\r\n\n",
    ],
)
def test_split_pieces_rejoin_and_cut_crlf(data: bytes) -> None:
    pieces = split_pieces(data)
    assert b"".join(pieces) == data
    assert all(pieces)
    ends = {sum(map(len, pieces[: i + 1])) for i in range(len(pieces))}
    for i in range(len(data) - 1):
        if data[i : i + 2] == b"\r\n":
            assert i + 1 in ends  # a reader gets the \r and the \n in different writes
    if len(data) >= 4:
        assert len(pieces) > 1
    for i in range(len(data)):
        if data[i : i + 1] in (b"\r", b"\n") and i:
            assert i in ends  # a line ending never arrives glued to its line


@pytest.mark.parametrize(
    ("max_tokens", "tools", "user", "finish", "n", "tool"),
    [
        (None, None, "hi", "stop", DEFAULT_MAX_TOKENS, None),
        (3, None, "hi", "length", 3, None),
        (3, TOOLS, "hi", "length", 3, None),
        (None, TOOLS, "the Weather, please", "tool_calls", 0, "get_weather"),
        (None, None, "weather", "stop", DEFAULT_MAX_TOKENS, None),
        (None, TOOLS, "weatherman", "stop", DEFAULT_MAX_TOKENS, None),
        (None, [{"type": "function", "name": "lookup"}], "weather?", "tool_calls", 0, "lookup"),
        (None, [{"type": "function"}], "weather", "tool_calls", 0, "get_weather"),
        (None, [], "weather", "stop", DEFAULT_MAX_TOKENS, None),
    ],
)
def test_plan(
    max_tokens: int | None, tools: Any, user: str, finish: str, n: int, tool: str | None
) -> None:
    p = plan(max_tokens, tools, user, 4)
    assert (p.finish, p.n_tokens, p.prompt_tokens) == (finish, n, 4)
    assert (p.tool_call.name if p.tool_call else None) == tool


@pytest.mark.parametrize("value", [0, -1, True, "3", 3.5, [3]])
def test_parse_max_tokens_rejects(value: Any) -> None:
    with pytest.raises(ValueError, match="positive"):
        parse_max_tokens(value)


@pytest.mark.parametrize(
    ("messages", "text"),
    [
        ([], ""),
        (USER, "hello there"),
        ([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "x"}]}], "a"),
        ([*USER, {"role": "tool", "content": "sunny"}], ""),
        (["not a dict"], ""),
        ([{"role": "user", "content": None}], ""),
    ],
)
def test_last_user_text(messages: list[Any], text: str) -> None:
    assert last_user_text(messages) == text


def test_answer_text_and_tokens() -> None:
    assert answer_text(0) == ""
    assert answer_text(3) == "the quick brown"
    assert answer_text(40) == "".join(token(i) for i in range(40))
    assert len(answer_text(40).split()) == 40


@pytest.mark.parametrize("item", ["", "hello", "héllo \x00", [1, 2, 3], "x" * 10_000])
def test_embedding_is_deterministic_unit_vector(item: Any) -> None:
    vector = embedding(item)
    assert vector == embedding(item)
    assert len(vector) == EMBEDDING_DIM
    assert abs(sum(v * v for v in vector) - 1.0) < 1e-4
    assert vector != embedding("other")


def test_chunk_template_matches_plain_encoding() -> None:
    obj = {"id": "x", "choices": [{"delta": {"content": HOLE}}], "n": None}
    filled = ChunkTemplate.of(obj, before=b"data: ", after=b"\n\n").fill(orjson.dumps(' "q"\n'))
    assert (
        filled
        == b"data: "
        + orjson.dumps({**obj, "choices": [{"delta": {"content": ' "q"\n'}}]})
        + b"\n\n"
    )


@pytest.mark.parametrize(
    ("kind", "name", "served"),
    [
        ("ollama", "m", "m"),
        ("ollama", "m:latest", "m"),
        ("ollama", "q:7b", "q:7b"),
        ("ollama", "q", None),
        ("ollama", "t", "t:latest"),
        ("ollama", "t:latest", "t:latest"),
        ("openai", "m", "m"),
        ("openai", "m:latest", None),
        ("vllm", "t", None),
        ("vllm", 3, None),
    ],
)
def test_model_spellings(kind: Any, name: Any, served: str | None) -> None:
    backend = SimBackend(
        SimOptions(models=("m", "q:7b", "t:latest"), kind=kind),
        SimBehavior(),
        random.Random(0),
        lambda: 0.0,
    )
    assert backend.resolve(name) == served


# --- OpenAI-compatible routes --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["openai", "vllm", "ollama"])
async def test_models_list(sim: Any, kind: str) -> None:
    client = await sim(models=("a", "b"), kind=kind)
    resp = await client.get("/v1/models")
    body = await resp.json()
    assert resp.status == 200
    assert body["object"] == "list"
    listed = ["a:latest", "b:latest"] if kind == "ollama" else ["a", "b"]
    assert [m["id"] for m in body["data"]] == listed
    assert all(m["object"] == "model" and isinstance(m["created"], int) for m in body["data"])


@pytest.mark.parametrize(
    ("extra", "n", "finish"),
    [
        ({}, DEFAULT_MAX_TOKENS, "stop"),
        ({"max_tokens": 5}, 5, "length"),
        ({"max_completion_tokens": 2, "max_tokens": 9}, 2, "length"),
    ],
)
async def test_chat_plain(sim: Any, extra: dict[str, Any], n: int, finish: str) -> None:
    client = await sim(kind="vllm")
    resp = await client.post(
        "/v1/chat/completions", json={"model": "sim-model", "messages": USER, **extra}
    )
    body = await resp.json()
    assert resp.status == 200
    assert body["id"].startswith("chatcmpl-")
    assert (body["object"], body["model"]) == ("chat.completion", "sim-model")
    assert isinstance(body["created"], int)
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == answer_text(n)
    assert (choice["index"], choice["finish_reason"]) == (0, finish)
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": n, "total_tokens": n + 2}


@pytest.mark.parametrize("include_usage", [False, True])
async def test_chat_stream(sim: Any, include_usage: bool) -> None:
    client = await sim()
    request = {
        "model": "sim-model",
        "messages": USER,
        "stream": True,
        "max_tokens": 4,
        "stream_options": {"include_usage": include_usage},
    }
    resp = await client.post("/v1/chat/completions", json=request)
    assert resp.headers["Content-Type"] == "text/event-stream"
    chunks = sse_json(await resp.read())
    assert len({c["id"] for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "sim-model" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = [c["choices"][0]["delta"]["content"] for c in chunks[1:5]]
    assert content == [token(i) for i in range(4)]  # one token per chunk
    assert chunks[5]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "length",
    }
    if include_usage:
        assert all(c["usage"] is None for c in chunks[:-1])
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"] == {
            "prompt_tokens": 2,
            "completion_tokens": 4,
            "total_tokens": 6,
        }
    else:
        assert len(chunks) == 6
        assert all("usage" not in c for c in chunks)


async def test_chat_tool_call_plain_and_stream(sim: Any) -> None:
    client = await sim()
    request = {"model": "sim-model", "messages": WEATHER, "tools": TOOLS}
    body = await (await client.post("/v1/chat/completions", json=request)).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_")
    assert call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": TOOL_ARGUMENTS}

    resp = await client.post("/v1/chat/completions", json={**request, "stream": True})
    chunks = sse_json(await resp.read())
    deltas = [c["choices"][0]["delta"] for c in chunks]
    first = deltas[0]["tool_calls"][0]
    assert first["id"].startswith("call_")
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    fragments = [d["tool_calls"][0]["function"]["arguments"] for d in deltas[1:-1]]
    assert len(fragments) > 1
    assert "".join(fragments) == TOOL_ARGUMENTS
    assert all("id" not in d["tool_calls"][0] for d in deltas[1:-1])
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_chat_after_tool_result_answers_text(sim: Any) -> None:
    client = await sim()
    messages = [*WEATHER, {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    body = await (
        await client.post(
            "/v1/chat/completions",
            json={"model": "sim-model", "messages": messages, "tools": TOOLS},
        )
    ).json()
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["choices"][0]["message"]["content"] == answer_text(DEFAULT_MAX_TOKENS)


async def test_completions_plain_and_stream(sim: Any) -> None:
    client = await sim()
    request = {"model": "sim-model", "prompt": ["one two", "three"], "max_tokens": 3}
    body = await (await client.post("/v1/completions", json=request)).json()
    assert body["id"].startswith("cmpl-")
    assert body["object"] == "text_completion"
    assert body["choices"] == [
        {"index": 0, "text": answer_text(3), "logprobs": None, "finish_reason": "length"}
    ]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}

    stream = {**request, "stream": True, "stream_options": {"include_usage": True}}
    chunks = sse_json(await (await client.post("/v1/completions", json=stream)).read())
    assert [c["choices"][0]["text"] for c in chunks[:3]] == [token(i) for i in range(3)]
    assert chunks[3]["choices"][0]["finish_reason"] == "length"
    assert chunks[4]["choices"] == []
    assert chunks[4]["usage"]["completion_tokens"] == 3
    assert all(c["object"] == "text_completion" for c in chunks)


async def test_embeddings(sim: Any) -> None:
    client = await sim(models=("emb",))
    body = await (await client.post("/v1/embeddings", json={"model": "emb", "input": "hi"})).json()
    assert body["object"] == "list"
    assert body["data"] == [{"object": "embedding", "index": 0, "embedding": embedding("hi")}]
    assert body["usage"] == {"prompt_tokens": 1, "total_tokens": 1}
    body = await (
        await client.post(
            "/v1/embeddings",
            json={"model": "emb", "input": ["a", "b c"], "encoding_format": "base64"},
        )
    ).json()
    assert [d["index"] for d in body["data"]] == [0, 1]
    decoded = struct.unpack("<8f", base64.b64decode(body["data"][1]["embedding"]))
    assert decoded == pytest.approx(embedding("b c"), abs=1e-6)
    assert body["usage"]["prompt_tokens"] == 3


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/chat/completions", b"{not json", 400, "invalid_json"),
        ("/v1/chat/completions", b"[1, 2]", 400, "invalid_request"),
        ("/v1/chat/completions", b'{"messages": []}', 400, "invalid_request"),
        ("/v1/chat/completions", b'{"model": "nope", "messages": []}', 404, "model_not_found"),
        ("/v1/chat/completions", b'{"model": "sim-model", "messages": []}', 400, "invalid_request"),
        (
            "/v1/chat/completions",
            b'{"model": "sim-model", "messages": [{"role": "user"}], "max_tokens": 0}',
            400,
            "invalid_request",
        ),
        ("/v1/completions", b'{"model": "sim-model", "prompt": 5}', 400, "invalid_request"),
        ("/v1/completions", b'{"model": "other"}', 404, "model_not_found"),
        ("/v1/embeddings", b'{"model": "sim-model", "input": []}', 400, "invalid_request"),
        ("/v1/embeddings", b'{"model": "sim-model", "input": [{}]}', 400, "invalid_request"),
        ("/v1/embeddings", b"\xff\xfe", 400, "invalid_json"),
    ],
)
async def test_openai_errors(sim: Any, path: str, body: bytes, status: int, code: str) -> None:
    client = await sim()
    resp = await client.post(path, data=body, headers={"Content-Type": "application/json"})
    error = (await resp.json())["error"]
    assert resp.status == status
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert error["message"]


async def test_records_requests_and_counters(sim: Any) -> None:
    client = await sim()
    await client.post(
        "/v1/chat/completions",
        json={"model": "sim-model", "messages": USER},
        headers={"X-Trace": "t1"},
    )
    await client.get("/v1/models")
    await client.get("/nowhere")
    b = behavior(client)
    assert b.paths() == ["/v1/chat/completions", "/v1/models", "/nowhere"]
    first = b.requests[0]
    assert (first.method, first.headers["X-Trace"]) == ("POST", "t1")
    assert first.json() == {"model": "sim-model", "messages": USER}
    assert b.requests[1].body == b""
    assert (b.active, b.completed, b.disconnects) == (0, 3, 0)


def test_record_limit_bounds_memory() -> None:
    b = SimBehavior(record_limit=3)
    for i in range(10):
        b.record(RecordedRequest("GET", f"/{i}", {}, b""))
    assert 3 <= len(b.requests) < 6
    assert b.requests[-1].path == "/9"
    off = SimBehavior(record_limit=0)
    off.record(RecordedRequest("GET", "/", {}, b""))
    assert off.requests == []


async def test_official_openai_sdk(sim: Any) -> None:
    client = await sim()
    base = str(client.make_url("/v1"))
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]
    async with openai.AsyncOpenAI(base_url=base, api_key="sk-sim", max_retries=0) as api:
        chat = await api.chat.completions.create(model="sim-model", messages=messages, max_tokens=3)
        assert chat.choices[0].message.content == answer_text(3)
        stream = await api.chat.completions.create(
            model="sim-model", messages=messages, stream=True
        )
        assert "".join(
            [c.choices[0].delta.content or "" async for c in stream if c.choices]
        ) == answer_text(16)
        vectors = await api.embeddings.create(model="sim-model", input="hi")
        assert vectors.data[0].embedding == pytest.approx(embedding("hi"), abs=1e-6)
        first = await api.responses.create(model="sim-model", input="hello")
        assert first.output_text == answer_text(16)
        events = [
            e
            async for e in await api.responses.create(
                model="sim-model", input="again", previous_response_id=first.id, stream=True
            )
        ]
        assert [e.type for e in events] == text_events(16)
        assert (await api.responses.retrieve(first.id)).id == first.id
        with pytest.raises(openai.NotFoundError):
            await api.responses.create(
                model="sim-model", input="x", previous_response_id="resp_nope"
            )


# --- kinds -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "path", "status"),
    [
        ("openai", "/health", 200),
        ("vllm", "/health", 200),
        ("ollama", "/health", 404),
        ("openai", "/metrics", 404),
        ("ollama", "/metrics", 404),
        ("openai", "/api/tags", 404),
        ("vllm", "/api/tags", 404),
        ("ollama", "/api/tags", 200),
        ("ollama", "/", 200),
    ],
)
async def test_kind_routes(sim: Any, kind: str, path: str, status: int) -> None:
    client = await sim(kind=kind)
    resp = await client.get(path)
    assert resp.status == status
    if path == "/health" and status == 200:
        assert await resp.read() == b""


async def test_vllm_metrics_count_running_requests(sim: Any) -> None:
    client = await sim(kind="vllm", models=("big", "lora"), tokens_per_s=50)
    resp = await client.post(
        "/v1/chat/completions",
        json={"model": "big", "messages": USER, "stream": True, "max_tokens": 500},
    )
    await resp.content.readline()  # the stream is running
    text = await (await client.get("/metrics")).text()
    assert 'vllm:num_requests_running{model_name="big"} 1\n' in text
    assert 'vllm:num_requests_waiting{model_name="big"} 0\n' in text
    assert "# TYPE vllm:num_requests_running gauge" in text
    resp.close()
    await eventually(lambda: behavior(client).active == 0)
    text = await (await client.get("/metrics")).text()
    assert 'vllm:num_requests_running{model_name="big"} 0\n' in text
    assert behavior(client).disconnects == 1


# --- Ollama ----------------------------------------------------------------------------------


async def test_ollama_discovery(sim: Any) -> None:
    client = await sim(kind="ollama", models=("llama3.1:8b", "qwen", "emb"))
    tags = await (await client.get("/api/tags")).json()
    assert [m["name"] for m in tags["models"]] == ["llama3.1:8b", "qwen:latest", "emb:latest"]
    entry = tags["models"][0]
    assert set(entry) == {"name", "model", "modified_at", "size", "digest", "details"}
    assert entry["modified_at"].endswith("Z")
    assert {"family", "parameter_size", "quantization_level"} <= set(entry["details"])
    assert await (await client.get("/api/version")).json() == {"version": "0.9.3"}

    ps = await (await client.get("/api/ps")).json()
    assert [m["name"] for m in ps["models"]] == ["llama3.1:8b"]
    await client.post(
        "/api/generate", json={"model": "qwen:latest", "prompt": "hi", "stream": False}
    )
    ps = await (await client.get("/api/ps")).json()
    assert [m["name"] for m in ps["models"]] == ["llama3.1:8b", "qwen:latest"]
    assert {"expires_at", "size_vram", "digest", "details"} <= set(ps["models"][1])

    show = await (await client.post("/api/show", json={"model": "qwen"})).json()
    assert {"modelfile", "template", "details", "model_info", "capabilities"} <= set(show)
    resp = await client.post("/api/show", json={"name": "missing"})
    assert resp.status == 404
    assert isinstance((await resp.json())["error"], str)


@pytest.mark.parametrize("model", ["qwen", "qwen:latest"])
async def test_ollama_chat_stream(sim: Any, model: str) -> None:
    client = await sim(kind="ollama", models=("qwen",))
    request = {"model": model, "messages": USER, "options": {"num_predict": 3}}
    resp = await client.post("/api/chat", json=request)
    assert resp.headers["Content-Type"] == "application/x-ndjson"
    lines = [orjson.loads(line) for line in (await resp.read()).splitlines()]
    assert [line["message"]["content"] for line in lines[:-1]] == [token(i) for i in range(3)]
    assert all(line["done"] is False and line["model"] == model for line in lines[:-1])
    last = lines[-1]
    assert (last["done"], last["done_reason"], last["eval_count"], last["prompt_eval_count"]) == (
        True,
        "length",
        3,
        2,
    )
    assert {"total_duration", "load_duration", "prompt_eval_duration", "eval_duration"} <= set(last)


async def test_ollama_plain_generate_chat_and_tools(sim: Any) -> None:
    client = await sim(kind="ollama", models=("qwen",))
    body = await (
        await client.post("/api/generate", json={"model": "qwen", "prompt": "hi", "stream": False})
    ).json()
    assert (body["response"], body["done"], body["done_reason"]) == (answer_text(16), True, "stop")
    body = await (
        await client.post("/api/chat", json={"model": "qwen", "messages": USER, "stream": False})
    ).json()
    assert body["message"] == {"role": "assistant", "content": answer_text(16)}
    body = await (
        await client.post(
            "/api/chat",
            json={"model": "qwen", "messages": WEATHER, "tools": TOOLS, "stream": False},
        )
    ).json()
    assert body["message"]["tool_calls"] == [
        {"function": {"name": "get_weather", "arguments": {"location": "Paris"}}}
    ]
    lines = (
        await (
            await client.post(
                "/api/chat", json={"model": "qwen", "messages": WEATHER, "tools": TOOLS}
            )
        ).read()
    ).splitlines()
    assert len(lines) == 2
    assert orjson.loads(lines[0])["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    body = await (await client.post("/api/generate", json={"model": "qwen"})).json()
    assert (body["done"], body["done_reason"]) == (True, "load")


async def test_ollama_embeddings(sim: Any) -> None:
    client = await sim(kind="ollama", models=("emb",))
    body = await (
        await client.post("/api/embed", json={"model": "emb", "input": ["a", "b"]})
    ).json()
    assert body["embeddings"] == [embedding("a"), embedding("b")]
    assert body["model"] == "emb"
    body = await (
        await client.post("/api/embeddings", json={"model": "emb:latest", "prompt": "a"})
    ).json()
    assert body == {"embedding": embedding("a")}


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/api/chat", b"{oops", 400),
        ("/api/chat", b'{"messages": []}', 400),
        ("/api/chat", b'{"model": "nope", "messages": []}', 404),
        ("/api/generate", b'{"model": "qwen", "prompt": 3}', 400),
        ("/api/embed", b'{"model": "qwen", "input": 3}', 400),
        ("/api/embeddings", b'{"model": "x"}', 404),
    ],
)
async def test_ollama_errors(sim: Any, path: str, body: bytes, status: int) -> None:
    client = await sim(kind="ollama", models=("qwen",))
    resp = await client.post(path, data=body)
    assert resp.status == status
    error = (await resp.json())["error"]
    assert isinstance(error, str)
    assert error


async def test_ollama_knobs(sim: Any) -> None:
    client = await sim(kind="ollama", models=("qwen",))
    b = behavior(client)
    b.fail_status = 500
    resp = await client.post("/api/chat", json={"model": "qwen", "messages": USER})
    assert (resp.status, await resp.json()) == (500, {"error": "sim: injected failure"})
    assert (await client.get("/api/tags")).status == 200  # discovery stays up
    b.fail_status, b.die_after_chunks, b.split_writes = None, 2, True
    resp = await client.post("/api/generate", json={"model": "qwen", "prompt": "hi"})
    received, broken = await read_until_broken(resp)
    assert broken
    assert [orjson.loads(line)["response"] for line in received.splitlines()] == [
        token(0),
        token(1),
    ]


async def test_ollama_model_management(sim: Any) -> None:
    client = await sim(kind="ollama", models=("qwen",))

    async def names() -> list[str]:
        return [m["name"] for m in (await (await client.get("/api/tags")).json())["models"]]

    resp = await client.post("/api/pull", json={"model": "llama3"})
    assert resp.content_type == "application/x-ndjson"
    lines = [orjson.loads(line) for line in (await resp.read()).splitlines()]
    assert lines[0] == {"status": "pulling manifest"} and lines[-1] == {"status": "success"}
    assert any("completed" in line and line["completed"] == line["total"] for line in lines)
    resp = await client.post("/api/create", json={"model": "mine", "stream": False})
    assert await resp.json() == {"status": "success"}
    assert await names() == ["qwen:latest", "llama3:latest", "mine:latest"]
    assert (await client.post("/api/copy", json={"source": "mine",
                                                 "destination": "yours:v2"})).status == 200
    assert (await client.delete("/api/delete", json={"model": "mine:latest"})).status == 200
    assert await names() == ["qwen:latest", "llama3:latest", "yours:v2"]
    resp = await client.delete("/api/delete", json={"model": "mine"})
    assert (resp.status, await resp.json()) == (404, {"error": "model 'mine' not found"})
    resp = await client.post("/api/copy", json={"source": "ghost", "destination": "x"})
    assert resp.status == 404
    push = await client.post("/api/push", json={"model": "qwen", "stream": False})
    assert await push.json() == {"status": "success"}
    behavior(client).fail_status = 500
    assert (await client.post("/api/pull", json={"model": "x"})).status == 500


# --- Open Responses --------------------------------------------------------------------------


async def test_responses_plain_store_and_routes(sim: Any) -> None:
    client = await sim()
    request = {
        "model": "sim-model",
        "input": "hello there",
        "instructions": "be brief",
        "metadata": {"k": "v"},
        "temperature": None,
    }
    body = await (await client.post("/v1/responses", json=request)).json()
    assert set(body) == RESPONSE_KEYS
    assert body["id"].startswith("resp_")
    assert (body["object"], body["status"], body["model"]) == ("response", "completed", "sim-model")
    assert isinstance(body["completed_at"], int)
    assert (body["instructions"], body["metadata"], body["temperature"]) == (
        "be brief",
        {"k": "v"},
        1.0,
    )
    assert all(body[k] is not None for k, v in ECHO_DEFAULTS.items() if v is not None)
    (item,) = body["output"]
    assert (item["type"], item["role"], item["status"]) == ("message", "assistant", "completed")
    assert item["content"] == [
        {"type": "output_text", "text": answer_text(16), "annotations": [], "logprobs": []}
    ]
    assert body["usage"] == {
        "input_tokens": 4,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 16,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 20,
    }

    rid = body["id"]
    assert await (await client.get(f"/v1/responses/{rid}")).json() == body
    items = await (await client.get(f"/v1/responses/{rid}/input_items")).json()
    assert items["object"] == "list"
    assert items["has_more"] is False
    assert items["data"][0]["content"] == [{"type": "input_text", "text": "hello there"}]
    assert items["first_id"] == items["data"][0]["id"]
    assert (await client.post(f"/v1/responses/{rid}/cancel")).status == 400
    deleted = await (await client.delete(f"/v1/responses/{rid}")).json()
    assert deleted == {"id": rid, "object": "response", "deleted": True}
    for resp in [
        await client.get(f"/v1/responses/{rid}"),
        await client.delete(f"/v1/responses/{rid}"),
        await client.get(f"/v1/responses/{rid}/input_items"),
    ]:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"


async def test_responses_stream_event_sequence(sim: Any) -> None:
    client = await sim()
    resp = await client.post(
        "/v1/responses", json={"model": "sim-model", "input": "hi", "stream": True}
    )
    assert resp.headers["Content-Type"] == "text/event-stream"
    raw = await resp.read()
    events = sse_events(raw)
    assert events[-1] == (None, b"[DONE]")
    parsed = [(name, orjson.loads(data)) for name, data in events[:-1]]
    assert all(name == e["type"] for name, e in parsed)  # `event:` equals the JSON type
    types = [e["type"] for _, e in parsed]
    deltas = [e for _, e in parsed if e["type"] == "response.output_text.delta"]
    assert types == text_events(16)
    assert set(types) <= LEGAL_EVENTS
    assert [e["sequence_number"] for _, e in parsed] == list(range(len(parsed)))
    assert b"\nid:" not in raw
    created, in_progress = parsed[0][1]["response"], parsed[1][1]["response"]
    assert set(created) == RESPONSE_KEYS
    assert (created["status"], created["output"], created["completed_at"], created["usage"]) == (
        "in_progress",
        [],
        None,
        None,
    )
    assert in_progress["id"] == created["id"]
    added = parsed[2][1]["item"]
    assert (added["status"], added["content"]) == ("in_progress", [])
    assert parsed[3][1]["part"] == {
        "type": "output_text",
        "text": "",
        "annotations": [],
        "logprobs": [],
    }
    assert "".join(d["delta"] for d in deltas) == answer_text(16)
    assert all(
        d["item_id"] == added["id"] and d["output_index"] == 0 and d["content_index"] == 0
        for d in deltas
    )
    assert parsed[-4][1]["text"] == answer_text(16)
    assert parsed[-2][1]["item"]["status"] == "completed"
    final = parsed[-1][1]["response"]
    assert set(final) == RESPONSE_KEYS
    assert (final["status"], isinstance(final["completed_at"], int)) == ("completed", True)
    assert final["usage"]["output_tokens"] == 16
    stored = await (await client.get(f"/v1/responses/{final['id']}")).json()
    assert stored == final


async def test_responses_incomplete_and_function_call(sim: Any) -> None:
    client = await sim()
    body = await (
        await client.post(
            "/v1/responses", json={"model": "sim-model", "input": "hi", "max_output_tokens": 3}
        )
    ).json()
    assert (body["status"], body["incomplete_details"]) == (
        "incomplete",
        {"reason": "max_output_tokens"},
    )
    assert body["output"][0]["content"][0]["text"] == answer_text(3)

    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    request = {
        "model": "sim-model",
        "input": [{"role": "user", "content": "weather in Paris?"}],
        "tools": tools,
        "stream": True,
    }
    events = [
        orjson.loads(d)
        for _, d in sse_events(await (await client.post("/v1/responses", json=request)).read())[:-1]
    ]
    types = [e["type"] for e in events]
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * 3,
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    item = events[2]["item"]
    assert (item["type"], item["name"], item["arguments"], item["status"]) == (
        "function_call",
        "get_weather",
        "",
        "in_progress",
    )
    assert item["call_id"].startswith("call_")
    assert "".join(e["delta"] for e in events[3:6]) == TOOL_ARGUMENTS
    assert all(e["item_id"] == item["id"] for e in events[3:7])
    assert events[6]["arguments"] == TOOL_ARGUMENTS
    assert events[-1]["response"]["tools"] == [
        {
            "type": "function",
            "name": "get_weather",
            "description": None,
            "parameters": {"type": "object"},
            "strict": None,
        }
    ]

    follow = {
        "model": "sim-model",
        "previous_response_id": events[-1]["response"]["id"],
        "tools": tools,
        "input": [{"type": "function_call_output", "call_id": item["call_id"], "output": "sunny"}],
    }
    body = await (await client.post("/v1/responses", json=follow)).json()
    assert body["output"][0]["type"] == "message"  # a tool result gets a text answer
    assert body["previous_response_id"] == follow["previous_response_id"]


async def test_responses_state_is_per_instance(sim: Any) -> None:
    one, two = await sim(), await sim()
    first = await (
        await one.post("/v1/responses", json={"model": "sim-model", "input": "hi"})
    ).json()
    follow = {"model": "sim-model", "input": "more", "previous_response_id": first["id"]}
    resp = await one.post("/v1/responses", json=follow)
    assert resp.status == 200
    assert (await resp.json())["usage"]["input_tokens"] > first["usage"]["total_tokens"]
    resp = await two.post("/v1/responses", json=follow)
    assert resp.status == 404
    error = (await resp.json())["error"]
    assert (error["code"], error["param"]) == (
        "previous_response_not_found",
        "previous_response_id",
    )

    unstored = await (
        await one.post("/v1/responses", json={"model": "sim-model", "input": "x", "store": False})
    ).json()
    assert unstored["store"] is False
    assert (await one.get(f"/v1/responses/{unstored['id']}")).status == 404
    resp = await one.post("/v1/responses", json={**follow, "previous_response_id": unstored["id"]})
    assert resp.status == 404


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{}", 400, "invalid_request"),
        (b"{x", 400, "invalid_json"),
        (b'"str"', 400, "invalid_request"),
        (b'{"model": "sim-model", "input": 5}', 400, "invalid_request"),
        (b'{"model": "sim-model", "input": "x", "max_output_tokens": -2}', 400, "invalid_request"),
        (b'{"model": "nope", "input": "x"}', 404, "model_not_found"),
    ],
)
async def test_responses_validation(sim: Any, body: bytes, status: int, code: str) -> None:
    client = await sim()
    resp = await client.post("/v1/responses", data=body)
    assert resp.status == status
    assert (await resp.json())["error"]["code"] == code


async def test_empty_object_is_400_even_when_failing(sim: Any) -> None:
    """The prober's support check must never generate, nor be confused by injected faults."""
    client = await sim()
    behavior(client).fail_status = 503
    assert (await client.post("/v1/responses", json={})).status == 400


async def test_no_responses_is_404(sim: Any) -> None:
    client = await sim(responses=False)
    assert (await client.post("/v1/responses", json={})).status == 404
    assert (
        await client.post("/v1/responses", json={"model": "sim-model", "input": "x"})
    ).status == 404
    assert (await client.get("/v1/models")).status == 200


# --- knobs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_fail_status(sim: Any, status: int) -> None:
    client = await sim()
    behavior(client).fail_status = status
    for path, body in [
        ("/v1/chat/completions", {"model": "sim-model", "messages": USER}),
        ("/v1/responses", {"model": "sim-model", "input": "x", "stream": True}),
        ("/v1/embeddings", {"model": "sim-model", "input": "x"}),
    ]:
        resp = await client.post(path, json=body)
        assert resp.status == status
        assert set((await resp.json())["error"]) == {"message", "type", "param", "code"}
        assert (resp.headers.get("Retry-After") is not None) == (status == 429)
    assert (await client.get("/v1/models")).status == 200
    assert (await client.get("/health")).status == 200
    behavior(client).fail_status = None
    assert (
        await client.post("/v1/chat/completions", json={"model": "sim-model", "messages": USER})
    ).status == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "sim-model", "messages": USER, "stream": True}),
        ("/v1/responses", {"model": "sim-model", "input": "x", "stream": True}),
    ],
)
@pytest.mark.parametrize("after", [0, 1, 3])
async def test_die_after_chunks(sim: Any, path: str, body: dict[str, Any], after: int) -> None:
    client = await sim()
    b = behavior(client)
    b.die_after_chunks = after
    resp = await client.post(path, json=body)
    assert resp.status == 200
    received, broken = await read_until_broken(resp)
    assert broken  # the body ends without its terminating chunk
    events = sse_events(received)
    assert len(events) == after
    assert all(data != b"[DONE]" for _, data in events)
    await eventually(lambda: b.active == 0)
    assert (b.completed, b.disconnects) == (0, 0)


@pytest.mark.parametrize(
    ("kind", "paths"), [("vllm", ["/v1/models", "/health"]), ("ollama", ["/api/tags", "/api/ps"])]
)
async def test_hang_until_client_gives_up(sim: Any, kind: str, paths: list[str]) -> None:
    client = await sim(kind=kind)
    b = behavior(client)
    b.hang = True
    for path in paths:
        with pytest.raises(asyncio.TimeoutError):
            await client.get(path, timeout=aiohttp.ClientTimeout(total=0.2))
    await eventually(lambda: b.disconnects == 2 and b.active == 0)
    assert b.completed == 0
    assert b.paths() == paths


async def test_hang_lifted_answers(sim: Any) -> None:
    client = await sim()
    b = behavior(client)
    b.hang = True
    pending = asyncio.ensure_future(
        client.post("/v1/chat/completions", json={"model": "sim-model", "messages": USER})
    )
    await eventually(lambda: b.active == 1)
    b.hang = False
    resp = await pending
    assert resp.status == 200
    assert (b.active, b.completed) == (0, 1)


async def test_client_disconnect_mid_stream_is_counted(sim: Any) -> None:
    client = await sim(tokens_per_s=50)
    resp = await client.post(
        "/v1/responses",
        json={"model": "sim-model", "input": "x", "stream": True, "max_output_tokens": 500},
    )
    assert (await resp.content.readline()).startswith(b"event: response.created")
    resp.close()
    b = behavior(client)
    await eventually(lambda: b.disconnects == 1 and b.active == 0)
    assert b.completed == 0


async def test_crlf_and_split_writes_keep_the_content(sim: Any) -> None:
    client = await sim()
    request = {"model": "sim-model", "messages": USER, "stream": True, "max_tokens": 3}
    plain = await (await client.post("/v1/chat/completions", json=request)).read()
    behavior(client).crlf = behavior(client).split_writes = True
    crlf = await (await client.post("/v1/chat/completions", json=request)).read()
    assert b"\n" not in crlf.replace(b"\r\n", b"")
    assert crlf.endswith(b"data: [DONE]\r\n\r\n")
    strip_id = [{**c, "id": "", "created": 0} for c in sse_json(plain)]
    assert [{**c, "id": "", "created": 0} for c in sse_json(crlf)] == strip_id


async def _raw_chunks(port: int, body: dict[str, Any]) -> list[bytes]:
    """POST over a bare socket and return the HTTP/1.1 chunks of the body: one per server write."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    payload = orjson.dumps(body)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload)
    )
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    rest = raw.split(b"\r\n\r\n", 1)[1]
    chunks: list[bytes] = []
    while True:
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            return chunks
        chunks.append(rest[:size])
        rest = rest[size + 2 :]


@pytest.mark.parametrize("crlf", [False, True])
async def test_split_writes_reach_the_wire_in_pieces(sim: Any, crlf: bool) -> None:
    client = await sim()
    assert client.port is not None
    request = {"model": "sim-model", "messages": USER, "stream": True, "max_tokens": 2}
    whole = await _raw_chunks(client.port, request)
    assert all(c.startswith(b"data: ") and c.endswith(b"\n\n") for c in whole)  # a write per event
    behavior(client).split_writes = True
    behavior(client).crlf = crlf
    pieces = await _raw_chunks(client.port, request)
    assert len(pieces) >= 3 * len(whole)
    assert not any(p.startswith(b"data: ") and p.endswith(b"\n\n") for p in pieces)
    if crlf:
        assert any(p.endswith(b"\r") for p in pieces)
        assert all(b.startswith(b"\n") for a, b in itertools.pairwise(pieces) if a.endswith(b"\r"))


async def test_fail_rate_with_seed_is_reproducible(sim: Any) -> None:
    client = await sim(fail_rate=0.5, seed=7)
    statuses = []
    for _ in range(20):
        resp = await client.post(
            "/v1/chat/completions", json={"model": "sim-model", "messages": USER, "max_tokens": 1}
        )
        statuses.append(resp.status)
    rng = random.Random(7)
    assert statuses == [500 if rng.random() < 0.5 else 200 for _ in range(20)]
    assert 200 in statuses
    assert 500 in statuses
    assert (await client.get("/v1/models")).status == 200  # discovery draws nothing


async def test_paced_answer_still_complete(sim: Any) -> None:
    client = await sim(ttft_ms=5, tokens_per_s=1000)
    body = await (
        await client.post(
            "/v1/chat/completions", json={"model": "sim-model", "messages": USER, "max_tokens": 4}
        )
    ).json()
    assert body["choices"][0]["message"]["content"] == answer_text(4)
    chunks = sse_json(
        await (
            await client.post(
                "/v1/completions", json={"model": "sim-model", "prompt": "x", "stream": True}
            )
        ).read()
    )
    assert "".join(c["choices"][0]["text"] for c in chunks) == answer_text(16)


# --- command line ----------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return parser.parse_args(argv)


def test_configure_parser_defaults_and_values() -> None:
    args = parse("--port", "9000")
    assert (args.host, args.port, args.models, args.kind, args.responses) == (
        "127.0.0.1",
        9000,
        ("sim-model",),
        "openai",
        True,
    )
    args = parse(
        "--port",
        "1",
        "--models",
        "a, b,",
        "--kind",
        "ollama",
        "--ttft-ms",
        "20",
        "--tokens-per-s",
        "30",
        "--no-responses",
        "--fail-rate",
        "0.25",
        "--seed",
        "3",
    )
    assert (args.models, args.kind, args.ttft_ms, args.tokens_per_s) == (
        ("a", "b"),
        "ollama",
        20.0,
        30.0,
    )
    assert (args.responses, args.fail_rate, args.seed) == (False, 0.25, 3)


@pytest.mark.parametrize(
    "argv",
    [
        (),
        ("--port", "x"),
        ("--port", "1", "--kind", "tgi"),
        ("--port", "1", "--fail-rate", "1.5"),
        ("--port", "1", "--ttft-ms", "-1"),
        ("--port", "1", "--ttft-ms", "nan"),
        ("--port", "1", "--models", ","),
    ],
)
def test_configure_parser_rejects(
    argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse(*argv)
    assert "error" in capsys.readouterr().err


def _start(*argv: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "lb.sim", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
async def test_run_serves_until_signal(stop: signal.Signals) -> None:
    proc = _start("--port", "0", "--kind", "vllm", "--models", "a,b", "--no-responses")
    try:
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        assert "listening on http://127.0.0.1:" in line
        url = line.strip().rsplit(" ", 1)[1]
        async with aiohttp.ClientSession() as session, session.get(f"{url}/v1/models") as resp:
            assert [m["id"] for m in (await resp.json())["data"]] == ["a", "b"]
        async with aiohttp.ClientSession() as session:
            responses = await session.post(f"{url}/v1/responses", json={"model": "a", "input": "x"})
            chat = await session.post(
                f"{url}/v1/chat/completions", json={"model": "b", "messages": USER}
            )
            assert (responses.status, chat.status) == (404, 200)
        proc.send_signal(stop)
        assert await asyncio.to_thread(proc.wait, 20) == 0
    finally:
        proc.kill()
        proc.communicate()


async def test_run_reports_a_busy_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = _start("--port", str(taken.getsockname()[1]))
        _, err = await asyncio.to_thread(proc.communicate, None, 20)
    assert proc.returncode == 1
    assert "cannot listen" in err
