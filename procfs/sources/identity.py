"""A process by pid *and* start time: the one way procfs tells whether a process it noted down
is still the same one (a pid alone may have been reused by another process since).

Start times are kept on the host's clock. /proc/PID/stat shows a start time in the *reader's*
time namespace (shifted by its boottime offset), and the processes that write and read these
records live in different ones: an OCI hook that procfs-runc's runtime runs inside a
container's time namespace records a container's init, a server in the host's checks it. So
what is read is shifted back by the reader's own offset (0 in the host's namespace).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from procfs.errors import ProcfsError
from procfs.sources.hostproc import HostProc, parse_timens_offsets
from procfs.sources.text import read_optional


@functools.cache
def own_offset_ticks(proc_root: str = "/proc") -> int:
    """Our time namespace's boottime offset, in clock ticks (a namespace's offsets never
    change once a process is in it, nor do we move once this is asked)."""
    _, boottime_ns = parse_timens_offsets(read_optional(f"{proc_root}/self/timens_offsets"))
    hz = os.sysconf("SC_CLK_TCK")
    return boottime_ns * hz // 1_000_000_000


def host_start_ticks(host: HostProc, pid: int) -> int:
    """`pid`'s start time, clock ticks after the host's boot. Raises ProcessGone."""
    return host.stat(pid).start_ticks - own_offset_ticks(host.proc_root)


@dataclass(frozen=True)
class ProcessIdentity:
    pid: int
    start_ticks: int  # field 22 of /proc/PID/stat: clock ticks after the host's boot

    @classmethod
    def of(cls, pid: int, host: HostProc | None = None) -> ProcessIdentity | None:
        """The process now running as `pid`, or None when there is none."""
        try:
            return cls(pid, host_start_ticks(host or HostProc(), pid))
        except (ProcfsError, OSError):
            return None

    def alive(self, host: HostProc | None = None) -> bool:
        """Whether this very process still runs: same pid, same start time, and not a zombie
        (a zombie has exited; only its parent has not collected it yet)."""
        host = host or HostProc()
        try:
            st = host.stat(self.pid)
        except (ProcfsError, OSError):
            return False
        start = st.start_ticks - own_offset_ticks(host.proc_root)
        return start == self.start_ticks and st.state not in ("Z", "X")
