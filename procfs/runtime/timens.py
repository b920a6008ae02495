"""Time namespaces for the wrapper (time_namespaces(7)).

`unshare(CLONE_NEWTIME)` changes only the namespace of the caller's future children; offsets are
written to /proc/self/timens_offsets before any process is in it, and the kernel refuses a clock
that would be negative then. The wrapper then executes the runtime, and execve moves the caller
itself into the new namespace (`exec_task_namespaces`, Linux 5.16+), so the runtime and every
process it starts (the container's init) are in it.

That has one consequence the rest of the wrapper deals with: the kernel shows a process's start
time (field 22 of /proc/PID/stat) in the reader's time namespace, and runc and crun record their
init's start time at `create` to recognise it later (pid reuse). A runtime started outside the
namespace reads another start time and calls the container stopped; so every later command on
the container joins its namespace first (`join_checked`).

`setns` into a time namespace needs a single-threaded caller: the wrapper starts no thread.
"""

from __future__ import annotations

import ctypes
import os
import time

CLONE_NEWTIME = 0x80
CLOCK_MONOTONIC = 1  # clock ids as timens_offsets takes them (names only since Linux 5.7)
CLOCK_BOOTTIME = 7
NS = 1_000_000_000

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _offset(ns: int) -> str:
    """A negative offset of `ns` nanoseconds as `SECS NSECS` with 0 <= NSECS < 1e9."""
    secs, nsecs = divmod(-ns, NS)
    return f"{secs} {nsecs}"


def offsets_from_zero(monotonic_ns: int, boottime_ns: int) -> str:
    """timens_offsets lines that put both clocks at 0 at the moment they were read, give or take
    a clock tick: offsets are whole ticks, so that a start time the kernel shows in the
    namespace (in ticks) is the host's plus a whole number of ticks, which procfs takes off
    again exactly (procfs.sources.identity)."""
    tick = NS // max(os.sysconf("SC_CLK_TCK"), 1)
    return (f"{CLOCK_MONOTONIC} {_offset(monotonic_ns - monotonic_ns % tick)}\n"
            f"{CLOCK_BOOTTIME} {_offset(boottime_ns - boottime_ns % tick)}\n")


def parse_offsets(text: str) -> tuple[int, int]:
    """(monotonic, boottime) offsets in ns from timens_offsets (clock names or ids)."""
    found = {"monotonic": 0, "boottime": 0}
    names = {str(CLOCK_MONOTONIC): "monotonic", str(CLOCK_BOOTTIME): "boottime"}
    for line in text.splitlines():
        words = line.split()
        if len(words) == 3:
            found[names.get(words[0], words[0])] = int(words[1]) * NS + int(words[2])
    return found["monotonic"], found["boottime"]


def new_for_children() -> None:
    """Make our children's (and, after execve, our own) time namespace a new one whose
    CLOCK_MONOTONIC and CLOCK_BOOTTIME start at 0 now. Offsets are from the host's clocks,
    which are ours minus our own namespace's offsets (when the wrapper itself runs in one).
    Clocks are read before the kernel checks the offsets, so the new clocks are >= 0 as it
    demands."""
    with open("/proc/self/timens_offsets") as f:  # before unshare: our own namespace's
        mono_offset, boot_offset = parse_offsets(f.read())
    _check(_libc.unshare(ctypes.c_int(CLONE_NEWTIME)), "unshare(CLONE_NEWTIME)")
    mono = time.clock_gettime_ns(time.CLOCK_MONOTONIC) - mono_offset
    boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - boot_offset
    with open("/proc/self/timens_offsets", "w") as f:
        f.write(offsets_from_zero(mono, boot))


def setns(fd: int) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(CLONE_NEWTIME)), "setns(CLONE_NEWTIME)")


def join(path: str) -> None:
    """Enter the time namespace at `path` (/proc/PID/ns/time), we and our children."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd)
    finally:
        os.close(fd)


def start_ticks(pid: int) -> int:
    """Field 22 of /proc/PID/stat: the start time as our time namespace shows it."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return int(data[data.rindex(b")") + 2:].split()[19])


def join_checked(pid: int, recorded_start: int) -> bool:
    """Enter the time namespace of `pid` if, seen from inside it, `pid` started at
    `recorded_start` (what the runtime recorded for its init at create, in the namespace it
    ran in): then it is that init, and the runtime will recognise it. Else stay, and say so."""
    mine = os.open("/proc/self/ns/time", os.O_RDONLY | os.O_CLOEXEC)
    try:
        theirs = os.open(f"/proc/{pid}/ns/time", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if os.fstat(theirs).st_ino == os.fstat(mine).st_ino:
                return start_ticks(pid) == recorded_start
            setns(theirs)
            try:
                if start_ticks(pid) == recorded_start:
                    return True
            except OSError:
                pass
            setns(mine)
            return False
        finally:
            os.close(theirs)
    finally:
        os.close(mine)
