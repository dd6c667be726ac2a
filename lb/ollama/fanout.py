"""Asking several Ollama endpoints at once: small GETs for the merged listings, and fleet-changing
calls (pull, delete, ...) sent to every endpoint with one result per endpoint.

Client I/O goes through `lb.upstream` (the gateway's only aiohttp client code and its one session).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from lb import nesting
from lb.endpoints import Endpoint
from lb.errors import StreamBroken, UpstreamError
from lb.ndjson import NdjsonDecoder
from lb.relay import NDJSON
from lb.upstream import Upstream, UpstreamCall, body_chunks, read_body

_ERROR_TEXT_CHARS = 300  # how much of a failed endpoint's answer a result quotes

log = structlog.get_logger("lb.ollama")

Progress = Callable[[str, dict[str, Any]], Awaitable[None]]  # (endpoint, one progress object)


async def gather_json(upstream: Upstream, endpoints: Iterable[Endpoint], path: str,
                      timeout_s: float) -> list[tuple[str, Any]]:
    """(endpoint name, document) of every endpoint that answered `GET path` within timeout_s,
    in fleet order; the others are logged and left out."""

    async def one(endpoint: Endpoint) -> tuple[str, Any] | None:
        try:
            return endpoint.name, await upstream.get_json(endpoint, path, timeout_s)
        except UpstreamError as exc:
            log.warning("fanout_failed", endpoint=endpoint.name, path=path, error=exc.message)
            return None

    answers = await asyncio.gather(*(one(ep) for ep in endpoints))
    return [a for a in answers if a is not None]


@dataclass(slots=True)
class EndpointResult:
    """What one endpoint made of a fleet-changing call."""

    endpoint: str
    status: int | None = None  # its HTTP status; None when it could not be reached
    response: Any = None  # its last JSON object (Ollama's final `{"status": "success"}`)
    error: str | None = None

    @property
    def is_ok(self) -> bool:
        return self.error is None

    def as_json(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "status": self.status, "response": self.response,
                "error": self.error}


async def broadcast(upstream: Upstream, endpoints: Iterable[Endpoint], call: UpstreamCall,
                    progress: Progress | None = None) -> list[EndpointResult]:
    """Send call to every endpoint at once; `progress` sees each endpoint's NDJSON progress
    objects as they come (not its final success nor its error: those are in the results)."""
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(_send(upstream, ep, call, progress)) for ep in endpoints]
    return [task.result() for task in tasks]


async def _send(upstream: Upstream, endpoint: Endpoint, call: UpstreamCall,
                progress: Progress | None) -> EndpointResult:
    result = EndpointResult(endpoint.name)
    try:
        resp = await upstream.send_long(endpoint, call)
    except UpstreamError as exc:
        result.error = exc.message
        return result
    result.status = resp.status
    try:
        if resp.status in (401, 403):  # never quoted: the body may echo the key it was sent
            result.error = f"{endpoint.name} refused fleetlb's credentials ({resp.status})"
        elif resp.status >= 300:
            result.error = _error_text(await read_body(resp, endpoint.name), resp.status)
        elif resp.content_type == NDJSON:
            await _read_progress(body_chunks(resp, endpoint.name), result, progress)
        else:
            result.response = _json_or_none(await read_body(resp, endpoint.name))
    except StreamBroken as exc:
        result.error = exc.message
    except BaseException:
        resp.close()  # cancelled (the client left): drop the connection so the backend stops
        raise
    resp.release()
    return result


async def _read_progress(chunks: AsyncIterator[bytes], result: EndpointResult,
                         progress: Progress | None) -> None:
    decoder = NdjsonDecoder()
    async for chunk in chunks:
        for line in decoder.feed(chunk):
            await _progress_line(line, result, progress)
    tail = decoder.flush()
    if tail.strip():
        await _progress_line(tail, result, progress)


async def _progress_line(line: bytes, result: EndpointResult, progress: Progress | None) -> None:
    obj = _json_or_none(line)
    if not isinstance(obj, dict):
        return
    if "error" in obj:
        result.error = str(obj["error"])
        return
    result.response = obj
    if progress is not None and obj.get("status") != "success":
        await progress(result.endpoint, obj)


def _error_text(body: bytes, status: int) -> str:
    """Ollama's `{"error": "..."}` message, else the start of the body, else the status."""
    doc = _json_or_none(body)
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return str(doc["error"])
    text = body.decode("utf-8", "replace").strip()[:_ERROR_TEXT_CHARS]
    return text or f"HTTP {status}"


def _json_or_none(body: bytes) -> Any:
    try:
        return nesting.loads(body) if body.strip() else None
    except orjson.JSONDecodeError:
        return None
