"""fleetlb as a real process for the signal tests: a config file it can reload, its JSON log in a
file (a pipe could fill up and stall it), and small async helpers to watch it from outside."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

ADMIN = "adm-test"
WAIT_S = 20.0  # ceiling for anything the tests wait on; a hang fails by name, not by timing


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def fleet_toml(endpoints: Sequence[tuple[str, str, float]], *, server: str = "",
               probes: str = "interval = 1.0") -> str:
    """A config with an admin key, the given `[server]` lines and (name, url, weight) endpoints."""
    eps = "".join(f'\n[[endpoints]]\nname = "{name}"\nurl = "{url}"\nweight = {weight}\n'
                  f'models = ["m1"]\n' for name, url, weight in endpoints)
    return f'[server]\nadmin_key = "{ADMIN}"\n{server}\n[probes]\n{probes}\n{eps}'


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    async with asyncio.timeout(WAIT_S):
        while not await check():
            await asyncio.sleep(0.02)
    assert await check(), what


@dataclass
class FleetlbProcess:
    proc: subprocess.Popen[bytes]
    url: str
    config_path: Path
    log_path: Path

    @classmethod
    async def start(cls, tmp: Path, config: str, env: dict[str, str] | None = None
                    ) -> FleetlbProcess:
        config_path, log_path = tmp / "fleet.toml", tmp / "fleetlb.log"
        config_path.write_text(config)
        port = free_port()
        base_env = {k: v for k, v in os.environ.items()
                    if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "lb", "serve", "--config", str(config_path),
                 "--port", str(port)],
                stdout=log, stderr=subprocess.STDOUT, env={**base_env, **(env or {})},
                cwd=tmp)  # a default responses.db lands in the test's folder
        process = cls(proc, f"http://127.0.0.1:{port}", config_path, log_path)
        await eventually(process._answers, "fleetlb did not start")
        return process

    def write_config(self, text: str) -> None:
        """Replace the file atomically, as an editor or config management would."""
        tmp = self.config_path.with_suffix(".new")
        tmp.write_text(text)
        tmp.replace(self.config_path)

    def send(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    async def exit_code(self) -> int:
        return await asyncio.to_thread(self.proc.wait, WAIT_S)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_bytes().splitlines()
        return [orjson.loads(line) for line in lines if line.startswith(b"{")]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.log() if line.get("event") == name]

    async def admin(self, path: str) -> Any:
        async with aiohttp.ClientSession() as s, s.get(
                self.url + path, headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json() if resp.content_type == "application/json" \
                else await resp.text()

    async def in_flight(self) -> dict[str, int]:
        rows = (await self.admin("/admin/endpoints"))["endpoints"]
        return {row["name"]: row["in_flight"] for row in rows}

    async def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        text = await self.admin("/metrics")
        return {(s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    async def reloads(self, result: str) -> float:
        key = ("fleetlb_config_reloads_total", frozenset({("result", result)}))
        return (await self.metrics())[key]

    async def _answers(self) -> bool:
        assert self.proc.poll() is None, self.log_path.read_text()
        try:
            async with aiohttp.ClientSession() as s, s.get(self.url + "/healthz") as resp:
                return resp.status == 200
        except aiohttp.ClientConnectionError:
            return False


async def stream_chat(url: str, max_tokens: int) -> tuple[str, list[bytes]]:
    """One streamed chat completion read to its end: (endpoint, the SSE events' data)."""
    body = {"model": "m1", "stream": True, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as s, s.post(url + "/v1/chat/completions",
                                                    json=body) as resp:
        assert resp.status == 200, await resp.text()
        raw = await resp.read()
    events = [e.removeprefix(b"data: ") for e in raw.split(b"\n\n") if e]
    return resp.headers["x-fleetlb-endpoint"], events


def assert_whole(events: list[bytes], max_tokens: int) -> None:
    """A complete stream: every token, the finish reason, [DONE] last, no error event."""
    assert events[-1] == b"[DONE]", events[-3:]
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert not [c for c in chunks if "error" in c]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert len(text.split()) == max_tokens
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
