"""probes.checks: pure parsers and classifier by table, each kind's check against fake backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from probes.checks import (
    check,
    classify_responses_probe,
    detect_responses,
    ollama_model_names,
    openai_model_ids,
    parse_vllm_kv_usage,
    parse_vllm_queue,
)
from tests.fake_probe_backends import FakeBackend, closed_port, running

HANG_TIMEOUT_S = 0.3  # what the hang tests wait out
ANSWER_TIMEOUT_S = 10.0  # a backend that answers: never the limit, even on a loaded machine


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


# --- pure parts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (404, b"404 page not found", False),  # Ollama without the route
        (404, b'{"detail":"Not Found"}', False),  # FastAPI without the route
        (405, b"", False),
        (405, b'{"error":"method not allowed"}', False),
        (501, b"not implemented", False),
        (400, b'{"error":{"message":"model is required"}}', True),
        (400, b"", True),
        (422, b'{"detail":[{"loc":["body","model"],"msg":"Field required"}]}', True),
        (415, b'{"error":"unsupported media type"}', True),  # the route exists and spoke JSON
        (200, b'{"id":"resp_1","object":"response"}', True),
        (200, b"<html><h1>404 Not Found</h1></html>", False),  # catch-all page served with 200
        (200, b'{"detail":"Not Found"}', False),
        (200, b"<html>welcome</html>", None),
        (200, b"[1, 2]", None),
        (200, b"", None),
        (500, b'{"error":"boom"}', None),
        (502, b"bad gateway", None),
        (503, b"", None),
        (401, b'{"error":"invalid api key"}', None),  # auth in front of the route says nothing
        (403, b"forbidden", None),
        (429, b'{"error":"slow down"}', None),
        (302, b"", None),
        (200, b"\xff\xfe not utf-8", None),
    ],
)
def test_classify_responses_probe(status: int, body: bytes, expected: bool | None) -> None:
    assert classify_responses_probe(status, body) is expected


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"models": [{"name": "llama3.1:8b"}]}, {"llama3.1:8b"}),
        ({"models": [{"name": "qwen2:latest"}]}, {"qwen2:latest", "qwen2"}),
        ({"models": [{"model": "phi3:latest"}]}, {"phi3:latest", "phi3"}),
        ({"models": [{"name": ":latest"}]}, {":latest"}),
        ({"models": [{"name": ""}, {"name": 3}, "x", None, {}]}, set()),
        ({"models": []}, set()),
        ({"models": None}, None),
        ({}, None),
        ([], None),
        (None, None),
    ],
)
def test_ollama_model_names(doc: Any, expected: set[str] | None) -> None:
    found = ollama_model_names(doc)
    assert (None if found is None else set(found)) == expected


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"data": [{"id": "a"}, {"id": "b"}]}, {"a", "b"}),
        ({"object": "list", "data": []}, set()),
        ({"data": [{"id": ""}, {"id": None}, {"name": "x"}, "y"]}, set()),
        ({"models": [{"name": "a"}]}, None),
        ({"data": {"id": "a"}}, None),
        ("nope", None),
    ],
)
def test_openai_model_ids(doc: Any, expected: set[str] | None) -> None:
    found = openai_model_ids(doc)
    assert (None if found is None else set(found)) == expected


VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="qwen"} 3.0
vllm:num_requests_running{engine="1",model_name="qwen"} 1.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="qwen"} 2.0 1712345678000
vllm:num_requests_waiting_by_reason{reason="capacity"} 99.0
vllm:num_requests_swapped{model_name="qwen"} 50.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="qwen"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="qwen"} 0.5
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (VLLM_METRICS, 6),
        ("vllm:num_requests_running 2\nvllm:num_requests_waiting 0\n", 2),
        ("vllm:num_requests_running\t4\r\n", 4),
        ('vllm:num_requests_waiting{a="}{"} 5\n', 5),  # a brace inside a label value
        ("vllm:num_requests_running NaN\nvllm:num_requests_waiting +Inf\n", None),
        ("vllm:num_requests_running -1\n", None),
        ("vllm:num_requests_running garbage\n", None),
        ("vllm:num_requests_running_total 7\n", None),
        ("# vllm:num_requests_running 7\n", None),
        ("", None),
        ("vllm:num_requests_waiting 0\n", 0),
    ],
)
def test_parse_vllm_queue(text: str, expected: int | None) -> None:
    assert parse_vllm_queue(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (VLLM_METRICS, 0.5),  # the fullest engine
        ("vllm:gpu_cache_usage_perc 0.75\n", 0.75),  # vLLM < 0.10
        ("vllm:kv_cache_usage_perc NaN\nvllm:kv_cache_usage_perc 7\n", None),
        ("vllm:kv_cache_usage_perc_total 0.3\n", None),
        ("", None),
    ],
)
def test_parse_vllm_kv_usage(text: str, expected: float | None) -> None:
    assert parse_vllm_kv_usage(text) == expected


# --- each kind against a fake backend -------------------------------------------------------------


async def test_ollama_check_lists_models_loaded_models_and_never_asks_root(
    session: aiohttp.ClientSession,
) -> None:
    fake = FakeBackend("ollama", models=["llama3.1:8b", "qwen2:latest"], loaded=["qwen2:latest"])
    async with running(fake):
        result = await check(session, fake.endpoint(), ANSWER_TIMEOUT_S)
    assert result.ok, result.error
    assert result.models == frozenset({"llama3.1:8b", "qwen2:latest", "qwen2"})
    assert result.loaded_models == frozenset({"qwen2:latest", "qwen2"})
    assert result.backend_queue is None
    assert {path for _, path, _ in fake.seen} == {"/api/tags", "/api/ps"}


async def test_vllm_check_reads_health_models_and_queue(session: aiohttp.ClientSession) -> None:
    fake = FakeBackend("vllm", models=["qwen"], metrics=VLLM_METRICS)
    async with running(fake):
        result = await check(session, fake.endpoint(), ANSWER_TIMEOUT_S)
    assert result.ok, result.error
    assert result.models == frozenset({"qwen"})
    assert result.backend_queue == 6
    assert result.kv_cache_usage == 0.5
    assert [path for _, path, _ in fake.seen] == ["/health", "/v1/models", "/metrics"]


async def test_openai_check_lists_models(session: aiohttp.ClientSession) -> None:
    fake = FakeBackend("openai", models=["gpt-oss-20b"])
    async with running(fake):
        result = await check(session, fake.endpoint(), ANSWER_TIMEOUT_S)
    assert (result.ok, result.models, result.error) == (True, frozenset({"gpt-oss-20b"}), None)


async def test_api_key_is_sent_as_bearer_and_never_in_errors(
    session: aiohttp.ClientSession,
) -> None:
    fake = FakeBackend("openai", status=503)
    async with running(fake):
        result = await check(session, fake.endpoint(api_key="sk-secret"), ANSWER_TIMEOUT_S)
        found = await detect_responses(
            session, fake.endpoint(api_key="sk-secret"), ANSWER_TIMEOUT_S
        )
    assert {auth for _, _, auth in fake.seen} == {"Bearer sk-secret"}
    assert not result.ok
    assert found is False
    assert "sk-secret" not in repr(result)


@pytest.mark.parametrize("kind", ["ollama", "vllm", "openai"])
async def test_liveness_5xx_fails_the_check(session: aiohttp.ClientSession, kind: str) -> None:
    fake = FakeBackend(kind, models=["m"], status=503)
    async with running(fake):
        result = await check(session, fake.endpoint(), ANSWER_TIMEOUT_S)
    assert not result.ok
    assert result.error is not None
    assert "HTTP 503" in result.error


async def test_vllm_extras_failing_keep_liveness(session: aiohttp.ClientSession) -> None:
    fake = FakeBackend("vllm", models=["qwen"], metrics="not prometheus at all {")
    async with running(fake):
        result = await check(session, fake.endpoint(), ANSWER_TIMEOUT_S)
    assert (result.ok, result.models, result.backend_queue) == (True, frozenset({"qwen"}), None)


@pytest.mark.parametrize("kind", ["ollama", "vllm", "openai"])
async def test_hung_backend_times_out(session: aiohttp.ClientSession, kind: str) -> None:
    fake = FakeBackend(kind, hang=True)
    async with running(fake):
        result = await check(session, fake.endpoint(), HANG_TIMEOUT_S)
    assert not result.ok
    assert result.error is not None
    assert "within" in result.error


async def test_refused_connection_fails_the_check(session: aiohttp.ClientSession) -> None:
    port = await closed_port()
    config = FakeBackend("ollama", port=port).endpoint()
    result = await check(session, config, ANSWER_TIMEOUT_S)
    assert not result.ok
    assert result.error is not None
    assert "/api/tags" in result.error


@pytest.mark.parametrize(
    ("kind", "path", "body"),
    [
        ("ollama", "/api/tags", "<html>proxy error</html>"),
        ("ollama", "/api/tags", '{"tags": []}'),
        ("openai", "/v1/models", "not json"),
        ("openai", "/v1/models", '{"models": ["a"]}'),
    ],
)
async def test_unreadable_model_listing_fails_the_check(
    session: aiohttp.ClientSession, kind: str, path: str, body: str
) -> None:
    fake = FakeBackend(kind, raw={path: body})
    async with running(fake):
        result = await check(session, fake.endpoint(), ANSWER_TIMEOUT_S)
    assert not result.ok
    assert result.error is not None
    assert path in result.error


async def test_missing_route_fails_the_check(session: aiohttp.ClientSession) -> None:
    fake = FakeBackend("vllm")  # an Ollama endpoint pointed at a vLLM server: no /api/tags
    async with running(fake):
        result = await check(session, fake.endpoint(kind="ollama"), ANSWER_TIMEOUT_S)
    assert not result.ok
    assert result.error == "/api/tags: HTTP 404"


# --- Responses API detection per kind and status class -------------------------------------------

RESPONSES_CASES = [
    pytest.param(None, None, False, id="no-route-404"),
    pytest.param((405, '{"error":"method"}'), None, False, id="405"),
    pytest.param((501, '{"error":"not implemented"}'), None, False, id="501"),
    pytest.param((400, '{"error":{"message":"model is required"}}'), None, True, id="400"),
    pytest.param((422, '{"detail":[{"msg":"Field required"}]}'), None, True, id="422"),
    pytest.param((500, '{"error":"boom"}'), None, None, id="500"),
    pytest.param((503, '{"error":"loading"}'), None, None, id="503"),
    pytest.param(None, "<html>404 Not Found</html>", False, id="html-not-found-200"),
]


@pytest.mark.parametrize("kind", ["ollama", "vllm", "openai"])
@pytest.mark.parametrize(("answer", "text", "expected"), RESPONSES_CASES)
async def test_detect_responses(
    session: aiohttp.ClientSession,
    kind: str,
    answer: tuple[int, str] | None,
    text: str | None,
    expected: bool | None,
) -> None:
    fake = FakeBackend(kind, responses=answer, responses_text=text)
    async with running(fake):
        assert await detect_responses(session, fake.endpoint(), ANSWER_TIMEOUT_S) is expected
    assert fake.seen[-1][:2] == ("POST", "/v1/responses")


async def test_detect_responses_hung_or_gone_is_unknown(session: aiohttp.ClientSession) -> None:
    fake = FakeBackend("vllm", hang=True)
    async with running(fake):
        assert await detect_responses(session, fake.endpoint(), HANG_TIMEOUT_S) is None
    assert await detect_responses(session, fake.endpoint(), HANG_TIMEOUT_S) is None  # refused now
