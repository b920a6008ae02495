"""A process by pid *and* start time: the one way procfs tells whether a process it noted down
is still the same one (a pid alone may have been reused by another process since)."""

from __future__ import annotations

from dataclasses import dataclass

from procfs.errors import ProcfsError
from procfs.sources.hostproc import HostProc


@dataclass(frozen=True)
class ProcessIdentity:
    pid: int
    start_ticks: int  # field 22 of /proc/PID/stat: clock ticks after the host's boot

    @classmethod
    def of(cls, pid: int, host: HostProc | None = None) -> ProcessIdentity | None:
        """The process now running as `pid`, or None when there is none."""
        try:
            return cls(pid, (host or HostProc()).stat(pid).start_ticks)
        except (ProcfsError, OSError):
            return None

    def alive(self, host: HostProc | None = None) -> bool:
        """Whether this very process still runs: same pid, same start time, and not a zombie
        (a zombie has exited; only its parent has not collected it yet)."""
        try:
            st = (host or HostProc()).stat(self.pid)
        except (ProcfsError, OSError):
            return False
        return st.start_ticks == self.start_ticks and st.state not in ("Z", "X")
