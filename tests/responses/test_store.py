"""Response stores: the same behaviour from memory and from a real SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

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
    db = sqlite3.connect(tmp_path / "state" / "r.db")
    db.execute("DROP TABLE responses")
    db.commit()
    db.close()
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
