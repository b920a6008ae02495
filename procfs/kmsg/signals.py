"""Is a process being signalled? What a blocked FUSE read checks, since pyfuse3 does not pass
on FUSE_INTERRUPT.

A process blocked in a FUSE read that gets a signal stays in the kernel until the daemon answers
(in uninterruptible sleep once the signal is fatal: the kernel turns a default-action SIGINT into
SIGKILL and waits for the reply). Its /proc/PID/status shows the signal pending (SigPnd, ShdPnd;
SIGKILL as bit 9) as long as it waits, so a reader that wakes now and then and finds one answers
EINTR and lets the process go.
"""

from __future__ import annotations

from procfs.errors import ProcfsError
from procfs.sources.hostproc import HostProc
from procfs.sources.identity import ProcessIdentity


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


def signalled(who: ProcessIdentity, host: HostProc) -> bool:
    """A signal is pending for `who`; False also when it is gone (nothing waits in it then)."""
    try:
        text = host.pid_text(who.pid, "status")
    except ProcfsError:
        return False
    return who.alive(host) and pending_signals(text) != 0
