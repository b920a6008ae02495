"""/proc/loadavg: the container's 1/5/15-minute load, running/total tasks and newest pid.

The averages are the kernel's fixed-point numbers (11 fraction bits); they are printed the way
`loadavg_proc_show` prints them: rounded by FIXED_1/200, then integer part and two decimals.
"""

from __future__ import annotations

from dataclasses import dataclass

FSHIFT = 11
FIXED_1 = 1 << FSHIFT


@dataclass(frozen=True)
class LoadavgSnapshot:
    avenrun: tuple[int, int, int]  # fixed-point, FIXED_1 == 1.0
    running: int
    total: int
    newest_pid: int


def format_load(value: int) -> str:
    v = max(value, 0) + FIXED_1 // 200
    return f"{v >> FSHIFT}.{((v & (FIXED_1 - 1)) * 100) >> FSHIFT:02d}"


def render(snap: LoadavgSnapshot) -> bytes:
    loads = " ".join(format_load(a) for a in snap.avenrun)
    total = max(snap.total, 0)
    running = min(max(snap.running, 0), total) if total else max(snap.running, 0)
    return f"{loads} {running}/{total} {max(snap.newest_pid, 0)}\n".encode()
