"""A machine where only `make install` was run, inside this one, for the install tests.

`HostView` is a mount namespace of its own in which /usr, /etc, /var/lib and /run are overlays
of the host's: `make install` with its default paths (/usr/local, /usr/share/containers/oci/
hooks.d, /usr/share/lxc/config/common.conf.d), the server at /var/lib/procfs with its records in
/run/procfs, and the runtimes started there see each other as on a host where procfs was
installed, while the rest of the machine (and the other programs using it) sees none of it.
Everything written to those four trees lands in upper directories under a temporary directory,
and goes with the namespace. Cgroups, /tmp and the processes' pid namespace are the host's.

The image its runtimes import is `images.rootfs_tar`'s (no registry is needed).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from typing import Any

OVERLAID = ("/usr", "/etc", "/var/lib", "/run")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Unavailable(Exception):
    """This machine cannot make such a view (no overlayfs, no unshare): a reason to skip."""


class HostView:
    def __init__(self, prefix: str = "procfs-hostview-",
                 overlaid: Sequence[str] = OVERLAID) -> None:
        self.overlaid = tuple(overlaid)
        self.dir = tempfile.mkdtemp(prefix=prefix)
        # The cgroup the runtimes started here put their containers (and monitors) under, by
        # their --cgroup-parent options: removed with the view, as runtimes leave their parents.
        self.cgroup = os.path.basename(self.dir)
        self.holder: subprocess.Popen[bytes] | None = None
        self.mntns = 0

    @property
    def pid(self) -> int:
        assert self.holder is not None
        return self.holder.pid

    def start(self) -> HostView:
        # unshare execs sleep in the new namespace: the holder's pid is the namespace's anchor.
        self.holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private",
                                        "sleep", "infinity"], stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while self._ns(self.pid) == self._ns(os.getpid()):
            if self.holder.poll() is not None or time.monotonic() > deadline:
                raise Unavailable("unshare --mount did not start")
            time.sleep(0.01)
        self.mntns = self._ns(self.pid)
        for i, d in enumerate(self.overlaid):
            upper, work = self.upper(d), os.path.join(self.dir, f"work{i}")
            os.makedirs(upper)
            os.makedirs(work)
            done = self.run(["mount", "-t", "overlay", "overlay", "-o",
                             f"lowerdir={d},upperdir={upper},workdir={work}", d])
            if done.returncode != 0:
                raise Unavailable(f"cannot overlay {d} in a mount namespace: {done.stderr}")
        return self

    def upper(self, path: str) -> str:
        """Where what was written under `path` (one of OVERLAID) lands."""
        return os.path.join(self.dir, "upper" + path.replace("/", "_"))

    @staticmethod
    def _ns(pid: int) -> int:
        try:
            return os.stat(f"/proc/{pid}/ns/mnt").st_ino
        except OSError:
            return 0

    def argv(self, argv: Sequence[str]) -> list[str]:
        return ["nsenter", "--target", str(self.pid), "--mount", "--", *argv]

    def run(self, argv: Sequence[str], *, check: bool = False, timeout: float = 120,
            **kw: Any) -> subprocess.CompletedProcess[str]:
        kw.setdefault("capture_output", True)
        kw.setdefault("stdin", subprocess.DEVNULL)
        done: subprocess.CompletedProcess[str] = subprocess.run(
            self.argv(argv), text=True, timeout=timeout, check=False, **kw)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)}: exit {done.returncode}\n"
                                 f"{done.stdout}\n{done.stderr}")
        return done

    def sh(self, script: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run(["sh", "-c", script], **kw)

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(argv), **kw)

    def read(self, path: str) -> str:
        """A file as the namespace sees it."""
        with open(f"/proc/{self.pid}/root{path}") as f:
            return f.read()

    def exists(self, path: str) -> bool:
        return os.path.lexists(f"/proc/{self.pid}/root{path}")

    def members(self) -> list[int]:
        """The processes in the namespace besides the holder (all started through it)."""
        found = []
        for name in os.listdir("/proc"):
            if name.isdigit() and int(name) != self.pid and self._ns(int(name)) == self.mntns:
                found.append(int(name))
        return found

    def stop(self) -> None:
        """End every process left in the namespace (none was there before us), then the
        namespace, then the upper directories."""
        if self.holder is not None and self.mntns:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                pids = self.members()
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
                deadline = time.monotonic() + 5
                while pids and time.monotonic() < deadline:
                    pids = [p for p in pids if self._ns(p) == self.mntns]
                    time.sleep(0.05)
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait()
            self.holder = None
        remove_cgroup(self.cgroup)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> HostView:
        if self.holder is not None:  # started already
            return self
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def remove_cgroup(name: str) -> None:
    """Remove /NAME and what is under it in every cgroup hierarchy, children first (each only
    when empty: a directory that still holds a process stays)."""
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f if line.partition(" - ")[2].split()[0]
                  in ("cgroup", "cgroup2")]
    for mount in mounts:
        top = os.path.join(mount, name)
        for root, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(root)
