"""A request aiohttp's parser refuses is one JSON access line (status 400, outcome bad_request),
never a traceback; a bug that reaches the middleware's catch-all is one JSON line with the
request id, and the client's error says nothing of the internals."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from lb.appstate import RUNTIME
from tests.conftest import GatewayFactory, SimFactory, endpoint

BAD_REQUESTS = [
    b"GARBAGE\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",  # a TLS ClientHello on the plain port
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Name: v\r\n\r\n",
    b"GET /v1/models HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"zz\r\nhello\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * (100 << 10) + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-leak-" + b"a" * (100 << 10)
    + b"\r\n\r\n",  # the parser quotes what it choked on: it must not reach the client
]


async def exchange(url: str, data: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(1 << 16), 10)
    finally:
        writer.close()


@pytest.mark.parametrize("data", BAD_REQUESTS, ids=range(len(BAD_REQUESTS)))
async def test_a_bad_request_is_one_access_line(
        data: bytes, start_sim: SimFactory, start_gateway: GatewayFactory,
        log_lines: Callable[[], list[dict[str, Any]]], caplog: pytest.LogCaptureFixture) -> None:
    sim = await start_sim("m1")
    gw = await start_gateway({"endpoints": [endpoint("a", sim)]})
    caplog.set_level(logging.DEBUG)
    answer = await exchange(gw.url, data)
    assert answer.split(b" ", 2)[1].startswith(b"4"), answer[:100]
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    assert b"x-request-id: " in head.lower(), head  # (HTTP/1.0: the connection closes)
    error = orjson.loads(body)["error"]  # OpenAI's shape, as from every route
    assert error["type"] == "invalid_request_error" and error["code"] == "bad_request", error
    assert error["message"].startswith("fleetlb could not read this HTTP request"), error
    assert b"aaaa" not in body and b"\x16" not in body  # the request is not echoed back
    assert b"sk-leak" not in answer
    lines = log_lines()
    access = [line for line in lines if line["event"] == "access"]
    assert len(access) == 1, lines
    assert access[0]["outcome"] == "bad_request"
    assert 400 <= access[0]["status"] < 500
    assert access[0]["request_id"]
    assert "sk-leak" not in str(lines) and "aaaa" not in str(lines)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records
    assert "Traceback" not in caplog.text
    # and the gateway serves the next client as before
    async with aiohttp.ClientSession() as s, s.get(gw.url + "/healthz") as resp:
        assert resp.status == 200


async def test_the_catch_all_logs_once_and_tells_nothing(
        start_sim: SimFactory, start_gateway: GatewayFactory,
        log_lines: Callable[[], list[dict[str, Any]]]) -> None:
    sim = await start_sim("m1")
    gw = await start_gateway({"endpoints": [endpoint("a", sim)]})

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("internal-detail-xyz")

    gw.app[RUNTIME].current.router.plan = broken  # type: ignore[method-assign]
    async with aiohttp.ClientSession() as s, s.post(
            gw.url + "/v1/chat/completions", headers={"X-Request-ID": "rid-42"},
            json={"model": "m1", "messages": []}) as resp:
        assert resp.status == 500
        body = await resp.json()
    assert "internal-detail-xyz" not in str(body) and "KeyError" not in str(body)
    assert "rid-42" in body["error"]["message"]
    lines = log_lines()
    bugs = [line for line in lines if line["event"] == "unhandled_error"]
    assert len(bugs) == 1
    assert bugs[0]["request_id"] == "rid-42"
    assert "internal-detail-xyz" in bugs[0]["exception"]
    assert [line["status"] for line in lines if line["event"] == "access"] == [500]


def test_server_log_is_what_the_runner_gets() -> None:
    import io

    from lb.observe import JsonAccessLog
    from lb.serverlog import ServerLog, server_options

    options = server_options(JsonAccessLog(io.BytesIO()))
    assert isinstance(options["logger"], ServerLog)
    assert options["access_log"] is None
    web.AppRunner(web.Application(), **options)  # aiohttp takes them
