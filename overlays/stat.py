"""/proc/stat: the container's CPUs and CPU time, its task counts and its boot time.

`cpu` and `cpuN` lines carry the ten columns procps reads (user nice system idle iowait irq
softirq steal guest guest_nice), in USER_HZ ticks. Only user, system, idle and steal are the
container's own: a cgroup accounts no nice/iowait/irq time, so those columns are 0. `btime`,
`processes`, `procs_running` and `procs_blocked` are replaced. `intr`, `ctxt` and `softirq` have
no per-container counter in the kernel: they are the host's, scaled by the container's share of
the host's uptime (`share`), so that their averages over the container's CPU time (`vmstat`'s
first line divides them by it) are the host's averages instead of its totals since boot.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

COLUMNS = 10  # user nice system idle iowait irq softirq steal guest guest_nice
SCALED = frozenset({"intr", "ctxt", "softirq"})  # host-wide event counters


@dataclass(frozen=True)
class CpuTimes:
    """One `cpuN` line, in ticks. Always ten non-negative columns."""

    user: int = 0
    nice: int = 0
    system: int = 0
    idle: int = 0
    iowait: int = 0
    irq: int = 0
    softirq: int = 0
    steal: int = 0
    guest: int = 0
    guest_nice: int = 0

    def columns(self) -> tuple[int, ...]:
        return (self.user, self.nice, self.system, self.idle, self.iowait, self.irq,
                self.softirq, self.steal, self.guest, self.guest_nice)

    @classmethod
    def of(cls, columns: tuple[int, ...]) -> CpuTimes:
        padded = (tuple(max(int(c), 0) for c in columns) + (0,) * COLUMNS)[:COLUMNS]
        return cls(*padded)


def busy_idle(busy: tuple[tuple[int, int], ...], wall: int,
              steal: tuple[int, ...] = ()) -> tuple[CpuTimes, ...]:
    """Per-CPU (user, system) ticks and the container's wall time in ticks → cpuN lines whose
    columns add up to the wall time. `steal`: ticks the container's tasks were runnable but
    waited for a CPU (the host's other load, or the container's own quota), shown as steal as a
    hypervisor shows it to a VM, capped at the time left. A CPU busier than the wall time (CPU
    time the cgroup spent before its init started, clock granularity) gets idle 0, never a
    negative one."""
    wall = max(wall, 0)
    out = []
    for i, (user, system) in enumerate(busy):
        user, system = max(user, 0), max(system, 0)
        left = max(wall - user - system, 0)
        stolen = min(max(steal[i] if i < len(steal) else 0, 0), left)
        out.append(CpuTimes(user=user, system=system, idle=left - stolen, steal=stolen))
    return tuple(out)


def never_backwards(prev: tuple[CpuTimes, ...] | None,
                    cur: tuple[CpuTimes, ...]) -> tuple[CpuTimes, ...]:
    """Each column the larger of this read and the previous one, so that `top`'s deltas are never
    negative (a quota change reshuffles the spread; idle = wall − busy can shrink). A different
    CPU count starts afresh: the lines no longer describe the same CPUs."""
    if prev is None or len(prev) != len(cur):
        return cur
    return tuple(
        CpuTimes.of(tuple(max(a, b) for a, b in zip(p.columns(), c.columns(), strict=True)))
        for p, c in zip(prev, cur, strict=True)
    )


def _count(word: str) -> int | None:
    """A counter of the kernel's: ASCII digits only (not '²', which str.isdigit() accepts and
    int() refuses), at most 20 of them (a u64)."""
    return int(word) if word.isascii() and word.isdigit() and len(word) <= 20 else None


def host_cpu_lines(text: str) -> dict[int, CpuTimes]:
    """The `cpuN` lines of a /proc/stat text, by N; garbled columns read as 0."""
    out: dict[int, CpuTimes] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        cpu = _count(name[3:]) if name.startswith("cpu") else None
        if cpu is not None:
            out[cpu] = CpuTimes.of(tuple(_count(w) or 0 for w in rest.split()))
    return out


@functools.lru_cache(maxsize=8)
def _counters(line: str) -> tuple[tuple[str, ...], tuple[tuple[int, int], ...]]:
    """A counter line as words, its name first and every number 0 (garbled ones too), and the
    (position, value) of its numbers that are not 0. The host's text is shared by every
    container's rendering for a while: its `intr` line (hundreds of numbers, mostly 0) is
    parsed once."""
    words = line.split()
    counts = [0 if w == "0" else _count(w) or 0 for w in words[1:]]
    return ((words[0], *("0" for _ in counts)),
            tuple((i, n) for i, n in enumerate(counts, 1) if n))


@dataclass(frozen=True)
class StatSnapshot:
    host_text: str  # the host's /proc/stat: intr, ctxt, softirq and unknown lines come from it
    cpus: tuple[CpuTimes, ...]  # the container's CPUs...
    btime: int  # the boot time the container's processes' start times count from
    processes: int
    procs_running: int
    procs_blocked: int
    cpu_ids: tuple[int, ...] = ()  # ...and their kernel numbers (default 0, 1, ...)
    share: float = 1.0  # the time its CPU lines cover / the host's uptime, in [0, 1]


def _line(name: str, t: CpuTimes) -> str:
    return name + " " + " ".join(str(c) for c in t.columns())


def render(snap: StatSnapshot) -> bytes:
    total = CpuTimes.of(tuple(sum(col) for col in zip(*(c.columns() for c in snap.cpus),
                                                     strict=True))) if snap.cpus else CpuTimes()
    lines = ["cpu  " + " ".join(str(c) for c in total.columns())]  # the kernel's two spaces
    ids = snap.cpu_ids if len(snap.cpu_ids) == len(snap.cpus) else range(len(snap.cpus))
    lines += [_line(f"cpu{i}", t) for i, t in zip(ids, snap.cpus, strict=True)]
    ours = {
        "btime": max(snap.btime, 0),
        "processes": max(snap.processes, 0),
        "procs_running": max(snap.procs_running, 0),
        "procs_blocked": max(snap.procs_blocked, 0),
    }
    share = min(max(snap.share, 0.0), 1.0) if math.isfinite(snap.share) else 1.0
    seen: set[str] = set()
    for line in snap.host_text.splitlines():
        key = line.split(" ", 1)[0]
        if key.startswith("cpu"):
            continue
        if key in SCALED and share < 1.0:
            words, counted = _counters(line)
            scaled = list(words)  # zeros stay zeros: only the counted ones are scaled
            for i, n in counted:
                scaled[i] = str(int(n * share))
            line = " ".join(scaled)
        if key in ours:
            if key not in seen:
                lines.append(f"{key} {ours[key]}")
                seen.add(key)
            continue
        lines.append(line)
    lines += [f"{k} {v}" for k, v in ours.items() if k not in seen]
    return ("\n".join(lines) + "\n").encode()
