"""The running server's control socket: JSON requests from the host (`procfs kmsg`, `reload`).

One unix stream socket per mount, at `socket_path(mountpoint)` (under /run/procfs, mode 0600, and
only peers with the server's uid are served). A request is one JSON object on one line,
`{"cmd": NAME, ...arguments}`; the answer is one line, `{"ok": true, "result": ...}` or
`{"ok": false, "error": "..."}`. Features add commands with `Control.register`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from procfs.config import STATE_DIR
from procfs.server.record import mount_key

log = logging.getLogger(__name__)

MAX_REQUEST = 1 << 20
REQUEST_TIMEOUT = 10.0

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class ControlError(Exception):
    """A request that failed: refused by the server, or no server to ask."""


def socket_path(mountpoint: str, directory: str = STATE_DIR) -> str:
    """Where the server of `mountpoint` listens (a hash: any path fits a socket name)."""
    return os.path.join(directory, f"{mount_key(mountpoint)}.sock")


class Control:
    def __init__(self, path: str) -> None:
        self.path = path
        self.handlers: dict[str, tuple[Handler, str]] = {}
        self.register("help", self._help, "the commands this server answers")

    def register(self, name: str, handler: Handler, summary: str = "") -> None:
        if name in self.handlers:
            raise ValueError(f"control command {name} registered twice")
        self.handlers[name] = (handler, summary)

    async def _help(self, args: dict[str, Any]) -> Any:
        return {name: summary for name, (_, summary) in sorted(self.handlers.items())}

    async def dispatch(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return {"ok": False, "error": 'a request is {"cmd": NAME, ...}'}
        entry = self.handlers.get(request["cmd"])
        if entry is None:
            return {"ok": False, "error": f"unknown command {request['cmd']!r}"}
        try:
            return {"ok": True, "result": await entry[0](request)}
        except Exception as e:  # one failed command must not end the server
            log.info("control %s: %s: %s", request["cmd"], type(e).__name__, e)
            return {"ok": False, "error": f"{type(e).__name__}: {e}"}

    async def serve(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)  # a server of this mount that died; the mount is free
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await sock.bind(self.path)
            os.chmod(self.path, 0o600)
            sock.listen(16)
            log.info("control socket %s", self.path)
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    conn, _ = await sock.accept()
                    nursery.start_soon(self._serve_one, conn)
        finally:
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    async def _serve_one(self, conn: trio.socket.SocketType) -> None:
        with conn:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                    struct.calcsize("3i"))
            _, uid, _ = struct.unpack("3i", creds)
            if uid != os.geteuid():
                return
            with trio.move_on_after(REQUEST_TIMEOUT):
                data = b""
                while not data.endswith(b"\n") and len(data) < MAX_REQUEST:
                    chunk = await conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                try:
                    request = json.loads(data)
                except ValueError:
                    answer: dict[str, Any] = {"ok": False, "error": "not JSON"}
                else:
                    answer = await self.dispatch(request)
                out = json.dumps(answer).encode() + b"\n"
                while out:
                    out = out[await conn.send(out):]


def request(path: str, cmd: str, timeout: float = REQUEST_TIMEOUT, **args: Any) -> Any:
    """Ask the server at `path` (blocking; for the command line). Raises ControlError."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(json.dumps({**args, "cmd": cmd}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as e:
        raise ControlError(f"no procfs server at {path}: {e}") from e
    try:
        answer = json.loads(data)
    except ValueError as e:
        raise ControlError(f"garbled answer from {path}") from e
    if not answer.get("ok"):
        raise ControlError(str(answer.get("error")))
    return answer.get("result")
