"""The server's way to its keeper: connecting, and starting one where it may.

`serve_sysinfo` connects as the keeper's consumer; when nobody listens and it was given the
runtime socket, it starts a keeper (`procfs.runtime.keeper.spawn_keeper`, a session of its own)
and waits for its "ready". It reaps the keepers it started once they exit.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import subprocess

import trio

from procfs.runtime.keeper import spawn_keeper

log = logging.getLogger(__name__)
KEEPER_START_TIMEOUT = 10.0


class KeeperClient:
    """Reaching the keeper, starting one where allowed; reaping the ones we started."""

    def __init__(self, consumer_socket: str, runtime_socket: str | None,
                 log_path: str | None) -> None:
        self.consumer_socket = consumer_socket
        self.runtime_socket = runtime_socket
        self.log_path = log_path
        self.started: list[subprocess.Popen[bytes]] = []
        self.sock: trio.socket.SocketType | None = None
        self.live = ""  # the keeper connected now, once it said hello

    def holds_ours(self) -> bool:
        """Whether the keeper we are connected to is alive: it holds every copy we hold (those
        it gave us, and those we handed it when it said hello)."""
        if self.sock is None or not self.live:
            return False
        p = select.poll()
        p.register(self.sock.fileno(), select.POLLIN)
        return not any(ev & (select.POLLHUP | select.POLLERR) for _, ev in p.poll(0))

    def disconnect(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.live = None, ""

    async def connect(self) -> trio.socket.SocketType:
        self.reap()
        self.disconnect()
        try:
            return await self._dial()
        except (FileNotFoundError, ConnectionRefusedError):
            if self.runtime_socket is None:
                raise
        await self._start()
        return await self._dial()

    async def _dial(self) -> trio.socket.SocketType:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            await sock.connect(self.consumer_socket)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        return sock

    async def _start(self) -> None:
        assert self.runtime_socket is not None
        proc = spawn_keeper(self.runtime_socket, self.consumer_socket, log_path=self.log_path)
        self.started.append(proc)
        assert proc.stdout is not None
        stream = trio.lowlevel.FdStream(os.dup(proc.stdout.fileno()))
        proc.stdout.close()
        line = b""
        async with stream:
            with trio.fail_after(KEEPER_START_TIMEOUT):
                while not line.endswith(b"\n"):
                    chunk = await stream.receive_some(64)
                    if not chunk:
                        break
                    line += chunk
        if line.strip() not in (b"ready", b"running"):
            raise RuntimeError(f"keeper did not start: {line!r}")
        log.info("sysinfo: started a keeper (pid %d)", proc.pid)

    def reap(self) -> None:
        for proc in list(self.started):
            if proc.poll() is not None:
                self.started.remove(proc)
