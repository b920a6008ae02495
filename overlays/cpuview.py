"""Which of the host's CPUs a container sees: shared by cpuinfo, cpu/online and stat."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CpuView:
    """`cpus`: the host CPU ids the container sees, in order; it sees them as 0..len-1."""

    cpus: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.cpus)
