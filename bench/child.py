"""A process the bench started: spawned with its output in a log file, waited for until its port
answers, and stopped by its PID (then any process it left behind, by theirs)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from bench.procfs import TreeSample, all_stats, descendants, sample_tree

STOP_GRACE_S = 5.0  # SIGTERM, then SIGKILL after this long
POLL_S = 0.05


class StartFailed(Exception):
    """A process the bench needs did not come up; the message quotes the end of its log."""


def free_port() -> int:
    """A loopback port nobody listens on now (the child binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_status(url: str, headers: Mapping[str, str] | None = None, *, method: str = "GET",
                body: bytes | None = None, timeout_s: float = 5.0) -> int | None:
    """The status `url` answers with, or None when nothing answers."""
    request = urllib.request.Request(url, data=body, headers=dict(headers or {}), method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


class Child:
    def __init__(self, name: str, argv: Sequence[str], log_path: Path, *,
                 env: Mapping[str, str] | None = None, cwd: Path | None = None,
                 pipes: bool = False) -> None:
        """`pipes`: stdin and stdout are pipes to the bench (stderr still goes to the log)."""
        self.name = name
        self.log_path = log_path
        with log_path.open("wb") as log:
            # own session: a Ctrl-C on the bench reaches the bench, which stops us in order
            self._popen = subprocess.Popen(
                list(argv), stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipes else log,
                stderr=log if pipes else subprocess.STDOUT,
                env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)

    @property
    def pid(self) -> int:
        return self._popen.pid

    def is_running(self) -> bool:
        return self._popen.poll() is None

    def sample(self) -> TreeSample:
        return sample_tree(self.pid)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_http(self, url: str, timeout_s: float, *, ready: Sequence[int] = (200,),
                  headers: Mapping[str, str] | None = None) -> None:
        """Until `url` answers with a status in `ready`; StartFailed if the process dies first."""
        deadline = time.monotonic() + timeout_s
        status = None
        while time.monotonic() < deadline:
            if not self.is_running():
                raise StartFailed(f"{self.name} exited with {self._popen.returncode}:\n"
                                  f"{self.log_tail()}")
            status = http_status(url, headers, timeout_s=2.0)
            if status in ready:
                return
            time.sleep(POLL_S * 4)
        raise StartFailed(f"{self.name}: {url} answered {status} after {timeout_s:g} s:\n"
                          f"{self.log_tail()}")

    def wait_tcp(self, port: int, timeout_s: float) -> None:
        """Until 127.0.0.1:`port` accepts a connection (a server that is not HTTP)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.is_running():
                raise StartFailed(f"{self.name} exited with {self._popen.returncode}:\n"
                                  f"{self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1.0):
                return
            time.sleep(POLL_S)
        raise StartFailed(f"{self.name}: nothing listens on port {port} after {timeout_s:g} s")

    def stop(self) -> None:
        """SIGTERM to our PID, SIGKILL after a grace period, then SIGKILL to any leftover child."""
        for pipe in (self._popen.stdin, self._popen.stdout):
            if pipe is not None:
                pipe.close()
        if not self.is_running():
            return
        left = [p for p in descendants(self.pid, all_stats()) if p != self.pid]
        self._popen.send_signal(signal.SIGTERM)
        try:
            self._popen.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            self._popen.wait()
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # the load generator's handle talks to it over these pipes
    @property
    def popen(self) -> subprocess.Popen[bytes]:
        return self._popen
