"""/proc/meminfo for a container: its memory limit, usage and statistics over the host's file.

Arithmetic as LXCFS, with Slab on v1 and Dirty/Writeback/AnonHugePages on v2 filled in.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from functools import cached_property

KIB = 1024


@dataclass(frozen=True)
class MeminfoLine:
    name: str
    kib: int
    unit: bool = True  # prints " kB" (HugePages_* counts do not)


@dataclass(frozen=True)
class HostMeminfo:
    lines: tuple[MeminfoLine, ...]
    # `template`'s answers, per set of names: one host reading serves every container that
    # renders within 10 ms (procfs.files.host), and they all ask with the same set or two.
    _templates: dict[frozenset[str], tuple[str, tuple[str, ...]]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    @cached_property
    def rendered_lines(self) -> tuple[str, ...]:
        """Each line as the host shows it (a container keeps most of them)."""
        return tuple(_line(line, line.kib) for line in self.lines)

    @cached_property
    def rendered(self) -> bytes:
        return ("\n".join(self.rendered_lines) + "\n").encode()

    def template(self, own: Collection[str]) -> tuple[str, tuple[str, ...]]:
        """The file as one %-format, with a number to fill in on each line named in `own`, and
        those names in order: a rendering is then one format call, not one per line."""
        key = frozenset(own)
        found = self._templates.get(key)
        if found is None:
            parts: list[str] = []
            names: list[str] = []
            for line, text in zip(self.lines, self.rendered_lines, strict=True):
                if line.name in key:
                    parts.append(_label(line).replace("%", "%%") + "%8d" + _unit(line))
                    names.append(line.name)
                else:
                    parts.append(text.replace("%", "%%"))
            found = self._templates[key] = ("\n".join(parts) + "\n", tuple(names))
        return found

    def get(self, name: str) -> int:
        for line in self.lines:
            if line.name == name:
                return line.kib
        return 0


@dataclass(frozen=True)
class MemoryStats:
    """A container's memory, in bytes. Statistic names are cgroup v2's (`memory.stat`); the v1
    reader translates its `total_*` names to these."""

    limit: int | None  # smallest limit on the path to the root; None = unlimited
    usage: int
    swap_limit: int | None  # None = unlimited or not accounted: the host's swap shows
    swap_usage: int
    stat: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class MeminfoSnapshot:
    host: HostMeminfo
    memory: MemoryStats | None  # None: the caller is the host, print the host's file


def parse_host(text: str) -> HostMeminfo:
    lines: list[MeminfoLine] = []
    for raw in text.splitlines():
        name, sep, rest = raw.partition(":")
        parts = rest.split()
        if not sep or not parts:
            continue
        try:
            value = max(int(parts[0]), 0)
        except ValueError:
            continue
        lines.append(MeminfoLine(name.strip(), value, unit=len(parts) > 1))
    return HostMeminfo(tuple(lines))


def container_values(host: HostMeminfo, mem: MemoryStats) -> dict[str, int]:
    """The lines a container gets its own value for, in kB. Every value is clamped to
    [0, MemTotal] (or SwapTotal), so no field ever goes negative or above the total."""
    s = mem.stat
    host_total = host.get("MemTotal")
    total = host_total if mem.limit is None else min(host_total, max(mem.limit, 0) // KIB)

    def kb(key: str) -> int:
        return min(max(s.get(key, 0), 0) // KIB, total)

    free = min(max(total - mem.usage // KIB, 0), total)
    slab_reclaimable = kb("slab_reclaimable")
    slab_unreclaimable = kb("slab_unreclaimable")
    slab = kb("slab") if "slab" in s else min(slab_reclaimable + slab_unreclaimable, total)
    # What could be handed out without swapping: free memory, the page cache that can be
    # dropped and the reclaimable slab; never more than the total (free(1) relies on that).
    available = min(free + kb("active_file") + kb("inactive_file") + slab_reclaimable, total)
    values = {
        "MemTotal": total,
        "MemFree": free,
        "MemAvailable": available,
        "Buffers": 0,  # no per-cgroup source; the kernel counts block-device pages as file cache
        "Cached": kb("file"),
        "SwapCached": kb("swapcached"),
        "Active": min(kb("active_anon") + kb("active_file"), total),
        "Inactive": min(kb("inactive_anon") + kb("inactive_file"), total),
        "Active(anon)": kb("active_anon"),
        "Inactive(anon)": kb("inactive_anon"),
        "Active(file)": kb("active_file"),
        "Inactive(file)": kb("inactive_file"),
        "Unevictable": kb("unevictable"),
        "Dirty": kb("file_dirty"),
        "Writeback": kb("file_writeback"),
        "AnonPages": kb("anon"),
        "Mapped": kb("file_mapped"),
        "Shmem": kb("shmem"),
        "Slab": slab,
        "SReclaimable": slab_reclaimable,
        "SUnreclaim": slab_unreclaimable,
        "AnonHugePages": kb("anon_thp"),
    }
    optional = {
        "KernelStack": "kernel_stack",
        "PageTables": "pagetables",
        "SecPageTables": "sec_pagetables",
        "Percpu": "percpu",
        "ShmemHugePages": "shmem_thp",
        "FileHugePages": "file_thp",
        "Zswap": "zswap",
        "Zswapped": "zswapped",
    }
    values.update({line: kb(key) for line, key in optional.items() if key in s})

    host_swap = host.get("SwapTotal")
    swap_total = host_swap
    if mem.swap_limit is not None:
        swap_total = min(host_swap, max(mem.swap_limit, 0) // KIB)
    values["SwapTotal"] = swap_total
    if mem.swap_limit is None and not mem.swap_usage:
        values["SwapFree"] = min(host.get("SwapFree"), swap_total)
    else:
        values["SwapFree"] = min(max(swap_total - mem.swap_usage // KIB, 0), swap_total)
    return values


# The kernel pads the label (with its colon) to 16 columns and the number to 8.
def _label(line: MeminfoLine) -> str:
    return f"{line.name + ':':<16}"


def _unit(line: MeminfoLine) -> str:
    return " kB" if line.unit else ""


def _line(line: MeminfoLine, value: int) -> str:
    return f"{_label(line)}{value:>8}{_unit(line)}"


def render(snap: MeminfoSnapshot) -> bytes:
    if snap.memory is None:
        return snap.host.rendered
    own = container_values(snap.host, snap.memory)
    template, names = snap.host.template(own)
    return (template % tuple(own[name] for name in names)).encode()
