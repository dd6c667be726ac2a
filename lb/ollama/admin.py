"""Fleet-changing Ollama calls (/api/pull, /push, /create, /copy, /delete): refused with 403
unless `[ollama] allow_admin = true`, then sent to every Ollama endpoint with per-endpoint results.

Pull, push and create are always streamed upstream (progress lines keep an hour-long download
inside the idle timeout); a client that asked for a stream gets each endpoint's progress tagged
with its name, then one final line for the fleet.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from lb.appstate import RUNTIME, UPSTREAM, record_of
from lb.endpoints import Endpoint
from lb.errors import ApiError, BadGateway, BadRequest, Forbidden, NotFound, NoUsableEndpoint
from lb.handlers import Handler, json_response, read_body
from lb.ollama.fanout import EndpointResult, broadcast
from lb.payload import parse_object
from lb.relay import NDJSON
from lb.runtime import Runtime
from lb.upstream import UpstreamCall, forwardable_headers

# route -> HTTP method Ollama serves it with
FLEET_CALLS = {"/api/pull": "POST", "/api/push": "POST", "/api/create": "POST",
               "/api/copy": "POST", "/api/delete": "DELETE"}
_PROGRESS = frozenset({"/api/pull", "/api/push", "/api/create"})  # these stream progress
# every endpoint failed alike with the client's error: say so with that status, not 502
_CLIENT_ERRORS: dict[int, type[ApiError]] = {400: BadRequest, 404: NotFound}


def fleet_call(path: str) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        runtime = request.app[RUNTIME].current
        if not runtime.config.ollama.allow_admin:
            raise Forbidden(f"{path} would change every Ollama server of the fleet and is "
                            "disabled on this gateway; an operator can allow it with "
                            "[ollama] allow_admin = true")
        data = parse_object(await read_body(request, runtime.config.server.max_body_bytes))
        record = record_of(request)
        model = data.get("model") or data.get("name") or data.get("source")
        record.model = model if isinstance(model, str) else None
        wants_stream = path in _PROGRESS and data.get("stream", True) is not False
        record.stream = wants_stream
        if path in _PROGRESS:
            data = {**data, "stream": True}
        call = UpstreamCall(FLEET_CALLS[path], path, forwardable_headers(request.headers),
                            orjson.dumps(data), record.request_id)
        if wants_stream:
            return await _streamed(request, runtime, call)
        results = await broadcast(request.app[UPSTREAM], _targets(runtime), call)
        _redact(results, runtime)
        _raise_if_failed(path, results)
        return json_response(_success(results))

    return handle


def _targets(runtime: Runtime) -> list[Endpoint]:
    targets = [ep for ep in runtime.fleet if ep.config.kind == "ollama" and not ep.draining]
    if not targets:
        raise NoUsableEndpoint("no Ollama endpoint in the fleet")
    return targets


async def _streamed(request: web.Request, runtime: Runtime,
                    call: UpstreamCall) -> web.StreamResponse:
    targets = _targets(runtime)
    response = web.StreamResponse(headers={"Content-Type": NDJSON,
                                           "X-Request-ID": record_of(request).request_id})
    await response.prepare(request)
    lock = asyncio.Lock()  # one whole line per write, whichever endpoint's task writes it

    async def progress(endpoint: str, obj: dict[str, Any]) -> None:
        async with lock:
            await response.write(orjson.dumps({**obj, "fleetlb": {"endpoint": endpoint}})
                                 + b"\n")

    try:
        results = await broadcast(request.app[UPSTREAM], targets, call, progress)
        _redact(results, runtime)
        try:
            _raise_if_failed(call.path, results)
            final = _success(results)
        except ApiError as exc:
            record_of(request).outcome, record_of(request).error = "upstream_failed", exc.message
            final = exc.ollama_body()
        await response.write(orjson.dumps(final) + b"\n")
        await response.write_eof()
    except* ConnectionError:
        record_of(request).outcome = "client_gone"  # broadcast cancelled every upstream call
    return response


def _redact(results: list[EndpointResult], runtime: Runtime) -> None:
    """Each endpoint's error quotes its answer: it passes lb.redact before anyone sees it."""
    for result in results:
        if result.error is not None:
            result.error = runtime.redactor.text(result.error)


def _already_done(path: str, result: EndpointResult) -> bool:
    """Deleting a model an endpoint does not have leaves it as asked: not a failure."""
    return path == "/api/delete" and result.status == 404


def _success(results: list[EndpointResult]) -> dict[str, Any]:
    return {"status": "success", "fleetlb": {"results": [r.as_json() for r in results]}}


def _raise_if_failed(path: str, results: list[EndpointResult]) -> None:
    failed = [r for r in results if not r.is_ok and not _already_done(path, r)]
    if not failed:
        if any(r.is_ok for r in results):
            return
        failed = results  # a delete of a model no endpoint has
    summary = "; ".join(f"{r.endpoint}: {r.error}" for r in failed)
    message = f"{path} failed on {len(failed)} of {len(results)} Ollama endpoints: {summary}"
    statuses = {r.status for r in results}
    error: type[ApiError] = BadGateway
    if len(failed) == len(results) and len(statuses) == 1:
        error = _CLIENT_ERRORS.get(statuses.pop() or 0, BadGateway)
    raise error(message, details={"results": [r.as_json() for r in results]})
