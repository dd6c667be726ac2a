"""Every ApiError renders with its status, in OpenAI's shape or, on /api/*, Ollama's."""

from __future__ import annotations

import orjson
import pytest

from lb import errors
from lb.middleware import error_response


@pytest.mark.parametrize(("exc", "status", "type_", "code"), [
    (errors.BadRequest("x", param="model"), 400, "invalid_request_error", "invalid_request"),
    (errors.InvalidJson("x"), 400, "invalid_request_error", "invalid_json"),
    (errors.Unauthorized("x"), 401, "authentication_error", "invalid_api_key"),
    (errors.ModelNotFound("x"), 404, "invalid_request_error", "model_not_found"),
    (errors.PayloadTooLarge("x"), 413, "invalid_request_error", "payload_too_large"),
    (errors.RateLimited("x", retry_after_s=3), 429, "rate_limit_error", "rate_limit_exceeded"),
    (errors.NotImplementedApi("x"), 501, "server_error", 501),
    (errors.BadGateway("x"), 502, "server_error", "upstream_error"),
    (errors.NoUsableEndpoint("x"), 503, "server_error", "no_usable_endpoint"),
    (errors.ShuttingDown("x"), 503, "server_error", "shutting_down"),
    (errors.GatewayTimeout("x"), 504, "server_error", "upstream_timeout"),
])
def test_rendering(exc: errors.ApiError, status: int, type_: str, code: object) -> None:
    response = error_response(exc, "rid-1")
    assert response.status == status
    assert response.content_type == "application/json"
    assert response.headers["X-Request-ID"] == "rid-1"
    assert exc.body() == {"error": {"message": "x", "type": type_, "param": exc.param,
                                    "code": code}}
    if status == 429:
        assert response.headers["Retry-After"] == "3"
    if status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_config_error_lists_every_problem() -> None:
    exc = errors.ConfigError("f.toml", [("a.b", "bad"), ("", "worse")])
    assert str(exc) == "f.toml: a.b: bad\nf.toml: worse"


@pytest.mark.parametrize(("path", "shape"), [
    ("/api/chat", {"error": "no such model"}),
    ("/api/tags", {"error": "no such model"}),
    ("/v1/chat/completions", errors.ModelNotFound("no such model").body()),
    ("/openai/v1/models", errors.ModelNotFound("no such model").body()),
    ("/apiary", errors.ModelNotFound("no such model").body()),
])
def test_shape_follows_the_route(path: str, shape: dict[str, object]) -> None:
    response = error_response(errors.ModelNotFound("no such model"), "rid", path)
    assert response.status == 404
    assert response.body is not None and orjson.loads(response.body) == shape  # type: ignore[arg-type]


def test_ollama_shape_carries_details() -> None:
    exc = errors.BadGateway("half failed", details={"results": [{"endpoint": "a"}]})
    assert exc.ollama_body() == {"error": "half failed",
                                 "fleetlb": {"results": [{"endpoint": "a"}]}}
    assert exc.body()["error"]["message"] == "half failed"
