"""How the simulated backend answers in one piece: JSON bodies, the error bodies of each API family
(OpenAI, Open Responses, Ollama), and reading a request's JSON object."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

JSON = "application/json"
INJECTED_FAILURE = "sim: injected failure"
_RETRY_AFTER_S = "1"  # what a rate-limited backend tells the client, seconds

# OpenAI's error `type` per status; Open Responses names its types without the `_error` suffix.
_OPENAI_TYPES = {
    400: "invalid_request_error",
    404: "invalid_request_error",
    429: "rate_limit_error",
}
_RESPONSES_TYPES = {400: "invalid_request", 404: "not_found", 429: "too_many_requests"}


class ErrorReply(Exception):
    """Raised anywhere below a handler to answer with `response` at once."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


ErrorFactory = Callable[[int, str, str], ErrorReply]  # (status, message, code)


def json_reply(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type=JSON)


def _error_headers(status: int) -> dict[str, str] | None:
    return {"Retry-After": _RETRY_AFTER_S} if status == 429 else None


def _api_error(
    types: dict[int, str], status: int, message: str, code: str, param: str | None
) -> ErrorReply:
    error = {
        "message": message,
        "type": types.get(status, "server_error"),
        "param": param,
        "code": code,
    }
    response = web.Response(
        body=orjson.dumps({"error": error}),
        status=status,
        content_type=JSON,
        headers=_error_headers(status),
    )
    return ErrorReply(response)


def openai_error(status: int, message: str, code: str, param: str | None = None) -> ErrorReply:
    return _api_error(_OPENAI_TYPES, status, message, code, param)


def responses_error(status: int, message: str, code: str, param: str | None = None) -> ErrorReply:
    return _api_error(_RESPONSES_TYPES, status, message, code, param)


def ollama_error(status: int, message: str, code: str = "") -> ErrorReply:
    """Ollama's shape is a bare `{"error": message}`; `code` is accepted for a shared signature."""
    body = orjson.dumps({"error": message})
    headers = _error_headers(status)
    return ErrorReply(web.Response(body=body, status=status, content_type=JSON, headers=headers))


async def read_json_object(request: web.Request, error: ErrorFactory) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 in the API's error shape."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise error(400, f"request body is not valid JSON: {exc}", "invalid_json") from exc
    if not isinstance(body, dict):
        raise error(400, "request body must be a JSON object", "invalid_request")
    return body


def injected_failure(status: int, error: ErrorFactory) -> ErrorReply:
    return error(status, INJECTED_FAILURE, "injected_failure")
