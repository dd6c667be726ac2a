"""A whole answer written in one go: the non-streaming hot path's response.

aiohttp's `web.Response` renders its head through a pipeline built for every case (cookies,
compression, chunking, the header multidict passed and copied several times, the writer's
buffering and drain): about 14 µs a request on this project's VM, against ~3 µs to render the
same head here and write head and body with one `transport.write`. `WholeAnswer` does that when
nothing of the pipeline is needed (HTTP/1.x, a body allowed, no response-prepare signal); else it
takes aiohttp's own path, so every answer reads as before (tests/test_answer.py). aiohttp, given
it back, sees it sent: its prepare and write_eof do nothing more, and it reads `keep_alive`.
"""

from __future__ import annotations

from typing import cast

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion, HttpVersion10, HttpVersion11
from multidict import CIMultiDict

_NO_BODY_STATUSES = frozenset({204, 304})
_FRAMING = frozenset({"content-length", "transfer-encoding"})  # written by this answer


class WholeAnswer(web.StreamResponse):
    """Status, headers and a body known whole (the backend's, relayed)."""

    def __init__(self, status: int, body: bytes, headers: CIMultiDict[str]) -> None:
        super().__init__(status=status, headers=headers)
        self._whole = body

    @property
    def body(self) -> bytes:
        return self._whole

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._eof_sent or self._payload_writer is not None:
            return await super().prepare(request)
        head = self._head(request)
        transport = request.transport
        if head is None or transport is None:  # what only aiohttp's pipeline does
            return await self._aiohttp_prepare(request)
        if transport.is_closing():
            raise ConnectionResetError("the client went away")
        transport.write(head + self._whole)
        self._eof_sent = True
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        if self._eof_sent:
            return
        await super().write_eof(data)

    async def _aiohttp_prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        self.content_length = len(self._whole)
        writer = await super().prepare(request)
        if self._whole and not self._must_be_empty_body:
            await super().write(self._whole)
        await super().write_eof()
        return writer

    def _head(self, request: web.BaseRequest) -> bytes | None:
        """The status line and headers aiohttp would write, or None when this answer needs
        something only its pipeline does (a HEAD request, a status without a body, HTTP/0.9 or
        2, response-prepare signals, cookies, compression, a header it would refuse)."""
        version = request.version
        if self._needs_aiohttp(request):
            return None
        keep_alive = self._keep_alive
        if keep_alive is None:
            keep_alive = request.keep_alive
        self._keep_alive = keep_alive
        lines = [f"HTTP/{version[0]}.{version[1]} {self.status} {self.reason}\r\n"]
        has = _header_lines(self._headers, lines)
        if has is None:
            return None  # a header aiohttp refuses: its path raises as it would
        if self._whole and not has["content-type"]:
            lines.append("Content-Type: application/octet-stream\r\n")
        lines.append(f"Content-Length: {len(self._whole)}\r\n")
        if not has["date"]:
            lines.append(f"Date: {rfc822_formatted_time()}\r\n")
        if not has["server"]:
            lines.append(f"Server: {SERVER_SOFTWARE}\r\n")
        if not has["connection"]:
            lines.append(_connection(keep_alive, version))
        lines.append("\r\n")
        return "".join(lines).encode("utf-8", "surrogateescape")

    def _needs_aiohttp(self, request: web.BaseRequest) -> bool:
        version, status = request.version, self.status
        return (request.method == "HEAD" or status in _NO_BODY_STATUSES or status < 200
                or (version != HttpVersion11 and version != HttpVersion10)
                or bool(self._cookies) or bool(self._compression) or self._chunked
                or bool(cast(web.Request, request).app.on_response_prepare))


def _header_lines(headers: CIMultiDict[str], lines: list[str]) -> dict[str, bool] | None:
    """`name: value` lines of `headers` but the framing ones, appended to `lines`; which of
    the headers aiohttp would add itself are there already. None for a name or value aiohttp
    refuses (CR, LF; a colon in a name)."""
    has = {"content-type": False, "date": False, "server": False, "connection": False}
    for name, value in headers.items():
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value or ":" in name:
            return None
        lower = name.lower()
        if lower in has:
            has[lower] = True
        elif lower in _FRAMING:
            continue
        lines.append(f"{name}: {value}\r\n")
    return has


def _connection(keep_alive: bool, version: HttpVersion) -> str:
    """aiohttp's Connection header: HTTP/1.0 keeps alive only when told, 1.1 closes only when
    told."""
    if keep_alive and version == HttpVersion10:
        return "Connection: keep-alive\r\n"
    if not keep_alive and version == HttpVersion11:
        return "Connection: close\r\n"
    return ""
