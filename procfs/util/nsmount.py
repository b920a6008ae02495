"""The few mount syscalls `attach` needs (ctypes); mountinfo is parsed in procfs.sources.mountinfo.

`open_tree(OPEN_TREE_CLONE)` makes a detached bind mount of a file while we still see the procfs
mount; after `setns` into a container's mount namespace, `move_mount` attaches it over the twin.
This works after the container's pivot_root, when the procfs mount is no longer reachable by a
path from inside (the approach of lxcfs-reattach). Python 3.11 has no `os.setns`.
"""

from __future__ import annotations

import ctypes
import os

# Syscall numbers of the new mount API: the same on every architecture (unified table, 5.2+).
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429

OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
AT_FDCWD = -100
CLONE_NEWNS = 0x00020000
MNT_DETACH = 2
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

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


def mount(source: str, target: str, fstype: str | None, flags: int) -> None:
    """mount(2) without data."""
    fs = os.fsencode(fstype) if fstype is not None else None
    r = _libc.mount(os.fsencode(source), os.fsencode(target), fs, ctypes.c_ulong(flags), None)
    _check(r, "mount", target)


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def umount(target: str) -> None:
    """Lazily unmount the topmost mount at `target`."""
    _check(_libc.umount2(os.fsencode(target), MNT_DETACH), "umount", target)


def dev_of(st: os.stat_result) -> str:
    return f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
