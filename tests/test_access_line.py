"""The JSON access line (lb.observe): the one-literal path of a model call that went well and the
general path build the same line, field for field and in the same order."""

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
def test_both_paths_build_the_same_line(usage: Usage | None, ttfb_s: float | None) -> None:
    fast = record(usage=usage, ttfb_s=ttfb_s)
    general = record(usage=usage, ttfb_s=ttfb_s, error="x")  # an error takes the general path
    a, b = fast.access_line("ts"), general.access_line("ts")
    assert b.pop("error") == "x"
    a.pop("duration_ms"), b.pop("duration_ms")
    assert list(a.items()) == list(b.items())
    assert a["ttfb_ms"] == (None if ttfb_s is None else 1.234)
    assert ("tokens_in" in a) == (usage is not None)


def test_optional_fields_and_a_request_that_was_no_model_call() -> None:
    note = RouteNote(reason="prefix", matched=3, blocks=4)
    line = record(dropped="client_metadata", route=note).access_line("ts")
    assert (line["dropped"], line["route"]) == ("client_metadata", note.label)
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
