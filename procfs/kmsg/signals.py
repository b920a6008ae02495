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


def _field(status_text: str, name: str) -> int:
    """A hexadecimal field of /proc/PID/status (0 when absent or garbled). By `find`, not by
    splitting every line: a container's waiting readers make this check hundreds of times a
    second (docs/kmsg.md), and the split cost more than the read itself."""
    start = status_text.find(f"\n{name}:")
    if start < 0:
        return 0
    end = status_text.find("\n", start + 1)
    try:
        return int(status_text[start + len(name) + 2 : end if end >= 0 else None].strip(), 16)
    except ValueError:
        return 0


def pending_signals(status_text: str) -> int:
    """The signals pending and not blocked, as a mask (bit n-1: signal n)."""
    text = "\n" + status_text
    pending = _field(text, "SigPnd") | _field(text, "ShdPnd")
    return pending & ~_field(text, "SigBlk")


def signalled(who: ProcessIdentity, host: HostProc) -> bool:
    """A signal is pending for `who`; False also when it is gone (nothing waits in it then).
    Whether the pid is still `who` is asked only of a pid with a signal pending."""
    try:
        text = host.pid_text(who.pid, "status")
    except ProcfsError:
        return False
    return pending_signals(text) != 0 and who.alive(host)
