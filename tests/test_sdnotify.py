"""sd_notify datagrams to a real unix socket; no-op without NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lb import sdnotify
from lb.sdnotify import NoNotify, SdNotify, notifier_from_env, watchdog_interval_s


@pytest.fixture
def listener() -> Iterator[tuple[str, socket.socket]]:
    # a short directory: unix socket paths are limited to 108 bytes
    with tempfile.TemporaryDirectory(prefix="sdn") as tmp:
        path = str(Path(tmp) / "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(5)
        yield path, sock
        sock.close()


def test_sends_one_datagram_per_notification(listener: tuple[str, socket.socket]) -> None:
    path, sock = listener
    notifier = notifier_from_env({"NOTIFY_SOCKET": path})
    assert isinstance(notifier, SdNotify)
    notifier.notify(*sdnotify.ready("2/2 endpoints healthy"))
    notifier.notify(*sdnotify.reloading())
    notifier.notify(*sdnotify.stopping("draining 0 requests"))
    notifier.close()
    assert sock.recv(4096) == b"READY=1\nSTATUS=2/2 endpoints healthy"
    reloading = sock.recv(4096).decode().split("\n")
    assert reloading[0] == "RELOADING=1"
    key, _, usec = reloading[1].partition("=")
    assert key == "MONOTONIC_USEC" and int(usec) > 0
    assert sock.recv(4096) == b"STOPPING=1\nSTATUS=draining 0 requests"


def test_abstract_namespace_address() -> None:
    name = f"fleetlb-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        notifier = notifier_from_env({"NOTIFY_SOCKET": "@" + name})
        notifier.notify("WATCHDOG=1")
        notifier.close()
        assert sock.recv(100) == b"WATCHDOG=1"


def test_no_socket_means_no_op() -> None:
    assert isinstance(notifier_from_env({}), NoNotify)
    assert isinstance(notifier_from_env({"NOTIFY_SOCKET": "relative"}), NoNotify)
    NoNotify().notify("READY=1")  # nothing to send to, nothing raised


def test_a_vanished_socket_does_not_raise(tmp_path: Path) -> None:
    notifier = SdNotify(str(tmp_path / "gone"))
    notifier.notify("READY=1")
    notifier.notify("WATCHDOG=1")
    notifier.close()


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
])
def test_watchdog_interval_is_half_of_watchdog_usec(env: dict[str, str],
                                                    expected: float | None) -> None:
    assert watchdog_interval_s(env) == expected
