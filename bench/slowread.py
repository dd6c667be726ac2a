"""The slow-reader workload: what a client that reads slowly costs the gateway in memory.

A firehose backend (lb.sim.faults) streams as fast as its socket takes; N clients, each with a
4 KiB receive buffer, read 1 KiB every 50 ms. After the streams have run a while, the gateway's
RSS over its baseline, per stream, says how much it buffers for a client that is behind; the bytes
the backend managed to write per stream say whether it was paused (by TCP) or drained into the
gateway. The bare aiohttp relay (bench.relay) is the reference.

`python -m bench.slowread [--streams 20] [--seconds 8] [--fleetlb-tree LABEL=DIR] [--json F]`
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from bench.child import Child, free_port
from bench.eventloop import run
from bench.targets import REPO
from lb.sim.faults import FaultyBackend

CLIENT_RCVBUF = 4096  # the client's kernel buffer: small, so the gateway sees the slowness
READ_BYTES = 1024
READ_GAP_S = 0.05
START_TIMEOUT_S = 30.0
BODY = b'{"model":"m1","stream":true,"messages":[{"role":"user","content":"hi"}]}'


@dataclass(frozen=True, slots=True)
class SlowReadResult:
    target: str
    streams: int
    rss_before_kib: int
    rss_during_kib: int
    rss_per_stream_kib: float
    backend_sent_per_stream_kib: float  # written by the backend: the rest waits in its socket
    client_read_per_stream_kib: float


async def slow_client(port: int, stop: asyncio.Event) -> int:
    loop = asyncio.get_running_loop()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                                % (len(BODY), BODY))
        got = 0
        while not stop.is_set():
            data = await loop.sock_recv(sock, READ_BYTES)
            if not data:
                break
            got += len(data)
            await asyncio.sleep(READ_GAP_S)
        return got


def start_target(name: str, tree: Path, backend_url: str, workdir: Path) -> tuple[Child, int]:
    port = free_port()
    if name == "relay":
        argv = [sys.executable, "-m", "bench.relay", "--port", str(port), "--upstream",
                backend_url]
    else:
        config = workdir / f"{name}.toml"
        config.write_text(f'[server]\nhost = "127.0.0.1"\nport = {port}\n[store]\n'
                          f'kind = "memory"\n[[endpoints]]\nname = "firehose"\n'
                          f'url = "{backend_url}"\nmodels = ["m1"]\n')
        argv = [sys.executable, "-m", "lb", "serve", "--config", str(config)]
    child = Child(name, argv, workdir / f"{name}.log", cwd=tree)
    child.wait_tcp(port, START_TIMEOUT_S)
    return child, port


async def measure(name: str, tree: Path, streams: int, seconds: float,
                  workdir: Path) -> SlowReadResult:
    backend = await FaultyBackend(fault="firehose", firehose_bytes=1 << 40).start()
    child, port = await asyncio.to_thread(start_target, name, tree, backend.url, workdir)
    try:
        await asyncio.sleep(1.0)  # settled after start
        before = child.sample().rss_kib
        stop = asyncio.Event()
        tasks = [asyncio.create_task(slow_client(port, stop)) for _ in range(streams)]
        await asyncio.sleep(seconds)
        during = child.sample().rss_kib
        stop.set()
        read = sum(await asyncio.gather(*tasks))
        return SlowReadResult(name, streams, before, during,
                              round((during - before) / streams, 1),
                              round(backend.sent_bytes / streams / 1024, 1),
                              round(read / streams / 1024, 1))
    finally:
        await asyncio.to_thread(child.stop)
        await backend.close()


def report(results: list[SlowReadResult]) -> str:
    lines = ["slow readers: RSS per stream over the baseline (lower is better)",
             f"  {'target':<10} {'streams':>7} {'RSS/stream KiB':>15} "
             f"{'backend wrote/stream KiB':>25} {'client read/stream KiB':>23}"]
    lines += [f"  {r.target:<10} {r.streams:>7} {r.rss_per_stream_kib:>15.1f} "
              f"{r.backend_sent_per_stream_kib:>25.1f} {r.client_read_per_stream_kib:>23.1f}"
              for r in results]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[SlowReadResult]:
    targets = [("fleetlb", REPO), ("relay", REPO)]
    for item in args.fleetlb_tree:
        label, _, tree = item.partition("=")
        targets.append((label, Path(tree)))
    results = []
    with tempfile.TemporaryDirectory(prefix="fleetlb-slowread-") as tmp:
        for name, tree in targets:
            results.append(await measure(name, tree, args.streams, args.seconds, Path(tmp)))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.slowread", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--fleetlb-tree", action="append", default=[], metavar="LABEL=DIR",
                        help="also measure the fleetlb in source tree DIR as LABEL")
    parser.add_argument("--json", type=Path, help="write the numbers to this file")
    args = parser.parse_args(argv)
    results = run(main_async(args))
    print(report(results), flush=True)
    if args.json:
        args.json.write_bytes(orjson.dumps([asdict(r) for r in results],
                                           option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
