"""sd_notify(3) for a `Type=notify` service: one datagram per state change to `$NOTIFY_SOCKET`.

`notifier_from_env` gives `NoNotify` (does nothing) when there is no socket, so callers never
check. Sending never blocks and never raises: systemd being away must not stop the gateway.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import Protocol

import structlog

log = structlog.get_logger("lb.sdnotify")


class Notifier(Protocol):
    def notify(self, *assignments: str) -> None: ...

    def close(self) -> None: ...


class NoNotify:
    __slots__ = ()

    def notify(self, *assignments: str) -> None:
        return None

    def close(self) -> None:
        return None


class SdNotify:
    """Sends `KEY=VALUE` lines in one datagram to the unix socket systemd gave us."""

    __slots__ = ("_address", "_failed", "_socket")

    def __init__(self, address: str) -> None:
        # "@name" is a socket in the abstract namespace (a leading NUL byte)
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._socket.setblocking(False)
        self._failed = False

    def notify(self, *assignments: str) -> None:
        try:
            self._socket.sendto("\n".join(assignments).encode(), self._address)
        except OSError as exc:
            if not self._failed:  # say it once, not on every watchdog ping
                log.warning("sd_notify_failed", error=str(exc))
            self._failed = True
        else:
            self._failed = False

    def close(self) -> None:
        self._socket.close()


def notifier_from_env(env: Mapping[str, str]) -> Notifier:
    address = env.get("NOTIFY_SOCKET", "")
    return SdNotify(address) if address.startswith(("/", "@")) else NoNotify()


def watchdog_interval_s(env: Mapping[str, str], pid: int | None = None) -> float | None:
    """Half of `WATCHDOG_USEC` (as systemd advises), if the watchdog is meant for this process."""
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    owner = env.get("WATCHDOG_PID")
    if usec <= 0 or (owner and owner != str(os.getpid() if pid is None else pid)):
        return None
    return usec / 2e6


def ready(status: str) -> tuple[str, str]:
    return "READY=1", f"STATUS={status}"


def reloading() -> tuple[str, str]:
    """RELOADING=1 with the CLOCK_MONOTONIC time it started (Type=notify-reload wants it)."""
    now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return "RELOADING=1", f"MONOTONIC_USEC={now_us}"


def stopping(status: str) -> tuple[str, str]:
    return "STOPPING=1", f"STATUS={status}"
