"""A process under a seccomp filter whose listener we get: the smallest stand-in for a container.

`NotifyChild.start(nrs)` runs this module as a child that installs a filter notifying the
syscalls `nrs` (SECCOMP_FILTER_FLAG_NEW_LISTENER), hands its listener fd over (to the test on a
socketpair, or like runc to a listenerPath socket with a state JSON), closes its own copy, and
then makes calls on request, answering each with a JSON line:

    sysinfo        {"ret": 0, "errno": 0, "si": {uptime, loads, totalram, ..., mem_unit}}
    sysinfo-null   sysinfo(NULL)
    sysinfo-ro     sysinfo into a read-only page
    phys-pages     {"value": sysconf(_SC_PHYS_PAGES)}
    getppid        {"ret": getppid()}
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import platform
import socket
import struct
import subprocess
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import trio

from procfs.runtime.seccomp import install_notify_filter

SYSINFO = {"x86_64": 99, "aarch64": 179}[platform.machine()]
GETPPID = {"x86_64": 110, "aarch64": 173}[platform.machine()]
FIELDS = ("uptime", "loads0", "loads1", "loads2", "totalram", "freeram", "sharedram",
          "bufferram", "totalswap", "freeswap", "procs", "totalhigh", "freehigh", "mem_unit")
SYSINFO_STRUCT = struct.Struct("=q3Q6QH6xQQI4x")

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                      ctypes.c_long)


def _call(cmd: str) -> dict[str, Any]:
    if cmd == "getppid":
        return {"ret": int(libc.syscall(GETPPID))}
    if cmd == "phys-pages":
        return {"value": os.sysconf("SC_PHYS_PAGES")}
    if cmd == "sysinfo-null":
        r = int(libc.syscall(SYSINFO, None))
        return {"ret": r, "errno": ctypes.get_errno() if r else 0}
    if cmd == "sysinfo-ro":
        addr = libc.mmap(None, mmap.PAGESIZE, mmap.PROT_READ,
                         mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        r = int(libc.syscall(SYSINFO, ctypes.c_void_p(addr)))
        return {"ret": r, "errno": ctypes.get_errno() if r else 0}
    buf = ctypes.create_string_buffer(SYSINFO_STRUCT.size)
    r = int(libc.syscall(SYSINFO, buf))
    out: dict[str, Any] = {"ret": r, "errno": ctypes.get_errno() if r else 0}
    if r == 0:
        out["si"] = dict(zip(FIELDS, SYSINFO_STRUCT.unpack(buf.raw), strict=True))
    return out


def child_main(argv: Sequence[str]) -> None:
    """argv: CONTROL_FD NRS [LISTENER_PATH STATE_JSON]"""
    control = socket.socket(fileno=int(argv[0]))
    fd = install_notify_filter(int(x) for x in argv[1].split(","))
    if len(argv) > 2:  # like runc: connect to listenerPath, send the state and the fd
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(argv[2])
            socket.send_fds(s, [argv[3].encode()], [fd])
        control.sendall(b"sent\n")
    else:
        socket.send_fds(control, [b"fd\n"], [fd])
    os.close(fd)
    f = control.makefile("rb")
    for line in f:
        cmd = line.decode().strip()
        if cmd == "exit":
            break
        control.sendall(json.dumps(_call(cmd)).encode() + b"\n")


class NotifyChild:
    """The child process and our end of its control socket."""

    def __init__(self, proc: subprocess.Popen[bytes], control: socket.socket,
                 listener: int | None) -> None:
        self.proc = proc
        self.control = control
        self.listener = listener  # the fd, when it came to us
        self._buf = b""

    @classmethod
    def start(cls, nrs: Iterable[int] = (SYSINFO,), listener_path: str | None = None,
              state: dict[str, Any] | str | None = None) -> NotifyChild:
        """`state`: what it sends to `listener_path` with its fd (a str as it is)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [sys.executable, "-m", "tests.notify_child", str(theirs.fileno()),
                ",".join(str(n) for n in nrs)]
        if listener_path is not None:
            argv += [listener_path, state if isinstance(state, str) else json.dumps(state or {})]
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        proc = subprocess.Popen(argv, pass_fds=[theirs.fileno()], cwd=root)
        theirs.close()
        try:
            msg, fds, _, _ = socket.recv_fds(ours, 16, 4)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if not msg:
            proc.wait()
            raise RuntimeError("notify child failed to start")
        child = cls(proc, ours, fds[0] if fds else None)
        if msg.startswith(b"sent"):
            child._buf = msg[len(b"sent\n"):]
        return child

    def request(self, cmd: str, timeout: float = 10.0) -> dict[str, Any]:
        """Blocking: only when something else answers the notifications."""
        self.send(cmd)
        return self.reply_now(timeout)

    def reply_now(self, timeout: float = 10.0) -> dict[str, Any]:
        """The answer to a request sent with `send`, blocking."""
        self.control.settimeout(timeout)
        while b"\n" not in self._buf:
            chunk = self.control.recv(65536)
            if not chunk:
                raise EOFError("notify child exited")
            self._buf += chunk
        return self._line()

    def send(self, cmd: str) -> None:
        self.control.sendall(cmd.encode() + b"\n")

    async def reply(self) -> dict[str, Any]:
        """The answer to a request sent with `send`, awaited without blocking trio."""
        while b"\n" not in self._buf:
            await trio.lowlevel.wait_readable(self.control)
            self.control.setblocking(False)
            try:
                chunk = self.control.recv(65536)
            except BlockingIOError:
                continue
            if not chunk:
                raise EOFError("notify child exited")
            self._buf += chunk
        return self._line()

    async def arequest(self, cmd: str) -> dict[str, Any]:
        self.send(cmd)
        return await self.reply()

    def _line(self) -> dict[str, Any]:
        line, self._buf = self._buf.split(b"\n", 1)
        result: dict[str, Any] = json.loads(line)
        return result

    def close(self) -> None:
        if self.listener is not None:
            os.close(self.listener)
            self.listener = None
        self.proc.kill()
        self.proc.wait()
        self.control.close()


if __name__ == "__main__":
    child_main(sys.argv[1:])
