"""The three servers under test, each on a mountpoint of its own, each stopped by its pid.

- procfs: `tests.support.sandbox.Server` (`python -m procfs serve`).
- LXCFS: the Debian package's `lxcfs` in the foreground, with its own pidfile and mountpoint, so
  that it never meets a system-wide LXCFS (`/run/lxcfs.pid`, `/var/lib/lxcfs`).
- floor: `benchmarks.floor`, constant bytes behind the same FUSE options as procfs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from tests.support.sandbox import Server

PAGE = os.sysconf("SC_PAGE_SIZE")
LXCFS_RUNTIME = "/run/lxcfs"  # LXCFS makes its controllers/ and root/ here (a private mount ns)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    return _kib(f"/proc/{pid}/status", "VmRSS:")


def pss_bytes(pid: int) -> int:
    """Proportional set size: pages shared with other processes counted by their share."""
    return _kib(f"/proc/{pid}/smaps_rollup", "Pss:")


def private_bytes(pid: int) -> int:
    """Pages no other process maps."""
    path = f"/proc/{pid}/smaps_rollup"
    return _kib(path, "Private_Clean:") + _kib(path, "Private_Dirty:")


PFN_MASK = (1 << 55) - 1  # /proc/PID/pagemap: bits 0-54 the page frame, bit 63 "present"


def resident_frames(pid: int) -> set[int]:
    """The physical pages a process has resident (root only: others read frame numbers as 0)."""
    frames: set[int] = set()
    with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as maps, \
            open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for line in maps:
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            with contextlib.suppress(OSError):  # [vsyscall] is not in the page map
                pagemap.seek(start // PAGE * 8)
                entries = pagemap.read((end - start) // PAGE * 8)
                frames.update(e & PFN_MASK for (e,) in struct.iter_unpack("<Q", entries)
                              if e >> 63)
    frames.discard(0)
    return frames


def _kib(path: str, key: str) -> int:
    with contextlib.suppress(OSError), open(path) as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


NO_LXCFS = "lxcfs is not installed and could not be installed"


def ensure_lxcfs() -> str:
    """The lxcfs binary; installs the Debian package when it is missing."""
    path = shutil.which("lxcfs")
    if path is None:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for argv in (["apt-get", "update", "-qq"],
                     ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "lxcfs"]):
            with contextlib.suppress(OSError):
                subprocess.run(argv, check=False, env=env)
        path = shutil.which("lxcfs")
    if path is None:
        raise RuntimeError(NO_LXCFS)
    return path


def lxcfs_version(binary: str = "lxcfs") -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (out.stdout or out.stderr).strip().splitlines()[-1] if (out.stdout or out.stderr) \
        else "unknown"


class Daemon(Server):
    """A FUSE daemon in the foreground, on a temporary mountpoint of its own, stopped by pid."""

    name = "procfs"

    def __init__(self, args: Sequence[str] = ()) -> None:
        super().__init__(args=args, prefix=f"bench-{self.name}-")
        self.started = False

    def start(self, timeout: float = 20.0) -> Daemon:
        super().start(timeout)
        self.started = True
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """CPU time of every process serving its mount(s)."""
        return sum(cpu_seconds(pid) for pid in self.pids())

    def resident_bytes(self) -> int:
        """Resident memory of its processes, each physical page once (procfs's shards share
        pages with the server they were forked from). Without the page frames (not root): the
        first's RSS and the private pages of each other one."""
        pids = self.pids()
        if not pids:
            return 0
        frames = [resident_frames(pid) for pid in pids]
        if all(frames):
            return len(set().union(*frames)) * PAGE
        return rss_bytes(pids[0]) + sum(private_bytes(pid) for pid in pids[1:])

    def rss_bytes(self) -> int:
        """Resident memory of all its processes, summed (pages they share counted in each)."""
        return sum(rss_bytes(pid) for pid in self.pids())

    def pss_bytes(self) -> int:
        """PSS summed over its processes: each shared page split among all that map it."""
        return sum(pss_bytes(pid) for pid in self.pids())

    def pids(self) -> list[int]:
        """The daemon and the processes it started to serve with it (procfs's shards, the
        floor's workers): the children of every thread (trio starts processes from a worker
        thread, and a child is listed under the thread that made it)."""
        if self.proc is None:
            return []
        pids = [self.proc.pid]
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
                with contextlib.suppress(OSError), \
                        open(f"/proc/{self.proc.pid}/task/{tid}/children") as f:
                    pids += [int(x) for x in f.read().split()]
        return pids

    def stop(self) -> None:
        super().stop()
        if self.started:  # a log of a failed start is kept, for the error message
            with contextlib.suppress(OSError):
                os.unlink(self.log_path)


class Lxcfs(Daemon):
    name = "lxcfs"

    def __init__(self, binary: str) -> None:
        super().__init__()
        self.binary = binary
        self.pidfile = os.path.join(tempfile.gettempdir(), f"bench-lxcfs-{os.getpid()}.pid")
        self._made_runtime = not os.path.exists(LXCFS_RUNTIME)

    def command(self) -> list[str]:
        # -l: virtualize loadavg; --enable-cfs: CPU count from the quota, as procfs's default;
        # --enable-pidfd: revalidate its cache of namespaces with pidfds, as procfs does.
        return [self.binary, "-f", "-l", "--enable-cfs", "--enable-pidfd", "-p", self.pidfile,
                self.mountpoint]

    def stop(self) -> None:
        super().stop()
        with contextlib.suppress(OSError):
            os.unlink(self.pidfile)
        if self._made_runtime:  # empty directories it left in the host's /run
            for d in ("controllers", "root", ""):
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(LXCFS_RUNTIME, d))


class Floor(Daemon):
    name = "floor"

    def __init__(self, paths: Sequence[str], workers: int = 1) -> None:
        super().__init__()
        self.paths = list(paths)
        self.workers = workers

    def command(self) -> list[str]:
        return [sys.executable, "-m", "benchmarks.floor", "--workers", str(self.workers),
                self.mountpoint, *self.paths]

    def start(self, timeout: float = 20.0) -> Floor:
        super().start(timeout)
        # it mounts, answers FUSE_INIT, and only then forks its workers
        deadline = time.monotonic() + timeout
        while len(self.pids()) < self.workers:
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"floor: {self.workers - 1} workers did not start")
            time.sleep(0.02)
        return self


Procfs = Daemon  # `procfs serve`, exactly as the tests start it (--workers: with its shards)
