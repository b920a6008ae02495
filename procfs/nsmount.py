"""The few mount syscalls `attach` needs (ctypes), and a mountinfo parser.

`open_tree(OPEN_TREE_CLONE)` makes a detached bind mount of a file while we still see the procfs
mount; after `setns` into a container's mount namespace, `move_mount` attaches it over the twin.
This works after the container's pivot_root, when the procfs mount is no longer reachable by a
path from inside (the approach of lxcfs-reattach). Python 3.11 has no `os.setns`.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

# Syscall numbers of the new mount API: the same on every architecture (unified table, 5.2+).
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429

OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
AT_FDCWD = -100
CLONE_NEWNS = 0x00020000
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _check(result: int, what: str, path: str | None = None) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return result


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def open_tree(path: str) -> int:
    """A detached bind mount of `path` (a file or directory), as a close-on-exec fd."""
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC
    fd = _libc.syscall(ctypes.c_long(SYS_OPEN_TREE), ctypes.c_int(AT_FDCWD),
                       ctypes.c_char_p(os.fsencode(path)), ctypes.c_uint(flags))
    return _check(int(fd), "open_tree", path)


def move_mount(tree_fd: int, target: str) -> None:
    """Attach the detached mount `tree_fd` at `target` (resolved in our mount namespace)."""
    r = _libc.syscall(ctypes.c_long(SYS_MOVE_MOUNT), ctypes.c_int(tree_fd), ctypes.c_char_p(b""),
                      ctypes.c_int(AT_FDCWD), ctypes.c_char_p(os.fsencode(target)),
                      ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH))
    _check(int(r), "move_mount", target)


def umount(target: str) -> None:
    """Lazily unmount the topmost mount at `target`."""
    _check(_libc.umount2(os.fsencode(target), MNT_DETACH), "umount", target)


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/PID/mountinfo."""

    mount_id: int
    dev: str  # "major:minor"
    root: str  # the path, inside its filesystem, of what is mounted
    mountpoint: str  # relative to the reading process's root
    fstype: str
    source: str


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        a, b = left.split(), right.split()
        if not sep or len(a) < 5 or len(b) < 2:
            continue
        try:
            mount_id = int(a[0])
        except ValueError:
            continue
        entries.append(MountEntry(mount_id, a[2], _unescape(a[3]), _unescape(a[4]), b[0],
                                  _unescape(b[1])))
    return entries


def dev_of(st: os.stat_result) -> str:
    return f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
