"""A container's block I/O per device, from cgroup v2 `io.stat` or the v1 blkio files.

Devices are keyed by (major, minor). The readers never guess a device's name: views_io.py names
them from the host's /proc/diskstats (or /sys/dev/block). Counters are cumulative and, on both
versions, include the container's sub-cgroups (v2 `io.stat` is recursive; on v1 the
`*_recursive` files are read).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping

from overlays.diskstats import DiskCounters
from procfs.errors import CgroupGone
from procfs.sources.cgroups import CgroupDirs
from procfs.sources.text import parse_int, read_optional

Device = tuple[int, int]
# v1 blkio "recursive stat" file: per device, one count per operation.
RwStat = dict[Device, dict[str, int]]

NS_PER_MS = 1_000_000
# The I/O scheduler's v1 statistics: CFQ (before 5.0) names them blkio.io_*, BFQ blkio.bfq.io_*.
SCHED_PREFIXES = ("blkio.", "blkio.bfq.")


def parse_device(text: str) -> Device | None:
    major, sep, minor = text.partition(":")
    a, b = _count(major), _count(minor)
    if not sep or a is None or b is None:
        return None
    return a, b


def _count(text: str) -> int | None:
    """A counter: plain ASCII digits only (no sign, no 'max', no other scripts' digits)."""
    return parse_int(text) if text.isascii() and text.isdigit() else None


def parse_io_stat(text: str) -> dict[Device, DiskCounters]:
    """cgroup v2 `io.stat`: `MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N [...]`.

    Keys procfs does not use (iocost's `cost.*`, iolatency's `avg_lat`...) are skipped, as are
    lines without a device and values that are not numbers."""
    out: dict[Device, DiskCounters] = {}
    for line in text.splitlines():
        parts = line.split()
        dev = parse_device(parts[0]) if parts else None
        if dev is None:
            continue
        values: dict[str, int] = {}
        for part in parts[1:]:
            key, sep, value = part.partition("=")
            number = _count(value)
            if sep and number is not None:
                values[key] = number
        out[dev] = DiskCounters(
            reads=values.get("rios", 0),
            read_bytes=values.get("rbytes", 0),
            writes=values.get("wios", 0),
            write_bytes=values.get("wbytes", 0),
            discards=values.get("dios", 0),
            discard_bytes=values.get("dbytes", 0),
        )
    return out


def parse_rwstat(text: str | None) -> RwStat:
    """A v1 blkio stat file: `MAJ:MIN Read N` ... `MAJ:MIN Total N` lines and a final
    `Total N`. Lines that are not `device operation number` are skipped."""
    out: RwStat = {}
    for line in (text or "").splitlines():
        parts = line.split()
        number = _count(parts[2]) if len(parts) == 3 else None
        dev = parse_device(parts[0]) if number is not None else None
        if dev is not None and number is not None:
            out.setdefault(dev, {})[parts[1]] = number
    return out


def _op(stat: RwStat, dev: Device, op: str) -> int:
    return stat.get(dev, {}).get(op, 0)


class AbsentFiles:
    """The v1 blkio files this kernel lacks, remembered for `ttl` seconds.

    Every cgroup of a hierarchy has the same files (the root aside, which read_io never reads),
    so one failed open answers for all: CFQ's files are gone since 5.0 and BFQ's `io_merged`,
    `io_service_time`... need its debug option: probing them was 16 of 20 opens a rendering.
    A scheduler module loaded later is noticed within `ttl`. A failure counts only while the
    cgroup is still there (a container that just ended says nothing about the kernel)."""

    def __init__(self, ttl: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._until: dict[str, float] = {}

    def read(self, directory: str, name: str) -> str | None:
        until = self._until.get(name)
        if until is not None and self.clock() < until:
            return None
        text = read_optional(os.path.join(directory, name))
        if text is None and os.path.isdir(directory):
            self._until[name] = self.clock() + self.ttl
        return text


def _rwstat_file(d: str, name: str, absent: AbsentFiles | None) -> RwStat:
    """`name`_recursive, else `name` (kernels or controllers without the recursive file)."""
    def read(name: str) -> str | None:
        return absent.read(d, name) if absent is not None else read_optional(os.path.join(d, name))

    text = read(name + "_recursive")
    if text is None:
        text = read(name)
    return parse_rwstat(text)


def _counts(ios: RwStat, nbytes: RwStat, dev: Device) -> dict[str, int]:
    return {
        "reads": _op(ios, dev, "Read"), "read_bytes": _op(nbytes, dev, "Read"),
        "writes": _op(ios, dev, "Write"), "write_bytes": _op(nbytes, dev, "Write"),
        "discards": _op(ios, dev, "Discard"), "discard_bytes": _op(nbytes, dev, "Discard"),
    }


def _sched_counters(files: Mapping[str, RwStat], prefix: str, dev: Device) -> DiskCounters:
    """One device's counters from the I/O scheduler's files (CFQ `blkio.`, BFQ `blkio.bfq.`)."""
    empty: RwStat = {}

    def op(name: str, operation: str) -> int:
        return _op(files.get(prefix + name, empty), dev, operation)

    def ms(name: str, operation: str) -> int:  # the time files count nanoseconds
        return op(name, operation) // NS_PER_MS

    svc = ms("io_service_time", "Read") + ms("io_service_time", "Write")
    wait = ms("io_wait_time", "Read") + ms("io_wait_time", "Write")
    return DiskCounters(
        **_counts(files.get(prefix + "io_serviced", empty),
                  files.get(prefix + "io_service_bytes", empty), dev),
        read_merges=op("io_merged", "Read"),
        write_merges=op("io_merged", "Write"),
        # As LXCFS: time per direction is service + queue time, "doing I/O" the service time.
        read_ms=ms("io_service_time", "Read") + ms("io_wait_time", "Read"),
        write_ms=ms("io_service_time", "Write") + ms("io_wait_time", "Write"),
        io_ms=svc,
        weighted_ms=svc + wait,
    )


def combine_v1(files: Mapping[str, RwStat]) -> dict[Device, DiskCounters]:
    """Per-device counters from the v1 files (keyed by file name without `_recursive`).

    I/Os and bytes come from the I/O scheduler's files where they count the device (requests,
    as the kernel's own diskstats counts them), else from the throttle files (bios; on recent
    kernels these count only while the cgroup has a throttle rule for the device). Merges and
    times exist only in the scheduler's files (CFQ, or BFQ with its debug statistics)."""
    empty: RwStat = {}
    out: dict[Device, DiskCounters] = {}
    for dev in sorted({dev for stat in files.values() for dev in stat}):
        sched = next((p for p in SCHED_PREFIXES
                      if any(files.get(p + "io_service_bytes", empty).get(dev, {}).values())
                      or any(files.get(p + "io_serviced", empty).get(dev, {}).values())), None)
        if sched is not None:
            counters = _sched_counters(files, sched, dev)
        else:
            counters = DiskCounters(**_counts(files.get("blkio.throttle.io_serviced", empty),
                                              files.get("blkio.throttle.io_service_bytes", empty),
                                              dev))
        if not counters.is_zero():
            out[dev] = counters
    return out


V1_FILES = (
    "blkio.throttle.io_serviced", "blkio.throttle.io_service_bytes",
    *(p + n for p in SCHED_PREFIXES for n in ("io_serviced", "io_service_bytes", "io_merged",
                                               "io_service_time", "io_wait_time")),
)


def read_io(dirs: CgroupDirs, absent: AbsentFiles | None = None
            ) -> dict[Device, DiskCounters] | None:
    """The container's I/O per device it touched; None when it has no cgroup of its own for
    block I/O (no io/blkio controller, or the root cgroup: its counters are the host's).
    `absent` spares the v1 files this kernel lacks."""
    where = dirs.of("blkio")
    if where is None:
        return None
    directory, version, top = where
    if os.path.normpath(directory) == os.path.normpath(top):
        return None
    if not os.path.isdir(directory):
        raise CgroupGone(directory)
    if version == 2:
        text = read_optional(os.path.join(directory, "io.stat"))
        if text is None:  # the io controller is not enabled for this cgroup
            return None
        return {dev: c for dev, c in parse_io_stat(text).items() if not c.is_zero()}
    return combine_v1({name: _rwstat_file(directory, name, absent) for name in V1_FILES})
