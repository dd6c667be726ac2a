"""A gateway in front of simulated backends, serving from its own thread's event loop, and a raw
HTTP/1.1 client: hypothesis runs examples synchronously, and any bytes must be sendable."""

from __future__ import annotations

import asyncio
import io
import socket
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer

from lb.app import build_app
from lb.appstate import ACCESS_LOG, RUNTIME
from lb.config import parse_config
from lb.observe import JsonAccessLog, configure_logging
from lb.serverlog import server_options
from lb.sim import SimOptions, build_sim_app
from tests.gateway_server import GatewayTestServer

T = TypeVar("T")
WAIT_S = 20.0  # ceiling for one request: a hang fails by name


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names; repeated ones joined with ", "
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class LiveGateway:
    """Start with `start()`, stop with `stop()`; `run()` runs a coroutine on its loop."""

    config: dict[str, Any] = field(default_factory=dict)
    log: io.BytesIO = field(default_factory=io.BytesIO)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _servers: list[TestServer] = field(default_factory=list)
    app: web.Application | None = None

    def start(self, sims: dict[str, str]) -> LiveGateway:
        """`sims`: endpoint name -> kind; each serves model m1."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        configure_logging("json", stream=self.log, cache=False)
        self.run(self._start(sims))
        return self

    async def _start(self, sims: dict[str, str]) -> None:
        endpoints = []
        for name, kind in sims.items():
            sim = TestServer(build_sim_app(SimOptions(models=("m1",), kind=kind)),  # type: ignore[arg-type]
                             host="127.0.0.1")
            await sim.start_server()
            self._servers.append(sim)
            endpoints.append({"name": name, "url": str(sim.make_url("")).rstrip("/"),
                              "kind": kind, "models": ["m1"]})
        config = parse_config({"store": {"kind": "memory"}, "endpoints": endpoints,
                               **self.config})
        self.app = build_app(config, active_probes=False, access_log=JsonAccessLog(self.log))
        server = GatewayTestServer(self.app, host="127.0.0.1")
        options = server_options(self.app[ACCESS_LOG])
        options.pop("handler_cancellation")
        await server.start_server(**options)
        self._servers.append(server)
        self.port = server.port or 0

    def stop(self) -> None:
        async def close() -> None:
            for server in reversed(self._servers):
                await server.close()

        self.run(close())
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(WAIT_S)
        self._loop.close()
        configure_logging("json", stream=io.BytesIO(), cache=False)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(WAIT_S)

    def in_flight(self) -> dict[str, int]:
        assert self.app is not None
        return {ep.name: ep.in_flight for ep in self.app[RUNTIME].current.fleet}

    def lines(self) -> list[dict[str, Any]]:
        """Every log line so far (access lines flushed first); then forget them."""
        assert self.app is not None

        async def flush() -> None:
            assert self.app is not None
            self.app[ACCESS_LOG].flush()

        self.run(flush())
        data = self.log.getvalue()
        self.log.seek(0)
        self.log.truncate()
        return [orjson.loads(line) for line in data.splitlines() if line.strip()]

    def request(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
                body: bytes = b"") -> Answer:
        """One request on a new connection (`Connection: close`), the bytes exactly as given."""
        head = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1",
                b"Connection: close", b"Content-Length: %d" % len(body)]
        head += [name + b": " + value for name, value in headers]
        with socket.create_connection(("127.0.0.1", self.port), timeout=WAIT_S) as sock:
            sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
            data = bytearray()
            while chunk := sock.recv(1 << 16):
                data += chunk
        return parse_answer(bytes(data))


def parse_answer(data: bytes) -> Answer:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = dechunk(body)
    return Answer(status, headers, body)


def dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return bytes(out)
