"""/proc/cpuinfo: the host's entries for the container's CPUs, with the kernel's CPU numbers."""

from __future__ import annotations

import re
from dataclasses import dataclass

from overlays.cpuview import CpuView

_PROCESSOR = re.compile(r"^processor\s*:\s*(\d+)\s*$", re.M)


@dataclass(frozen=True)
class CpuinfoSnapshot:
    host_text: str
    view: CpuView | None  # None: the host's file unchanged


def _blocks(text: str) -> list[str]:
    return [b for b in text.split("\n\n") if b.strip()]


def render(snap: CpuinfoSnapshot) -> bytes:
    if snap.view is None:
        return snap.host_text.encode()
    wanted = set(snap.view.cpus)
    count = str(len(wanted))
    picked: list[tuple[int, str]] = []
    trailer: list[str] = []  # blocks without a processor line (arm's global "Hardware" lines)
    for block in _blocks(snap.host_text):
        m = _PROCESSOR.search(block)
        if m is None:
            trailer.append(block)
            continue
        cpu = int(m.group(1))
        if cpu not in wanted:
            continue
        # x86 repeats the package's CPU count in every entry; keep it in step with the view.
        block = re.sub(r"^(siblings\s*:\s*)\d+", lambda x: x.group(1) + count, block, flags=re.M)
        block = re.sub(r"^(cpu cores\s*:\s*)\d+", lambda x: x.group(1) + count, block, flags=re.M)
        picked.append((cpu, block))
    picked.sort()
    blocks = [b for _, b in picked] + trailer
    return "".join(b.strip("\n") + "\n\n" for b in blocks).encode()
