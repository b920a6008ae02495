"""/proc/swaps: one virtual device holding the container's swap, as LXCFS shows it."""

from __future__ import annotations

from dataclasses import dataclass

HEADER = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"


@dataclass(frozen=True)
class SwapsSnapshot:
    host_text: str
    total_kib: int | None  # None: the host's file unchanged
    used_kib: int = 0


def render(snap: SwapsSnapshot) -> bytes:
    if snap.total_kib is None:
        return snap.host_text.encode()
    if snap.total_kib <= 0:
        return HEADER.encode()
    used = min(max(snap.used_kib, 0), snap.total_kib)
    # The kernel pads the name to 40 columns; tools split on whitespace.
    return (HEADER + f"{'none':<40}virtual\t\t{snap.total_kib}\t\t{used}\t\t0\n").encode()
