"""An exclusive lock on a file (`flock`), for work that one process at a time may do."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator


def _open(path: str) -> int:
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o755, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created, with its directory, if missing). Raises
    OSError when the lock file cannot be made; the lock goes with the descriptor on exit."""
    fd = _open(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def try_lock(path: str) -> int | None:
    """An exclusive flock on `path` taken without waiting: the descriptor that holds it (the
    lock goes when it is closed, or with the process), or None when another holds it."""
    fd = _open(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
