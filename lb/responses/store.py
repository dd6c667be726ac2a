"""Where stored responses live: what `previous_response_id`, GET, DELETE and input_items read.

A translate-mode record holds the whole conversation input of its turn plus the response object;
a native-mode record holds only which endpoint owns the id (the backend keeps the state). SQLite
(a file, WAL, TTL eviction, on its own thread so the event loop never blocks) is the default;
memory is for tests and throwaway gateways. Redis (lb/shared/store.py) is the same protocol
for several instances.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import orjson
import structlog

from lb.config import StoreConfig
from lb.errors import ConfigError, StoreError

Json = dict[str, Any]
Mode = Literal["native", "translate"]
log = structlog.get_logger("lb.responses.store")
SWEEP_EVERY_S = 60.0  # how often expired rows are deleted; reads filter them out regardless
FLUSH_S = 0.01  # how long a put waits in memory for others to share its transaction
UNWRITTEN_MAX = 10_000  # records kept readable after their write failed
FAILURE_LOG_EVERY_S = 1.0  # a failing disk logs one line a second, not one per flush


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
    # put() never suspends (the write, if any, happens behind it): a client hanging up while
    # it runs cannot cut it short, so the caller need not shield it with a task of its own
    puts_at_once: bool

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

    puts_at_once = True

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
    """One SQLite file in WAL mode, used from one worker thread: the loop never waits on disk.

    Writes are behind: put() keeps the record in memory, where get() finds it at once, and one
    flush writes every record put within FLUSH_S in one transaction, with one trip to the
    thread. A handoff per put cost more than the write itself (thread wake-up, GIL, the loop's
    wake-up; about 200 µs of a 770 µs translated request at c=1). close() flushes what is left;
    a crash loses at most the last FLUSH_S of puts. A flush that fails is logged and counted
    (`failed_writes`); its records stay readable until the process ends or they expire.
    """

    puts_at_once = True

    def __init__(self, path: Path, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._ttl_s = ttl_s
        self._clock = clock
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleetlb-store")
        self._db: sqlite3.Connection | None = None
        self._last_sweep = 0.0
        # id -> (expires_at, record): put and not yet written, then being written
        self._pending: dict[str, tuple[float, StoredResponse]] = {}
        self._writing: dict[str, tuple[float, StoredResponse]] = {}
        self._unwritten: dict[str, tuple[float, StoredResponse]] = {}  # their flush failed
        self._flush: asyncio.TimerHandle | None = None
        self._flushed: asyncio.Future[None] | None = None  # the flush on the thread now
        self.failed_writes = 0  # records a flush could not write
        self._failure_logged = -FAILURE_LOG_EVERY_S

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
        self._unwritten.pop(record.id, None)
        self._pending[record.id] = (self._clock() + self._ttl_s, record)
        if self._flush is None and self._flushed is None:
            self._flush = asyncio.get_running_loop().call_later(FLUSH_S, self._start_flush)

    def _start_flush(self) -> None:
        self._flush = None
        if self._flushed is not None or not self._pending:
            return  # the running flush schedules the next one when it ends
        now = self._clock()
        sweep = now - self._last_sweep > SWEEP_EVERY_S
        if sweep:
            self._last_sweep = now
        self._writing, self._pending = self._pending, {}
        rows = [(rid, expires, record.to_json()) for rid, (expires, record)
                in self._writing.items()]
        loop = asyncio.get_running_loop()
        self._flushed = loop.run_in_executor(self._thread, self._write, rows, now, sweep)
        self._flushed.add_done_callback(functools.partial(self._written, len(rows)))

    def _write(self, rows: list[tuple[str, float, bytes]], now: float, sweep: bool) -> None:
        db = self._connection()
        db.execute("BEGIN")
        try:
            db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)", rows)
            if sweep:
                db.execute("DELETE FROM responses WHERE expires_at <= ?", (now,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _written(self, count: int, done: asyncio.Future[None]) -> None:
        self._flushed = None
        error = done.exception() if not done.cancelled() else None
        if error is not None:
            self._failed(count, error)
        self._writing = {}
        if self._pending and self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(FLUSH_S, self._start_flush)

    def _failed(self, count: int, error: BaseException) -> None:
        self.failed_writes += count
        self._unwritten.update(self._writing)
        while len(self._unwritten) > UNWRITTEN_MAX:  # the oldest go first
            del self._unwritten[next(iter(self._unwritten))]
        now = self._clock()
        if now - self._failure_logged >= FAILURE_LOG_EVERY_S:
            self._failure_logged = now
            log.error("store_write_failed", records=count, failed_writes=self.failed_writes,
                      error=str(error))

    def _in_memory(self, response_id: str) -> tuple[float, StoredResponse] | None:
        return (self._pending.get(response_id) or self._writing.get(response_id)
                or self._unwritten.get(response_id))

    async def get(self, response_id: str) -> StoredResponse | None:
        now = self._clock()
        held = self._in_memory(response_id)
        if held is not None:
            return held[1] if held[0] > now else None
        blob = await self._run(self._get, response_id, now)
        return None if blob is None else StoredResponse.from_json(blob)

    def _get(self, rid: str, now: float) -> bytes | None:
        row = self._connection().execute(
            "SELECT record FROM responses WHERE id = ? AND expires_at > ?", (rid, now)).fetchone()
        return None if row is None else bytes(row[0])

    async def delete(self, response_id: str) -> bool:
        now = self._clock()
        held = [m.pop(response_id, None) for m in (self._pending, self._unwritten)]
        # being written: the delete below runs after that write (one thread), and a write that
        # fails must not bring it back into memory
        writing = self._writing.pop(response_id, None)
        was_held = any(h is not None and h[0] > now for h in (*held, writing))
        return bool(await self._run(self._delete, response_id)) or was_held

    def _delete(self, rid: str) -> bool:
        return self._connection().execute("DELETE FROM responses WHERE id = ?",
                                          (rid,)).rowcount > 0

    async def flush(self) -> None:
        """Write every record put so far, now (close does; tests wait on it)."""
        while self._flushed is not None or self._pending:
            if self._flush is not None:
                self._flush.cancel()
                self._flush = None
            if self._flushed is None:
                self._start_flush()
            if self._flushed is not None:
                await asyncio.wait([self._flushed])
                await asyncio.sleep(0)  # _written runs as the future's callback

    async def close(self) -> None:
        await self.flush()  # nothing is pending or scheduled after it
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
