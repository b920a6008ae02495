"""Fixture trees: a fake host /proc + /sys and cgroup v1/v2 hierarchies built in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

HOST_PIDNS = 4026531836
HOST_TIMENS = 4026531834

MEMINFO = """\
MemTotal:       16384000 kB
MemFree:         8000000 kB
MemAvailable:   12000000 kB
Buffers:          100000 kB
Cached:          3000000 kB
SwapCached:            0 kB
Active:          4000000 kB
Inactive:        2000000 kB
Active(anon):    1000000 kB
Inactive(anon):   500000 kB
Active(file):    3000000 kB
Inactive(file):  1500000 kB
Unevictable:           0 kB
Mlocked:               0 kB
SwapTotal:       2097148 kB
SwapFree:        2000000 kB
Dirty:              1000 kB
Writeback:             0 kB
AnonPages:       1500000 kB
Mapped:           300000 kB
Shmem:             10000 kB
KReclaimable:     200000 kB
Slab:             300000 kB
SReclaimable:     200000 kB
SUnreclaim:       100000 kB
KernelStack:       10000 kB
PageTables:        20000 kB
CommitLimit:    10289148 kB
Committed_AS:    5000000 kB
VmallocTotal:   34359738367 kB
AnonHugePages:     40960 kB
HugePages_Total:       0
HugePages_Free:        0
Hugepagesize:       2048 kB
DirectMap4k:      300000 kB
"""


def cpuinfo(n: int) -> str:
    blocks = []
    for i in range(n):
        blocks.append(
            f"processor\t: {i}\nvendor_id\t: GenuineIntel\nmodel name\t: Test CPU\n"
            f"siblings\t: {n}\ncore id\t\t: {i}\ncpu cores\t: {n}\napicid\t\t: {i}\n"
            "flags\t\t: fpu vme\n"
        )
    return "\n".join(blocks) + "\n"


class ManualClock:
    """A clock the test moves by hand (`clock.now += 2`)."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


class FakeHost:
    """A host /proc and /sys under tmp_path, with processes added by hand."""

    def __init__(self, root: Path, ncpus: int = 4) -> None:
        self.proc = root / "proc"
        self.sys = root / "sys"
        write(self.proc / "meminfo", MEMINFO)
        write(self.proc / "cpuinfo", cpuinfo(ncpus))
        write(self.proc / "swaps", "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n")
        write(self.sys / "devices/system/cpu/online", f"0-{ncpus - 1}\n")
        (self.proc / "self/ns").mkdir(parents=True)
        os.symlink(f"pid:[{HOST_PIDNS}]", self.proc / "self/ns/pid")
        os.symlink(f"time:[{HOST_TIMENS}]", self.proc / "self/ns/time")

    def add_process(self, pid: int, *, ppid: int, pidns: int, nspid: tuple[int, ...],
                    cgroup: str = "0::/\n", start: int = 1000, timens: str | None = None,
                    state: str = "S") -> None:
        d = self.proc / str(pid)
        (d / "ns").mkdir(parents=True, exist_ok=True)
        link = d / "ns/pid"
        if link.is_symlink():
            link.unlink()
        os.symlink(f"pid:[{pidns}]", link)
        time_link = d / "ns/time"
        if time_link.is_symlink():
            time_link.unlink()
        # a time namespace of its own when given offsets (as `unshare --time` makes one)
        os.symlink(f"time:[{HOST_TIMENS if timens is None else HOST_TIMENS + 1 + pid}]",
                   time_link)
        write(d / "status", f"Name:\tx\nPPid:\t{ppid}\nNSpid:\t" +
              "\t".join(map(str, nspid)) + "\n")
        fields = [state, str(ppid)] + ["0"] * 17 + [str(start)] + ["0"] * 20
        write(d / "stat", f"{pid} (proc name) " + " ".join(fields) + "\n")
        write(d / "cgroup", cgroup)
        if timens is not None:
            write(d / "timens_offsets", timens)

    def remove_process(self, pid: int) -> None:
        d = self.proc / str(pid)
        for p in sorted(d.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            p.unlink() if p.is_file() or p.is_symlink() else p.rmdir()
        d.rmdir()


def v2_cgroup(root: Path, path: str, files: dict[str, str]) -> Path:
    """A cgroup directory in a v2 tree rooted at `root` (which gets cgroup.controllers)."""
    write(root / "cgroup.controllers", "cpuset cpu io memory pids\n")
    d = root / path.strip("/")
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        write(d / name, text)
    return d


def v1_cgroup(root: Path, controller: str, path: str, files: dict[str, str]) -> Path:
    """A cgroup directory in the v1 hierarchy `root/controller`."""
    d = root / controller / path.strip("/")
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        write(d / name, text)
    return d
