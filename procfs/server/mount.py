"""The server's own mountpoint: checking it, taking over a dead server's mount, mount options."""

from __future__ import annotations

import errno
import logging
import os
import subprocess

import pyfuse3

from procfs.config import FSTYPE, Config
from procfs.server.record import ServerRecord
from procfs.sources.mountinfo import parse_mountinfo
from procfs.util.nsmount import umount

log = logging.getLogger(__name__)


class UsageError(Exception):
    """A one-line refusal for the command line."""


def mount_type(path: str) -> str | None:
    """The filesystem type of the mount at `path` (the topmost), or None when none is there.
    Read from mountinfo: unlike stat, it neither fails nor hangs on a dead FUSE mount."""
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        entries = parse_mountinfo(f.read())
    found = [e.fstype for e in entries if e.mountpoint == target]
    return found[-1] if found else None


def detach(path: str) -> None:
    """Lazily unmount `path` (MNT_DETACH): processes that still use it keep it, nobody new."""
    try:
        umount(path)
    except OSError:
        done = subprocess.run(["fusermount3", "-u", "-z", path], capture_output=True, check=False)
        if done.returncode != 0:
            raise


def take_over_dead_mount(path: str) -> bool:
    """If `path` is a procfs mount whose server died, unmount it and say True. Refuses a mount
    whose server still runs; leaves every other kind of mount alone (check_mountpoint refuses)."""
    if mount_type(path) != FSTYPE:
        return False
    record = ServerRecord.of(path)
    if record is not None and record.alive():
        raise UsageError(f"mountpoint {path} is served by pid {record.pid}")
    try:
        # A live server answers; a dead connection says ENOTCONN. statfs, not stat: the kernel
        # answers stat from its attribute cache for a while after the server died.
        os.statvfs(path)
    except OSError as e:
        if e.errno != errno.ENOTCONN:
            raise
        log.warning("%s: its server died; taking it over", path)
        detach(path)
        return True
    raise UsageError(f"mountpoint {path} is served by another process")


def check_mountpoint(path: str) -> None:
    take_over_dead_mount(path)
    if not os.path.exists(path):
        raise UsageError(f"mountpoint {path} does not exist")
    if not os.path.isdir(path):
        raise UsageError(f"mountpoint {path} is not a directory")
    if mount_type(path) is not None:
        raise UsageError(f"mountpoint {path} is already a mount")
    if os.listdir(path):
        raise UsageError(f"mountpoint {path} is not empty")


def mount_options(config: Config) -> set[str]:
    options = set(pyfuse3.default_options)  # default_permissions: the kernel checks modes
    options |= {"fsname=procfs", "subtype=procfs", "allow_other"}
    if config.fuse_debug:
        options.add("debug")
    return options
