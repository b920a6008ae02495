"""Which CPUs a container may use: its cpuset, capped by its CFS quota."""

from __future__ import annotations

import os

from overlays.cpuview import CpuView
from procfs.config import CpuViewMode
from procfs.sources.cgroups import CgroupDirs, ancestors
from procfs.sources.text import parse_cpulist, read_optional


def read_cpuset(dirs: CgroupDirs, host_online: tuple[int, ...]) -> tuple[int, ...]:
    """The container's CPUs: its `cpuset.cpus`, else `.effective`, else the nearest ancestor's
    non-empty list, intersected with the host's online CPUs (a cpuset may name offline ones)."""
    where = dirs.of("cpuset")
    if where is None:
        return host_online
    directory, _, top = where
    for d in [*ancestors(directory, top), top]:
        for name in ("cpuset.cpus", "cpuset.cpus.effective"):
            cpus = parse_cpulist(read_optional(os.path.join(d, name)))
            if cpus:
                online = set(host_online)
                usable = tuple(c for c in cpus if c in online) if online else cpus
                return usable or host_online
    return host_online


def _quota_cpus_v2(text: str | None) -> int | None:
    if not text:
        return None
    parts = text.split()
    if len(parts) < 1 or parts[0] == "max":
        return None
    try:
        quota = int(parts[0])
        period = int(parts[1]) if len(parts) > 1 else 100000
    except ValueError:
        return None
    return _ceil_div(quota, period)


def _ceil_div(quota: int, period: int) -> int | None:
    """ceil(quota / period) in integers (a float would overflow on a huge quota); None when
    either is zero or negative: v1 writes -1 for no limit, and a period of 0 limits nothing."""
    if quota <= 0 or period <= 0:
        return None
    return -(-quota // period)


def _quota_cpus_v1(quota_text: str | None, period_text: str | None) -> int | None:
    try:
        quota = int((quota_text or "").strip())
        period = int((period_text or "").strip())
    except ValueError:
        return None
    return _ceil_div(quota, period)


def read_quota_cpus(dirs: CgroupDirs) -> int | None:
    """ceil(quota / period), the smallest on the path to the root; None when unlimited."""
    where = dirs.of("cpu")
    if where is None:
        return None
    directory, version, top = where
    found: list[int] = []
    for d in ancestors(directory, top):
        if version == 2:
            n = _quota_cpus_v2(read_optional(os.path.join(d, "cpu.max")))
        else:
            n = _quota_cpus_v1(
                read_optional(os.path.join(d, "cpu.cfs_quota_us")),
                read_optional(os.path.join(d, "cpu.cfs_period_us")),
            )
        if n is not None:
            found.append(n)
    return min(found) if found else None


def read_cpu_view(dirs: CgroupDirs, host_online: tuple[int, ...], mode: CpuViewMode) -> CpuView:
    """The cpuset (the CPUs its tasks may run on), of which the first ceil(quota / period)
    are shown in the quota mode."""
    allowed = read_cpuset(dirs, host_online) or (host_online[:1] or (0,))
    cpus = allowed
    if mode is CpuViewMode.QUOTA:
        quota = read_quota_cpus(dirs)
        if quota is not None:
            cpus = allowed[: max(quota, 1)]
    return CpuView(cpus, allowed)
