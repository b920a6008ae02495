"""Reading kernel text files (procfs, sysfs, cgroupfs) tolerantly.

A vanished file becomes one specific exception chosen by the caller (a process that exited is
`ProcessGone`, a removed cgroup `CgroupGone`); parsers accept missing fields and garbage.
"""

from __future__ import annotations

import errno
import logging
import os

from procfs.errors import NotFound, ProcfsError

log = logging.getLogger(__name__)

_GONE = (errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.ENOTDIR)

# Anything above this is "no limit": cgroup v1 prints PAGE_COUNTER_MAX * PAGE_SIZE (~2**63).
UNLIMITED = 1 << 62


def read_bytes(path: str, gone: type[ProcfsError] = NotFound) -> bytes:
    # os.open/os.read, not open(): no file object per read (several per rendering).
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in _GONE:
            raise gone(path) from e
        raise
    try:
        first = os.read(fd, 65536)
        if not first:
            return first
        chunks = [first]
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as e:
        if e.errno in _GONE:
            raise gone(path) from e
        raise
    finally:
        os.close(fd)


def read_text(path: str, gone: type[ProcfsError] = NotFound) -> str:
    return read_bytes(path, gone).decode("utf-8", "replace")


def read_optional(path: str) -> str | None:
    """The file's text, or None when it does not exist (a controller or kernel feature absent)."""
    try:
        return read_text(path)
    except ProcfsError:
        return None
    except OSError as e:
        log.debug("cannot read %s: %s", path, e)
        return None


def _first_int(text: str | None) -> int | None:
    words = text.split(maxsplit=1) if text else []
    try:
        return int(words[0]) if words else None
    except ValueError:
        return None


def parse_int(text: str | None) -> int | None:
    """An integer from a one-value file; 'max' and garbage give None. Negative values clamp to 0."""
    value = _first_int(text)
    return None if value is None else max(value, 0)


def parse_ints(text: str | None) -> tuple[int, ...]:
    """Whitespace-separated counters (cpuacct.usage_percpu, cgroup.procs); garbage and negative
    values read as 0."""
    out = []
    for word in (text or "").split():
        try:
            out.append(max(int(word), 0))
        except ValueError:
            out.append(0)
    return tuple(out)


def parse_limit(text: str | None) -> int | None:
    """A cgroup limit: None for 'max', garbage, -1 or v1's "unlimited" (PAGE_COUNTER_MAX)."""
    value = _first_int(text)
    if value is None or value < 0 or value >= UNLIMITED:
        return None
    return value


def parse_flat_keyed(text: str) -> dict[str, int]:
    """`key value` lines (memory.stat, cpu.stat). Garbled lines are skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        try:
            out[parts[0]] = max(int(parts[1]), 0)
        except ValueError:
            continue
    return out


def parse_cpulist(text: str | None) -> tuple[int, ...]:
    """`0-3,8,10-11` → (0, 1, 2, 3, 8, 10, 11). Garbage ranges are skipped; result sorted."""
    if not text:
        return ()
    cpus: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if hi else a
        except ValueError:
            continue
        if a < 0 or b < a or b - a > 65536:
            continue
        cpus.update(range(a, b + 1))
    return tuple(sorted(cpus))


def ns_inode(link_target: str) -> int | None:
    """`pid:[4026531836]` → 4026531836."""
    _, _, rest = link_target.partition("[")
    try:
        return int(rest.rstrip("]"))
    except ValueError:
        return None


def readlink_ns(path: str, gone: type[ProcfsError] = NotFound) -> int:
    try:
        target = os.readlink(path)
    except OSError as e:
        if e.errno in _GONE:
            raise gone(path) from e
        raise
    inode = ns_inode(target)
    if inode is None:
        raise gone(f"{path}: unexpected link {target!r}")
    return inode
