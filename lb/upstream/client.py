"""The gateway's one way to backends: the lean keep-alive client (lb.upstream) for proxied requests,
and the shared aiohttp ClientSession for the prober, the Ollama fan-out and long model pulls;
timeouts and header hygiene for both.

Foreign exceptions are mapped here, once, to `UpstreamError` subclasses the forwarder acts on.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp.connector import AddrInfoType
from multidict import CIMultiDict

from lb import nesting
from lb.config import TimeoutsConfig
from lb.endpoints import Endpoint
from lb.errors import (
    StreamBroken,
    UpstreamConnectError,
    UpstreamError,
    UpstreamStatus,
    UpstreamTimeout,
)
from lb.upstream.connection import Deadlines
from lb.upstream.pool import Pools
from lb.upstream.reply import Reply

# RFC 9110 §7.6.1 hop-by-hop headers, plus what we set ourselves or must never forward.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade", "proxy-connection",
})
_NOT_FORWARDED = HOP_BY_HOP | {
    "host", "content-length", "authorization", "x-api-key", "api-key", "accept-encoding",
    "cookie", "x-request-id",
}
_NOT_RETURNED = HOP_BY_HOP | {"content-length", "server", "date"}
MAX_JSON_BYTES = 4 << 20  # one small document fetched whole (an /api/tags list is kilobytes)
# Slow readers: while a client is behind, the relay reads nothing more from upstream, so what a
# stream can hold is bounded by these: aiohttp pauses the socket past twice READ_BUFFER_BYTES,
# and the kernel then holds at most about twice RECEIVE_BUFFER_BYTES before the backend's own
# writes block (unbounded autotuning would let the kernel take megabytes per stream).
READ_BUFFER_BYTES = 16 << 10
RECEIVE_BUFFER_BYTES = 256 << 10  # a LAN at 1 ms round trip still moves 250 MB/s through it


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """What to send: the same for every attempt of one request."""

    method: str
    path: str  # e.g. "/v1/chat/completions"
    headers: Mapping[str, str]
    body: bytes
    request_id: str


def forwardable_headers(client: Mapping[str, str]) -> dict[str, str]:
    """Client headers minus hop-by-hop, credentials and what we set per endpoint."""
    dropped = _NOT_FORWARDED
    connection = client.get("Connection")
    if connection:
        dropped = dropped | {h.strip().lower() for h in connection.split(",")}
    return {k: v for k, v in client.items() if k.lower() not in dropped}


def returnable_headers(upstream: list[tuple[str, str]]) -> CIMultiDict[str]:
    """Upstream response headers minus hop-by-hop and what aiohttp sets for the client."""
    kept = CIMultiDict[str]()
    named: set[str] = set()  # what the answer's own Connection header says is hop-by-hop
    for key, value in upstream:
        lower = key.lower()
        if lower not in _NOT_RETURNED:
            kept.add(key, value)
        elif lower == "connection":
            named.update(h.strip().lower() for h in value.split(","))
    for name in named:
        kept.popall(name, None)
    return kept


def _has_content_type(headers: Mapping[str, str]) -> bool:
    return "Content-Type" in headers or "content-type" in headers or \
        any(k.lower() == "content-type" for k in headers)


class Upstream:
    """Sends one attempt to one endpoint; owns the shared ClientSession (set by the app)."""

    def __init__(self, timeouts: TimeoutsConfig) -> None:
        self.set_timeouts(timeouts)
        self._session: aiohttp.ClientSession | None = None
        self._pools = Pools()

    def set_timeouts(self, timeouts: TimeoutsConfig) -> None:
        """Timeouts for requests sent from now on (a reload); requests under way keep theirs."""
        self._timeouts = timeouts
        # a model pull runs as long as the download: only the gaps between progress lines count
        self._long_timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect,
                                                   sock_read=timeouts.idle)
        self._deadlines = Deadlines(timeouts.first_byte, timeouts.idle, timeouts.total)

    @property
    def timeouts(self) -> TimeoutsConfig:
        return self._timeouts

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "Upstream used outside the app's lifespan"
        return self._session

    async def open_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=60, enable_cleanup_closed=False,
                                         socket_factory=_bounded_socket)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                              read_bufsize=READ_BUFFER_BYTES,
                                              skip_auto_headers=("User-Agent",))
        return self._session

    async def close_session(self) -> None:
        self._pools.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, endpoint: Endpoint, call: UpstreamCall) -> Reply:
        """Response headers from the endpoint, or an UpstreamError saying why not."""
        config = endpoint.config
        pool = self._pools.get(config.base_url, endpoint.name)
        headers = call.headers
        body = call.body
        line = f"{call.method} {pool.path_prefix}{call.path} HTTP/1.1\r\n"
        lines = [*[f"{k}: {v}\r\n" for k, v in headers.items()],
                 f"X-Request-ID: {call.request_id}\r\n"]
        if body or call.method == "POST":
            lines.append(f"Content-Length: {len(body)}\r\n")
            if not _has_content_type(headers):
                lines.append("Content-Type: application/json\r\n")
        data = b"".join((line.encode("utf-8", "surrogateescape"),
                         pool.endpoint_lines(config.api_key),  # Host first (RFC 9112 3.2)
                         "".join(lines).encode("utf-8", "surrogateescape"), b"\r\n", body))
        return await pool.send(data, self._deadlines, self._timeouts.connect)

    async def send_long(self, endpoint: Endpoint, call: UpstreamCall) -> aiohttp.ClientResponse:
        """Through aiohttp's client (the Ollama fan-out, model pulls): response headers, or an
        UpstreamError. No total timeout; the idle gap counts from the start."""
        assert self._session is not None, "Upstream used outside the app's lifespan"
        headers = dict(call.headers)
        headers["X-Request-ID"] = call.request_id
        headers["Accept-Encoding"] = "identity"  # we parse SSE; never ask for compression
        _authorize(headers, endpoint)
        url = endpoint.config.base_url + call.path
        try:
            resp = await self._session.request(call.method, url, data=call.body,
                                               headers=headers, timeout=self._long_timeout,
                                               allow_redirects=False)
        except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
            if isinstance(exc, aiohttp.ConnectionTimeoutError):
                raise UpstreamConnectError(f"connect to {endpoint.name} timed out") from exc
            raise UpstreamTimeout(
                f"{endpoint.name} sent no response headers within "
                f"{self._timeouts.first_byte:g} s") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamConnectError(f"{endpoint.name}: {_describe(exc)}") from exc
        self._set_idle_timeout(resp)
        return resp

    async def get_json(self, endpoint: Endpoint, path: str, timeout_s: float) -> Any:
        """One small JSON document (Ollama's /api/tags, /ps, /version), whole within timeout_s."""
        headers = {"Accept-Encoding": "identity"}
        _authorize(headers, endpoint)
        url = endpoint.config.base_url + path
        try:
            async with self.session.get(url, headers=headers, allow_redirects=False,
                                        timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                if resp.status != 200:
                    raise UpstreamStatus(f"{endpoint.name}: {path} answered {resp.status}",
                                         upstream_status=resp.status)
                body = await resp.content.read(MAX_JSON_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            if isinstance(exc, aiohttp.ServerTimeoutError | TimeoutError):
                raise UpstreamTimeout(f"{endpoint.name}: {path}: no answer within "
                                      f"{timeout_s:g} s") from exc
            raise UpstreamConnectError(f"{endpoint.name}: {path}: {_describe(exc)}") from exc
        if len(body) > MAX_JSON_BYTES:
            raise UpstreamError(f"{endpoint.name}: {path}: body over {MAX_JSON_BYTES} bytes")
        try:
            return nesting.loads(body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"{endpoint.name}: {path}: body is not JSON") from exc

    def _set_idle_timeout(self, resp: aiohttp.ClientResponse) -> None:
        """From the response headers on, `idle` is the longest silence allowed.

        aiohttp re-arms its read timer only when bytes arrive: the timer running now was armed
        with `first_byte` when the headers (perhaps with the first events) arrived. Re-arm it, or
        a backend that stalls right after them would be given `first_byte`, not `idle`."""
        conn = resp.connection
        if conn is not None and conn.protocol is not None:
            protocol = conn.protocol
            protocol.read_timeout = self._timeouts.idle
            # not once the body is whole (aiohttp dropped the timer for good), nor while the
            # read is paused because we are behind (silence then is ours, not the backend's)
            if not resp.content.is_eof() and not getattr(protocol, "_reading_paused", False):
                protocol.start_timeout()


def _bounded_socket(addr_info: AddrInfoType) -> socket.socket:
    """Upstream sockets with a fixed receive buffer (see RECEIVE_BUFFER_BYTES)."""
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=type_, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
    return sock


def _authorize(headers: dict[str, str], endpoint: Endpoint) -> None:
    """The endpoint's own key, never the client's (which forwardable_headers dropped)."""
    key = endpoint.config.api_key
    if key is not None:
        headers["Authorization"] = "Bearer " + key.get_secret_value()


async def body_chunks(resp: aiohttp.ClientResponse, endpoint: str) -> AsyncIterator[bytes]:
    """An aiohttp body (the fan-out's) as it arrives; failures become StreamBroken."""
    content = resp.content
    try:
        while True:
            chunk = await content.readany()
            if not chunk:
                return
            yield chunk
    except (aiohttp.ClientError, TimeoutError, asyncio.IncompleteReadError) as exc:
        raise StreamBroken(f"{endpoint}: stream broke: {_describe(exc)}") from exc


async def read_body(resp: aiohttp.ClientResponse, endpoint: str) -> bytes:
    """A whole aiohttp body (the fan-out's)."""
    try:
        return await resp.read()
    except (aiohttp.ClientError, TimeoutError, asyncio.IncompleteReadError) as exc:
        raise StreamBroken(f"{endpoint}: body broke: {_describe(exc)}") from exc


async def reply_chunks(reply: Reply, first: bytes = b"") -> AsyncIterator[bytes]:
    """A lean reply's body as it arrives, after `first` (bytes already read); StreamBroken on a
    failure."""
    if first:
        yield first
    while chunk := await reply.chunk():
        yield chunk


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ServerTimeoutError | TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
