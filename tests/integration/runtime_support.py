"""What the procfs-runc tests share: the installed wrapper, its environment, a container's
create/start/exec/delete through it, a seccomp notify listener in a subprocess, and reading a
container's clock the way `ps` shows it."""

from __future__ import annotations

import calendar
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .oci_bundle import Bundle

REPO = Path(__file__).resolve().parents[2]
WRAPPER = os.path.join(os.path.dirname(sys.executable), "procfs-runc")
MIB = 1 << 20
SYSINFO_X86_64 = 99
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003

# What `ps` and the kernel say about the container's clock, one value a line.
# (procps ps by path: busybox sh prefers its own applets.)
CLOCK_PROBE = ("head -n1 /proc/uptime | cut -d' ' -f1; /usr/bin/ps -o etimes= -p 1; "
               "/usr/bin/ps -o lstart= -p 1; readlink /proc/1/ns/time; readlink /proc/self/ns/time")


def wrapper_env(mount: str, socket: str | None = None, state: str | None = None,
                **extra: str) -> dict[str, str]:
    """The caller's environment with the wrapper's settings (and no runtime.json of the
    host's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROCFS_")}
    env["PROCFS_MOUNT"] = mount
    env["PROCFS_RUNTIME_CONFIG"] = "/nonexistent/procfs-runtime.json"
    env["PROCFS_SYSINFO_SOCKET"] = socket or "/nonexistent/sysinfo.sock"
    if state:
        env["PROCFS_STATE"] = state
    env.update(extra)
    return env


def host_time_ns() -> str:
    return os.readlink("/proc/self/ns/time")


@dataclass
class Clock:
    uptime: float
    etimes: int  # of the container's init
    lstart: float  # the init's start, as ps prints it (whole seconds, UTC inside)
    init_ns: str
    self_ns: str

    @classmethod
    def parse(cls, text: str) -> Clock:
        uptime, etimes, lstart, init_ns, self_ns = text.strip().splitlines()
        started = calendar.timegm(time.strptime(" ".join(lstart.split()),
                                                "%a %b %d %H:%M:%S %Y"))
        return cls(float(uptime), int(etimes), float(started), init_ns, self_ns)

    def check(self, created: float, waited: float, read_at: float) -> None:
        """The clock of a container created at `created`, read at `read_at`, at least `waited`
        seconds later: uptime and the init's elapsed time count from its creation, and its
        start time is the real one."""
        assert waited <= self.uptime <= read_at - created + 1, self
        assert waited - 1 <= self.etimes <= self.uptime + 1, self
        assert abs(self.lstart - created) <= 2, self


class Container:
    """A bundle's container driven through `prefix` (the wrapper, or a runtime), detached:
    create, start, exec, state, delete."""

    def __init__(self, bundle: Bundle, prefix: Sequence[str], env: dict[str, str]) -> None:
        self.bundle, self.prefix, self.env = bundle, list(prefix), env

    def cmd(self, *args: str, timeout: float = 30.0,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([*self.prefix, *args], capture_output=True, text=True,
                           timeout=timeout, env=self.env, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError(f"{args[0]} failed ({r.returncode}): {r.stderr}")
        return r

    def create(self, argv: Sequence[str] = ("sleep", "1000")) -> float:
        """Create and start the container running `argv`; when it was created."""
        self.bundle.config["process"]["args"] = list(argv)
        with open(os.path.join(self.bundle.dir, "config.json"), "w") as f:
            json.dump(self.bundle.config, f, indent=1)
        # The init keeps the create's stdio: a file, not a pipe a test would wait on.
        with tempfile.TemporaryFile() as err:
            created = time.time()
            r = subprocess.run([*self.prefix, "create", "--bundle", self.bundle.dir,
                                self.bundle.id], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=err, env=self.env, timeout=60)
            err.seek(0)
            assert r.returncode == 0, err.read().decode(errors="replace")
        self.cmd("start", self.bundle.id)
        return created

    def exec(self, script: str, timeout: float = 30.0) -> str:
        return self.cmd("exec", self.bundle.id, "sh", "-c", script, timeout=timeout).stdout

    def state(self) -> dict[str, object]:
        return dict(json.loads(self.cmd("state", self.bundle.id).stdout))

    def config(self) -> dict[str, object]:
        with open(os.path.join(self.bundle.dir, "config.json")) as f:
            return dict(json.load(f))

    def delete(self) -> None:
        self.cmd("delete", "-f", self.bundle.id, check=False)

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()


class Listener:
    """tests/integration/notify_listener.py in a subprocess, on a socket of its own."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="procfs-notify-")
        self.path = os.path.join(self.dir, "sysinfo.sock")
        self.out = os.path.join(self.dir, "out")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Listener:
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.integration.notify_listener", self.path],
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while "ready" not in self.text():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.text()
            time.sleep(0.02)
        return self

    def text(self) -> str:
        with open(self.out) as f:
            return f.read()

    def calls(self) -> list[tuple[int, int, int]]:
        """(syscall nr, audit arch, pid) of every notification so far."""
        return [(int(w[1]), int(w[2], 16), int(w[3])) for w in
                (line.split() for line in self.text().splitlines()) if w[0] == "call"]

    def fds(self) -> int:
        return sum(1 for line in self.text().splitlines() if line.startswith("fd "))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def listener() -> Iterator[Listener]:
    lst = Listener()
    try:
        yield lst.start()
    finally:
        lst.stop()


def sysinfo_calls(lst: Listener) -> list[tuple[int, int, int]]:
    return [c for c in lst.calls() if c[:2] == (SYSINFO_X86_64, AUDIT_ARCH_X86_64)]
