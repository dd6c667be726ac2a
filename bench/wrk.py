"""The throughput workload through `wrk` (Debian package) when it is installed: one C thread
drives 32 connections at a cost far below any Python gateway's, so req/s measures the gateway.

`wrk_script` and `parse_wrk` are pure; `run_wrk` runs the binary, bounded by its own duration.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

MARKER = "WRKJSON "
_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('%s{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,'
    .. '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d}\\n',
    MARKER, summary.requests, summary.duration, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


def available() -> str | None:
    return shutil.which("wrk")


def wrk_script(body: str, headers: Mapping[str, str]) -> str:
    """A Lua script: POST `body` with `headers`, and print the summary as one JSON line."""
    if "]==]" in body:
        raise ValueError("body cannot be quoted as a Lua long string")
    lines = ['wrk.method = "POST"', f"wrk.body = [==[{body}]==]"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    lines.append(f'MARKER = "{MARKER}"')
    return "\n".join(lines) + _DONE


def parse_wrk(output: str) -> dict[str, Any]:
    """The loadgen-shaped result from wrk's output (the marked JSON line)."""
    for line in output.splitlines():
        if line.startswith(MARKER):
            raw = orjson.loads(line[len(MARKER):])
            break
    else:
        raise ValueError(f"wrk printed no summary:\n{output[-500:]}")
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
    wall_s = raw["duration_us"] / 1e6
    return {"ok": max(0, raw["requests"] - raw["status"] - raw["timeout"]), "errors": errors,
            "error_samples": [f"wrk errors: {k}={raw[k]}" for k in
                              ("connect", "read", "write", "status", "timeout") if raw[k]],
            "wall_s": wall_s, "percentiles_ms": {
                "p50_ms": raw["p50_us"] / 1000, "p90_ms": raw["p90_us"] / 1000,
                "p99_ms": raw["p99_us"] / 1000}}


def run_wrk(url: str, body: str, headers: Mapping[str, str], *, connections: int,
            duration_s: float, workdir: Path) -> dict[str, Any]:
    binary = available()
    assert binary is not None
    script = workdir / "wrk.lua"
    script.write_text(wrk_script(body, headers))
    seconds = max(1, round(duration_s))
    done = subprocess.run(
        [binary, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s",
         str(script), url], capture_output=True, text=True, timeout=seconds + 30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr[-500:]}")
    return parse_wrk(done.stdout)
