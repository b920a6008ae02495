"""Work done in a forked child, reported back as JSON through a pipe.

`attach` changes its mount namespace and root (`setns`, `chroot`): that must never happen in the
calling process, which may be the server itself. The child's result is a JSON-able value; an
error it raised comes back as the same `AttachError` class (or, for OSError, by its errno).
"""

from __future__ import annotations

import errno
import json
import os
from typing import Any

from procfs.attach.errors import (
    AttachError,
    HalfAttached,
    NoPermission,
    NoProcess,
    Refusal,
    ServerDown,
)


def in_child(work: Any, *args: Any) -> dict[str, Any]:
    """Run `work(*args)` in a forked child; its JSON-able result, or the error it raised."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        code = 0
        try:
            os.close(r)
            payload: dict[str, Any] = {"ok": work(*args)}
        except AttachError as e:
            payload = {"error": str(e), "kind": type(e).__name__}
        except OSError as e:
            payload = {"error": f"{e.filename or ''}: {e.strerror}".lstrip(": "),
                       "errno": e.errno}
        except BaseException as e:
            payload = {"error": f"{type(e).__name__}: {e}"}
        try:
            os.write(w, json.dumps(payload).encode())
        except BaseException:
            code = 1
        os._exit(code)
    os.close(w)
    chunks = []
    with os.fdopen(r, "rb") as f:
        while chunk := f.read(65536):
            chunks.append(chunk)
    os.waitpid(child, 0)
    try:
        payload = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        payload = {}
    if "ok" in payload:
        result: dict[str, Any] = payload["ok"]
        return result
    message = payload.get("error", "the attach child died without a word")
    kinds: dict[str, type[AttachError]] = {c.__name__: c for c in
                                           (NoProcess, ServerDown, NoPermission, Refusal,
                                            HalfAttached)}
    if payload.get("errno") in (errno.EPERM, errno.EACCES):
        raise NoPermission(f"permission denied: {message}")
    if payload.get("errno") == errno.ESRCH:
        raise NoProcess(message)
    raise kinds.get(payload.get("kind", ""), AttachError)(message)
