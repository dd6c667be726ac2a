"""The JSON access line (lb.observe): one dict, context first, optional fields only when set."""

from __future__ import annotations

import io
import time

import orjson
import pytest

from lb.balancing import RouteNote
from lb.observe import JsonAccessLog, RequestRecord
from lb.usage import Usage


def record(**fields: object) -> RequestRecord:
    r = RequestRecord("rid-1", "POST", "/v1/chat/completions", time.perf_counter())
    r.model, r.endpoint, r.attempts, r.status, r.key = "m1", "a", 1, 200, "team-a"
    r.ttfb_s, r.bytes_out = 0.0012345, 321
    for name, value in fields.items():
        setattr(r, name, value)
    return r


@pytest.mark.parametrize("usage", [Usage(10, 20), None])
@pytest.mark.parametrize("ttfb_s", [0.0012345, None])
def test_a_model_call_line(usage: Usage | None, ttfb_s: float | None) -> None:
    line = record(usage=usage, ttfb_s=ttfb_s).access_line("ts")
    assert list(line)[:12] == ["request_id", "model", "stream", "endpoint", "attempt", "method",
                               "path", "status", "duration_ms", "ttfb_ms", "attempts", "bytes"]
    assert line["ttfb_ms"] == (None if ttfb_s is None else 1.234)
    assert ("tokens_in" in line) == (usage is not None)
    assert "error" not in line and "route" not in line and "dropped" not in line
    assert (line["event"], line["level"], line["timestamp"]) == ("access", "info", "ts")
    assert record(usage=usage, ttfb_s=ttfb_s).access_fields().keys() == \
        line.keys() - {"request_id", "model", "stream", "endpoint", "attempt", "event", "level",
                       "timestamp"}


def test_optional_fields_and_a_request_that_was_no_model_call() -> None:
    note = RouteNote(reason="prefix", matched=3, blocks=4)
    line = record(dropped="client_metadata", route=note, error="x").access_line("ts")
    assert (line["dropped"], line["route"], line["error"]) == ("client_metadata", note.label, "x")
    bare = RequestRecord("rid-2", "GET", "/healthz", time.perf_counter())
    bare.status = 200
    line = bare.access_line("ts")
    assert "model" not in line and "endpoint" not in line and line["path"] == "/healthz"
    assert list(line)[:2] == ["request_id", "method"]


def test_a_written_line_is_json_with_a_utc_timestamp() -> None:
    out = io.BytesIO()
    log = JsonAccessLog(out)
    log.write(record())
    log.flush()
    line = orjson.loads(out.getvalue())
    assert line["event"] == "access" and line["level"] == "info"
    assert len(line["timestamp"]) == len("2026-12-02T00:40:47.162965Z")
    assert line["timestamp"].endswith("Z")
