"""One health check per backend kind (ollama, vllm, openai) and the Responses-API detection.

The only aiohttp client code of `probes/`. A check never raises for network trouble: it returns
a `CheckResult` whose `error` says what went wrong, and the prober judges it. The endpoint's API key
is sent as a bearer token and never appears in a result or an error text.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from lb import nesting
from lb.config import EndpointConfig, EndpointKind
from lb.errors import UpstreamConnectError, UpstreamError, UpstreamStatus, UpstreamTimeout

MAX_PROBE_BODY_BYTES = 8 << 20  # /api/tags of a large library or vLLM's /metrics fit; a broken
# backend streaming garbage cannot grow the prober's memory
OLLAMA_DEFAULT_TAG = ":latest"  # Ollama lists `qwen2:latest` but clients ask for `qwen2`
VLLM_QUEUE_METRICS = frozenset({"vllm:num_requests_running", "vllm:num_requests_waiting"})
# the share of KV-cache blocks in use (0..1); vLLM before 0.10 called it gpu_cache_usage_perc
VLLM_KV_METRICS = frozenset({"vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"})
RESPONSES_UNSUPPORTED = frozenset({404, 405, 501})  # no such route / method / feature
RESPONSES_VALIDATION = frozenset({400, 422})  # the route exists and rejected our empty body
# statuses that say nothing about the route: auth in front of it, throttling, redirects to a login
RESPONSES_INCONCLUSIVE = frozenset({401, 403, 407, 408, 429})
_NOT_FOUND_TEXTS = ("not found", "404 page not found", "404: not found", "404 not found")

# one Prometheus sample line: name, optional {labels}, value (a timestamp may follow)
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{.*\})?\s+(\S+)")


@dataclass(slots=True, frozen=True)
class Findings:
    """What a successful check learned; None means "could not tell", keep what was known."""

    models: frozenset[str] | None = None
    loaded_models: frozenset[str] | None = None
    backend_queue: int | None = None
    kv_cache_usage: float | None = None


@dataclass(slots=True, frozen=True)
class CheckResult:
    """One probe of one endpoint: `ok` is liveness; latency covers every request of the check."""

    ok: bool
    latency_ms: float
    models: frozenset[str] | None = None
    loaded_models: frozenset[str] | None = None
    backend_queue: int | None = None
    error: str | None = None
    kv_cache_usage: float | None = None


KindCheck = Callable[[aiohttp.ClientSession, EndpointConfig, float], Awaitable[Findings]]


async def check(
    session: aiohttp.ClientSession,
    config: EndpointConfig,
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> CheckResult:
    """Run the check of `config.kind`, the whole of it bounded by `timeout_s`."""
    started = clock()
    try:
        async with asyncio.timeout(timeout_s):
            found = await KIND_CHECKS[config.kind](session, config, timeout_s)
    except TimeoutError:
        return CheckResult(False, _ms(clock() - started), error=f"no answer within {timeout_s}s")
    except UpstreamError as exc:
        return CheckResult(False, _ms(clock() - started), error=str(exc))
    return CheckResult(
        True, _ms(clock() - started), found.models, found.loaded_models, found.backend_queue,
        kv_cache_usage=found.kv_cache_usage,
    )


async def check_ollama(
    session: aiohttp.ClientSession, config: EndpointConfig, timeout_s: float
) -> Findings:
    # never `GET /`: Ollama answers "Ollama is running" there while generation hangs
    tags = await _get_json(session, config, "/api/tags", timeout_s)
    models = ollama_model_names(tags)
    if models is None:
        raise UpstreamError("/api/tags: unexpected body (no models list)")
    ps = await _optional(_get_json(session, config, "/api/ps", timeout_s))
    return Findings(models=models, loaded_models=ollama_model_names(ps))


async def check_vllm(
    session: aiohttp.ClientSession, config: EndpointConfig, timeout_s: float
) -> Findings:
    await _fetch(session, config, "GET", "/health", timeout_s)
    listing = await _optional(_get_json(session, config, "/v1/models", timeout_s))
    metrics = await _optional(_fetch(session, config, "GET", "/metrics", timeout_s))
    text = metrics.decode("utf-8", "replace") if metrics is not None else None
    queue = parse_vllm_queue(text) if text is not None else None
    kv_use = parse_vllm_kv_usage(text) if text is not None else None
    return Findings(models=openai_model_ids(listing), backend_queue=queue, kv_cache_usage=kv_use)


async def check_openai(
    session: aiohttp.ClientSession, config: EndpointConfig, timeout_s: float
) -> Findings:
    models = openai_model_ids(await _get_json(session, config, "/v1/models", timeout_s))
    if models is None:
        raise UpstreamError("/v1/models: unexpected body (no data list)")
    return Findings(models=models)


KIND_CHECKS: dict[EndpointKind, KindCheck] = {
    "ollama": check_ollama,
    "vllm": check_vllm,
    "openai": check_openai,
}


async def detect_responses(
    session: aiohttp.ClientSession, config: EndpointConfig, timeout_s: float
) -> bool | None:
    """Does the endpoint serve `POST /v1/responses`? None when this attempt cannot tell.

    Sends `{}`: a real implementation rejects it in validation, before any token is generated.
    """
    try:
        async with asyncio.timeout(timeout_s):
            status, body = await _request(session, config, "POST", "/v1/responses", timeout_s, {})
    except (TimeoutError, UpstreamError):
        return None
    return classify_responses_probe(status, body)


def classify_responses_probe(status: int, body: bytes) -> bool | None:
    """True: the route validated our empty request; False: no such route; None: cannot tell."""
    if status in RESPONSES_UNSUPPORTED:
        return False
    if status in RESPONSES_VALIDATION:
        return True
    if status >= 500 or 300 <= status < 400 or status in RESPONSES_INCONCLUSIVE:
        return None
    doc = _json_or_none(body)
    if doc is None:
        # a catch-all HTML or text page ("404 page not found" served with 200)
        return False if b"not found" in body.lower() else None
    if not isinstance(doc, dict):
        return None
    return not _says_not_found(doc)


def ollama_model_names(doc: Any) -> frozenset[str] | None:
    """Names in an /api/tags or /api/ps body, each also without `:latest`; None if malformed."""
    entries = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        return None
    names: set[str] = set()
    for entry in entries:
        name = (entry.get("name") or entry.get("model")) if isinstance(entry, dict) else None
        if isinstance(name, str) and name:
            names.add(name)
            if name.endswith(OLLAMA_DEFAULT_TAG) and len(name) > len(OLLAMA_DEFAULT_TAG):
                names.add(name.removesuffix(OLLAMA_DEFAULT_TAG))
    return frozenset(names)


def openai_model_ids(doc: Any) -> frozenset[str] | None:
    """Ids in an OpenAI `/v1/models` body (`{"data": [{"id": ...}]}`); None if malformed."""
    entries = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        return None
    ids = (e.get("id") for e in entries if isinstance(e, dict))
    return frozenset(i for i in ids if isinstance(i, str) and i)


def parse_vllm_queue(text: str) -> int | None:
    """Requests running plus waiting, summed over every series; None when vLLM exports neither."""
    values = list(_samples(text, VLLM_QUEUE_METRICS))
    return round(sum(values)) if values else None


def parse_vllm_kv_usage(text: str) -> float | None:
    """The highest KV-cache use (0..1) over every series (engine); None when vLLM exports none."""
    return max((v for v in _samples(text, VLLM_KV_METRICS) if v <= 1), default=None)


def _samples(text: str, names: frozenset[str]) -> Iterator[float]:
    """The finite, non-negative values of the samples of `names` in a Prometheus text."""
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if match is None or match.group(1) not in names:
            continue
        try:
            value = float(match.group(2))
        except ValueError:
            continue
        if value >= 0 and value != float("inf"):  # NaN fails >= 0 too
            yield value


async def _optional(fetch: Awaitable[Any]) -> Any:
    """An extra of a check (loaded models, metrics): its failure costs the finding, not liveness."""
    try:
        return await fetch
    except UpstreamError:
        return None


async def _get_json(
    session: aiohttp.ClientSession, config: EndpointConfig, path: str, timeout_s: float
) -> Any:
    body = await _fetch(session, config, "GET", path, timeout_s)
    doc = _json_or_none(body)
    if doc is None:
        raise UpstreamError(f"{path}: body is not JSON")
    return doc


async def _fetch(
    session: aiohttp.ClientSession, config: EndpointConfig, method: str, path: str, timeout_s: float
) -> bytes:
    """The body of a 2xx answer; any other status raises UpstreamStatus."""
    status, body = await _request(session, config, method, path, timeout_s)
    if not 200 <= status < 300:
        raise UpstreamStatus(f"{path}: HTTP {status}", upstream_status=status)
    return body


async def _request(
    session: aiohttp.ClientSession,
    config: EndpointConfig,
    method: str,
    path: str,
    timeout_s: float,
    json: Any = None,
) -> tuple[int, bytes]:
    headers = (
        {"Authorization": f"Bearer {config.api_key.get_secret_value()}"}
        if config.api_key is not None
        else {}
    )
    try:
        async with session.request(
            method,
            config.base_url + path,
            headers=headers,
            json=json,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            allow_redirects=False,
        ) as resp:
            return resp.status, await _read_capped(resp, path)
    except TimeoutError as exc:
        raise UpstreamTimeout(f"{path}: no answer within {timeout_s}s") from exc
    except (aiohttp.ClientError, ValueError) as exc:  # ValueError: aiohttp refused the request
        raise UpstreamConnectError(f"{path}: {type(exc).__name__}: {exc}") from exc


async def _read_capped(resp: aiohttp.ClientResponse, path: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(64 << 10):
        size += len(chunk)
        if size > MAX_PROBE_BODY_BYTES:
            raise UpstreamError(f"{path}: body larger than {MAX_PROBE_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_or_none(body: bytes) -> Any:
    try:
        return nesting.loads(body)
    except orjson.JSONDecodeError:
        return None


def _says_not_found(doc: dict[str, Any]) -> bool:
    """A JSON body that only says "not found" (FastAPI's `{"detail": "Not Found"}` at 200)."""
    message = doc.get("detail", doc.get("error"))
    if isinstance(message, dict):
        message = message.get("message")
    return isinstance(message, str) and message.strip().lower() in _NOT_FOUND_TEXTS


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def new_session() -> aiohttp.ClientSession:
    """A client session for probes alone (the CLI); the server passes its shared one instead."""
    # no cookie jar: a backend's cookies must not change what the next probe sees
    return aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
