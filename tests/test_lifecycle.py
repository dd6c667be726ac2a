"""fleetlb as a real process under real signals: SIGHUP reloads under load, a bad config on SIGHUP,
sd_notify to a socket of ours, and the SIGTERM drain."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.conftest import Sim, SimFactory
from tests.fleetlb_process import (
    FleetlbProcess,
    assert_whole,
    eventually,
    fleet_toml,
    stream_chat,
)

Start = Callable[..., Awaitable[FleetlbProcess]]
STREAM_TOKENS = 60
TOKENS_PER_S = 20.0  # 3 s per stream: every signal below lands while streams are in flight


@pytest.fixture
async def start_fleetlb(tmp_path: Path) -> AsyncIterator[Start]:
    processes: list[FleetlbProcess] = []

    async def start(config: str, env: dict[str, str] | None = None) -> FleetlbProcess:
        process = await FleetlbProcess.start(tmp_path, config, env)
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.kill()


def lb_requests(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> float:
    """Chat completions answered 200, over every endpoint."""
    chat = frozenset({("api", "chat_completions"), ("status", "200"), ("model", "m1")})
    return sum(v for (name, labels), v in metrics.items()
               if name == "fleetlb_requests_total" and chat <= labels)


def chats_received(*sims: Sim) -> int:
    return sum(path == "/v1/chat/completions" for sim in sims for path in sim.behavior.paths())


def configs(a: Sim, b: Sim, c: Sim) -> tuple[str, str]:
    """Two valid configs to alternate: weights change, endpoint c comes and goes."""
    weighted = '\n[[models]]\nname = "m1"\nstrategy = "weighted"\n'  # the weights are tested
    first = fleet_toml([("a", a.url, 1), ("b", b.url, 1)]) + weighted
    second = fleet_toml([("a", a.url, 3), ("b", b.url, 1), ("c", c.url, 2)]) + weighted
    return first, second


async def test_sighup_20_times_under_50_streams(start_sim: SimFactory,
                                                start_fleetlb: Start) -> None:
    a, b, c = [await start_sim("m1", tokens_per_s=TOKENS_PER_S) for _ in range(3)]
    first, second = configs(a, b, c)
    lb = await start_fleetlb(first)
    streams = [asyncio.create_task(stream_chat(lb.url, STREAM_TOKENS)) for _ in range(25)]

    async def all_started() -> bool:
        return sum((await lb.in_flight()).values()) == 25

    await eventually(all_started, "25 streams in flight")
    for i in range(1, 21):
        lb.write_config(second if i % 2 else first)
        lb.send(signal.SIGHUP)

        async def applied(n: int = i) -> bool:
            return await lb.reloads("ok") == n

        await eventually(applied, f"reload {i} applied")
        if i % 2 and len(streams) < 50:  # c is in: some of these land on it, then it is removed
            streams += [asyncio.create_task(stream_chat(lb.url, STREAM_TOKENS))
                        for _ in range(5)]

            async def started(n: int = len(streams)) -> bool:
                return chats_received(a, b, c) >= n

            await eventually(started, "the new streams are in flight before the next reload")
    assert not any(task.done() for task in streams[25:]), "streams must span the reloads"
    results = await asyncio.gather(*streams)
    for _, events in results:
        assert_whole(events, STREAM_TOKENS)
    served = {name for name, _ in results}
    assert served == {"a", "b", "c"}

    async def all_done() -> bool:
        return set((await lb.in_flight()).values()) == {0}

    await eventually(all_done, "in-flight back to 0")
    assert set(await lb.in_flight()) == {"a", "b"}  # the last config (20th) is the first one
    assert await lb.reloads("error") == 0
    assert lb_requests(await lb.metrics()) == 50
    lb.send(signal.SIGTERM)
    assert await lb.exit_code() == 0
    reloaded = lb.events("config_reloaded")
    assert len(reloaded) == 20
    assert reloaded[0]["endpoints_added"] == ["c"] and reloaded[0]["endpoints_changed"] == [
        "a.weight"]
    assert reloaded[1]["endpoints_removed"] == ["c"]


async def test_invalid_config_on_sighup_keeps_the_old_one(start_sim: SimFactory,
                                                          start_fleetlb: Start) -> None:
    a, b, c = [await start_sim("m1") for _ in range(3)]
    first, _ = configs(a, b, c)
    lb = await start_fleetlb(first)
    lb.write_config(first.replace("weight = 1", "weight = 0", 1))
    lb.send(signal.SIGHUP)

    async def counted() -> bool:
        return await lb.reloads("error") == 1

    await eventually(counted, "the failed reload is counted")
    assert await lb.reloads("ok") == 0
    assert set(await lb.in_flight()) == {"a", "b"}
    served = {(await stream_chat(lb.url, 3))[0] for _ in range(4)}
    assert served == {"a", "b"}  # still the old config's endpoints and weights
    lb.send(signal.SIGTERM)
    assert await lb.exit_code() == 0
    [failed] = lb.events("config_reload_failed")
    assert failed["level"] == "error"
    assert failed["file"] == str(lb.config_path)
    assert failed["problems"] == ["endpoints[0].weight: must be > 0"]
    assert not lb.events("config_reloaded")


async def test_sd_notify_ready_reloading_stopping_and_watchdog(start_sim: SimFactory,
                                                               start_fleetlb: Start) -> None:
    sim = await start_sim("m1")
    with tempfile.TemporaryDirectory(prefix="sdn") as tmp, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        path = str(Path(tmp) / "notify")
        sock.bind(path)
        sock.setblocking(False)
        received: list[list[str]] = []
        loop = asyncio.get_running_loop()

        async def got(state: str, count: int) -> bool:
            try:
                while True:
                    received.append((await asyncio.wait_for(loop.sock_recv(sock, 4096), 0.01))
                                    .decode().split("\n"))
            except TimeoutError:
                pass
            return sum(state in lines for lines in received) >= count

        lb = await start_fleetlb(fleet_toml([("a", sim.url, 1)]),
                                 env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})
        await eventually(lambda: got("READY=1", 1), "READY=1")
        await eventually(lambda: got("WATCHDOG=1", 2), "watchdog pings")
        lb.send(signal.SIGHUP)
        await eventually(lambda: got("READY=1", 2), "READY=1 after the reload")
        lb.send(signal.SIGTERM)
        assert await lb.exit_code() == 0
        await eventually(lambda: got("STOPPING=1", 1), "STOPPING=1")
    states = [line for lines in received for line in lines
              if line in ("READY=1", "RELOADING=1", "STOPPING=1")]
    assert states == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]
    [reloading] = [lines for lines in received if "RELOADING=1" in lines]
    usec = [line.split("=")[1] for line in reloading if line.startswith("MONOTONIC_USEC=")]
    assert len(usec) == 1 and int(usec[0]) > 0
    first_ready = next(lines for lines in received if "READY=1" in lines)
    assert "STATUS=1/1 endpoints healthy" in first_ready  # sent after the first probe round
    assert sum("WATCHDOG=1" in lines for lines in received) >= 2


async def test_sigterm_lets_10_streams_finish_then_exits_0(start_sim: SimFactory,
                                                           start_fleetlb: Start) -> None:
    sim = await start_sim("m1", tokens_per_s=TOKENS_PER_S)
    lb = await start_fleetlb(fleet_toml([("a", sim.url, 1)]))
    streams = [asyncio.create_task(stream_chat(lb.url, STREAM_TOKENS)) for _ in range(10)]

    async def all_started() -> bool:
        return (await lb.in_flight())["a"] == 10

    await eventually(all_started, "10 streams in flight")
    lb.send(signal.SIGTERM)

    async def refused() -> bool:
        try:
            async with aiohttp.ClientSession() as s, s.get(lb.url + "/healthz"):
                return False
        except aiohttp.ClientConnectionError:
            return True

    await eventually(refused, "no new connections once draining")
    for _, events in await asyncio.gather(*streams):
        assert_whole(events, STREAM_TOKENS)
    assert await lb.exit_code() == 0
    [draining] = lb.events("draining")
    assert draining["requests"] == 10 and draining["streams"] == 10
    assert not lb.events("drain_timeout")


async def test_streams_outlasting_drain_timeout_end_with_an_error_event(
        start_sim: SimFactory, start_fleetlb: Start) -> None:
    sim = await start_sim("m1", tokens_per_s=TOKENS_PER_S)
    lb = await start_fleetlb(fleet_toml([("a", sim.url, 1)], server="drain_timeout = 0.5"))
    streams = [asyncio.create_task(stream_chat(lb.url, 1000)) for _ in range(3)]

    async def all_started() -> bool:
        return (await lb.in_flight())["a"] == 3

    await eventually(all_started, "3 streams in flight")
    lb.send(signal.SIGTERM)
    for _, events in await asyncio.gather(*streams):
        error = orjson.loads(events[-1])["error"]
        assert error["code"] == "shutting_down"
    assert await lb.exit_code() == 0
    [cut] = lb.events("drain_timeout")
    assert (cut["cut_streams"], cut["cut_waiting"]) == (3, 0)


def test_an_address_in_use_exits_1_with_one_error_line(tmp_path: Path) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text(fleet_toml([("a", "http://127.0.0.1:9", 1)]))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "lb", "serve", "--config", str(config),
                               "--port", str(port)], capture_output=True, timeout=30, check=False,
                              cwd=tmp_path)
    assert done.returncode == 1  # systemd's Restart=on-failure tries again
    lines = [orjson.loads(line) for line in done.stdout.splitlines() if line.startswith(b"{")]
    [error] = [line for line in lines if line["event"] == "cannot_listen"]
    assert error["port"] == port and "in use" in error["error"]
    assert b"Traceback" not in done.stdout + done.stderr
    assert b"Unclosed" not in done.stdout + done.stderr  # the app's resources were closed
