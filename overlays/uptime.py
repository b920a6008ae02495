"""/proc/uptime: seconds since the container's init started (plus its time namespace's boottime
offset), and the idle seconds of its CPUs."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class UptimeSnapshot:
    uptime: float  # seconds
    idle: float  # seconds, summed over the container's CPUs as the kernel does


def _clean(x: float) -> float:
    return x if math.isfinite(x) and x > 0 else 0.0


def render(snap: UptimeSnapshot) -> bytes:
    return f"{_clean(snap.uptime):.2f} {_clean(snap.idle):.2f}\n".encode()
