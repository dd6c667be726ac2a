"""Where stored responses live: what `previous_response_id`, GET, DELETE and input_items read.

A translate-mode record holds the whole conversation input of its turn plus the response object;
a native-mode record holds only which endpoint owns the id (the backend keeps the state). SQLite
(a file, WAL, TTL eviction, on its own thread so the event loop never blocks) is the default;
memory is for tests and throwaway gateways. Redis (lb/shared/store.py) is the same protocol
for several instances.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import orjson

from lb.config import StoreConfig
from lb.errors import ConfigError, StoreError

Json = dict[str, Any]
Mode = Literal["native", "translate"]
SWEEP_EVERY_S = 60.0  # how often expired rows are deleted; reads filter them out regardless


@dataclass(frozen=True, slots=True)
class StoredResponse:
    id: str
    model: str  # the name the client asked for
    mode: Mode
    endpoint: str  # native: the owner every follow-up must reach; translate: who answered
    input_items: list[Json] = field(default_factory=list)  # translate: history + this input
    response: Json = field(default_factory=dict)  # translate: the full response object

    def conversation(self) -> list[Json]:
        """What a follow-up continues from: this turn's input, then its output."""
        return [*self.input_items, *self.response.get("output", [])]

    def to_json(self) -> bytes:
        return orjson.dumps({"id": self.id, "model": self.model, "mode": self.mode,
                             "endpoint": self.endpoint, "input_items": self.input_items,
                             "response": self.response})

    @classmethod
    def from_json(cls, raw: bytes | str) -> StoredResponse:
        data = orjson.loads(raw)
        return cls(data["id"], data["model"], data["mode"], data["endpoint"],
                   data["input_items"], data["response"])


class ResponseStore(Protocol):
    async def put(self, record: StoredResponse) -> None: ...

    async def get(self, response_id: str) -> StoredResponse | None: ...

    async def delete(self, response_id: str) -> bool: ...

    async def close(self) -> None: ...


async def open_store(config: StoreConfig, env: Mapping[str, str]) -> ResponseStore:
    if config.kind == "memory":
        return MemoryStore(config.ttl)
    if config.kind == "redis":  # it needs the app's Redis link: lb.shared.store.RedisStore
        raise ConfigError("<store>", [("store.kind", "the redis store is opened by the app")])
    store = SqliteStore(config.resolved_path(env), config.ttl)
    await store.open()
    return store


class MemoryStore:
    """A dict with expiry: state lives as long as the process."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._rows: dict[str, tuple[float, StoredResponse]] = {}
        self._last_sweep = clock()

    async def put(self, record: StoredResponse) -> None:
        now = self._clock()
        self._rows[record.id] = (now + self._ttl_s, record)
        if now - self._last_sweep > SWEEP_EVERY_S:
            self._last_sweep = now
            self._rows = {k: v for k, v in self._rows.items() if v[0] > now}

    async def get(self, response_id: str) -> StoredResponse | None:
        row = self._rows.get(response_id)
        if row is None or row[0] <= self._clock():
            return None
        return row[1]

    async def delete(self, response_id: str) -> bool:
        return self._rows.pop(response_id, None) is not None

    async def close(self) -> None:
        self._rows.clear()


class SqliteStore:
    """One SQLite file in WAL mode, used from one worker thread: the loop never waits on disk."""

    def __init__(self, path: Path, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._ttl_s = ttl_s
        self._clock = clock
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleetlb-store")
        self._db: sqlite3.Connection | None = None
        self._last_sweep = 0.0

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
            db.execute("CREATE TABLE IF NOT EXISTS responses (id TEXT PRIMARY KEY, "
                       "expires_at REAL NOT NULL, record BLOB NOT NULL)")
            db.execute("CREATE INDEX IF NOT EXISTS responses_expiry ON responses(expires_at)")
        except sqlite3.Error as exc:
            raise ConfigError(str(self._path), [("store.path", f"cannot open: {exc}")]) from exc
        self._db = db

    async def put(self, record: StoredResponse) -> None:
        now = self._clock()
        sweep = now - self._last_sweep > SWEEP_EVERY_S
        if sweep:
            self._last_sweep = now
        await self._run(self._put, record.id, now + self._ttl_s, record.to_json(), now, sweep)

    def _put(self, rid: str, expires: float, blob: bytes, now: float, sweep: bool) -> None:
        db = self._connection()
        db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)", (rid, expires, blob))
        if sweep:
            db.execute("DELETE FROM responses WHERE expires_at <= ?", (now,))

    async def get(self, response_id: str) -> StoredResponse | None:
        blob = await self._run(self._get, response_id, self._clock())
        return None if blob is None else StoredResponse.from_json(blob)

    def _get(self, rid: str, now: float) -> bytes | None:
        row = self._connection().execute(
            "SELECT record FROM responses WHERE id = ? AND expires_at > ?", (rid, now)).fetchone()
        return None if row is None else bytes(row[0])

    async def delete(self, response_id: str) -> bool:
        return bool(await self._run(self._delete, response_id))

    def _delete(self, rid: str) -> bool:
        return self._connection().execute("DELETE FROM responses WHERE id = ?",
                                          (rid,)).rowcount > 0

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._thread.shutdown(wait=True)

    def _connection(self) -> sqlite3.Connection:
        assert self._db is not None, "SqliteStore used before open()"
        return self._db

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
        except sqlite3.Error as exc:
            raise StoreError(f"the response store failed: {exc}") from exc
