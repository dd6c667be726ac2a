"""One request along its attempt plan: lease, send, check; fail over only before the first byte.

The result is an `Exchange`: a leased endpoint with response headers and the first body bytes
already in hand, so a backend that dies before saying anything still moves the request on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from lb.admission import Admission
from lb.endpoints import Endpoint, Fleet, Lease
from lb.errors import (
    ApiError,
    BadGateway,
    GatewayTimeout,
    NoUsableEndpoint,
    RateLimited,
    StreamBroken,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamStatus,
    UpstreamTimeout,
)
from lb.health import PassiveHealth
from lb.observe import current_record
from lb.redact import NO_SECRETS, Redactor
from lb.routing import AttemptPlan, Verdict
from lb.upstream import Upstream, UpstreamCall
from lb.upstream.reply import Reply

INLINE_BODY_BYTES = 256 << 10  # non-stream bodies up to this are read whole and sent in one write
_ERROR_SNIPPET_BYTES = 512  # how much of a failed backend's body we read to quote
_ERROR_SNIPPET_CHARS = 200  # how much of it (redacted) the error message quotes
_AUTH_STATUSES = frozenset({401, 403})

log = structlog.get_logger("lb.forward")


@dataclass(slots=True, eq=False)
class Exchange:
    """A successful attempt: the caller relays it and must call `close()` on every path."""

    endpoint: Endpoint
    lease: Lease
    response: Reply
    attempts: int
    is_sse: bool
    body: bytes | None = None  # whole body when small and not a stream
    first: bytes = b""  # first bytes of a streamed body, read before committing to it
    interrupted: ApiError | None = None  # set when the gateway itself ended the relay (shutdown)
    redactor: Redactor = NO_SECRETS  # what quoting this backend's text must pass (lb.redact)

    def interrupt(self, reason: ApiError) -> None:
        """End the relay from outside: the upstream body breaks at once and the relay, seeing
        `interrupted`, ends the client's stream with `reason` rather than blaming the backend."""
        self.interrupted = reason
        self.response.close()

    def close(self, *, abort: bool = False) -> None:
        """Release the lease; `abort` drops the upstream connection so the backend stops."""
        if abort:
            self.response.close()
        else:
            self.response.release()
        self.lease.release()


CallFor = Callable[[Endpoint], UpstreamCall]


class ForwardObserver(Protocol):
    """What the forwarder reports for metrics: only on retries and waits, never per request."""

    def retried(self, model: str) -> None: ...

    def waited(self, seconds: float) -> None: ...


class NoObserver:
    __slots__ = ()

    def retried(self, model: str) -> None:
        return None

    def waited(self, seconds: float) -> None:
        return None


class Forwarder:
    def __init__(self, fleet: Fleet, upstream: Upstream, admission: Admission,
                 health: PassiveHealth, *, max_attempts: int,
                 observer: ForwardObserver | None = None,
                 redactor: Redactor = NO_SECRETS) -> None:
        self._fleet = fleet
        self._upstream = upstream
        self._admission = admission
        self._health = health
        self._max_attempts = max_attempts
        self._observer = observer or NoObserver()
        self._redactor = redactor

    async def open(self, plan: AttemptPlan, call_for: CallFor) -> Exchange:
        """The first attempt that answers; `call_for` builds what to send to each endpoint."""
        failures: list[UpstreamError] = []
        deadline: float | None = None
        while len(plan.tried) < self._max_attempts:
            choice = plan.next()
            if choice is Verdict.BUSY:
                deadline = deadline or self._admission.deadline()
                await self._wait_for_slot(plan, deadline)
                continue
            if choice is Verdict.EXHAUSTED:
                break
            assert isinstance(choice, Endpoint)
            if plan.panicked and not failures:
                log.warning("pool_fail_open", model=plan.pool.name,
                            reason="no endpoint of the pool is up; trying them anyway")
            if failures:
                self._observer.retried(plan.pool.name)
            record = current_record()
            if record is not None:  # every line logged from here on names this attempt
                record.endpoint, record.attempts = choice.name, len(plan.tried)
                record.route = plan.request.note
            call = call_for(choice)  # may raise BadRequest: nothing is leased yet
            try:
                exchange = await self._attempt(choice, call, len(plan.tried))
            except UpstreamError as exc:
                exc.redact(self._redactor.text)  # it may quote the backend: before any use
                failures.append(exc)
                self._failed(choice, exc, len(plan.tried))
                continue
            return exchange
        raise _final_error(failures, plan)

    async def _wait_for_slot(self, plan: AttemptPlan, deadline: float) -> None:
        started = time.perf_counter()
        record = current_record()
        try:
            await self._admission.wait_for_slot(plan.pool.members, deadline,
                                                record.priority if record else "interactive")
        finally:
            self._observer.waited(time.perf_counter() - started)

    async def _attempt(self, endpoint: Endpoint, call: UpstreamCall, attempt: int) -> Exchange:
        lease = self._fleet.lease(endpoint)
        resp: Reply | None = None
        try:
            resp = await self._upstream.send(endpoint, call)
            if resp.status >= 500 or resp.status == 429:
                raise await _status_error(endpoint, resp, self._redactor)
            if resp.status in _AUTH_STATUSES:
                raise UpstreamAuthFailed(f"{endpoint.name} refused fleetlb's credentials "
                                         f"({resp.status}): check its api_key")
            is_sse = resp.content_type == "text/event-stream"
            exchange = Exchange(endpoint, lease, resp, attempt, is_sse, redactor=self._redactor)
            if not is_sse and _is_small(resp):
                exchange.body = await resp.read()
            elif not is_sse and resp.status >= 400:
                # an error body of unknown or large size: read its start whole, so that the
                # relay can redact it like any other error body
                exchange.body = await resp.read_at_most(INLINE_BODY_BYTES)
            elif resp.status < 300:
                # wait for the first bytes: a backend that dies before them can still fail over
                exchange.first = await _first_chunk(resp, endpoint.name)
            return exchange
        except BaseException:
            if resp is not None:
                resp.close()
            lease.release()
            raise

    def _failed(self, endpoint: Endpoint, exc: UpstreamError, attempt: int) -> None:
        log.warning("attempt_failed", endpoint=endpoint.name, attempt=attempt,
                    error=exc.message, error_type=type(exc).__name__)
        self.count_failure(endpoint, exc)

    def succeeded(self, endpoint: Endpoint) -> None:
        self._health.on_success(endpoint)

    def count_failure(self, endpoint: Endpoint, exc: UpstreamError) -> None:
        """Live failures eject an endpoint; a 429 is the backend protecting itself, not a fault."""
        if isinstance(exc, UpstreamStatus) and exc.upstream_status == 429:
            return
        if self._health.on_failure(endpoint):
            log.warning("endpoint_ejected", endpoint=endpoint.name,
                        live_failures=endpoint.live_failures, reason=exc.message,
                        eject_for_s=self._health.eject_for_s)


async def _first_chunk(resp: Reply, endpoint: str) -> bytes:
    try:
        return await resp.chunk()
    except StreamBroken as exc:
        if resp.is_timed_out:  # idle, counted from the headers: fail over as a timeout
            raise UpstreamTimeout(f"{endpoint} sent its headers, then nothing") from exc
        raise


def _is_small(resp: Reply) -> bool:
    length = resp.content_length
    return length is not None and length <= INLINE_BODY_BYTES


async def _status_error(endpoint: Endpoint, resp: Reply, redactor: Redactor) -> UpstreamStatus:
    try:
        snippet = (await resp.chunk())[:_ERROR_SNIPPET_BYTES].decode("utf-8", "replace")
    except UpstreamError:
        snippet = ""
    return UpstreamStatus(f"{endpoint.name} answered {resp.status}: "
                          f"{redactor.text(snippet.strip(), _ERROR_SNIPPET_CHARS)}",
                          upstream_status=resp.status,
                          retry_after=resp.header("Retry-After"))


def _final_error(failures: list[UpstreamError], plan: AttemptPlan) -> ApiError:
    if not failures:
        if plan.pool.members:
            return NoUsableEndpoint(f"no usable endpoint for model '{plan.pool.name}'")
        return NoUsableEndpoint(f"no endpoint serves model '{plan.pool.name}'")
    last = failures[-1]
    summary = "; ".join(f.message for f in failures)
    n = len(failures)
    if isinstance(last, UpstreamStatus) and last.upstream_status == 429:
        return RateLimited(f"every endpoint tried is rate limited ({n} attempts): {summary}",
                           retry_after_s=_seconds(last.retry_after))
    if all(isinstance(f, UpstreamAuthFailed) for f in failures):
        return UpstreamAuthFailed(f"every endpoint tried refused fleetlb's credentials "
                                  f"({n} attempts): {summary}")
    if all(isinstance(f, UpstreamTimeout) for f in failures):
        return GatewayTimeout(f"upstream timed out ({n} attempts): {summary}")
    return BadGateway(f"all {n} attempts failed: {summary}")


def _seconds(retry_after: str | None) -> float:
    try:
        return float(retry_after) if retry_after else 1.0
    except ValueError:
        return 1.0
