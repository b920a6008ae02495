"""/sys/devices/system/cpu/{online,present,possible,offline}: CPU lists in the kernel's format,
with the kernel's CPU numbers: online = present = the CPUs the container sees, possible = 0 to
the highest CPU it may run on, offline = possible − online (as the kernel relates them)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from overlays.cpuview import CpuView

KINDS = ("online", "possible", "present", "offline")


def format_cpulist(cpus: Iterable[int]) -> str:
    """(0, 1, 2, 5) → `0-2,5` as the kernel prints cpu lists."""
    ordered = sorted(set(cpus))
    ranges: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        ranges.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(ranges)


@dataclass(frozen=True)
class CpulistSnapshot:
    host_text: str
    view: CpuView | None  # None: the host's file unchanged
    kind: str = "online"  # one of KINDS


def render(snap: CpulistSnapshot) -> bytes:
    if snap.view is None:
        return snap.host_text.encode()
    shown = snap.view.cpus or (0,)
    if snap.kind == "possible":
        cpus: Iterable[int] = snap.view.possible
    elif snap.kind == "offline":
        cpus = sorted(set(snap.view.possible) - set(shown))
    else:
        cpus = shown
    # the kernel prints an empty list as a lone newline (offline, with every CPU online)
    return (format_cpulist(cpus) + "\n").encode()
