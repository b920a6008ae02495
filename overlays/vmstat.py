"""/proc/vmstat for a container: the kernel's lines in the host's order, with the container's
own numbers where its memory and I/O cgroups keep them, and 0 where no per-container counter
exists (zone, NUMA, compaction and other machine-wide events are not the container's).

What programs read from it: `vmstat` its bi/bo (pgpgin/pgpgout, KiB since the container
started) and si/so (pswpin/pswpout), psutil and node exporters the nr_* page counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# vmstat line ← the container's memory.stat key (cgroup v2 names; bytes are turned into pages)
PAGES_FROM_BYTES = {
    "nr_inactive_anon": "inactive_anon",
    "nr_active_anon": "active_anon",
    "nr_inactive_file": "inactive_file",
    "nr_active_file": "active_file",
    "nr_unevictable": "unevictable",
    "nr_slab_reclaimable": "slab_reclaimable",
    "nr_slab_unreclaimable": "slab_unreclaimable",
    "nr_anon_pages": "anon",
    "nr_mapped": "file_mapped",
    "nr_file_pages": "file",
    "nr_dirty": "file_dirty",
    "nr_writeback": "file_writeback",
    "nr_shmem": "shmem",
    "nr_page_table_pages": "pagetables",
    "nr_swapcached": "swapcached",
}
# vmstat line ← memory.stat key, counted the same way in both (events, not bytes)
EVENTS = ("workingset_refault_anon", "workingset_refault_file", "workingset_activate_anon",
          "workingset_activate_file", "workingset_restore_anon", "workingset_restore_file",
          "workingset_nodereclaim", "pgfault", "pgmajfault", "pgrefill", "pgscan_kswapd",
          "pgscan_direct", "pgsteal_kswapd", "pgsteal_direct", "pgactivate", "pgdeactivate",
          "pglazyfree", "pglazyfreed", "pswpin", "pswpout", "thp_fault_alloc",
          "thp_collapse_alloc")
HUGE_PAGE = 2 << 20


@dataclass(frozen=True)
class VmstatSnapshot:
    host_text: str  # the host's /proc/vmstat: its lines and their order
    stat: Mapping[str, int] = field(default_factory=dict)  # memory.stat, v2 names, bytes
    free_bytes: int = 0  # as its meminfo's MemFree
    kernel_stack_bytes: int = 0
    read_bytes: int = 0  # block I/O of its cgroup since it started
    write_bytes: int = 0
    oom_kills: int = 0
    page_size: int = 4096


def values(snap: VmstatSnapshot) -> dict[str, int]:
    """The lines that are the container's, by name."""
    page = max(snap.page_size, 1)
    s = snap.stat
    out = {line: max(s.get(key, 0), 0) // page for line, key in PAGES_FROM_BYTES.items()}
    out.update({name: max(s.get(name, 0), 0) for name in EVENTS})
    out["nr_free_pages"] = max(snap.free_bytes, 0) // page
    out["nr_anon_transparent_hugepages"] = max(s.get("anon_thp", 0), 0) // HUGE_PAGE
    out["nr_kernel_stack"] = max(snap.kernel_stack_bytes, s.get("kernel_stack", 0), 0) // 1024
    out["pgpgin"] = max(snap.read_bytes, 0) // 1024
    out["pgpgout"] = max(snap.write_bytes, 0) // 1024
    out["oom_kill"] = max(snap.oom_kills, 0)
    return out


def render(snap: VmstatSnapshot) -> bytes:
    own = values(snap)
    lines = []
    for line in snap.host_text.splitlines():
        name = line.split(" ", 1)[0]
        if name:
            lines.append(f"{name} {own.get(name, 0)}")
    return ("\n".join(lines) + "\n").encode() if lines else b""
