"""Property-based fuzzing of every route: generated bodies, headers and paths. Whatever arrives,
fleetlb never answers 500, every error is in its surface's shape (Ollama's on /api/*, OpenAI's
elsewhere), no header we sent comes back, no traceback is logged, and in-flight returns to 0.

Fixed seed (derandomize) and a bounded number of examples per route family in CI;
FLEETLB_FUZZ_EXAMPLES=5000 for a long local run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hardening.live import WAIT_S, Answer, LiveGateway

EXAMPLES = int(os.environ.get("FLEETLB_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
# a long local run outlasts the suite's 60 s per test: allow about half a second per example
pytestmark = pytest.mark.timeout(60 + EXAMPLES // 2)
KEY = "sk-fuzz-key-0123456789"
ADMIN = "admin-fuzz-key-9876543210"
CANARY = "canary-7f3a"  # put in every header value we send: it must never come back

OPENAI_POSTS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses",
                "/v1/responses/compact", "/openai/v1/chat/completions",
                "/v1/responses/resp_fuzz/cancel"]
OLLAMA_POSTS = ["/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/api/show",
                "/api/pull", "/api/copy", "/api/create", "/api/push"]
GETS = ["/v1/models", "/v1/responses/resp_fuzz", "/v1/responses/resp_fuzz/input_items",
        "/api/tags", "/api/ps", "/api/version", "/", "/healthz", "/readyz",
        "/admin/endpoints", "/admin/stats", "/admin", "/metrics"]
DELETES = ["/v1/responses/resp_fuzz", "/api/delete"]

# --- strategies ---------------------------------------------------------------------------------

odd_text = st.sampled_from(["", "\x00", "m1\x00", "m1\n", "\r\n", "\u202e", "\ud800", "a\udc80b",
                            "\udfff\ud800", "\x7f\x1b[31m", "😀" * 3, "x" * 300, "[" * 200])
text = st.text(max_size=30) | odd_text
scalars = (st.none() | st.booleans() | text
           | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(text, inner, max_size=4), max_leaves=15)
small_count = st.integers(min_value=-2, max_value=8) | values  # token caps: a huge one would run
message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "tool"])
                                 | values, "content": text | values})
request_fields = {
    "model": st.sampled_from(["m1", "m1:latest", "nope"]) | text | values,
    "messages": st.lists(message, max_size=3) | values,
    "stream": st.booleans() | values,
    "input": text | st.lists(message, max_size=2) | values,
    "prompt": text | values,
    "tools": values,
    "metadata": values,
    "previous_response_id": st.sampled_from(["resp_fuzz", "", "x" * 500]) | values,
    "options": st.fixed_dictionaries({"num_predict": small_count}) | values,
    "temperature": values,
    "user": text | values,
}
token_caps = {"max_tokens": small_count, "max_output_tokens": small_count,
              "max_completion_tokens": small_count}


def deep(levels: int) -> bytes:
    return b'{"model":"m1","x":' + b"[" * levels + b"]" * levels + b"}"


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["request", "request", "request", "json", "bytes", "deep"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200) | st.sampled_from(
            [b"", b"{", b"null", b"[]", b'"x"', b"\xff\xfe{}", b'{"model": "m1"',
             b'{"model":"\\ud800"}', b'{"model":"\\u0000"}', b"1e999999"]))
    if kind == "deep":
        return deep(draw(st.integers(min_value=100, max_value=1100)))
    if kind == "json":
        obj: Any = draw(values)
    else:
        fields = draw(st.fixed_dictionaries({}, optional={**request_fields, **token_caps}))
        obj = {**fields, **draw(st.dictionaries(text, values, max_size=2))}
        if not any(k in fields for k in token_caps):
            obj["max_tokens"] = obj["max_output_tokens"] = 4
            obj.setdefault("options", {"num_predict": 4})
    # the stdlib writes what orjson will not: huge integers, NaN, escaped lone surrogates
    return json.dumps(obj, ensure_ascii=True).encode()


header_value = (st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=20)
                | st.sampled_from(["\x01\x02", "\t", "é", "\x7f", "a" * 2000, "Bearer", "%00"]))
header_name = st.sampled_from(["X-Request-ID", "X-Session-ID", "Content-Type", "Accept",
                               "Accept-Encoding", "User-Agent", "X-Fuzz", "Cookie", "Origin",
                               "Authorization"])


@st.composite
def headers(draw: st.DrawFn, key: str) -> list[tuple[bytes, bytes]]:
    chosen = draw(st.lists(st.tuples(header_name, header_value), max_size=4))
    out = [(b"Authorization", f"Bearer {key}".encode())]
    for name, value in chosen:
        if name == "Authorization":
            continue
        out.append((name.encode(), (CANARY + value).encode("utf-8")))
    if draw(st.booleans()):
        out.append((b"Content-Type", b"application/json"))
    return out


suffix = st.sampled_from(["", "/", "?x=1", "?stream=true&%00=%ff", "/..", "/%2e%2e", "//",
                          "/%ff%fe", "?" + "a" * 3000, "#frag"])

# --- the gateway and the invariants -------------------------------------------------------------


@pytest.fixture(scope="module")
def live() -> Iterator[LiveGateway]:
    gateway = LiveGateway({"server": {"api_keys": [KEY], "admin_key": ADMIN},
                           "ollama": {"allow_admin": True}})
    gateway.start({"o": "ollama", "v": "vllm"})
    yield gateway
    gateway.stop()


def check(live: LiveGateway, path: str, answer: Answer, *, one_request: bool = True) -> None:
    """The invariants; `one_request=False` when the bytes sent may read as several requests."""
    assert answer.status != 500 and answer.status < 600, (path, answer)
    if answer.status >= 400 and _refused_by_the_parser(answer):
        # bytes the HTTP parser itself refuses: a 400 in OpenAI's shape whatever the path
        # (lb.dispatch: the path is not known), as one access line
        assert answer.status == 400
        lines = settled(live)
        outcomes = [line["outcome"] for line in lines if line["event"] == "access"]
        assert outcomes == ["bad_request"] or not one_request, lines
        assert not any("exception" in line for line in lines)
        return
    for name, value in answer.headers.items():
        assert CANARY not in value or name == "x-request-id", (name, value)
        assert "\r" not in value and "\n" not in value
    if answer.status >= 400:
        assert answer.headers.get("content-type", "").startswith("application/json"), answer
        error = answer.json()["error"]
        if path.startswith("/api/"):
            assert isinstance(error, str) and error, answer
        else:
            assert set(error) == {"message", "type", "param", "code"}, answer
            assert isinstance(error["message"], str)
    lines = settled(live)
    assert not [line for line in lines if "exception" in line or line.get("level") == "error"]
    statuses = [line["status"] for line in lines if line["event"] == "access"]
    assert statuses == [answer.status] or (not one_request and 500 not in statuses), lines


def _refused_by_the_parser(answer: Answer) -> bool:
    if not answer.headers.get("content-type", "").startswith("application/json"):
        return False
    error = answer.json().get("error")
    return isinstance(error, dict) and error.get("code") == "bad_request" and \
        str(error.get("message", "")).startswith("fleetlb could not read this HTTP request")


def settled(live: LiveGateway) -> list[dict[str, Any]]:
    """The log lines of the request just answered: its access line is written once the
    gateway has finished with it, which can be just after the client read the last byte."""
    lines: list[dict[str, Any]] = []
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        lines += live.lines()
        if any(line["event"] == "access" for line in lines) and not any(
                live.in_flight().values()):
            return lines
        time.sleep(0.005)
    raise AssertionError(f"no access line, or in-flight not back to 0: {lines}")


@FUZZ
@given(path=st.sampled_from(OPENAI_POSTS + OLLAMA_POSTS), tail=suffix, body=bodies(),
       sent=headers(KEY))
def test_model_routes(live: LiveGateway, path: str, tail: str, body: bytes,
                      sent: list[tuple[bytes, bytes]]) -> None:
    answer = live.request(b"POST", (path + tail).encode(), sent, body)
    check(live, path, answer)


@FUZZ
@given(path=st.sampled_from(GETS + DELETES), tail=suffix, body=bodies() | st.just(b""),
       method=st.sampled_from([b"GET", b"DELETE", b"HEAD", b"PUT", b"PATCH", b"OPTIONS"]),
       admin=st.booleans(), sent=st.data())
def test_other_routes_and_methods(live: LiveGateway, path: str, tail: str, body: bytes,
                                  method: bytes, admin: bool, sent: st.DataObject) -> None:
    key = ADMIN if admin else KEY
    answer = live.request(method, (path + tail).encode(), sent.draw(headers(key)), body)
    if method == b"HEAD":
        assert answer.status != 500
        settled(live)
        return
    check(live, path, answer)


@FUZZ
@given(raw_path=st.binary(min_size=1, max_size=40).map(
    lambda b: b"/" + b.replace(b" ", b"%20").replace(b"\r", b"").replace(b"\n", b"")),
    key=st.sampled_from([KEY, "wrong", ""]))
def test_any_path(live: LiveGateway, raw_path: bytes, key: str) -> None:
    answer = live.request(b"GET", raw_path, [(b"Authorization", f"Bearer {key}".encode())])
    check(live, raw_path.decode("latin-1"), answer, one_request=False)


@FUZZ
@given(messages=st.lists(bodies() | st.sampled_from([b"", b"\xff", b'{"type":"response.create"}']),
                         min_size=1, max_size=3))
def test_websocket_messages(live: LiveGateway, messages: list[bytes]) -> None:
    import aiohttp

    async def talk() -> list[Any]:
        answers: list[Any] = []
        async with aiohttp.ClientSession() as s, s.ws_connect(
                f"http://127.0.0.1:{live.port}/v1/responses",
                headers={"Authorization": f"Bearer {KEY}"}) as ws:
            for message in messages:
                text = message.decode("utf-8", "replace")
                await ws.send_str(text)
                while True:
                    reply = await ws.receive(timeout=20)
                    event = orjson.loads(reply.data)
                    answers.append(event)
                    if event["type"] in ("error", "response.completed", "response.failed",
                                         "response.incomplete"):
                        break
        return answers

    for event in live.run(talk()):
        if event["type"] == "error":
            assert event["status"] != 500
            assert {"type", "code", "message"} <= set(event["error"])
    lines = live.lines()
    assert not [line for line in lines if "exception" in line]
    assert not any(live.in_flight().values())
