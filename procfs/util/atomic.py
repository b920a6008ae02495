"""Files replaced atomically, for the records other processes read while we write them."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any


def write_json(path: str, data: Any, mode: int = 0o644, fsync: bool = False) -> None:
    """Replace `path` with `data` as JSON: readers see the old file or the new one, never a torn
    one (temporary file in the same directory, then rename). `fsync`: survive a power cut too."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path: str) -> Any:
    """The file's JSON, or None when it is missing, unreadable or garbled."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
