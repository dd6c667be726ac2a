"""lb/answer.py: a whole answer reads on the wire as aiohttp's own `web.Response` would (status
line, headers, body, keep-alive), in one write; what it does not render itself takes aiohttp's
path. Each case is written both ways onto a recording transport, through aiohttp's real
StreamWriter, and the two are compared."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from aiohttp.http import HttpVersion, HttpVersion10, HttpVersion11
from aiohttp.http_writer import StreamWriter
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from lb.answer import WholeAnswer
from tests.test_sink import RecordingTransport

BODY = b'{"id":"chatcmpl-1","object":"chat.completion","choices":[]}'
DATE = "Wed, 02 Dec 2026 03:00:00 GMT"


class Protocol:
    def __init__(self, transport: RecordingTransport) -> None:
        self.transport = transport
        self._paused = False
        self.ssl_context = None
        self.peername = ("127.0.0.1", 40000)
        self.sockname = ("127.0.0.1", 8080)


def request(method: str, version: HttpVersion, headers: dict[str, str],
            app: web.Application) -> tuple[web.Request, RecordingTransport]:
    transport = RecordingTransport()
    protocol = Protocol(transport)
    writer = StreamWriter(protocol, asyncio.get_running_loop())  # type: ignore[arg-type]
    made = make_mocked_request(method, "/v1/chat/completions", headers={"Host": "x", **headers},
                               version=version, writer=writer, protocol=protocol,
                               transport=transport, app=app)
    return made, transport


def parsed(wire: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
    head, _, body = wire.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = sorted((k.lower(), v.strip()) for k, v in (line.split(":", 1) for line in lines))
    return status, headers, body


async def both(status: int, body: bytes, headers: dict[str, str], method: str = "POST",
               version: HttpVersion = HttpVersion11,
               request_headers: dict[str, str] | None = None,
               app: web.Application | None = None) -> tuple[Any, Any, bool, bool]:
    if app is None:
        app = web.Application()
        app.freeze()
    written = []
    keep = []
    for make in (lambda: web.Response(status=status, body=body, headers=CIMultiDict(headers)),
                 lambda: WholeAnswer(status, body, CIMultiDict(headers))):
        req, transport = request(method, version, request_headers or {}, app)
        response = make()
        await response.prepare(req)
        await response.write_eof()
        await response.write_eof()  # what aiohttp does once it has the response back
        written.append(b"".join(transport.writes))
        keep.append(response.keep_alive)
    return parsed(written[0]), parsed(written[1]), keep[0], keep[1]


@pytest.mark.parametrize(("version", "request_headers"), [
    (HttpVersion11, {}),
    (HttpVersion11, {"Connection": "close"}),
    (HttpVersion10, {}),
    (HttpVersion10, {"Connection": "keep-alive"}),
])
async def test_reads_as_aiohttps_response(version: HttpVersion,
                                          request_headers: dict[str, str]) -> None:
    headers = {"Content-Type": "application/json", "X-Request-ID": "r1",
               "x-fleetlb-endpoint": "gpu-a", "Date": DATE}
    theirs, ours, their_keep, our_keep = await both(200, BODY, headers, version=version,
                                                    request_headers=request_headers)
    assert ours == theirs
    assert our_keep == their_keep


@pytest.mark.parametrize(("status", "body", "headers"), [
    (200, BODY, {}),  # Content-Type, Date and Server as aiohttp adds them
    (503, b"", {"X-Request-ID": "r2"}),  # an empty body
    (429, BODY, {"Content-Type": "application/json", "Retry-After": "2", "Server": "vllm"}),
    (200, BODY, {"Content-Length": "999", "Transfer-Encoding": "chunked"}),  # framing is ours
])
async def test_defaults_and_framing_as_aiohttp_sets_them(status: int, body: bytes,
                                                         headers: dict[str, str]) -> None:
    theirs, ours, _, _ = await both(status, body, headers)
    if "Content-Length" in headers:  # aiohttp keeps a stale one given to it; we never do
        theirs = (theirs[0], [h for h in theirs[1]
                              if h[0] not in ("content-length", "transfer-encoding")], theirs[2])
        assert ("content-length", str(len(body))) in ours[1]
        ours = (ours[0], [h for h in ours[1] if h[0] != "content-length"], ours[2])
    drop_date = [(k, v) for k, v in theirs[1] if k != "date"]
    assert (ours[0], [(k, v) for k, v in ours[1] if k != "date"], ours[2]) == \
        (theirs[0], drop_date, theirs[2])
    assert any(k == "date" for k, _ in ours[1])


@pytest.mark.parametrize(("method", "status"), [("HEAD", 200), ("POST", 204), ("POST", 304)])
async def test_no_body_answers_take_aiohttps_path(method: str, status: int) -> None:
    headers = {"Content-Type": "application/json", "Date": DATE}
    theirs, ours, _, _ = await both(status, BODY, headers, method=method)
    assert ours == theirs
    assert ours[2] == b""


async def test_a_response_prepare_signal_takes_aiohttps_path() -> None:
    app = web.Application()

    async def stamp(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["X-Stamped"] = "1"

    app.on_response_prepare.append(stamp)
    app.freeze()
    theirs, ours, _, _ = await both(200, BODY, {"Date": DATE}, app=app)
    assert ours == theirs
    assert ("x-stamped", "1") in ours[1]


async def test_a_header_aiohttp_refuses_is_refused_the_same_way() -> None:
    app = web.Application()
    app.freeze()
    for make in (lambda: web.Response(status=200, body=BODY, headers={"X-Bad": "a\r\nb"}),
                 lambda: WholeAnswer(200, BODY, CIMultiDict({"X-Bad": "a\r\nb"}))):
        req, transport = request("POST", HttpVersion11, {}, app)
        with pytest.raises(ValueError, match="header injection"):
            await make().prepare(req)
        assert b"X-Bad" not in b"".join(transport.writes)


async def test_one_write_and_nothing_after() -> None:
    app = web.Application()
    app.freeze()
    req, transport = request("POST", HttpVersion11, {}, app)
    answer = WholeAnswer(200, BODY, CIMultiDict({"Date": DATE}))
    assert not answer.prepared
    await answer.prepare(req)
    await answer.prepare(req)
    await answer.write_eof()
    assert answer.prepared and answer.keep_alive
    assert len(transport.writes) == 1 and transport.writes[0].endswith(b"\r\n\r\n" + BODY)
    assert answer.body == BODY
