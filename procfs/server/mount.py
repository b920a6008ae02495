"""The server's own mountpoint: checking it, taking over a dead server's mount, mount options."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading

import pyfuse3

from procfs.config import FSTYPE, Config
from procfs.errors import DEAD_CONNECTION
from procfs.server.record import ServerRecord
from procfs.sources.mountinfo import MountEntry, parse_mountinfo
from procfs.util.nsmount import umount

log = logging.getLogger(__name__)


class UsageError(Exception):
    """A one-line refusal for the command line."""


LIVE_PROBE_SECONDS = 2.0  # how long a recorded live server's mount may take to answer statfs


def topmost_mount(path: str) -> MountEntry | None:
    """The topmost mount at `path`, or None when none is there. Read from mountinfo: unlike
    stat, it neither fails nor hangs on a dead FUSE mount."""
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        entries = parse_mountinfo(f.read())
    found = [e for e in entries if e.mountpoint == target]
    return found[-1] if found else None


def mount_type(path: str) -> str | None:
    """The filesystem type of the mount at `path` (the topmost), or None when none is there."""
    top = topmost_mount(path)
    return top.fstype if top is not None else None


def connection_dead(path: str, timeout: float | None = None) -> bool:
    """Whether the FUSE mount at `path` lost its server: statfs answers ENOTCONN (not stat: the
    kernel answers stat from its attribute cache for a while after the server died). With
    `timeout`, a mount that does not answer in time (a stopped server) counts as live."""
    if timeout is None:
        try:
            os.statvfs(path)
        except OSError as e:
            if e.errno not in DEAD_CONNECTION:
                raise
            return True
        return False
    # A thread (before trio runs): a statfs stuck on a stopped server must not hold serve up.
    answer: list[bool] = []

    def probe_once() -> None:
        with contextlib.suppress(OSError):  # other errors say nothing of liveness
            answer.append(connection_dead(path))

    probe = threading.Thread(target=probe_once, daemon=True)
    probe.start()
    probe.join(timeout)
    return answer == [True]


def detach(path: str) -> None:
    """Lazily unmount `path` (MNT_DETACH): processes that still use it keep it, nobody new."""
    try:
        umount(path)
    except OSError:
        done = subprocess.run(["fusermount3", "-u", "-z", path], capture_output=True, check=False)
        if done.returncode != 0:
            raise


def take_over_dead_mount(path: str) -> str | None:
    """If `path` is a procfs mount whose server died, unmount it and say its device (binds of
    it in containers are to be repaired). Refuses a mount whose server still runs; leaves every
    other kind of mount alone (check_mountpoint refuses). Dead: the connection answers
    ENOTCONN, also while the recorded process still shows (a killed server not yet reaped is a
    zombie, and its connection closed with its files)."""
    top = topmost_mount(path)
    if top is None or top.fstype != FSTYPE:
        return None
    record = ServerRecord.of(path)
    if record is not None and record.alive():
        if not connection_dead(path, timeout=LIVE_PROBE_SECONDS):
            raise UsageError(f"mountpoint {path} is served by pid {record.pid}")
    elif not connection_dead(path):
        raise UsageError(f"mountpoint {path} is served by another process")
    log.warning("%s: its server died; taking it over", path)
    detach(path)
    return top.dev


def check_mountpoint(path: str) -> str | None:
    """Refuse a mountpoint we cannot serve on (UsageError); the device of a dead server's mount
    taken over there, if any."""
    dead = take_over_dead_mount(path)
    if not os.path.exists(path):
        raise UsageError(f"mountpoint {path} does not exist")
    if not os.path.isdir(path):
        raise UsageError(f"mountpoint {path} is not a directory")
    # A directory bound there is no obstacle: a container's volume (the DaemonSet's hostPath
    # /var/lib/procfs) is always such a mount. A filesystem mounted there is.
    top = topmost_mount(path)
    if top is not None and (top.root == "/" or top.fstype.startswith("fuse")):
        raise UsageError(f"mountpoint {path} is already a mount")
    if os.listdir(path):
        raise UsageError(f"mountpoint {path} is not empty")
    return dead


def mount_options(config: Config) -> set[str]:
    options = set(pyfuse3.default_options)  # default_permissions: the kernel checks modes
    options |= {"fsname=procfs", "subtype=procfs", "allow_other"}
    if config.fuse_debug:
        options.add("debug")
    return options
