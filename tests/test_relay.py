"""Relay framing: whatever the upstream reads look like, each client write is whole SSE events
(or whole NDJSON lines for Ollama streams)."""

from __future__ import annotations

import time
from typing import cast

import orjson
import pytest
from aiohttp import web

from lb.config import EndpointConfig
from lb.endpoints import Endpoint, Fleet
from lb.errors import StreamBroken
from lb.forward import Exchange
from lb.ndjson import NdjsonDecoder
from lb.observe import RequestRecord
from lb.relay import NDJSON_LINES, PASSTHROUGH, RelayOutcome, _pump_framed, pump_sse
from lb.sse import SseDecoder
from lb.upstream.reply import Reply

STREAM = (b'data: {"a":1}\n\n'
          b': keep-alive comment\n\n'
          b'event: x\r\ndata: line one\r\ndata: line two\r\n\r\n'
          b'data: [DONE]\n\n')


class FakeReply:
    """An upstream body that arrives in the given reads (the lean client's Reply, pulled)."""

    def __init__(self, reads: list[bytes], fail: BaseException | None = None) -> None:
        self._reads = reads
        self._fail = fail

    async def chunk(self) -> bytes:
        if self._reads:
            return self._reads.pop(0)
        if self._fail is not None:
            raise self._fail
        return b""


class RecordingResponse:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self.writes.append(data)


def exchange(reads: list[bytes], fail: BaseException | None = None) -> Exchange:
    fleet = Fleet([Endpoint(EndpointConfig(name="e", url="http://127.0.0.1:1"))])
    ep = fleet.get("e")
    assert ep is not None
    upstream = cast(Reply, FakeReply(reads, fail))
    return Exchange(ep, fleet.lease(ep), upstream, attempts=1, is_sse=True)


def whole_events(data: bytes) -> list[bytes]:
    decoder = SseDecoder()
    events = decoder.feed(data)
    assert decoder.flush() == b"", f"write ends inside an event: {data!r}"
    return events


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
async def test_every_write_is_whole_events(cut: int) -> None:
    out = RecordingResponse()
    record = RequestRecord("r", "POST", "/", time.perf_counter())
    ex = exchange([STREAM[:cut], STREAM[cut:]])
    outcome = RelayOutcome()
    await pump_sse(cast(web.StreamResponse, out), ex, record, PASSTHROUGH, outcome)
    assert b"".join(out.writes) == STREAM
    for data in out.writes:
        whole_events(data)
    assert outcome.broken is None and record.ttfb_s is not None
    assert record.bytes_out == len(STREAM)
    ex.lease.release()


async def test_byte_by_byte_upstream() -> None:
    out = RecordingResponse()
    record = RequestRecord("r", "POST", "/", time.perf_counter())
    ex = exchange([STREAM[i:i + 1] for i in range(len(STREAM))])
    await pump_sse(cast(web.StreamResponse, out), ex, record, PASSTHROUGH, RelayOutcome())
    assert out.writes == whole_events(STREAM)  # one write per event, as soon as it is whole
    ex.lease.release()


async def test_upstream_breaks_mid_event() -> None:
    out = RecordingResponse()
    record = RequestRecord("r", "POST", "/", time.perf_counter())
    ex = exchange([b'data: {"a":1}\n\ndata: {"b"'],
                  fail=StreamBroken("e: stream broke: connection reset"))
    outcome = RelayOutcome()
    await pump_sse(cast(web.StreamResponse, out), ex, record, PASSTHROUGH, outcome)
    assert out.writes[0] == b'data: {"a":1}\n\n'
    assert out.writes[-1].startswith(b'data: {"error":{"message":"e: stream broke')
    assert outcome.broken is not None
    ex.lease.release()


async def test_oversized_event_ends_stream_with_error() -> None:
    out = RecordingResponse()
    record = RequestRecord("r", "POST", "/", time.perf_counter())
    huge = b"data: " + b"x" * (1 << 20) + b"\n\n"
    ex = exchange([b"data: ok\n\n", huge[: 1 << 19], huge[1 << 19:]])
    outcome = RelayOutcome()
    await pump_sse(cast(web.StreamResponse, out), ex, record, PASSTHROUGH, outcome)
    assert out.writes[0] == b"data: ok\n\n"
    assert b"larger than" in out.writes[-1]
    assert outcome.broken is not None
    ex.lease.release()


NDJSON_STREAM = (b'{"model":"m","message":{"role":"assistant","content":"a"},"done":false}\n'
                 b'{"model":"m","message":{"role":"assistant","content":"b"},"done":false}\n'
                 b'{"model":"m","message":{"role":"assistant","content":""},"done":true}\n')


async def pump_ndjson(reads: list[bytes], fail: BaseException | None = None,
                      ) -> tuple[RecordingResponse, RelayOutcome, RequestRecord]:
    out = RecordingResponse()
    record = RequestRecord("r", "POST", "/api/chat", time.perf_counter())
    ex = exchange(reads, fail)
    outcome = RelayOutcome()
    await _pump_framed(cast(web.StreamResponse, out), ex, record, NdjsonDecoder(), NDJSON_LINES,
                       outcome)
    ex.lease.release()
    return out, outcome, record


@pytest.mark.parametrize("cut", range(1, len(NDJSON_STREAM)))
async def test_ndjson_every_write_is_whole_lines(cut: int) -> None:
    out, outcome, record = await pump_ndjson([NDJSON_STREAM[:cut], NDJSON_STREAM[cut:]])
    assert b"".join(out.writes) == NDJSON_STREAM
    for data in out.writes:
        assert data.endswith(b"\n")
        for line in data.splitlines():
            orjson.loads(line)  # each line of each write is a whole JSON object
    assert outcome.broken is None and record.bytes_out == len(NDJSON_STREAM)


async def test_ndjson_byte_by_byte_upstream_writes_one_line_each() -> None:
    reads = [NDJSON_STREAM[i:i + 1] for i in range(len(NDJSON_STREAM))]
    out, _, _ = await pump_ndjson(reads)
    assert out.writes == NDJSON_STREAM.splitlines(keepends=True)


async def test_ndjson_upstream_breaks_mid_line_ends_with_error_line() -> None:
    out, outcome, _ = await pump_ndjson([NDJSON_STREAM[:100]],
                                        fail=StreamBroken("e: stream broke: connection reset"))
    first = NDJSON_STREAM.splitlines(keepends=True)[0]
    assert out.writes[0] == first  # the whole line before the break, never the half after it
    last = orjson.loads(out.writes[-1])
    assert out.writes[-1].endswith(b"\n") and list(last) == ["error"]
    assert last["error"].startswith("e: stream broke")
    assert outcome.broken is not None


async def test_ndjson_oversized_line_ends_with_error_line() -> None:
    huge = b'{"response":"' + b"x" * (4 << 20) + b'"}\n'
    out, outcome, _ = await pump_ndjson([b'{"ok":1}\n', huge[: 1 << 21], huge[1 << 21:]])
    assert out.writes[0] == b'{"ok":1}\n'
    assert "larger than" in orjson.loads(out.writes[-1])["error"]
    assert outcome.broken is not None
