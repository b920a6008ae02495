"""Readers of the host's /proc and /sys, each rooted at a directory given by the caller."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from procfs.errors import Malformed, ProcessGone
from procfs.sources.text import parse_cpulist, read_optional, read_text, readlink_ns


@dataclass(frozen=True)
class PidStat:
    """The few fields of /proc/PID/stat procfs needs."""

    pid: int
    state: str
    ppid: int
    start_ticks: int  # field 22: start time after boot, in clock ticks


def parse_pid_stat(text: str) -> PidStat:
    # The command name may hold spaces and parentheses: split after the last ')'.
    head, sep, tail = text.rpartition(")")
    fields = tail.split()
    if not sep or len(fields) < 20:
        raise Malformed(f"short /proc/PID/stat: {text[:80]!r}")
    try:
        return PidStat(int(head.split("(", 1)[0]), fields[0], int(fields[1]), int(fields[19]))
    except ValueError as e:
        raise Malformed(f"bad /proc/PID/stat: {text[:80]!r}") from e


@dataclass(frozen=True)
class PidStatus:
    ppid: int
    nspid: tuple[int, ...]  # the pid in each pid namespace, outermost first


def parse_pid_status(text: str) -> PidStatus:
    ppid, nspid = 0, tuple[int, ...]()
    for line in text.splitlines():
        if not line.startswith(("PPid:", "NSpid:")):  # one test for the ~55 other lines
            continue
        if line.startswith("PPid:"):
            try:
                ppid = int(line.split()[1])
            except (IndexError, ValueError):
                ppid = 0
        elif line.startswith("NSpid:"):
            try:
                nspid = tuple(int(x) for x in line.split()[1:])
            except ValueError:
                nspid = ()
    return PidStatus(ppid, nspid)


def parse_timens_offsets(text: str | None) -> tuple[int, int]:
    """(monotonic, boottime) offsets in ns from /proc/PID/timens_offsets (names or clock ids)."""
    offsets = {"monotonic": 0, "boottime": 0}
    names = {"1": "monotonic", "7": "boottime"}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        name = names.get(parts[0], parts[0])
        try:
            offsets[name] = int(parts[1]) * 1_000_000_000 + int(parts[2])
        except ValueError:
            continue
    return offsets["monotonic"], offsets["boottime"]


class HostProc:
    """The host's /proc (and /sys) as the daemon sees them."""

    def __init__(self, proc_root: str = "/proc", sys_root: str = "/sys") -> None:
        self.proc_root = proc_root
        self.sys_root = sys_root

    def path(self, *parts: str | int) -> str:
        return os.path.join(self.proc_root, *(str(p) for p in parts))

    def text(self, name: str) -> str:
        """A host-wide /proc file (meminfo, cpuinfo, stat, ...)."""
        return read_text(self.path(name))

    def pid_text(self, pid: int, name: str) -> str:
        return read_text(self.path(pid, name), ProcessGone)

    def pid_ns(self, pid: int | str, kind: str = "pid") -> int:
        # Once per request: a plain f-string, not os.path.join.
        return readlink_ns(f"{self.proc_root}/{pid}/ns/{kind}", ProcessGone)

    def stat(self, pid: int) -> PidStat:
        return parse_pid_stat(self.pid_text(pid, "stat"))

    def status(self, pid: int) -> PidStatus:
        return parse_pid_status(self.pid_text(pid, "status"))

    def timens_offsets(self, pid: int) -> tuple[int, int]:
        return parse_timens_offsets(read_optional(self.path(pid, "timens_offsets")))

    def online_cpus(self) -> tuple[int, ...]:
        text = read_optional(os.path.join(self.sys_root, "devices/system/cpu/online"))
        cpus = parse_cpulist(text)
        return cpus or tuple(range(os.cpu_count() or 1))

    def sys_text(self, rel: str) -> str:
        return read_text(os.path.join(self.sys_root, rel))

    def proc_file(self, name: str) -> Callable[[], bytes]:
        """A reader of the host's /proc/`name`: what a host caller (or a fallback) is served."""
        return lambda: self.text(name).encode()

    def sys_file(self, rel: str) -> Callable[[], bytes]:
        return lambda: self.sys_text(rel).encode()

    def pids(self) -> list[int]:
        return [int(n) for n in os.listdir(self.proc_root) if n.isdigit()]
