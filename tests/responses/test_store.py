"""Response stores: the same behaviour from memory and from a real SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from lb.config import StoreConfig
from lb.errors import StoreError
from lb.responses.store import MemoryStore, ResponseStore, SqliteStore, StoredResponse, open_store


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


RECORD = StoredResponse("resp_1", "m1", "translate", "gpu-a",
                        [{"type": "message", "role": "user", "content": "hi"}],
                        {"id": "resp_1", "output": [{"type": "message", "role": "assistant"}]})


async def make(kind: str, tmp_path: Path, clock: Clock) -> ResponseStore:
    if kind == "memory":
        return MemoryStore(ttl_s=60, clock=clock)
    store = SqliteStore(tmp_path / "state" / "r.db", ttl_s=60, clock=clock)
    await store.open()
    return store


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_put_get_delete_expire(kind: str, tmp_path: Path) -> None:
    clock = Clock()
    store = await make(kind, tmp_path, clock)
    await store.put(RECORD)
    await store.put(StoredResponse("resp_2", "m1", "native", "gpu-b"))
    assert await store.get("resp_1") == RECORD
    assert (await store.get("resp_2")) == StoredResponse("resp_2", "m1", "native", "gpu-b")
    assert RECORD.conversation() == [*RECORD.input_items, *RECORD.response["output"]]
    assert await store.delete("resp_2") is True
    assert await store.delete("resp_2") is False
    assert await store.get("resp_2") is None
    clock.now += 61  # past the TTL: gone, whether or not a sweep ran
    assert await store.get("resp_1") is None
    await store.put(StoredResponse("resp_3", "m1", "native", "gpu-b"))  # sweeps
    assert await store.get("resp_3") is not None
    await store.close()


async def test_sqlite_is_wal_and_persists(tmp_path: Path) -> None:
    clock = Clock()
    store = await make("sqlite", tmp_path, clock)
    await store.put(RECORD)
    await store.close()
    db = sqlite3.connect(tmp_path / "state" / "r.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    reopened = await make("sqlite", tmp_path, clock)
    assert await reopened.get("resp_1") == RECORD
    await reopened.close()


async def test_sqlite_failure_is_a_store_error(tmp_path: Path) -> None:
    store = await make("sqlite", tmp_path, Clock())
    break_the_file(tmp_path)
    with pytest.raises(StoreError, match="the response store failed"):
        await store.get("resp_1")
    await store.close()


async def test_open_store_default_path_under_state_directory(tmp_path: Path) -> None:
    store = await open_store(StoreConfig(), {"STATE_DIRECTORY": str(tmp_path)})
    await store.put(RECORD)
    await store.close()
    assert (tmp_path / "responses.db").exists()
    memory = await open_store(StoreConfig(kind="memory"), {})
    assert isinstance(memory, MemoryStore)


def break_the_file(tmp_path: Path) -> None:
    """The store's table dropped under it: every statement it runs now fails."""
    db = sqlite3.connect(tmp_path / "state" / "r.db")
    db.execute("DROP TABLE responses")
    db.commit()
    db.close()


def rows_on_disk(tmp_path: Path) -> list[str]:
    db = sqlite3.connect(tmp_path / "state" / "r.db")
    try:
        return [r[0] for r in db.execute("SELECT id FROM responses ORDER BY id")]
    finally:
        db.close()


def record(n: int) -> StoredResponse:
    return StoredResponse(f"resp_{n}", "m1", "translate", "gpu-a", [], {"id": f"resp_{n}"})


async def test_sqlite_writes_behind_in_one_transaction_and_reads_its_own_writes(
        tmp_path: Path) -> None:
    clock = Clock()
    store = await make("sqlite", tmp_path, clock)
    assert isinstance(store, SqliteStore)
    for n in range(50):
        await store.put(record(n))
    assert rows_on_disk(tmp_path) == []  # not yet written...
    assert await store.get("resp_7") == record(7)  # ...and readable all the same
    assert await store.delete("resp_8") is True  # a pending one: never written
    await store.flush()
    assert rows_on_disk(tmp_path) == sorted(f"resp_{n}" for n in range(50) if n != 8)
    assert await store.get("resp_8") is None
    assert await store.delete("resp_9") is True
    assert await store.delete("resp_9") is False
    await store.put(record(60))
    clock.now += 61  # a pending record expires as a written one does
    assert await store.get("resp_60") is None
    await store.close()


async def test_sqlite_write_failure_is_logged_counted_and_keeps_the_record_readable(
        tmp_path: Path) -> None:
    store = await make("sqlite", tmp_path, Clock())
    assert isinstance(store, SqliteStore)
    break_the_file(tmp_path)
    with capture_logs() as logs:
        await store.put(RECORD)
        await store.put(record(2))
        await store.flush()
    assert store.failed_writes == 2
    assert [(e["event"], e["records"]) for e in logs] == [("store_write_failed", 2)]
    assert await store.get("resp_1") == RECORD  # this process can still continue from it
    with pytest.raises(StoreError):  # the file still fails: a delete cannot be promised
        await store.delete("resp_1")
    with pytest.raises(StoreError):  # no longer held in memory: asked of the file
        await store.get("resp_1")
    await store.close()


async def test_sqlite_a_record_deleted_while_its_failing_write_runs_stays_deleted(
        tmp_path: Path) -> None:
    store = await make("sqlite", tmp_path, Clock())
    assert isinstance(store, SqliteStore)
    break_the_file(tmp_path)
    await store.put(RECORD)
    store._start_flush()  # its write is on the store's thread now (and will fail)
    with pytest.raises(StoreError):  # the file fails the delete too
        await store.delete("resp_1")
    await store.flush()
    assert store.failed_writes == 1
    with pytest.raises(StoreError):  # not brought back into memory by the failed write
        await store.get("resp_1")
    await store.close()
