"""Streaming answers of the simulated backend: one `ChunkStream` per response writes SSE or NDJSON
chunks and applies the behavior knobs (crlf, split writes, die after N chunks); `Pacer` sleeps for
time-to-first-token and token rate; `ClientGone` / `StreamAborted` end the handler early."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass

import orjson
from aiohttp import web

from lb.sim.options import SimBehavior, SimOptions

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
SSE_DONE = b"data: [DONE]\n\n"
SPLIT_WRITE_GAP_S = 0.001  # between pieces of a split chunk, so each leaves as its own segment


class ClientGone(Exception):
    """The client went away before the answer was finished."""

    def __init__(self, response: web.StreamResponse | None) -> None:
        super().__init__("client gone")
        self.response = response


class StreamAborted(Exception):
    """The stream was cut on purpose (`die_after_chunks`): the transport is already closed."""

    def __init__(self, response: web.StreamResponse) -> None:
        super().__init__("stream aborted")
        self.response = response


def sse_data(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def sse_event(event_type: str, obj: object) -> bytes:
    return b"event: " + event_type.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def ndjson_line(obj: object) -> bytes:
    return orjson.dumps(obj) + b"\n"


def split_pieces(data: bytes) -> list[bytes]:
    """Cut `data` in the middle of every line, before every line ending and between every `\\r` and
    the `\\n` after it, so a reader sees lines, their endings and CRLF pairs arrive apart."""
    cuts: list[int] = []
    start = 0
    while start < len(data):
        newline = data.find(b"\n", start)
        end = len(data) if newline < 0 else newline + 1
        body_end = end if newline < 0 else newline
        if newline > start and data[newline - 1] == 0x0D:  # \r
            body_end -= 1
            cuts.append(newline)  # between \r and \n
        cuts.append(body_end)
        if body_end - start >= 2:
            cuts.append(start + (body_end - start) // 2)
        start = end
    bounds = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def client_is_gone(request: web.BaseRequest) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


@dataclass(slots=True)
class Pacer:
    """Sleeps like a real server: prefill before the first token, then one token per interval."""

    ttft_s: float
    token_gap_s: float

    @classmethod
    def of(cls, options: SimOptions) -> Pacer:
        gap = 1.0 / options.tokens_per_s if options.tokens_per_s > 0 else 0.0
        return cls(options.ttft_ms / 1000.0, gap)

    @property
    def is_instant(self) -> bool:
        return self.ttft_s <= 0 and self.token_gap_s <= 0

    async def first_token(self) -> None:
        if self.ttft_s > 0:
            await asyncio.sleep(self.ttft_s)

    async def next_token(self) -> None:
        if self.token_gap_s > 0:
            await asyncio.sleep(self.token_gap_s)

    async def whole_answer(self, request: web.BaseRequest, n_tokens: int) -> None:
        """A non-streamed answer takes as long as its stream would; a client that left meanwhile
        is reported, since nobody will read the body."""
        if self.is_instant:
            return
        await asyncio.sleep(self.ttft_s + max(n_tokens - 1, 0) * self.token_gap_s)
        if client_is_gone(request):
            raise ClientGone(None)


@dataclass(slots=True)
class ChunkStream:
    response: web.StreamResponse
    behavior: SimBehavior
    request: web.BaseRequest
    is_sse: bool
    sent: int = 0

    @classmethod
    async def open(
        cls, request: web.BaseRequest, behavior: SimBehavior, content_type: str
    ) -> ChunkStream:
        response = web.StreamResponse(
            headers={"Content-Type": content_type, "Cache-Control": "no-cache"}
        )
        try:
            await response.prepare(request)
        except ConnectionError as exc:
            raise ClientGone(response) from exc
        stream = cls(response, behavior, request, content_type == SSE)
        stream._maybe_die()
        return stream

    async def send(self, chunk: bytes) -> None:
        """Write one whole chunk (one write unless split_writes), then die if it was the Nth."""
        if self.is_sse and self.behavior.crlf:
            chunk = chunk.replace(b"\n", b"\r\n")
        try:
            if self.behavior.split_writes:
                await self._send_split(chunk)
            else:
                await self.response.write(chunk)
        except ConnectionError as exc:
            raise ClientGone(self.response) from exc
        self.sent += 1
        self._maybe_die()

    async def _send_split(self, chunk: bytes) -> None:
        pieces = split_pieces(chunk)
        for i, piece in enumerate(pieces):
            if i:
                await asyncio.sleep(SPLIT_WRITE_GAP_S)
            await self.response.write(piece)

    def _maybe_die(self) -> None:
        limit = self.behavior.die_after_chunks
        if limit is None or self.sent < limit:
            return
        transport = self.request.transport
        if transport is None:
            raise ClientGone(self.response)
        # close(), not abort(): the N chunks already written still reach the client, but the
        # chunked body never gets its terminating zero-length chunk.
        transport.close()
        raise StreamAborted(self.response)

    def finish(self) -> web.StreamResponse:
        return self.response
