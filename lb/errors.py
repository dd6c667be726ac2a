"""One error hierarchy for fleetlb: each class knows its HTTP status and OpenAI error type/code.

Two wire shapes: OpenAI's `{"error": {message, type, param, code}}` (`body()`, the default) and
Ollama's bare `{"error": message}` (`ollama_body()`, on `/api/*`); the middleware picks one.

    FleetlbError
    ├── ConfigError                      a config file that cannot be served (never HTTP)
    ├── SharedStateDown                  Redis did not answer in time (lb.shared; never HTTP:
    │                                    the store turns it into StoreUnavailable, limits pass)
    └── ApiError                         rendered to clients as {"error": {...}}
        ├── BadRequest          400 invalid_request_error
        │   └── InvalidJson     400 invalid_json
        │       └── JsonTooDeep 400 json_too_deep (nested deeper than lb.nesting allows)
        ├── Unauthorized        401 invalid_api_key
        ├── Forbidden           403 permission_denied
        ├── NotFound            404 not_found
        │   ├── ModelNotFound   404 model_not_found
        │   └── PreviousResponseNotFound  404 previous_response_not_found
        ├── MethodNotAllowed    405 method_not_allowed
        ├── PayloadTooLarge     413 payload_too_large
        ├── RateLimited         429 rate_limit_exceeded (+ Retry-After)
        │   └── KeyRateLimited  429 a client key over its rpm/tpm/max_in_flight (+ x-ratelimit-*)
        ├── NotImplementedApi   501 (the API is not served for this model)
        ├── BadGateway          502 upstream_error (every attempt failed)
        ├── NoUsableEndpoint    503 no_usable_endpoint
        ├── ShuttingDown        503 shutting_down (a stream cut at the end of a drain)
        ├── GatewayTimeout      504 upstream_timeout
        ├── StoreError          500 store_error (the response store failed)
        ├── StoreUnavailable    503 store_unavailable (the shared store is unreachable; Retry-After)
        └── UpstreamError       an attempt on one endpoint failed (drives failover)
            ├── UpstreamConnectError   connect refused/reset before the response headers
            ├── UpstreamTimeout        no response headers within timeouts.first_byte
            ├── UpstreamStatus         the backend answered 5xx or 429
            ├── UpstreamAuthFailed     the backend refused fleetlb's credentials (401/403)
            └── StreamBroken           the backend died or went idle mid-body
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, Self


class FleetlbError(Exception):
    """Root of every error fleetlb raises on purpose."""


class ConfigError(FleetlbError):
    """A config file that cannot be served: names the file, the key path and the reason."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{source}: {loc}: {reason}" if loc else f"{source}: {reason}"
                 for loc, reason in problems]
        super().__init__("\n".join(lines))


class SharedStateDown(FleetlbError):
    """Redis (the state several instances share) failed or did not answer within its timeout.

    `retry_after_s` is how long until the next attempt to reach it (the reconnect backoff)."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ApiError(FleetlbError):
    """An error that reaches the client in OpenAI's error shape."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    code: ClassVar[str | int | None] = None

    def __init__(self, message: str, *, param: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.details = details  # fleetlb's own extra facts (per-endpoint results), JSON-ready

    def headers(self) -> dict[str, str]:
        return {}

    def redact(self, clean: Callable[[str], str]) -> Self:
        """The message with `clean` applied (lb.redact): for errors that quote backend text."""
        self.message = clean(self.message)
        self.args = (self.message,)
        return self

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type,
                          "param": self.param, "code": self.code}}

    def ollama_body(self) -> dict[str, Any]:
        """Ollama's shape: clients read the `error` string; fleetlb's details ride beside it."""
        if self.details is None:
            return {"error": self.message}
        return {"error": self.message, "fleetlb": self.details}


class BadRequest(ApiError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class InvalidJson(BadRequest):
    code = "invalid_json"


class JsonTooDeep(InvalidJson):
    code = "json_too_deep"


class Unauthorized(ApiError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(ApiError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class NotFound(ApiError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class ModelNotFound(NotFound):
    type = "invalid_request_error"
    code = "model_not_found"


class PreviousResponseNotFound(NotFound):
    type = "invalid_request_error"
    code = "previous_response_not_found"


class MethodNotAllowed(ApiError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(ApiError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class RateLimited(ApiError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, round(self.retry_after_s)))}


class KeyRateLimited(RateLimited):
    """A client key is over one of its own limits; `limit_headers` are OpenAI's x-ratelimit-*."""

    def __init__(self, message: str, *, retry_after_s: float,
                 limit_headers: dict[str, str]) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.limit_headers = limit_headers

    def headers(self) -> dict[str, str]:
        # rounded up: a client that waits exactly Retry-After must find room
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s))),
                "retry-after-ms": str(max(1, math.ceil(self.retry_after_s * 1000))),
                **self.limit_headers}


class NotImplementedApi(ApiError):
    status = 501
    type = "server_error"
    code = 501


class BadGateway(ApiError):
    status = 502
    type = "server_error"
    code = "upstream_error"


class NoUsableEndpoint(ApiError):
    status = 503
    type = "server_error"
    code = "no_usable_endpoint"


class ShuttingDown(ApiError):
    status = 503
    type = "server_error"
    code = "shutting_down"


class GatewayTimeout(ApiError):
    status = 504
    type = "server_error"
    code = "upstream_timeout"


class StoreError(ApiError):
    """The response store (SQLite, Redis) failed: the request cannot be answered correctly."""

    status = 500
    type = "server_error"
    code = "store_error"


class StoreUnavailable(ApiError):
    """The shared response store (Redis) cannot be reached right now: fail closed, never answer
    without the stored state; the client may retry once it is back."""

    status = 503
    type = "server_error"
    code = "store_unavailable"

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, round(self.retry_after_s)))}


class UpstreamError(ApiError):
    """One attempt on one endpoint failed; the forwarder decides whether to try the next."""

    status = 502
    type = "server_error"
    code = "upstream_error"


class UpstreamConnectError(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamStatus(UpstreamError):
    """The backend answered with a status that moves the request on (5xx, 429)."""

    def __init__(self, message: str, *, upstream_status: int,
                 retry_after: str | None = None) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status
        self.retry_after = retry_after


class UpstreamAuthFailed(UpstreamError):
    """The backend answered 401/403: fleetlb's own credentials for it are wrong, a configuration
    fault. Its body and headers are never relayed (it may echo the key it was sent)."""

    code = "upstream_auth_failed"


class StreamBroken(UpstreamError):
    """The backend's body ended abnormally: reset, idle timeout, or an event over the size cap."""
