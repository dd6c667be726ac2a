"""Misbehaving backends (lb.sim.faults) through a real gateway: each gets its documented outcome
(502/504 before the first byte, the terminal error event after it) within its timeout, never a
hang, and the in-flight counts go back to 0 (the start_gateway fixture checks that)."""

from __future__ import annotations

import asyncio
import gzip
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from lb.sim.faults import FaultyBackend
from tests.conftest import FaultyFactory, Gateway, GatewayFactory, endpoint

IDLE_S = 0.5
HANG_BOUND_S = 20.0  # "it ended": far below first_byte (60 s), the timeout that used to apply
CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}


async def gateway_for(backend: FaultyBackend, start_gateway: GatewayFactory,
                      kind: str = "openai") -> Gateway:
    return await start_gateway({"endpoints": [endpoint("a", backend.url, kind=kind)],
                                "timeouts": {"idle": IDLE_S, "first_byte": 60.0},
                                "retry": {"max_attempts": 1}})


async def post(gw: Gateway, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
    async with (aiohttp.ClientSession() as s, asyncio.timeout(HANG_BOUND_S),
                s.post(gw.url + path, json=body) as resp):
        try:
            return resp.status, await resp.read()
        except aiohttp.ClientPayloadError:
            return resp.status, b"<truncated>"


async def test_headers_then_a_stall_is_a_504_at_idle(start_faulty: FaultyFactory,
                                                    start_gateway: GatewayFactory) -> None:
    backend = await start_faulty("headers_then_stall")
    gw = await gateway_for(backend, start_gateway)
    status, body = await post(gw, "/v1/chat/completions", {**CHAT, "stream": True})
    assert status == 504  # nothing reached the client yet: a status can still say it
    assert orjson.loads(body)["error"]["code"] == "upstream_timeout"
    assert gw.fleet.get("a").live_failures == 1  # type: ignore[union-attr]


async def test_a_stall_after_events_in_one_read_ends_at_idle_with_the_error_event(
        start_faulty: FaultyFactory, start_gateway: GatewayFactory) -> None:
    backend = await start_faulty("events_then_stall")
    gw = await gateway_for(backend, start_gateway)
    status, body = await post(gw, "/v1/chat/completions", {**CHAT, "stream": True})
    assert status == 200
    events = [e for e in body.split(b"\n\n") if e]
    assert len(events) == 3
    assert events[-1].startswith(b'data: {"error"')
    assert gw.fleet.get("a").live_failures == 1  # type: ignore[union-attr]


async def test_an_ndjson_stall_ends_with_an_error_line(
        start_faulty: FaultyFactory, start_gateway: GatewayFactory) -> None:
    backend = await start_faulty("ndjson_then_stall")
    gw = await gateway_for(backend, start_gateway, kind="ollama")
    status, body = await post(gw, "/api/chat", CHAT)
    assert status == 200
    lines = body.splitlines()
    assert len(lines) == 2
    assert "error" in orjson.loads(lines[-1])


async def test_a_plain_body_stall_is_cut_at_idle(start_faulty: FaultyFactory,
                                                 start_gateway: GatewayFactory) -> None:
    backend = await start_faulty("plain_then_stall")
    gw = await gateway_for(backend, start_gateway)
    status, body = await post(gw, "/v1/completions", {"model": "m1", "prompt": "x"})
    assert (status, body) == (200, b"<truncated>")  # a plain body cannot carry an error


@pytest.mark.parametrize(("fault", "status"), [("garbage_status", 502), ("short_body", 502)])
async def test_broken_answers_before_the_first_byte_are_502(
        fault: str, status: int, start_faulty: FaultyFactory,
        start_gateway: GatewayFactory) -> None:
    backend = await start_faulty(fault)
    gw = await gateway_for(backend, start_gateway)
    got, body = await post(gw, "/v1/chat/completions", CHAT)
    assert got == status
    assert orjson.loads(body)["error"]["code"] == "upstream_error"


async def test_a_5_mb_event_ends_the_stream_with_the_error_event(
        start_faulty: FaultyFactory, start_gateway: GatewayFactory) -> None:
    backend = await start_faulty("huge_event")
    gw = await gateway_for(backend, start_gateway)
    status, body = await post(gw, "/v1/chat/completions", {**CHAT, "stream": True})
    assert status == 200
    last = body.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    assert last.startswith(b'data: {"error"')
    assert b"larger than" in last
    assert len(body) < 1 << 20  # the half event was never relayed


async def test_a_backend_that_dies_mid_stream(start_faulty: FaultyFactory,
                                              start_gateway: GatewayFactory) -> None:
    backend = await start_faulty("die_mid_stream")
    gw = await gateway_for(backend, start_gateway)
    client = gw.openai(key="unused")
    stream = await client.chat.completions.create(model="m1", messages=CHAT["messages"],
                                                  stream=True)
    pieces = []
    with pytest.raises(openai.APIError):
        async for chunk in stream:
            pieces.append(chunk.choices[0].delta.content)
    assert pieces == ["hi ", "hi "]


async def test_a_gzip_body_is_relayed_as_sent(start_faulty: FaultyFactory,
                                              start_gateway: GatewayFactory) -> None:
    backend = await start_faulty("gzip")
    gw = await gateway_for(backend, start_gateway)
    async with (aiohttp.ClientSession(auto_decompress=False) as s,
                s.post(gw.url + "/v1/chat/completions", json=CHAT) as resp):
            assert resp.status == 200
            assert resp.headers["Content-Encoding"] == "gzip"
            raw = await resp.read()
    assert orjson.loads(gzip.decompress(raw))["choices"][0]["message"]["content"] == "hi"
    chat = await gw.openai(key="unused").chat.completions.create(model="m1",
                                                                messages=CHAT["messages"])
    assert chat.choices[0].message.content == "hi"  # the SDK reads it as any gzip answer


async def test_a_probe_of_a_stalled_backend_ends_at_the_probe_timeout(
        start_faulty: FaultyFactory) -> None:
    from lb.config import EndpointConfig
    from probes.checks import check

    backend = await start_faulty("headers_then_stall", all_routes=True)
    async with aiohttp.ClientSession() as session, asyncio.timeout(HANG_BOUND_S):
        result = await check(session, EndpointConfig(name="a", url=backend.url), 0.5)
    assert not result.ok
    assert result.error


async def test_a_slow_reader_pauses_the_backend(start_faulty: FaultyFactory,
                                                start_gateway: GatewayFactory) -> None:
    """A client that reads slowly holds the backend back (TCP), not fleetlb's memory: after the
    client took a few hundred KB, the backend has written a bounded amount (kernel buffers on
    the way), not the gigabyte it would send."""
    backend = await start_faulty("firehose", firehose_bytes=1 << 30)
    gw = await start_gateway({"endpoints": [endpoint("a", backend.url)]})
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 10)
    sock = writer.get_extra_info("socket")
    import socket

    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    body = orjson.dumps({**CHAT, "stream": True})
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                 % len(body) + body)
    got = 0
    async with asyncio.timeout(HANG_BOUND_S):
        for _ in range(30):
            got += len(await reader.read(8192))
            await asyncio.sleep(0.03)
    writer.close()
    assert got > 0
    assert backend.sent_bytes < 64 << 20, backend.sent_bytes
    async with asyncio.timeout(HANG_BOUND_S):  # the gateway sees the client go, and lets go
        while gw.in_flight()["a"]:
            await asyncio.sleep(0.02)


async def test_fleetlb_sim_fault_serves_a_misbehaving_backend() -> None:
    import re
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "lb", "sim", "--port", "0", "--fault",
                             "auth_echo"], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), HANG_BOUND_S)
        url = re.search(rb"http://[\d.]+:\d+", line)
        assert url, line
        async with aiohttp.ClientSession() as s, s.post(
                url.group().decode() + "/v1/chat/completions", json=CHAT,
                headers={"Authorization": "Bearer k"}) as resp:
            assert resp.status == 401
            assert resp.headers["X-Echo-Authorization"] == "Bearer k"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, HANG_BOUND_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def responses_stream(gw: Gateway, *, hang_up_at: str | None = None) -> list[bytes]:
    """The raw events of one streamed /v1/responses call; with `hang_up_at`, the client closes
    the connection as soon as that event arrived (as Codex CLI does at response.completed)."""
    body = {"model": "m1", "input": "hi", "stream": True}
    got = b""
    async with (aiohttp.ClientSession() as s, asyncio.timeout(HANG_BOUND_S),
                s.post(gw.url + "/v1/responses", json=body) as resp):
        assert resp.status == 200
        async for piece in resp.content.iter_any():
            got += piece
            if hang_up_at is not None and f"event: {hang_up_at}\n".encode() in got:
                break
    return [e for e in got.split(b"\n\n") if e]


def event_types(events: list[bytes]) -> list[str]:
    return [orjson.loads(e.split(b"data: ", 1)[1]).get("type", "") if e != b"data: [DONE]"
            else "[DONE]" for e in events]


@pytest.mark.parametrize(("mode", "fault"), [("translate", "done_then_stall"),
                                             ("native", "completed_then_stall")])
async def test_a_responses_stream_is_whole_at_its_terminal_event(
        mode: str, fault: str, start_faulty: FaultyFactory, start_gateway: GatewayFactory,
        log_lines: Any) -> None:
    """A backend that says it is done but keeps its body open: the client's stream ends with
    response.completed and [DONE] right away (not an error event at `idle`), and the turn counts
    as a success that is stored."""
    backend = await start_faulty(fault)
    gw = await start_gateway({"endpoints": [endpoint("a", backend.url, responses=mode)],
                              "timeouts": {"idle": 60.0, "first_byte": 60.0}})
    events = await responses_stream(gw)
    assert event_types(events)[-2:] == ["response.completed", "[DONE]"]
    assert "error" not in event_types(events)
    access = [line for line in log_lines() if line.get("path") == "/v1/responses"]
    assert [(line["status"], line["outcome"]) for line in access] == [(200, "ok")]
    assert gw.fleet.get("a").live_failures == 0  # type: ignore[union-attr]
    if mode == "translate":
        final = orjson.loads(events[-2].split(b"data: ", 1)[1])["response"]
        async with aiohttp.ClientSession() as s, \
                s.get(gw.url + "/v1/responses/" + final["id"]) as resp:
            assert resp.status == 200  # stored, so a follow-up can continue from it
            assert (await resp.json())["status"] == "completed"


async def test_a_client_that_hangs_up_at_response_completed_got_a_whole_turn(
        start_faulty: FaultyFactory, start_gateway: GatewayFactory, log_lines: Any) -> None:
    backend = await start_faulty("done_then_stall")
    gw = await start_gateway({"endpoints": [endpoint("a", backend.url, responses="translate")],
                              "timeouts": {"idle": 60.0, "first_byte": 60.0}})
    events = await responses_stream(gw, hang_up_at="response.completed")
    assert "response.completed" in event_types(events)
    async with asyncio.timeout(HANG_BOUND_S):
        while gw.in_flight()["a"]:
            await asyncio.sleep(0.02)
    access = [line for line in log_lines() if line.get("path") == "/v1/responses"]
    assert [line["outcome"] for line in access] == ["ok"]
