"""lb/sink.py on the wire: what reaches the client's transport, write by write. The sink writes
below aiohttp's StreamWriter (a real one here), so it sends the response head and the chunked
body's end itself: the head with the first event, the end with the last events."""

from __future__ import annotations

import asyncio
import time
from typing import cast

from aiohttp.http_writer import StreamWriter
from multidict import CIMultiDict

from lb.config import EndpointConfig
from lb.endpoints import Endpoint, Fleet
from lb.forward import Exchange
from lb.observe import RequestRecord
from lb.relay import PASSTHROUGH, RelayOutcome, StreamFraming
from lb.sink import ClientSink
from lb.sse import SseDecoder
from lb.upstream.reply import Reply
from lb.usage import USAGE_KEY

EVENT = b'data: {"a":1}\n\n'
DONE = b"data: [DONE]\n\n"


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def writelines(self, lines: object) -> None:
        self.writes.append(b"".join(lines))  # type: ignore[call-overload]

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return 16 << 10, 64 << 10

    def get_write_buffer_size(self) -> int:
        return 0


class Protocol:
    """What aiohttp's StreamWriter asks of its protocol."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._paused = False


class PushedReply:
    """A backend body pushed into the sink as soon as it is streamed to (then its end)."""

    def __init__(self, reads: list[bytes]) -> None:
        self._reads = reads

    def stream_to(self, sink: ClientSink) -> None:
        for data in self._reads:
            sink.chunk(data)
        sink.end()

    def pause(self) -> None: ...

    def resume(self) -> None: ...


class ClosingFraming:
    """Passthrough that closes at [DONE], as the Responses framings close at their terminal
    event."""

    is_closed = False

    def events(self, raw: list[bytes]) -> bytes:
        self.is_closed = DONE in raw
        return b"".join(raw)

    def end(self, tail: bytes) -> bytes:
        return b""

    def fail(self, error: object) -> bytes:
        return b""


async def relay(first: bytes, reads: list[bytes],
                framing: StreamFraming = PASSTHROUGH) -> tuple[list[bytes], StreamWriter]:
    transport = RecordingTransport()
    writer = StreamWriter(Protocol(transport), asyncio.get_running_loop())  # type: ignore[arg-type]
    writer.enable_chunking()
    await writer.write_headers("HTTP/1.1 200 OK", CIMultiDict({"Content-Type": "text/event-stream",
                                                               "Transfer-Encoding": "chunked"}))
    fleet = Fleet([Endpoint(EndpointConfig(name="e", url="http://127.0.0.1:1"))])
    endpoint = fleet.get("e")
    assert endpoint is not None
    exchange = Exchange(endpoint, fleet.lease(endpoint), cast(Reply, PushedReply(reads)),
                        attempts=1, is_sse=True, first=first)
    record = RequestRecord(method="POST", path="/v1/chat/completions", request_id="r",
                           started=time.perf_counter())
    await ClientSink(transport, exchange, record, SseDecoder(), framing, RelayOutcome(),
                     USAGE_KEY).run(writer)
    await writer.write_eof()  # what relay() does next: nothing more may be written
    return transport.writes, writer


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


async def test_the_head_goes_with_the_first_event_and_the_end_once() -> None:
    writes, _ = await relay(EVENT, [EVENT, DONE])
    head, first = writes[0].split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert first == chunk(EVENT)  # one write: the head and the first event
    assert writes[1:] == [chunk(EVENT), chunk(DONE), b"0\r\n\r\n"]


async def test_without_a_first_event_the_head_goes_at_once() -> None:
    writes, _ = await relay(b"", [EVENT, DONE])
    assert writes[0].endswith(b"\r\n\r\n") and writes[0].startswith(b"HTTP/1.1 200 OK")
    assert writes[1:] == [chunk(EVENT), chunk(DONE), b"0\r\n\r\n"]


async def test_a_first_read_without_an_event_still_sends_the_head() -> None:
    writes, _ = await relay(EVENT[:5], [EVENT[5:], DONE])  # an event cut short
    assert writes[0].startswith(b"HTTP/1.1 200 OK") and writes[0].endswith(b"\r\n\r\n")
    assert writes[1:] == [chunk(EVENT), chunk(DONE), b"0\r\n\r\n"]


async def test_a_stream_that_closes_at_its_terminal_event_ends_in_that_write() -> None:
    writes, writer = await relay(EVENT, [EVENT + DONE, b'data: {"late":1}\n\n'], ClosingFraming())
    assert writes[1:] == [chunk(EVENT + DONE) + b"0\r\n\r\n"]  # the end with the last events
    assert b"".join(writes).count(b"0\r\n\r\n") == 1
    assert b"late" not in b"".join(writes)
    await writer.write_eof()  # aiohttp knows the body ended: it writes nothing more
    assert b"".join(writes).count(b"0\r\n\r\n") == 1
