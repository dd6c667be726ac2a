"""The bench's backend: a near-zero-CPU OpenAI-compatible server on a bare asyncio Protocol.

Fixed bytes, prepared once: a chat completion body, and SSE streams of a set number of chunks at a
set gap, per model. Cheap enough that what the bench measures is the gateway in front of it.
`python -m bench.backend --port N [--chunks 100 --gap-ms 1] [--slow-chunks 20 --slow-gap-ms 250]`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from dataclasses import dataclass
from typing import cast

import orjson

from bench.eventloop import run

FAST_MODEL = "bench"  # streams: `chunks` events, `gap_ms` apart
SLOW_MODEL = "bench-slow"  # streams: `slow_chunks` events, `slow_gap_ms` apart (held-open streams)
MAX_HEAD_BYTES = 64 << 10  # a request head larger than this closes the connection
CREATED = 1_700_000_000  # fixed, so every body has the same bytes

_SSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n")
_LAST_CHUNK = b"0\r\n\r\n"


def http_response(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    reason = {200: "OK", 404: "Not Found", 400: "Bad Request"}.get(status, "Error")
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def chunked(data: bytes) -> bytes:
    """One HTTP/1.1 chunk of a chunked body."""
    return b"%x\r\n" % len(data) + data + b"\r\n"


def completion_body(model: str) -> bytes:
    return orjson.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": CREATED, "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "refusal": None,
                                 "content": "The quick brown fox jumps over the lazy dog. " * 4}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 40, "total_tokens": 52},
    })


def stream_events(model: str, chunks: int) -> list[bytes]:
    """`chunks` chat.completion.chunk events (the last one carries finish_reason), then [DONE]."""
    def event(delta: dict[str, str], finish: str | None) -> bytes:
        obj = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": CREATED,
               "model": model, "system_fingerprint": None,
               "choices": [{"index": 0, "delta": delta, "logprobs": None,
                            "finish_reason": finish}]}
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    body = [event({"role": "assistant", "content": ""}, None)]
    body += [event({"content": f" tok{i}"}, None) for i in range(1, chunks - 1)]
    body.append(event({}, "stop"))
    return [*body[:chunks], b"data: [DONE]\n\n"]


@dataclass(frozen=True, slots=True)
class StreamShape:
    chunks: int
    gap_s: float


@dataclass(frozen=True, slots=True)
class Replies:
    """Every byte the backend ever sends, built once at start."""

    completions: dict[str, bytes]
    streams: dict[str, tuple[list[bytes], float]]  # model -> (framed chunks, gap)
    models: bytes
    not_found: bytes

    @classmethod
    def build(cls, shapes: dict[str, StreamShape]) -> Replies:
        listing = {"object": "list", "data": [
            {"id": m, "object": "model", "created": CREATED, "owned_by": "bench"} for m in shapes]}
        missing = {"error": {"message": "not found", "type": "invalid_request_error",
                             "param": None, "code": "not_found"}}
        return cls(
            completions={m: http_response(200, completion_body(m)) for m in shapes},
            streams={m: ([chunked(e) for e in stream_events(m, s.chunks)], s.gap_s)
                     for m, s in shapes.items()},
            models=http_response(200, orjson.dumps(listing)),
            not_found=http_response(404, orjson.dumps(missing)),
        )


class BackendProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive, one request at a time per connection (clients do not pipeline)."""

    def __init__(self, replies: Replies) -> None:
        self._replies = replies
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._busy = False  # a stream is being written; the next request waits for it

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but have its methods
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self._busy:
            self._serve_buffered()

    def _serve_buffered(self) -> None:
        while self._transport is not None and not self._busy:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEAD_BYTES:
                    self._transport.close()
                return
            head = bytes(self._buf[:end]).decode("latin-1")
            need = end + 4 + _content_length(head)
            if len(self._buf) < need:
                return
            body = bytes(self._buf[end + 4:need])
            del self._buf[:need]
            method, _, rest = head.partition(" ")
            self._answer(method, rest.partition(" ")[0], body)

    def _answer(self, method: str, path: str, body: bytes) -> None:
        assert self._transport is not None
        replies = self._replies
        if method == "GET" and path in ("/v1/models", "/models"):
            self._transport.write(replies.models)
            return
        if method != "POST" or not path.endswith("/chat/completions"):
            self._transport.write(replies.not_found)
            return
        try:
            request = orjson.loads(body)
            model, stream = request.get("model"), request.get("stream")
        except (orjson.JSONDecodeError, AttributeError):
            model, stream = None, None
        if model not in replies.completions:
            self._transport.write(replies.not_found)
        elif stream:
            chunks, gap_s = replies.streams[model]
            self._busy = True
            self._transport.write(_SSE_HEAD)
            self._send_chunks(chunks, 0, gap_s)
        else:
            self._transport.write(replies.completions[model])

    def _send_chunks(self, chunks: list[bytes], i: int, gap_s: float) -> None:
        """One chunk per call; the next is scheduled `gap_s` later (0: the next loop turn)."""
        if self._transport is None:
            return  # client gone: stop generating, like a real server
        self._transport.write(chunks[i])
        if i + 1 == len(chunks):
            self._transport.write(_LAST_CHUNK)
            self._busy = False
            self._serve_buffered()
            return
        loop = asyncio.get_running_loop()
        if gap_s > 0:
            loop.call_later(gap_s, self._send_chunks, chunks, i + 1, gap_s)
        else:
            loop.call_soon(self._send_chunks, chunks, i + 1, gap_s)


def _content_length(head: str) -> int:
    lower = head.lower()
    at = lower.find("\r\ncontent-length:")
    if at < 0:
        return 0
    value = lower[at + 17:].split("\r\n", 1)[0]
    return int(value.strip())


async def serve(host: str, port: int, shapes: dict[str, StreamShape]) -> None:
    replies = Replies.build(shapes)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: BackendProtocol(replies), host, port,
                                      backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"bench backend listening on http://{host}:{port}", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.backend", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=100)
    parser.add_argument("--gap-ms", type=float, default=1.0)
    parser.add_argument("--slow-chunks", type=int, default=20)
    parser.add_argument("--slow-gap-ms", type=float, default=250.0)
    args = parser.parse_args()
    shapes = {FAST_MODEL: StreamShape(args.chunks, args.gap_ms / 1000),
              SLOW_MODEL: StreamShape(args.slow_chunks, args.slow_gap_ms / 1000)}
    with contextlib.suppress(KeyboardInterrupt):
        run(serve(args.host, args.port, shapes))


if __name__ == "__main__":
    main()
