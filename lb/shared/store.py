"""Stored responses in Redis (`[store] kind = "redis"`), so every instance can continue, read and
delete what any instance stored, and reach the owner endpoint of a native response.

One key per response (`<prefix>response:<id>`, the record's JSON, expiring after `[store] ttl`),
so each read or write is one round trip. The store fails closed: when Redis does not answer, it
raises StoreUnavailable (503 with Retry-After), never "not found".
"""

from __future__ import annotations

from typing import Any

from lb.errors import SharedStateDown, StoreUnavailable
from lb.responses.store import StoredResponse
from lb.shared.link import RedisLink


class RedisStore:
    """The ResponseStore protocol (lb/responses/store.py) over a RedisLink."""

    puts_at_once = False  # a put is a round trip to Redis

    def __init__(self, link: RedisLink, ttl_s: float) -> None:
        self._link = link
        self._ttl_ms = max(1, round(ttl_s * 1000))

    @property
    def is_up(self) -> bool:
        return self._link.is_up

    async def put(self, record: StoredResponse) -> None:
        key, blob, ttl_ms = self._key(record.id), record.to_json(), self._ttl_ms
        await self._run("store_put", lambda r: r.set(key, blob, px=ttl_ms))

    async def get(self, response_id: str) -> StoredResponse | None:
        key = self._key(response_id)
        raw: bytes | None = await self._run("store_get", lambda r: r.get(key))
        return None if raw is None else StoredResponse.from_json(raw)

    async def delete(self, response_id: str) -> bool:
        key = self._key(response_id)
        deleted: int = await self._run("store_delete", lambda r: r.delete(key))
        return deleted > 0

    async def close(self) -> None:
        """The link belongs to the app (limits share it): closed there."""

    def _key(self, response_id: str) -> str:
        return self._link.key("response", response_id)

    async def _run(self, op: str, command: Any) -> Any:
        try:
            return await self._link.run(op, command)
        except SharedStateDown as exc:
            raise StoreUnavailable(
                "The response store (Redis) is unavailable; retry shortly",
                retry_after_s=exc.retry_after_s) from exc
