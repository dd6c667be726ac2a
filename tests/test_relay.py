"""SSE relay framing: whatever the upstream reads look like, each client write is whole events."""

from __future__ import annotations

import time
from typing import cast

import aiohttp
import pytest
from aiohttp import web

from lb.config import EndpointConfig
from lb.endpoints import Endpoint, Fleet
from lb.forward import Exchange
from lb.observe import RequestRecord
from lb.relay import PASSTHROUGH, RelayOutcome, pump_sse
from lb.sse import SseDecoder

STREAM = (b'data: {"a":1}\n\n'
          b': keep-alive comment\n\n'
          b'event: x\r\ndata: line one\r\ndata: line two\r\n\r\n'
          b'data: [DONE]\n\n')


class FakeContent:
    """An upstream body that arrives in the given reads."""

    def __init__(self, reads: list[bytes], fail: BaseException | None = None) -> None:
        self._reads = reads
        self._fail = fail

    async def readany(self) -> bytes:
        if self._reads:
            return self._reads.pop(0)
        if self._fail is not None:
            raise self._fail
        return b""


class FakeUpstream:
    def __init__(self, content: FakeContent) -> None:
        self.content = content


class RecordingResponse:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self.writes.append(data)


def exchange(reads: list[bytes], fail: BaseException | None = None) -> Exchange:
    fleet = Fleet([Endpoint(EndpointConfig(name="e", url="http://127.0.0.1:1"))])
    ep = fleet.get("e")
    assert ep is not None
    upstream = cast(aiohttp.ClientResponse, FakeUpstream(FakeContent(reads, fail)))
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
                  fail=aiohttp.ClientPayloadError("connection reset"))
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
