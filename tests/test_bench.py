"""The bench harness: its arithmetic, /proc parsing, wire helpers and report (pure), and one real
run of the quick mode on a tiny budget. Nothing here asserts on speed."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tomllib

import orjson
import pytest

from bench import bar, report, wrk
from bench.__main__ import _peers, broken
from bench.backend import Replies, StreamShape, _content_length, chunked, stream_events
from bench.loadgen import count_events
from bench.procfs import Stat, descendants, parse_stat, parse_status_kib, sample_tree
from bench.profile import fold, groups
from bench.runner import Cell, Run, run_bench
from bench.stats import latency_summary, median, per_unit, percentile, rate, ratio
from bench.summary import Row, find, summarize_cells
from bench.targets import fleetlb_config, litellm_config, nginx_config
from bench.workloads import FULL, QUICK
from lb.config import parse_config

NAN = math.nan


@pytest.mark.parametrize(("values", "q", "expected"), [
    ([5.0], 0, 5.0),
    ([5.0], 99, 5.0),
    ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
    ([4.0, 1.0, 3.0, 2.0], 50, 2.5),  # unsorted input
    ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
    ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
    ([1.0, 2.0, 3.0, 4.0], 90, 3.7),
    ([float(i) for i in range(1, 101)], 99, 99.01),
])
def test_percentile_interpolates_between_ranks(values: list[float], q: float,
                                               expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_of_nothing_is_nan_and_q_is_checked() -> None:
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile([1.0], 101)


def test_median_leaves_out_missing_values() -> None:
    assert median([3.0, NAN, 1.0, 2.0]) == 2.0
    assert math.isnan(median([NAN]))


@pytest.mark.parametrize(("value", "expected"), [
    (ratio(3.0, 2.0), 1.5), (ratio(1.0, 0.0), NAN), (ratio(NAN, 1.0), NAN),
    (per_unit(10.0, 4), 2.5), (per_unit(10.0, 0), NAN), (rate(10, 2.0), 5.0), (rate(1, 0.0), NAN),
])
def test_ratios_and_rates_are_nan_when_undefined(value: float, expected: float) -> None:
    assert value == pytest.approx(expected, nan_ok=True)


def test_latency_summary_is_in_milliseconds() -> None:
    summary = latency_summary([0.001, 0.002, 0.003])
    assert summary == pytest.approx({"p50_ms": 2.0, "p90_ms": 2.8, "p99_ms": 2.98,
                                     "mean_ms": 2.0})


STAT_LINE = ("4242 (py (weird) name) S 17 4242 4242 0 -1 4194560 1000 0 0 0 "
             "123 45 6 7 20 0 3 0 5555 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 "
             "0 0 17 1 0 0 0 0 0")


def test_parse_stat_takes_fields_after_the_last_parenthesis() -> None:
    assert parse_stat(STAT_LINE) == Stat(pid=4242, ppid=17, utime=123, stime=45,
                                         rss_pages=2048)
    assert parse_stat(STAT_LINE).cpu_ticks == 168


def test_parse_stat_reads_this_process() -> None:
    with open(f"/proc/{os.getpid()}/stat") as f:
        stat = parse_stat(f.read())
    assert stat.pid == os.getpid()
    assert stat.ppid == os.getppid()
    assert stat.rss_pages > 0


@pytest.mark.parametrize(("key", "expected"), [("VmRSS", 51200), ("VmHWM", 60000),
                                               ("VmSwap", 0)])
def test_parse_status_kib(key: str, expected: int) -> None:
    text = "Name:\tpython\nVmHWM:\t   60000 kB\nVmRSS:\t   51200 kB\nThreads:\t1\n"
    assert parse_status_kib(text, key) == expected


def test_descendants_walks_the_whole_tree() -> None:
    stats = [Stat(1, 0, 0, 0, 0), Stat(10, 1, 0, 0, 0), Stat(11, 10, 0, 0, 0),
             Stat(12, 11, 0, 0, 0), Stat(20, 1, 0, 0, 0)]
    assert sorted(descendants(10, stats)) == [10, 11, 12]
    assert descendants(99, stats) == [99]


def test_sample_tree_counts_a_child_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        sample = sample_tree(os.getpid())
        assert os.getpid() in sample.pids
        assert child.pid in sample.pids
        assert sample.rss_kib > 0
        assert sample.peak_rss_kib >= sample.rss_kib
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize(("reads", "expected"), [
    ([b"data: a\n\ndata: b\n\n"], 2),
    ([b"da", b"ta: a\n\n"], 1),
    ([b"data: a\n\nd", b"ata", b": b\n\n", b"data: [DONE]\n\n"], 3),
    ([b"data:", b"data:"], 2),
    ([b"", b"nothing here"], 0),
])
def test_count_events_counts_a_split_line_once(reads: list[bytes], expected: int) -> None:
    total, tail = 0, b""
    for chunk in reads:
        n, tail = count_events(tail, chunk)
        total += n
    assert total == expected


def test_backend_streams_have_the_asked_shape() -> None:
    events = stream_events("bench", 100)
    assert len(events) == 101
    assert events[-1] == b"data: [DONE]\n\n"
    assert b'"finish_reason":"stop"' in events[-2]
    assert all(e.startswith(b"data: ") and e.endswith(b"\n\n") for e in events)
    replies = Replies.build({"bench": StreamShape(10, 0.0)})
    framed, gap = replies.streams["bench"]
    assert (len(framed), gap) == (11, 0.0)
    assert chunked(b"hello") == b"5\r\nhello\r\n"
    assert replies.completions["bench"].startswith(b"HTTP/1.1 200 OK\r\n")


@pytest.mark.parametrize(("head", "expected"), [
    ("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 42", 42),
    ("POST / HTTP/1.1\r\ncontent-length:7\r\nAccept: */*", 7),
    ("GET /v1/models HTTP/1.1\r\nHost: x", 0),
])
def test_backend_reads_content_length(head: str, expected: int) -> None:
    assert _content_length(head) == expected


def test_fleetlb_config_is_one_fleetlb_accepts() -> None:
    config = parse_config(tomllib.loads(fleetlb_config(8123, "http://127.0.0.1:9000")))
    assert config.server.port == 8123
    assert config.server.api_keys is not None
    assert config.endpoints[0].responses == "translate"
    assert set(config.endpoints[0].models) == {"bench", "bench-slow"}


def test_peer_configs_point_at_the_backend(tmp_path: os.PathLike[str]) -> None:
    nginx = nginx_config(8124, "http://127.0.0.1:9000", tmp_path)  # type: ignore[arg-type]
    assert "listen 127.0.0.1:8124;" in nginx
    assert "server 127.0.0.1:9000;" in nginx
    assert "daemon off;" in nginx
    litellm = litellm_config("http://127.0.0.1:9000")
    assert "api_base: http://127.0.0.1:9000/v1" in litellm
    assert "master_key:" in litellm


def test_wrk_script_and_summary() -> None:
    script = wrk.wrk_script('{"model": "bench"}', {"Authorization": "Bearer k"})
    assert 'wrk.body = [==[{"model": "bench"}]==]' in script
    assert 'wrk.headers["Authorization"] = "Bearer k"' in script
    output = ("Running 2s test\n" + wrk.MARKER +
              '{"requests":1000,"duration_us":2000000,"connect":0,"read":0,"write":0,'
              '"status":10,"timeout":0,"p50_us":1500,"p90_us":2500,"p99_us":9000}\n')
    result = wrk.parse_wrk(output)
    assert (result["ok"], result["errors"], result["wall_s"]) == (990, 10, 2.0)
    assert result["percentiles_ms"] == {"p50_ms": 1.5, "p90_ms": 2.5, "p99_ms": 9.0}
    with pytest.raises(ValueError, match="no summary"):
        wrk.parse_wrk("Running 2s test\n")


def _cell(workload: str, target: str, rnd: int, p50: float, cpu: float | None = None) -> Cell:
    return Cell(workload, target, rnd, ok=100, errors=0, error_samples=[], wall_s=1.0,
                tool="loadgen", latency={"p50_ms": p50, "p90_ms": p50 * 2, "p99_ms": p50 * 3,
                                         "mean_ms": p50},
                ttfb=None, per_s=100.0, cpu_us_per_unit=cpu)


def test_summary_pairs_each_target_with_direct_round_by_round() -> None:
    cells = [_cell("chat_c1", "direct", 1, 1.0), _cell("chat_c1", "fleetlb", 1, 1.5, 200.0),
             _cell("chat_c1", "direct", 2, 2.0), _cell("chat_c1", "fleetlb", 2, 2.1, 100.0),
             _cell("chat_c1", "direct", 3, 1.0), _cell("chat_c1", "fleetlb", 3, 1.2, 150.0)]
    rows = summarize_cells(cells)
    fleetlb = find(rows, "chat_c1", "fleetlb")
    assert fleetlb is not None
    assert fleetlb.rounds == 3
    assert fleetlb.ok == 300
    assert fleetlb.added_p50_ms == pytest.approx(0.2)  # median of 0.5, 0.1, 0.2
    assert fleetlb.p50_ratio == pytest.approx(1.2)  # median of 1.5, 1.05, 1.2
    assert fleetlb.cpu_us_per_unit == 150.0
    assert math.isnan(fleetlb.cpu_vs_relay)  # no relay in these cells
    relay = [_cell("chat_c1", "relay", r, 1.0 + r / 10, 100.0) for r in (1, 2, 3)]
    with_relay = find(summarize_cells(cells + relay), "chat_c1", "fleetlb")
    assert with_relay is not None
    assert with_relay.cpu_vs_relay == pytest.approx(1.5)  # median of 2.0, 1.0, 1.5
    # added p50 over the relay's, per round: 0.5/0.1, 0.1/0.3, 0.2/0.3
    assert with_relay.added_p50_vs_relay == pytest.approx(2 / 3)
    direct = find(rows, "chat_c1", "direct")
    assert direct is not None
    assert math.isnan(direct.added_p50_ms)


def _row(workload: str, target: str, cpu: float = NAN, added_p50: float = NAN,
         errors: int = 0, extra: dict[str, float] | None = None, vs_relay: float = NAN) -> Row:
    return Row(workload, target, 1, 10, errors, "loadgen", 1.0, 2.0, 3.0, NAN, NAN, 10.0, cpu,
               0.25, added_p50_ms=added_p50, cpu_vs_relay=vs_relay,
               added_p50_vs_relay=vs_relay, extra=extra or {})


def test_bar_verdicts() -> None:
    rows = [_row("chat_c1", "fleetlb", cpu=120.0, vs_relay=1.5),
            _row("chat_c32", "fleetlb", cpu=300.0, vs_relay=1.2),
            _row("stream_c16", "fleetlb", cpu=2000.0, vs_relay=1.5),
            _row("hold", "fleetlb", errors=0, extra={"rss_per_stream_kib": 30.0})]
    verdicts = {c.name: c.verdict for c in bar.checks(rows)}
    assert verdicts == {
        "CPU per non-streaming request (c=1)": "met",  # under the limit, whatever the relay
        "CPU per non-streaming request (c=32)": "met vs relay",  # 1.2 <= 140 / 105
        "CPU per 100-chunk stream (c=16)": "missed",  # 1.5 > 0.7 / 0.5
        "translate-mode stream CPU / native": "not measured",
        "added p50, non-streaming c=1": "not measured",
        "added time to first byte, stream c=1": "not measured",
        "errors among the held streams": "met",
        "RSS per open stream": "met",
    }


def test_goals_are_ratios_within_the_run() -> None:
    rows = [_row("chat_c1", "fleetlb", cpu=300.0, vs_relay=0.9),
            _row("chat_c32", "fleetlb", cpu=300.0, vs_relay=1.2),
            _row("stream_c16", "fleetlb", cpu=2000.0, vs_relay=0.8),
            _row("stream_c16", "nginx", cpu=500.0),
            _row("responses_c16", "fleetlb", cpu=2400.0)]
    goals = {c.name: (c.measured, c.verdict) for c in bar.goals(rows)}
    assert goals["goal: CPU per request c=1 / relay"] == (0.9, "met")
    assert goals["goal: CPU per request c=32 / relay"] == (1.2, "missed")
    assert goals["goal: CPU per stream c=16 / nginx"] == (4.0, "missed")
    assert goals["goal: translate-mode stream / native"] == (pytest.approx(1.2), "met")
    assert goals["goal: added TTFB c=1 / relay's"][1] == "not measured"


def test_profile_drops_the_idle_executor_thread() -> None:
    self_samples, _, total = fold([
        "Thread.run (threading.py:982);_worker (concurrent/futures/thread.py:81) 50",
        "Runner.run (asyncio/runners.py:118);handle (lb/handlers.py:49) 10"])
    assert total == 10
    assert self_samples == {"handle (lb/handlers.py)": 10}
    assert groups(["Thread.run (threading.py:982);_worker (concurrent/futures/thread.py:81) 5",
                   "Runner.run (asyncio/runners.py:118);handle (lb/handlers.py:49) 5"]) == [
        ("fleetlb's own code (middleware, auth, routing, payload, relay, sse)", 100.0)]


def test_bar_allows_relay_multiples_from_the_reference_figures() -> None:
    check = bar.Check("x", "µs", 140.0, 200.0, vs_relay=1.4, relay_reference=105.0)
    assert check.allowed_vs_relay == pytest.approx(4 / 3)
    assert check.verdict == "missed"
    assert math.isnan(bar.Check("y", "", 0.0, 1.0).allowed_vs_relay)


@pytest.mark.parametrize(("value", "text"), [(NAN, "—"), (None, "—"), (1234.4, "1,234"),
                                             (0.12345, "0.12")])
def test_fmt(value: float | None, text: str) -> None:
    assert report.fmt(value) == text


def _meta() -> dict[str, object]:
    return {"plan": "quick", "rounds": 1, "date": "today", "load_before": "1", "load_after": "1",
            "machine": {"cpu": "cpu", "cores": 2},
            "unavailable": {"responses_c16": {"fleetlb": "not available: HTTP 404"}},
            "skipped": {"nginx": "nginx is not installed"}, "notes": {"fleetlb": ["no metrics"]}}


def test_report_shows_every_target_and_what_was_skipped() -> None:
    rows = [_row("chat_c1", "direct", cpu=NAN),
            _row("chat_c1", "fleetlb", cpu=120.0, added_p50=0.2)]
    text = report.format_report(rows, QUICK.workloads, bar.checks(rows), _meta())
    assert "chat, non-streaming, c=1" in text
    assert "fleetlb: not available: HTTP 404" in text
    assert "skipped nginx: nginx is not installed" in text
    assert "note fleetlb: no metrics" in text
    lines = [line.split() for line in text.splitlines()]
    assert ["fleetlb", "10", "0", "1.000", "2.000", "3.000", "10", "120", "25", "+0.200", "—"] \
        in lines


def test_json_has_no_nan() -> None:
    rows = [_row("chat_c1", "fleetlb", cpu=NAN)]
    data = report.as_json(rows, bar.checks(rows), {"x": NAN}, [])
    assert data["meta"] == {"x": None}
    assert data["summary"][0]["cpu_us_per_unit"] is None


def test_peers_argument() -> None:
    assert _peers("nginx,litellm") == ["nginx", "litellm"]
    assert _peers("none") == []
    with pytest.raises(Exception, match="unknown peer"):
        _peers("nginx,haproxy")


def test_plans_are_bounded() -> None:
    for plan in (FULL, QUICK):
        assert all(w.count > 0 and 0 < w.time_limit_s <= 5 for w in plan.workloads)
        assert plan.hold is not None
        assert plan.hold.time_limit_s < 60
    assert FULL.hold is not None
    assert FULL.hold.count == 1000
    tiny = QUICK.scaled(0.1, rounds=1)
    assert tiny.rounds == 1
    assert all(w.count >= 1 for w in tiny.workloads)


def test_plan_can_run_only_some_workloads() -> None:
    plan = FULL.only(["chat_c1", "stream_c16"])
    assert [w.key for w in plan.workloads] == ["chat_c1", "stream_c16"]
    assert plan.hold is None
    assert FULL.only(["hold"]).hold == FULL.hold
    with pytest.raises(ValueError, match="unknown workload nope"):
        FULL.only(["chat_c1", "nope"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[1][0] != "Z"


def test_quick_run_on_a_tiny_budget_measures_everything_and_stops_everything(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # c=32 through the Python load generator, as on a machine without wrk (CI's own
    # `bench --quick` covers wrk where it is installed)
    monkeypatch.setattr(wrk, "available", lambda: None)
    messages: list[str] = []
    run: Run = run_bench(QUICK.scaled(0.3, rounds=1), [], messages.append)
    assert run.targets == ["direct", "fleetlb", "relay"]
    assert {c.tool for c in run.cells} == {"loadgen"}
    rows = summarize_cells(run.cells)
    assert not broken(run, rows)
    for key in ("chat_c1", "chat_c32", "stream_c1", "stream_c16"):
        for target in run.targets:
            row = find(rows, key, target)
            assert row is not None, (key, target)
            assert row.ok > 0
            assert row.errors == 0, row.error_samples
    fleetlb = find(rows, "stream_c1", "fleetlb")
    assert fleetlb is not None
    assert fleetlb.ttfb_p50_ms > 0
    assert fleetlb.cpu_us_per_unit >= 0
    hold = find(rows, "hold", "fleetlb")
    assert hold is not None
    assert hold.errors == 0
    assert hold.extra["open_streams"] > 0
    assert "rss_per_stream_kib" in hold.extra
    # /v1/responses either runs or is reported as not there: never silently dropped
    assert find(rows, "responses_c16", "fleetlb") is not None or \
        "fleetlb" in run.unavailable["responses_c16"]
    assert run.pids
    assert not [pid for pid in run.pids if _alive(pid)]


def test_teamscost_runs_each_step_and_reads_a_bench_json(tmp_path: os.PathLike[str],
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    from pathlib import Path

    from bench import teamscost

    keyed, keyless, before = teamscost.one_call(50), teamscost.one_call(0), \
        teamscost.before_teams()
    for call in (keyed, keyless, before):
        for _ in range(200):  # admission, headers and finish, over and over: no limit is hit
            call()
    cells = [{"target": "fleetlb", "workload": "chat_c1", "cpu_us_per_unit": 300.0},
             {"target": "fleetlb", "workload": "chat_c1", "cpu_us_per_unit": 100.0},
             {"target": "relay", "workload": "chat_c32", "cpu_us_per_unit": 1.0}]
    path = Path(tmp_path) / "bench.json"
    path.write_bytes(orjson.dumps({"cells": cells}))
    assert teamscost.request_cpu(path) == [("c=1 (bench.json)", 200.0)]
    assert teamscost.main(["--quick", "--keys", "20", "--bench-json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "20 keys with limits" in out and "of fleetlb's 200 us non-streaming request" in out
