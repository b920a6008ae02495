"""Pieces of the sysinfo tests: a keeper of our own, stand-in servers we can kill, the probe
program, and runc bundles whose sysinfo(2) goes to a listener."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from procfs.runtime.keeper import start_keeper

from .oci_bundle import Bundle

ROOT = Path(__file__).resolve().parents[2]
PROBE_SOURCE = ROOT / "benchmarks" / "sysinfo_probe.c"
# busybox free reads only buff/cache and available from /proc/meminfo, the rest from sysinfo(2):
# a container gets a /proc/meminfo of its own (as procfs gives it) so that `used` is defined.
MEMINFO = "MemTotal: 262144 kB\nMemFree: 204800 kB\nMemAvailable: 204800 kB\n" \
          "Buffers: 1024 kB\nCached: 4096 kB\nSReclaimable: 0 kB\nShmem: 3072 kB\n"


def compile_probe(directory: str) -> str:
    binary = os.path.join(directory, "sysinfo_probe")
    subprocess.run(["gcc", "-O2", "-Wall", "-o", binary, str(PROBE_SOURCE)], check=True)
    return binary


def parse_probe(out: str) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split("=", 1) for line in out.split())}


@dataclass
class Sockets:
    dir: str
    runtime: str
    keeper: str
    log: str


@contextlib.contextmanager
def sockets() -> Iterator[Sockets]:
    d = tempfile.mkdtemp(prefix="procfs-si-")
    try:
        yield Sockets(d, os.path.join(d, "rt.sock"), os.path.join(d, "keeper.sock"),
                      os.path.join(d, "keeper.log"))
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def keeper(s: Sockets) -> Iterator[subprocess.Popen[bytes]]:
    """A keeper of our own (our child: killed and reaped at the end)."""
    proc = start_keeper(s.runtime, s.keeper, log_path=s.log)
    try:
        yield proc
    finally:
        kill_and_reap(proc)


def kill_and_reap(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def keeper_listeners(pid: int) -> int:
    """How many seccomp listener fds process `pid` holds."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            n += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:seccomp notify"
    return n


class Consumer:
    """`tests.integration.sysinfo_consumer` in a process of its own."""

    def __init__(self, s: Sockets, *args: str, start_keeper: bool = False) -> None:
        argv = [sys.executable, "-m", "tests.integration.sysinfo_consumer", s.keeper, *args]
        if start_keeper:
            argv += ["--runtime-socket", s.runtime]
        fd, self.log_path = tempfile.mkstemp(prefix="consumer-", suffix=".log", dir=s.dir)
        with open(fd, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log,
                                         stdin=subprocess.DEVNULL, cwd=ROOT)
        self.lines: list[str] = []
        self._buf = b""
        self.keeper_pid = int(self.wait_for("synced").split()[1])

    def wait_for(self, prefix: str, timeout: float = 15.0) -> str:
        """The first line (since the last one returned) that starts with `prefix`."""
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                text = line.decode()
                self.lines.append(text)
                if text.startswith(prefix):
                    return text
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"no {prefix!r} from the consumer: {self.log()}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError(f"consumer exited: {self.log()}")
            self._buf += chunk

    def stats(self) -> dict[str, int]:
        last = [line for line in self.lines if line.startswith("stats ")]
        return {k: int(v) for k, v in (kv.split("=") for kv in last[-1].split()[1:])} \
            if last else {}

    def wait_stats(self, cond: Callable[[dict[str, int]], bool],
                   timeout: float = 10.0) -> dict[str, int]:
        """Its counters, once `cond` holds for them."""
        deadline = time.monotonic() + timeout
        while not cond(self.stats()):
            self.wait_for("stats", timeout=max(deadline - time.monotonic(), 0.01))
        return self.stats()

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return "\n".join(self.lines) + "\n" + f.read()[-4000:]

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def close(self) -> None:
        kill_and_reap(self.proc)
        if self.proc.stdout:
            self.proc.stdout.close()


class NotifyBundle(Bundle):
    """A runc bundle whose sysinfo(2) calls go to `listener` (seccomp notify), with the probe
    at /tmp/sysinfo_probe and `MEMINFO` at /proc/meminfo."""

    def __init__(self, listener: str, probe: str, memory: int | None = None) -> None:
        super().__init__(memory=memory)
        shutil.copy(probe, os.path.join(self.rootfs, "tmp", "sysinfo_probe"))
        meminfo = os.path.join(self.dir, "meminfo")
        with open(meminfo, "w") as f:
            f.write(MEMINFO)
        self.bind(meminfo, "/proc/meminfo")
        self.config["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "listenerPath": listener,
            "listenerMetadata": "procfs-test",
            "syscalls": [{"names": ["sysinfo"], "action": "SCMP_ACT_NOTIFY"}],
        }

    def start(self, argv: Sequence[str] = ("sleep", "infinity")) -> None:
        """`runc run -d`: the container stays up until deleted."""
        self.config["process"]["args"] = list(argv)
        with open(os.path.join(self.dir, "config.json"), "w") as f:
            json.dump(self.config, f, indent=1)
        # The container keeps runc's stdio: no pipe we would wait on for EOF.
        with open(os.path.join(self.dir, "runc.log"), "w") as log:
            r = subprocess.run([self.runtime, "run", "-d", "--bundle", self.dir, self.id],
                               stdin=subprocess.DEVNULL, stdout=log, stderr=log, timeout=30)
        if r.returncode != 0:
            with open(os.path.join(self.dir, "runc.log")) as f:
                raise RuntimeError(f"runc run -d: {f.read()}")

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        return [self.runtime, "exec", self.id, *argv]

    def exec(self, argv: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.exec_argv(argv), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
