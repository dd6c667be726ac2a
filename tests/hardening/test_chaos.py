"""Chaos under load: a backend SIGKILLed under 90 concurrent streams, and slowhttptest's
slowloris and slow-read attacks, while normal requests keep succeeding; afterwards every count
is back: in-flight 0, fleetlb's open file descriptors at their baseline."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.conftest import GatewayFactory, SimFactory, endpoint
from tests.fleetlb_process import FleetlbProcess, eventually, fleet_toml

WAIT_S = 30.0
STREAMS = 90


@pytest.fixture
async def killable_sim() -> AsyncIterator[tuple[subprocess.Popen[bytes], str]]:
    """`fleetlb sim` as its own process (streams at 20 tokens/s), so it can be SIGKILLed."""
    proc = subprocess.Popen([sys.executable, "-m", "lb", "sim", "--port", "0", "--models", "m1",
                             "--tokens-per-s", "20"], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), WAIT_S)
    url = re.search(rb"http://[\d.]+:\d+", line)
    assert url, line
    yield proc, url.group().decode()
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    proc.stdout.close()


async def stream(s: aiohttp.ClientSession, url: str,
                 started: list[int] | None = None) -> tuple[str, list[bytes]]:
    """One stream read to its end; `started` counts the streams whose first event arrived."""
    body = {"model": "m1", "stream": True, "max_tokens": 40,
            "messages": [{"role": "user", "content": "hi"}]}
    async with s.post(url + "/v1/chat/completions", json=body) as resp:
        assert resp.status == 200, await resp.text()
        raw = await resp.content.readuntil(b"\n\n")
        if started is not None:
            started.append(1)
        raw += await resp.read()
    return resp.headers["x-fleetlb-endpoint"], [e for e in raw.split(b"\n\n") if e]


async def test_a_backend_killed_under_90_streams(
        killable_sim: tuple[subprocess.Popen[bytes], str], start_sim: SimFactory,
        start_gateway: GatewayFactory) -> None:
    proc, doomed_url = killable_sim
    survivor = await start_sim("m1", tokens_per_s=20.0)
    gw = await start_gateway({"endpoints": [endpoint("doomed", doomed_url),
                                            endpoint("survivor", survivor)],
                              "models": [{"name": "m1", "strategy": "least_in_flight"}]})
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as s:
        started: list[int] = []
        tasks = [asyncio.create_task(stream(s, gw.url, started)) for _ in range(STREAMS)]
        async with asyncio.timeout(WAIT_S):
            while len(started) < STREAMS:  # every stream past its first byte
                await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        async with asyncio.timeout(WAIT_S):
            results = await asyncio.gather(*tasks)
        by_endpoint: dict[str, list[list[bytes]]] = {"doomed": [], "survivor": []}
        for name, events in results:
            by_endpoint[name].append(events)
        assert by_endpoint["doomed"] and by_endpoint["survivor"]
        for events in by_endpoint["doomed"]:  # cut short, and told so
            assert events[-1].startswith(b'data: {"error"'), events[-2:]
        for events in by_endpoint["survivor"]:  # untouched
            assert events[-1] == b"data: [DONE]"
            assert not any(e.startswith(b'data: {"error"') for e in events)
        # new requests go on succeeding (a connect refused fails over before the first byte)
        async with asyncio.timeout(WAIT_S):
            again = await asyncio.gather(*(stream(s, gw.url) for _ in range(10)))
        assert all(events[-1] == b"data: [DONE]" for _, events in again)
    assert gw.in_flight() == {"doomed": 0, "survivor": 0}


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def normal_requests_succeed(url: str, count: int = 5) -> None:
    body = {"model": "m1", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as s:
        for _ in range(count):
            async with s.post(url + "/v1/chat/completions", json=body) as resp:
                assert resp.status == 200
                assert orjson.loads(await resp.read())["choices"]


@pytest.mark.skipif(shutil.which("slowhttptest") is None,
                    reason="slowhttptest is not installed (.ci/run installs it)")
@pytest.mark.parametrize("attack", [
    ["-H", "-c", "300", "-r", "150", "-i", "2", "-l", "6"],  # slowloris: headers that never end
    ["-X", "-c", "200", "-r", "100", "-k", "10", "-n", "1", "-w", "1", "-y", "2", "-z", "1",
     "-l", "6"],  # slow read: a tiny window, read a byte a second
], ids=["slowloris", "slow_read"])
async def test_slowhttptest(attack: list[str], start_sim: SimFactory, tmp_path: Path) -> None:
    sim = await start_sim("m1")
    gateway = await FleetlbProcess.start(tmp_path, fleet_toml([("a", sim.url, 1.0)]))
    try:
        await normal_requests_succeed(gateway.url)
        baseline = open_fds(gateway.proc.pid)
        attacker = await asyncio.create_subprocess_exec(
            "slowhttptest", *attack, "-u", gateway.url + "/v1/models", "-p", "3",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        try:
            await asyncio.sleep(2)  # the attack is under way
            assert open_fds(gateway.proc.pid) > baseline  # it did reach fleetlb
            await normal_requests_succeed(gateway.url)
        finally:
            async with asyncio.timeout(WAIT_S):
                await attacker.wait()

        async def fds_back() -> bool:
            return open_fds(gateway.proc.pid) <= baseline + 2

        await eventually(fds_back, "fleetlb's fds did not return to their baseline")
        await normal_requests_succeed(gateway.url)
        assert not gateway.events("unhandled_error")
        assert not [line for line in gateway.log() if "exception" in line]
    finally:
        gateway.kill()
