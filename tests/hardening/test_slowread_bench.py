"""bench.slowread works end to end (its numbers are the bench's business, not the suite's)."""

from __future__ import annotations

from pathlib import Path

import orjson

from bench import slowread


def test_the_slow_reader_workload_reports_every_target(tmp_path: Path) -> None:
    out = tmp_path / "slowread.json"
    assert slowread.main(["--streams", "3", "--seconds", "1", "--json", str(out)]) == 0
    rows = orjson.loads(out.read_bytes())
    assert [r["target"] for r in rows] == ["fleetlb", "relay"]
    assert all(r["streams"] == 3 and r["client_read_per_stream_kib"] > 0 for r in rows)
