"""Raw-socket HTTP abuse as regression tests: request smuggling (CL+TE, duplicate lengths), bad
chunked framing, a 100 KB header line, pipelining, a half-close after a short body. Each gets a
4xx (or its proper answers), one access line per request, no traceback, and the gateway keeps
serving."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import Gateway, GatewayFactory, SimFactory, endpoint

WAIT_S = 20.0
CHAT = orjson.dumps({"model": "m1", "max_tokens": 2,
                     "messages": [{"role": "user", "content": "x"}]})


async def raw(gw: Gateway, data: bytes, *, half_close: bool = False) -> bytes:
    """What the gateway sends back to `data` until it closes the connection."""
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        await writer.drain()
        if half_close:
            writer.get_extra_info("socket").shutdown(socket.SHUT_WR)
        out = b""
        async with asyncio.timeout(WAIT_S):
            while chunk := await reader.read(1 << 16):
                out += chunk
        return out
    finally:
        writer.close()


def statuses(answer: bytes) -> list[int]:
    """Status of each response; one may follow the previous body with no line break."""
    return [int(m) for m in re.findall(rb"HTTP/1\.[01] (\d{3}) ", answer)]


async def still_serving(gw: Gateway) -> None:
    async with aiohttp.ClientSession() as s, s.post(gw.url + "/v1/chat/completions",
                                                    data=CHAT) as resp:
        assert resp.status == 200


def request(method: str, path: str, *headers: str, body: bytes = b"") -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: x", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


SMUGGLING = {
    "cl_and_te": request("POST", "/v1/chat/completions", "Content-Length: 4",
                         "Transfer-Encoding: chunked",
                         body=b"0\r\n\r\n" + request("GET", "/admin/endpoints")),
    "te_and_cl": request("POST", "/v1/chat/completions", "Transfer-Encoding: chunked",
                         "Content-Length: 40", body=b"0\r\n\r\n" + request("GET", "/metrics")),
    "duplicate_cl": request("POST", "/v1/chat/completions", "Content-Length: 5",
                            "Content-Length: 60", body=b"hello" + request("GET", "/metrics")),
    "te_obfuscated": request("POST", "/v1/chat/completions", "Transfer-Encoding: xchunked",
                             "Content-Length: 5", body=b"hello"),
    "bad_chunk_size": request("POST", "/v1/chat/completions", "Transfer-Encoding: chunked",
                              body=b"zz\r\nhello\r\n0\r\n\r\n"),
    "chunk_longer_than_said": request("POST", "/v1/chat/completions",
                                      "Transfer-Encoding: chunked",
                                      body=b"3\r\nhello\r\n0\r\n\r\n"),
    "huge_header_line": request("GET", "/v1/models", "X-Big: " + "a" * (100 << 10)),
    "huge_request_line": request("GET", "/v1/models?" + "a" * (100 << 10)),
    "space_before_colon": request("GET", "/v1/models", "Content-Length : 0"),
    "bare_lf": b"GET /v1/models HTTP/1.1\nHost: x\n\n",
}


@pytest.mark.parametrize("name", list(SMUGGLING))
async def test_smuggling_and_framing_are_refused(
        name: str, start_sim: SimFactory, start_gateway: GatewayFactory,
        log_lines: Callable[[], list[dict[str, Any]]]) -> None:
    sim = await start_sim("m1")
    gw = await start_gateway({"endpoints": [endpoint("a", sim)]})
    answer = await raw(gw, SMUGGLING[name])
    got = statuses(answer)
    assert got, answer[:200]
    assert all(400 <= s < 500 for s in got) or name == "bare_lf", (name, got)
    assert len(got) == 1  # nothing smuggled behind it was answered
    assert b"fleetlb_" not in answer and b'"endpoints"' not in answer
    lines = log_lines()
    assert len([line for line in lines if line["event"] == "access"]) == 1
    assert not [line for line in lines if "exception" in line]
    assert not sim.behavior.requests  # nothing reached a backend
    await still_serving(gw)


async def test_pipelined_requests_are_answered_in_order(
        start_sim: SimFactory, start_gateway: GatewayFactory,
        log_lines: Callable[[], list[dict[str, Any]]]) -> None:
    sim = await start_sim("m1")
    gw = await start_gateway({"endpoints": [endpoint("a", sim)]})
    chat = request("POST", "/v1/chat/completions", f"Content-Length: {len(CHAT)}",
                   "Content-Type: application/json", body=CHAT)
    answer = await raw(gw, chat + request("GET", "/v1/models") + chat
                       + request("GET", "/healthz", "Connection: close"))
    assert statuses(answer) == [200, 200, 200, 200]
    assert answer.index(b'"chat.completion"') < answer.index(b'"object":"list"')
    assert len([line for line in log_lines() if line["event"] == "access"]) == 4


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat", "/v1/responses"])
async def test_half_close_with_a_short_body(path: str, start_sim: SimFactory,
                                            start_gateway: GatewayFactory,
                                            log_lines: Callable[[], list[dict[str, Any]]]) -> None:
    sim = await start_sim("m1", kind="ollama")
    gw = await start_gateway({"endpoints": [endpoint("a", sim, kind="ollama")]})
    answer = await raw(gw, request("POST", path, "Content-Length: 500", body=CHAT[:20]),
                       half_close=True)
    assert all(s != 500 for s in statuses(answer)), answer[:300]
    async with asyncio.timeout(WAIT_S):  # its access line, once the gateway is done with it
        while not [line for line in log_lines() if line["event"] == "access"]:
            await asyncio.sleep(0.02)
    lines = log_lines()
    assert not [line for line in lines if "exception" in line], lines
    assert all(line["status"] != 500 for line in lines if line["event"] == "access"), lines
    assert not sim.behavior.requests
    await still_serving(gw)
