"""Which of the host's CPUs a container sees: shared by cpuinfo, the cpu lists, the cpuN
directories, stat and uptime. CPUs keep the kernel's numbers (`sched_getaffinity`, `taskset`,
`sched_getcpu` use them), so a container on host CPU 1 sees a `cpu1`, never a renumbered
`cpu0`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CpuView:
    """`cpus`: the host CPU ids the container sees, in order (its cpuset, capped by its quota).
    `allowed`: every CPU its tasks may run on (the whole cpuset), a superset of `cpus`: a
    number `sched_getcpu()` can return; empty means the same as `cpus`."""

    cpus: tuple[int, ...]
    allowed: tuple[int, ...] = ()

    @property
    def count(self) -> int:
        return len(self.cpus)

    @property
    def possible(self) -> tuple[int, ...]:
        """0 to the highest CPU it may run on, as the kernel's `possible` (a program sizing a
        per-CPU array by it may index the array with any CPU number it runs on)."""
        top = max((*self.cpus, *self.allowed), default=0)
        return tuple(range(top + 1))
