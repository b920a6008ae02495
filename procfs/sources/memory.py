"""A container's memory limit, usage and statistics from cgroup v1 or v2."""

from __future__ import annotations

import os

from overlays.meminfo import MemoryStats
from procfs.errors import CgroupGone, NotFound
from procfs.sources.cgroups import CgroupDirs, ancestors
from procfs.sources.text import (
    UNLIMITED,
    parse_flat_keyed,
    parse_int,
    parse_limit,
    read_optional,
    read_text,
)

# v1 `memory.stat` (hierarchical `total_*` values) → the v2 names MemoryStats uses.
_V1_NAMES = {
    "total_cache": "file",
    "total_rss": "anon",
    "total_rss_huge": "anon_thp",
    "total_shmem": "shmem",
    "total_mapped_file": "file_mapped",
    "total_dirty": "file_dirty",
    "total_writeback": "file_writeback",
    "total_swapcached": "swapcached",
    "total_active_anon": "active_anon",
    "total_inactive_anon": "inactive_anon",
    "total_active_file": "active_file",
    "total_inactive_file": "inactive_file",
    "total_unevictable": "unevictable",
    "total_pgfault": "pgfault",
    "total_pgmajfault": "pgmajfault",
    "total_workingset_refault_anon": "workingset_refault_anon",
    "total_workingset_refault_file": "workingset_refault_file",
    "total_workingset_activate_anon": "workingset_activate_anon",
    "total_workingset_activate_file": "workingset_activate_file",
    "total_workingset_restore_anon": "workingset_restore_anon",
    "total_workingset_restore_file": "workingset_restore_file",
    "total_workingset_nodereclaim": "workingset_nodereclaim",
}


def _smallest_limit(directory: str, top: str, name: str) -> int | None:
    limits = [parse_limit(read_optional(os.path.join(d, name))) for d in ancestors(directory, top)]
    found = [v for v in limits if v is not None]
    return min(found) if found else None


def read_memory(dirs: CgroupDirs) -> MemoryStats | None:
    """The container's memory, or None when no hierarchy has the memory controller."""
    where = dirs.of("memory")
    if where is None:
        return None
    directory, version, top = where
    if not os.path.isdir(directory):
        raise CgroupGone(directory)
    return _read_v2(directory, top) if version == 2 else _read_v1(directory, top)


def _read_v2(d: str, top: str) -> MemoryStats:
    stat = parse_flat_keyed(read_text(os.path.join(d, "memory.stat"), CgroupGone))
    usage = parse_int(read_optional(os.path.join(d, "memory.current"))) or 0
    has_swap = os.path.exists(os.path.join(d, "memory.swap.current"))
    return MemoryStats(
        limit=_smallest_limit(d, top, "memory.max"),
        usage=usage,
        swap_limit=_smallest_limit(d, top, "memory.swap.max") if has_swap else None,
        swap_usage=parse_int(read_optional(os.path.join(d, "memory.swap.current"))) or 0,
        stat=stat,
    )


def _read_v1(d: str, top: str) -> MemoryStats:
    raw = parse_flat_keyed(read_text(os.path.join(d, "memory.stat"), CgroupGone))
    stat = {v2: raw[v1] for v1, v2 in _V1_NAMES.items() if v1 in raw}
    # v1 has no slab statistics in memory.stat. Kernel memory charged to the cgroup is almost
    # all slab, so show it as unreclaimable slab: MemAvailable stays conservative.
    kmem = parse_int(read_optional(os.path.join(d, "memory.kmem.usage_in_bytes")))
    if kmem:
        stat["slab"] = kmem
        stat["slab_unreclaimable"] = kmem
        stat["slab_reclaimable"] = 0
    usage = parse_int(read_optional(os.path.join(d, "memory.usage_in_bytes")))
    if usage is None:
        raise NotFound(os.path.join(d, "memory.usage_in_bytes"))
    # memory.stat itself says the limits in force (the smallest of the cgroup's and its
    # ancestors') and, with swap accounting, the swap in use: three opens fewer per rendering
    # than the limit files. Older or odd kernels without those lines: the files.
    if "hierarchical_memory_limit" in raw:
        limit = _below_unlimited(raw["hierarchical_memory_limit"])
    else:
        limit = _smallest_limit(d, top, "memory.limit_in_bytes")
    if "hierarchical_memsw_limit" in raw:  # printed only with swap accounting on
        memsw_limit = _below_unlimited(raw["hierarchical_memsw_limit"])
        return MemoryStats(limit, usage, _swap_limit(memsw_limit, limit),
                           raw.get("total_swap", 0), stat)
    swap_limit: int | None = None
    swap_usage = 0
    memsw_usage = parse_int(read_optional(os.path.join(d, "memory.memsw.usage_in_bytes")))
    if memsw_usage is not None:  # swap accounting on: memsw counts memory + swap
        memsw_limit = _smallest_limit(d, top, "memory.memsw.limit_in_bytes")
        swap_limit = _swap_limit(memsw_limit, limit)
        swap_usage = max(memsw_usage - usage, 0)
    return MemoryStats(limit, usage, swap_limit, swap_usage, stat)


def _below_unlimited(value: int) -> int | None:
    return value if value < UNLIMITED else None


def _swap_limit(memsw_limit: int | None, limit: int | None) -> int | None:
    """v1 limits memory + swap together: the swap a container may use is the difference."""
    if memsw_limit is None:
        return None
    return max(memsw_limit - limit, 0) if limit is not None else memsw_limit


def read_oom_kills(dirs: CgroupDirs) -> int:
    """How many of the container's tasks the OOM killer killed (v2 `memory.events` oom_kill,
    v1 `memory.oom_control`); 0 when the kernel does not say."""
    where = dirs.of("memory")
    if where is None:
        return 0
    directory, version, _ = where
    name = "memory.events" if version == 2 else "memory.oom_control"
    return parse_flat_keyed(read_optional(os.path.join(directory, name)) or "").get("oom_kill", 0)
