"""Files replaced atomically, for the records and configs other processes read while we write
them. Stdlib only, and cheap to import: procfs-runc uses it on every runtime call."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from typing import Any

_names = itertools.count()


def replace(path: str, data: bytes, mode: int = 0o644, owner: tuple[int, int] | None = None,
            fsync: bool = False) -> None:
    """Replace `path` with `data`: readers see the old file or the new one, never a torn one (a
    temporary file in the same directory, then rename). `owner`: (uid, gid) to give it; `fsync`:
    survive a power cut too."""
    directory, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{name}.tmp-{os.getpid()}-{next(_names)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:  # left by a process that died, whose pid we now have
        os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), mode)
            if owner is not None:
                os.fchown(f.fileno(), *owner)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json(path: str, data: Any, mode: int = 0o644, fsync: bool = False) -> None:
    """`replace` `path` with `data` as JSON, making its directory if missing."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o755, exist_ok=True)
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    replace(path, text.encode(), mode, fsync=fsync)


def read_json(path: str) -> Any:
    """The file's JSON, or None when it is missing, unreadable or garbled."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
