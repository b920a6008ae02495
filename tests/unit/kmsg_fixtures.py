"""Hand-built containers and a fixture /proc for the kmsg unit tests."""

from __future__ import annotations

from pathlib import Path

from procfs.kmsg.service import CLK_TCK, KmsgConfig, KmsgService
from procfs.sources.cgroups import CgroupDirs, CgroupLayout, CgroupMount, CgroupPaths
from procfs.sources.containers import Container
from procfs.sources.hostproc import HostProc

V1 = CgroupLayout(v1={
    "memory": CgroupMount("/sys/fs/cgroup/memory", "/", 1, frozenset({"memory"})),
    "cpuset": CgroupMount("/sys/fs/cgroup/cpuset", "/", 1, frozenset({"cpuset"})),
})
V2 = CgroupLayout(v2=CgroupMount("/sys/fs/cgroup", "/", 2),
                  v2_controllers=frozenset({"memory", "cpuset"}))


def container(path: str, *, v2: bool = False, pidns: int = 4026530000, reaper: int = 100,
              start: int = 0, boottime_offset_ns: int = 0,
              monotonic_offset_ns: int = 0) -> Container:
    if v2:
        dirs = CgroupDirs(V2, CgroupPaths(v2=path))
    else:
        dirs = CgroupDirs(V1, CgroupPaths(v1={"memory": path, "cpuset": path}))
    return Container(pidns, reaper, start, dirs, monotonic_offset_ns, boottime_offset_ns)


class FakeProc:
    """A /proc with the few files kmsg reads: PID/stat, PID/status, PID/ns/pid."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.host = HostProc(str(root))

    def add(self, pid: int, *, start: int = 0, pidns: int = 4026530000,
            nspid: tuple[int, ...] = (), sigpnd: int = 0, shdpnd: int = 0,
            sigblk: int = 0) -> None:
        d = self.root / str(pid)
        (d / "ns").mkdir(parents=True, exist_ok=True)
        rest = " ".join(["0"] * 18)
        (d / "stat").write_text(f"{pid} (x) S 1 {rest} {start} 0 0\n")
        ns_line = "\t".join(str(p) for p in (nspid or (pid,)))
        (d / "status").write_text(
            f"Name:\tx\nPPid:\t1\nNSpid:\t{ns_line}\nSigQ:\t0/1\nSigPnd:\t{sigpnd:016x}\n"
            f"ShdPnd:\t{shdpnd:016x}\nSigBlk:\t{sigblk:016x}\nSigIgn:\t0\n")
        link = d / "ns" / "pid"
        if link.is_symlink():
            link.unlink()
        link.symlink_to(f"pid:[{pidns}]")

    def remove(self, pid: int) -> None:
        d = self.root / str(pid)
        for f in ("stat", "status", "ns/pid"):
            (d / f).unlink()


def service(proc: FakeProc, clock: object, *, boottime_s: float = 1000.0,
            **cfg: object) -> KmsgService:
    config = KmsgConfig(host_log="", **cfg)  # type: ignore[arg-type]
    return KmsgService(config, proc.host, None, clock=clock,  # type: ignore[arg-type]
                       monotonic_ns=lambda: int(boottime_s * 1e9))


__all__ = ["CLK_TCK", "V1", "V2", "FakeProc", "container", "service"]
