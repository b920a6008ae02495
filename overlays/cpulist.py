"""/sys/devices/system/cpu/{online,possible,present}: one list, the same in all three, so that
they agree with each other and with cpuinfo (LXCFS #731 shows them disagreeing)."""

from __future__ import annotations

from dataclasses import dataclass

from overlays.cpuview import CpuView


@dataclass(frozen=True)
class CpulistSnapshot:
    host_text: str
    view: CpuView | None  # None: the host's file unchanged


def render(snap: CpulistSnapshot) -> bytes:
    if snap.view is None:
        return snap.host_text.encode()
    n = max(snap.view.count, 1)
    return (f"0-{n - 1}\n" if n > 1 else "0\n").encode()
