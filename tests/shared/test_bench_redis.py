"""bench/ with `--peers redis`: fleetlb on a local redis-server, benched beside the in-process
build, and every process it started (redis-server included) stopped by PID."""

from __future__ import annotations

import tomllib
from pathlib import Path

from bench.runner import Run, run_bench
from bench.summary import find, summarize_cells
from bench.targets import fleetlb_config
from bench.workloads import QUICK
from lb.config import parse_config
from tests.test_bench import _alive


def test_the_variants_configs_are_valid() -> None:
    config = parse_config(tomllib.loads(fleetlb_config(8080, "http://127.0.0.1:1",
                                                       redis_url="redis://127.0.0.1:1/0",
                                                       limits=True)))
    assert config.store.kind == "redis" and config.redis is not None and config.limits.shared
    assert [k.name for k in config.keys] == ["bench"] and config.keys[0].rpm
    local = parse_config(tomllib.loads(fleetlb_config(8080, "http://127.0.0.1:1", limits=True)))
    assert local.redis is None and local.keys[0].max_in_flight


def test_shared_state_is_benched_beside_in_process(tmp_path: Path) -> None:
    plan = QUICK.scaled(0.2, rounds=1).only(["chat_c1", "responses_c1"])
    run: Run = run_bench(plan, ["limits", "redis"], lambda _: None, keep=tmp_path)
    assert {"fleetlb", "fleetlb-limits", "fleetlb-redis"} <= set(run.targets)
    rows = summarize_cells(run.cells)
    for workload in ("chat_c1", "responses_c1"):
        for target in ("fleetlb", "fleetlb-limits", "fleetlb-redis"):
            row = find(rows, workload, target)
            assert row is not None and row.ok > 0 and row.errors == 0, (workload, target, row)
    log = (tmp_path / "fleetlb-redis.log").read_text()
    assert "redis_unavailable" not in log and "response_not_stored" not in log
    assert not [pid for pid in run.pids if _alive(pid)]
