"""/proc/diskstats for a container: its own I/O per device, in the kernel's format.

The kernel (block/genhd.c `diskstats_show`) prints, per device:

    %4d %7d %s  then its counters, space-separated

and the number of counters grew with the kernel: 11 (before 4.18), 15 with the discard
columns (4.18), 17 with the flush columns (5.5). A container's file has exactly as many columns
as the host's, so a parser sees the shape it knows from the running kernel.

The counters, by their 1-based field number after the name (Documentation/admin-guide/iostats):
 1 reads completed      2 reads merged      3 sectors read      4 ms reading
 5 writes completed     6 writes merged     7 sectors written   8 ms writing
 9 I/Os in progress    10 ms doing I/O     11 weighted ms doing I/O
12 discards completed  13 discards merged  14 sectors discarded 15 ms discarding
16 flushes completed   17 ms flushing

What a cgroup offers (the readers in procfs/cgroup_io.py fill `DiskCounters` from it):
- v2 `io.stat`: bytes and I/Os for read, write and discard (fields 1, 3, 5, 7, 12, 14).
- v1 `blkio.throttle.*` or the CFQ/BFQ `blkio.io_*` / `blkio.bfq.io_*` files: bytes and I/Os
  for read, write and discard (the same fields), and, from the scheduler's files when it keeps
  them, merges (2, 6) and service + wait time (4, 8, 10, 11), as LXCFS derives them.
Everything else has no per-container source and is printed as 0: I/Os in progress (9), discard
merges and time (13, 15), flushes (16, 17), and the times on cgroup v2.
"""

from __future__ import annotations

from dataclasses import dataclass

SECTOR = 512
# Columns after the name printed by each generation of the kernel.
KNOWN_COLUMNS = (11, 15, 17)
MAX_COLUMNS = 17


@dataclass(frozen=True)
class DiskCounters:
    """One device's counters for one container. Bytes are turned into sectors when printed."""

    reads: int = 0
    read_merges: int = 0
    read_bytes: int = 0
    read_ms: int = 0
    writes: int = 0
    write_merges: int = 0
    write_bytes: int = 0
    write_ms: int = 0
    io_ms: int = 0
    weighted_ms: int = 0
    discards: int = 0
    discard_bytes: int = 0

    def is_zero(self) -> bool:
        return not any(getattr(self, f) for f in self.__dataclass_fields__)

    def fields(self) -> tuple[int, ...]:
        """The 17 kernel fields, in order; those with no source are 0 (see the module doc)."""
        return (
            self.reads, self.read_merges, self.read_bytes // SECTOR, self.read_ms,
            self.writes, self.write_merges, self.write_bytes // SECTOR, self.write_ms,
            0,  # I/Os in progress: no per-cgroup counter
            self.io_ms, self.weighted_ms,
            self.discards,
            0,  # discards merged: no per-cgroup counter
            self.discard_bytes // SECTOR,
            0,  # ms discarding: no per-cgroup counter
            0, 0,  # flushes and ms flushing: no per-cgroup counter
        )


@dataclass(frozen=True)
class Disk:
    major: int
    minor: int
    name: str
    counters: DiskCounters


@dataclass(frozen=True)
class DiskstatsSnapshot:
    disks: tuple[Disk, ...]  # in the order to print (the host's order)
    columns: int = MAX_COLUMNS  # counters per line, as the host's kernel prints them


@dataclass(frozen=True)
class HostDisk:
    major: int
    minor: int
    name: str


def parse_host(text: str) -> tuple[tuple[HostDisk, ...], int]:
    """The host's devices in the kernel's order, and how many counters its lines carry
    (the most common count among well-formed lines; 17 when there is none)."""
    disks: list[HostDisk] = []
    counts: dict[int, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        try:
            major, minor = int(parts[0]), int(parts[1])
        except ValueError:
            continue
        if major < 0 or minor < 0:
            continue
        disks.append(HostDisk(major, minor, parts[2]))
        n = len(parts) - 3
        counts[n] = counts.get(n, 0) + 1
    columns = max(counts, key=lambda n: counts[n]) if counts else MAX_COLUMNS
    return tuple(disks), columns


def _clamp_columns(n: int) -> int:
    if n in KNOWN_COLUMNS:
        return n
    # An unknown kernel: print the fields we know, at least the classic 11.
    return min(max(n, KNOWN_COLUMNS[0]), MAX_COLUMNS)


def render(snap: DiskstatsSnapshot) -> bytes:
    columns = _clamp_columns(snap.columns)
    out: list[str] = []
    for d in snap.disks:
        values = " ".join(str(max(v, 0)) for v in d.counters.fields()[:columns])
        out.append(f"{d.major:4d} {d.minor:7d} {d.name} {values}\n")
    return "".join(out).encode()
