"""What the kernel says a process costs: CPU ticks and resident memory from /proc, for a process and
every process below it (nginx's workers, a Python server's helpers).

Parsers are pure (text in, numbers out); `sample_tree` is the only function that reads /proc.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Stat:
    """The fields of /proc/<pid>/stat the bench uses (see proc(5))."""

    pid: int
    ppid: int
    utime: int  # clock ticks in user mode
    stime: int  # clock ticks in kernel mode
    rss_pages: int

    @property
    def cpu_ticks(self) -> int:
        return self.utime + self.stime


def parse_stat(text: str) -> Stat:
    """/proc/<pid>/stat; the command name may hold spaces and parentheses, so split after the
    last `)`. Fields after it start at field 3 (state)."""
    open_paren, close_paren = text.index("("), text.rindex(")")
    rest = text[close_paren + 2:].split()
    return Stat(pid=int(text[:open_paren]), ppid=int(rest[1]), utime=int(rest[11]),
                stime=int(rest[12]), rss_pages=int(rest[21]))


def parse_status_kib(text: str, key: str) -> int:
    """A `kB` field of /proc/<pid>/status (`VmRSS`, `VmHWM`); 0 when absent (a zombie)."""
    prefix = key + ":"
    for line in text.splitlines():
        if line.startswith(prefix):
            return int(line[len(prefix):].split()[0])
    return 0


def descendants(root: int, stats: Iterable[Stat]) -> list[int]:
    """`root` and every process below it, from one snapshot of (pid, ppid) pairs."""
    children: dict[int, list[int]] = {}
    for stat in stats:
        children.setdefault(stat.ppid, []).append(stat.pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


@dataclass(frozen=True, slots=True)
class TreeSample:
    """One reading of a process tree."""

    pids: tuple[int, ...]
    user_ticks: int
    system_ticks: int
    rss_kib: int
    peak_rss_kib: int  # sum of each process's high-water mark (VmHWM)

    @property
    def cpu_s(self) -> float:
        return (self.user_ticks + self.system_ticks) / CLOCK_TICKS_PER_S

    @property
    def system_s(self) -> float:
        """Time in the kernel: socket syscalls, epoll, wake-ups (the rest is the process's own)."""
        return self.system_ticks / CLOCK_TICKS_PER_S


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None  # the process ended between listing and reading


def all_stats() -> list[Stat]:
    stats = []
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (text := _read(entry / "stat")) is not None:
            stats.append(parse_stat(text))
    return stats


def sample_tree(root: int) -> TreeSample:
    """CPU and memory of `root` and its descendants now."""
    stats = all_stats()
    by_pid = {s.pid: s for s in stats}
    pids = [p for p in descendants(root, stats) if p in by_pid]
    rss = peak = 0
    for pid in pids:
        status = _read(PROC / str(pid) / "status") or ""
        rss += parse_status_kib(status, "VmRSS")
        peak += parse_status_kib(status, "VmHWM")
    return TreeSample(tuple(pids), sum(by_pid[p].utime for p in pids),
                      sum(by_pid[p].stime for p in pids), rss, peak)
