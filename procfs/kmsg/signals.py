"""Is a process being signalled? What a blocked FUSE read checks, since pyfuse3 does not pass
on FUSE_INTERRUPT.

A process blocked in a FUSE read that gets a signal stays in the kernel until the daemon answers
(in uninterruptible sleep once the signal is fatal: the kernel turns a default-action SIGINT into
SIGKILL and waits for the reply). Its /proc/PID/status shows the signal pending (SigPnd, ShdPnd;
SIGKILL as bit 9) as long as it waits, so a reader that wakes now and then and finds one answers
EINTR and lets the process go.
"""

from __future__ import annotations

from dataclasses import dataclass

from procfs.errors import ProcessGone, ProcfsError
from procfs.sources.hostproc import HostProc


def pending_signals(status_text: str) -> int:
    """The signals pending and not blocked, as a mask (bit n-1: signal n)."""
    fields: dict[str, int] = {}
    for line in status_text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name in ("SigPnd", "ShdPnd", "SigBlk"):
            try:
                fields[name] = int(value.strip(), 16)
            except ValueError:
                fields[name] = 0
    pending = fields.get("SigPnd", 0) | fields.get("ShdPnd", 0)
    return pending & ~fields.get("SigBlk", 0)


@dataclass(frozen=True)
class Watched:
    """A process, by pid and start time (so that a reused pid is not taken for it)."""

    pid: int
    start_ticks: int

    @classmethod
    def of(cls, host: HostProc, pid: int) -> Watched | None:
        try:
            return cls(pid, host.stat(pid).start_ticks)
        except ProcfsError:
            return None

    def signalled(self, host: HostProc) -> bool:
        """A signal is pending; False also when the process is gone (nothing waits in it)."""
        try:
            text = host.pid_text(self.pid, "status")
            if host.stat(self.pid).start_ticks != self.start_ticks:
                return False
        except ProcessGone:
            return False
        except ProcfsError:
            return False
        return pending_signals(text) != 0
