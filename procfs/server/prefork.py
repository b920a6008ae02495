"""A server's shards started by fork, before trio runs, so that they share its memory.

A shard started with exec loads its own interpreter, trio and pyfuse3: about 20 MiB of private
pages each. Forked once everything is imported, a shard shares those pages with the server until
one of the two writes to one (copy on write), and `gc.freeze()` keeps the collector from writing
to the header of every object it would otherwise scan: measured with three processes and 300
containers, 46.5 MiB of distinct pages instead of 72.5. The child runs with its `Config` as it
is; one started again by exec gets the same Config as JSON (procfs.server.shard).

Only the first start forks: within `trio.run` a fork would copy a running trio, so a shard that
dies is started again with exec (procfs.server.supervise).
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

import trio

from procfs.config import Config

log = logging.getLogger(__name__)

PR_SET_NAME = 15


class Forked:
    """A forked child, as procfs.server.supervise.Process: waited for through a pidfd."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._pidfd: int | None = os.pidfd_open(pid)
        self._code: int | None = None

    @property
    def returncode(self) -> int | None:
        return self._code

    def poll(self) -> int | None:
        if self._code is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._code = os.waitstatus_to_exitcode(status)
        return self._code

    async def wait(self) -> int:
        while (code := self.poll()) is None:
            assert self._pidfd is not None
            await trio.lowlevel.wait_readable(self._pidfd)  # readable once it has ended
        self.close()
        return code

    def send_signal(self, sig: int) -> None:
        if self._code is None and self._pidfd is not None:
            signal.pidfd_send_signal(self._pidfd, sig)  # not a reused pid: the pidfd's own

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    @property
    def pidfd(self) -> int | None:
        return self._pidfd

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


def fork_shards(configs: list[Config], child: Callable[[Config], int]
                ) -> dict[str, tuple[Forked, int]]:
    """Fork one shard per Config: the child runs `child(config)` with the read end of its
    lifeline in `config.lifeline`. {mountpoint: (its process, the write end of its lifeline)}.
    Called by `serve.run` once all a serving process runs is imported."""
    if not configs:
        return {}
    gc.freeze()  # what is imported lives as long as the process: never scan it, never touch it
    started: dict[str, tuple[Forked, int]] = {}
    for config in configs:
        os.makedirs(config.mountpoint, mode=0o755, exist_ok=True)
        life, line = os.pipe()
        theirs = [fd for proc, end in started.values() for fd in (proc.pidfd, end)
                  if fd is not None]
        pid = os.fork()
        if pid == 0:
            _child(child, dataclasses.replace(config, lifeline=life), close=[line, *theirs])
        os.close(life)
        started[config.mountpoint] = (Forked(pid), line)
    return started


def _child(child: Callable[[Config], int], config: Config, close: list[int]) -> NoReturn:
    """The shard: `child(config)`, then exit without returning into the server's stack (its
    `finally` blocks and atexit handlers are the server's)."""
    code = 1
    try:
        for fd in close:  # the lifelines of the other shards: theirs to see closed
            os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.environ.pop("NOTIFY_SOCKET", None)  # systemd hears from the server only
        ctypes.CDLL(None).prctl(PR_SET_NAME, b"procfs-shard", 0, 0, 0)  # ps, top: not "python"
        code = child(config)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
    except BaseException:
        log.exception("shard %s", config.mountpoint)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
