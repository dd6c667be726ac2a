"""A server child process on a loopback port: start, wait until healthy, stop by PID.

Shared by the llama-server, vLLM and fleetlb launchers. Output goes to a log file so that a
failed start can say why (the tail of the log is put into the exception).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
# Seconds between /health polls: short enough that a 1 s llama-server start is not slowed down.
POLL_INTERVAL_S = 0.2
# Seconds a single health request may take (a busy 2-core machine can be slow to answer).
PROBE_TIMEOUT_S = 5.0
# Seconds a server gets to exit after SIGTERM before it is killed.
STOP_GRACE_S = 15.0
# Bytes of the log file quoted in a start failure.
LOG_TAIL_BYTES = 4000


class ServerStartError(RuntimeError):
    """A server exited or never became healthy; the message carries its log tail."""


def free_port() -> int:
    """A loopback TCP port that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return "(no log)"
    return data[-LOG_TAIL_BYTES:].decode("utf-8", "replace")


@dataclass(slots=True)
class ServerProcess:
    """One running server: its process, port and log file."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_healthy(self, path: str, timeout_s: float) -> float:
        """Poll `path` until it answers 200; return the seconds it took. Raise if it never does."""
        started = time.monotonic()
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise ServerStartError(
                    f"{self.name} exited with {self.popen.returncode} before becoming healthy;"
                    f" log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            if _answers_ok(self.url + path):
                return time.monotonic() - started
            time.sleep(POLL_INTERVAL_S)
        self.stop()
        raise ServerStartError(
            f"{self.name} not healthy at {self.url}{path} after {timeout_s:.0f} s;"
            f" log {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def kill(self) -> None:
        """SIGKILL this process (and its process group): a crash, as a test wants it."""
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()

    def stop(self) -> None:
        """SIGTERM the process group by PID, then SIGKILL after a grace period; always reaps."""
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()
        # children of the group (vLLM's engine core) may outlive the leader: reap them too
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _answers_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def start_server(
    name: str,
    argv: Sequence[str],
    port: int,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ServerProcess:
    """Start `argv` in its own process group (so stop() reaches its children), logging to a file."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{port}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    return ServerProcess(name=name, popen=popen, port=port, log_path=log_path)


def start_healthy(name: str, argv_for: Callable[[int], Sequence[str]], count: int,
                  log_dir: Path, timeout_s: float, env: Mapping[str, str] | None = None,
                  ) -> list[ServerProcess]:
    """Start `count` servers on free loopback ports (all at once, so their start-ups overlap);
    all answer `/health`, or all are stopped and the error is raised."""
    servers: list[ServerProcess] = []
    try:
        for index in range(count):
            port = free_port()
            servers.append(start_server(f"{name}-{index}", argv_for(port), port, log_dir, env))
        for server in servers:
            server.wait_healthy("/health", timeout_s)
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers
