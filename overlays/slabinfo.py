"""/proc/slabinfo: the container's slab caches where its cgroup lists them, else the host's.

cgroup v1 kernels before 5.9 list a memory cgroup's own slab caches in `memory.kmem.slabinfo`
in /proc/slabinfo's format (header included). Since 5.9 slab objects are charged per object,
not per cache, and that file is empty; cgroup v2 has no such file. A container then gets the
host's /proc/slabinfo (the view procfs gives for every file without a per-container source).
"""

from __future__ import annotations

from dataclasses import dataclass

HEADER = (
    "slabinfo - version: 2.1\n"
    "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab>"
    " : tunables <limit> <batchcount> <sharedfactor>"
    " : slabdata <active_slabs> <num_slabs> <sharedavail>\n"
)


@dataclass(frozen=True)
class SlabinfoSnapshot:
    host_text: str
    own_text: str | None  # the cgroup's memory.kmem.slabinfo; None or empty: none offered


def has_caches(text: str | None) -> bool:
    """Whether a memory.kmem.slabinfo lists at least one cache (not just a header)."""
    return any(
        line.strip() and not line.startswith(("slabinfo -", "#"))
        for line in (text or "").splitlines()
    )


def render(snap: SlabinfoSnapshot) -> bytes:
    own = snap.own_text
    if own is None or not has_caches(own):
        return snap.host_text.encode()
    if not own.startswith("slabinfo -"):
        own = HEADER + own
    if not own.endswith("\n"):
        own += "\n"
    return own.encode()
