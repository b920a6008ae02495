"""A shard's process (procfs.server.shards), kept running by the server that owns it: started at
once with the others (forked before trio runs: procfs.server.prefork), started again (exec) when
it dies (with a growing pause, so that one that cannot start does not spin), reloaded and stopped
with its server, and stopped too if the server dies first: each shard holds the read end of a
pipe (its lifeline) whose write end only the server holds, and stops at EOF. (Not
PR_SET_PDEATHSIG: trio starts processes from a worker thread, and the signal follows that
thread's exit, not the server's.)"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from procfs.server.record import ServerRecord

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0  # the server goes on without a shard that does not serve by then
STOP_TIMEOUT = 10.0  # after SIGTERM, then SIGKILL
MIN_BACKOFF, MAX_BACKOFF = 1.0, 30.0  # between restarts of a shard that keeps dying
STEADY = 60.0  # a shard that ran this long restarts after MIN_BACKOFF again
POLL = 0.02


class Process(Protocol):
    """What the supervisor needs of a trio.Process (tests give a fake one)."""

    pid: int

    @property
    def returncode(self) -> int | None: ...
    def poll(self) -> int | None: ...
    async def wait(self) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def kill(self) -> None: ...


Spawn = Callable[..., Awaitable[Process]]


class Shard:
    """One shard's process, kept running by `run` (a trio task)."""

    def __init__(self, argv: list[str], mountpoint: str,
                 serves: Callable[[int], bool] | None = None,
                 spawn: Spawn = trio.lowlevel.open_process,
                 forked: tuple[Process, int] | None = None) -> None:
        self.argv = argv
        self.mountpoint = mountpoint
        self._serves = serves or self._record_says
        self._spawn = spawn
        self._forked = forked  # started already (procfs.server.prefork): (process, lifeline's end)
        self.proc: Process | None = None
        self.starts = 0

    def _record_says(self, pid: int) -> bool:
        record = ServerRecord.of(self.mountpoint)
        return record is not None and record.pid == pid and record.alive()

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start the shard; say started once it serves (or after START_TIMEOUT: the server goes
        on without it); start it again whenever it ends. Cancelled: stop it (SIGTERM, wait)."""
        first = True

        def ready() -> None:
            nonlocal first
            if first:
                first = False
                task_status.started()

        backoff = MIN_BACKOFF
        os.makedirs(self.mountpoint, mode=0o755, exist_ok=True)
        try:
            while True:
                t0 = trio.current_time()
                code = await self._once(ready)
                if trio.current_time() - t0 >= STEADY:
                    backoff = MIN_BACKOFF
                log.error("shard %s ended (exit %s); starting it again in %.0f s",
                          self.mountpoint, code, backoff)
                await trio.sleep(backoff)
                backoff = min(2 * backoff, MAX_BACKOFF)
        finally:
            with contextlib.suppress(OSError):  # busy while a dead mount is still on it
                os.rmdir(self.mountpoint)
                os.rmdir(os.path.dirname(self.mountpoint))  # the last shard: its server's
                os.rmdir(os.path.dirname(os.path.dirname(self.mountpoint)))  # and all servers'

    async def _start(self) -> tuple[Process, int]:
        """The shard's process, and the write end of its lifeline."""
        if self._forked is not None:
            forked, self._forked = self._forked, None
            return forked
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}  # systemd: ours
        life, line = os.pipe()  # neither inherited by other children (O_CLOEXEC)
        try:
            proc = await self._spawn(
                [*self.argv, "--lifeline", str(life)], stdin=subprocess.DEVNULL, env=env,
                pass_fds=(life,))
        except BaseException:
            os.close(line)
            raise
        finally:
            os.close(life)
        return proc, line

    async def _once(self, ready: Callable[[], None]) -> int:
        proc, line = await self._start()
        self.proc = proc
        self.starts += 1
        try:
            with trio.move_on_after(START_TIMEOUT):
                while proc.poll() is None and not self._serves(proc.pid):
                    await trio.sleep(POLL)
            ready()
            return await proc.wait()
        finally:
            if proc.returncode is None:
                with trio.CancelScope(shield=True):
                    self.signal(signal.SIGTERM)
                    with trio.move_on_after(STOP_TIMEOUT):
                        await proc.wait()
                    if proc.returncode is None:
                        proc.kill()
                        await proc.wait()
            os.close(line)
            self.proc = None


async def watch_lifeline(fd: int, cancel: trio.CancelScope, orphaned: trio.Event) -> None:
    """A shard's task: stop serving when the server that started it is gone (EOF), and say so
    (`orphaned`: its record stays, for the next server to repair its containers' binds)."""
    try:
        await trio.lowlevel.wait_readable(fd)
        log.warning("the server that ran this shard is gone: unmounting")
        orphaned.set()
        cancel.cancel()
    finally:
        os.close(fd)


async def start_shards(nursery: trio.Nursery, shards: list[Shard]) -> None:
    """Start every shard in `nursery`, all at once; return when each serves or gave up."""
    async with trio.open_nursery() as starting:
        for shard in shards:
            starting.start_soon(nursery.start, shard.run)
