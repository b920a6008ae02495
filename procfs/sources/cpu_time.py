"""A container's CPU time, read from its cgroup (v1 cpuacct, v2 cpu.stat).

Each reader takes the container's `CgroupDirs` (so a fixture tree works as well as the host's
hierarchies). A container whose cgroup is the hierarchy's root has no CPU time of its own: the
readers say None and the caller falls back to the host's counters.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from procfs.sources.cgroups import CgroupDirs, own_dir
from procfs.sources.text import parse_flat_keyed, parse_ints, read_optional

NS = 1_000_000_000



@dataclass(frozen=True)
class CpuUsage:
    """CPU time in ns: per host CPU where the cgroup says (v1), else only the totals (v2)."""

    user_ns: int
    system_ns: int
    per_cpu: tuple[tuple[int, int, int], ...] = ()  # (host cpu, user ns, system ns)

    @property
    def total_ns(self) -> int:
        return self.user_ns + self.system_ns

    @classmethod
    def per_cpu_rows(cls, rows: tuple[tuple[int, int, int], ...]) -> CpuUsage:
        return cls(sum(r[1] for r in rows), sum(r[2] for r in rows), rows)


def parse_usage_all(text: str | None) -> tuple[tuple[int, int, int], ...]:
    """cpuacct.usage_all: a `cpu user system` header, then one row per CPU in ns."""
    rows = []
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) != 3 or not parts[0].isdigit():
            continue
        try:
            rows.append((int(parts[0]), max(int(parts[1]), 0), max(int(parts[2]), 0)))
        except ValueError:
            continue
    return tuple(rows)


def _split(total: int, user_weight: int, system_weight: int) -> tuple[int, int]:
    """Split `total` ns in the ratio cpuacct.stat gives (both in ticks); all user without one."""
    weight = user_weight + system_weight
    if weight <= 0:
        return total, 0
    user = total * user_weight // weight
    return user, total - user


def read_v1_usage(directory: str, hz: int) -> CpuUsage | None:
    # 4.7+: user and system time per CPU in one file (cpuacct.stat is then not needed)
    rows = parse_usage_all(read_optional(os.path.join(directory, "cpuacct.usage_all")))
    if rows:
        return CpuUsage.per_cpu_rows(rows)
    stat = parse_flat_keyed(read_optional(os.path.join(directory, "cpuacct.stat")) or "")
    user_t, system_t = stat.get("user", 0), stat.get("system", 0)
    # kernels before 4.7: usage_percpu (total ns per CPU), split by cpuacct.stat
    percpu = parse_ints(read_optional(os.path.join(directory, "cpuacct.usage_percpu")))
    rows = tuple((cpu, *_split(ns, user_t, system_t)) for cpu, ns in enumerate(percpu))
    if rows:
        return CpuUsage.per_cpu_rows(rows)
    total = parse_ints(read_optional(os.path.join(directory, "cpuacct.usage")))
    if total:
        return CpuUsage(*_split(total[0], user_t, system_t))
    if "user" in stat or "system" in stat:
        return CpuUsage(user_t * NS // hz, system_t * NS // hz)
    return None


def read_v2_usage(directory: str) -> CpuUsage | None:
    text = read_optional(os.path.join(directory, "cpu.stat"))
    if text is None:
        return None
    stat = parse_flat_keyed(text)
    user, system = stat.get("user_usec", 0), stat.get("system_usec", 0)
    if "user_usec" not in stat and "system_usec" not in stat:
        user = stat.get("usage_usec", 0)
    return CpuUsage(user * 1000, system * 1000)


def read_cpu_usage(dirs: CgroupDirs, hz: int) -> CpuUsage | None:
    """The container's CPU time; None when it has no cgroup of its own for it."""
    where = own_dir(dirs.of("cpuacct"))
    if where is not None:
        directory, version = where
        return read_v1_usage(directory, hz) if version == 1 else read_v2_usage(directory)
    # cpu.stat exists in every v2 cgroup, with or without the cpu controller enabled.
    unified = dirs.unified()
    if unified is not None and dirs.layout.v2 is not None:
        where = own_dir((unified, 2, dirs.layout.v2.mountpoint))
        if where is not None:
            return read_v2_usage(where[0])
    return None


def spread(usage: CpuUsage, cpus: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """(user ns, system ns) for each CPU of the view, numbered from 0.

    A view CPU keeps the time its host CPU ran the container; time on CPUs outside the view (the
    quota view shows fewer CPUs than the cpuset lets the tasks run on; v2 has no per-CPU split)
    is shared evenly among the view's CPUs, so the lines add up to the container's CPU time.
    Every term only grows when the cgroup's counters grow."""
    n = max(len(cpus), 1)
    by_cpu = {cpu: (u, s) for cpu, u, s in usage.per_cpu}
    own = [by_cpu.get(cpu, (0, 0)) for cpu in cpus] or [(0, 0)]
    rest_u = max(usage.user_ns - sum(u for u, _ in own), 0)
    rest_s = max(usage.system_ns - sum(s for _, s in own), 0)

    def share(rest: int, i: int) -> int:
        return rest // n + (1 if i < rest % n else 0)

    return tuple((u + share(rest_u, i), s + share(rest_s, i)) for i, (u, s) in enumerate(own))
