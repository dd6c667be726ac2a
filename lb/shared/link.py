"""The one connection to Redis: every call bounded by `[redis] timeout`, failures counted per
operation, one warning a minute while Redis is down, and reconnects spaced by a backoff so that
no request waits on a Redis that is known to be gone.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from lb.config import RedisConfig
from lb.errors import SharedStateDown

T = TypeVar("T")
BACKOFF_FIRST_S = 0.1  # after the first failure, the next call tries again this much later...
BACKOFF_MAX_S = 5.0  # ...doubling up to this: a dead Redis costs one attempt per 5 s at most
WARN_EVERY_S = 60.0  # one warning a minute while Redis is down, not one per request
MAX_ERROR_CHARS = 200  # redis-py's messages name host:port, never the password; keep them short

log = structlog.get_logger("lb.shared")


class RedisLink:
    """Owns the client (its connection pool); `run` is the only way a command reaches Redis."""

    def __init__(self, config: RedisConfig, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        assert config.url is not None, "load_config resolves [redis] url"
        self.prefix = config.key_prefix
        self.timeout_s = config.timeout
        # redis-py's own retries would multiply the wait: one try per call, the backoff is ours.
        # No socket_timeout: `run` bounds every call (a cancelled call's connection is dropped by
        # redis-py), and redis-py's would cost a task per command.
        self.client: Redis = Redis.from_url(
            config.url.get_secret_value(), socket_timeout=None,
            socket_connect_timeout=config.timeout, retry=Retry(NoBackoff(), 0),
            health_check_interval=0)
        self.errors: dict[str, int] = {}  # op -> failed calls (fleetlb_redis_errors_total)
        self._clock = clock
        self._backoff_s = 0.0  # 0 while Redis answers
        self._retry_at = 0.0
        self._warned_at = -math.inf
        self._failed_since_warning = 0

    @property
    def is_up(self) -> bool:
        """False from a failed call until the next one that succeeds."""
        return self._backoff_s == 0.0

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def run(self, op: str, command: Callable[[Redis], Awaitable[T]]) -> T:
        """One Redis call (or pipeline), or SharedStateDown within `timeout` seconds."""
        now = self._clock()
        if now < self._retry_at:  # known down: fail at once, the backoff decides when to retry
            raise self._failed(op, None, now)
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await command(self.client)
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._failed(op, exc, self._clock()) from exc
        if self._backoff_s:
            self._recovered()
        return result

    async def check(self) -> bool:
        """One PING at start: fleetlb serves without Redis, but the operator should know."""
        try:
            await self.run("ping", _ping)
        except SharedStateDown:
            return False
        return True

    async def close(self) -> None:
        await self.client.aclose()

    def _failed(self, op: str, exc: BaseException | None, now: float) -> SharedStateDown:
        self.errors[op] = self.errors.get(op, 0) + 1
        self._failed_since_warning += 1
        if exc is not None:
            self._backoff_s = min(BACKOFF_MAX_S, self._backoff_s * 2 or BACKOFF_FIRST_S)
            self._retry_at = now + self._backoff_s
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning("redis_unavailable", op=op, failed_calls=self._failed_since_warning,
                        error=_describe(exc), retry_in_s=round(self._retry_at - now, 3),
                        message="limits pass unchecked and stored responses cannot be read "
                                "until Redis answers again")
            self._failed_since_warning = 0
        return SharedStateDown(f"Redis is unavailable ({op})",
                               retry_after_s=max(self._retry_at - now, 0.0))

    def _recovered(self) -> None:
        log.info("redis_reconnected", down_for_backoff_s=self._backoff_s)
        self._backoff_s = 0.0
        self._retry_at = 0.0
        self._warned_at = -math.inf  # the next outage is told at once


async def _ping(client: Redis) -> Any:
    return await client.ping()


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "waiting for the reconnect backoff"
    if isinstance(exc, TimeoutError):
        return "no answer within [redis] timeout"
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
