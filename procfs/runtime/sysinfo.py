"""sysinfo(2) answered for a container: `struct sysinfo` and the answer to one notification.

The server supplies the numbers through one callback, `values(tid) -> SysinfoValues | None`,
called with the calling thread's id as the server sees it (the notification's pid, which is in
the receiver's pid namespace; the server's own for `serve_sysinfo`). None lets the kernel answer
(the host's numbers), as does anything this module does not expect: an architecture or syscall it
does not know, an exception in the callback, a write that fails for another reason than a bad
pointer. A bad pointer fails with EFAULT, as the kernel's own sysinfo would.

The struct is filled as the kernel's `do_sysinfo` fills it: uptime rounded up to whole seconds,
loads = the fixed-point averages shifted from 11 to 16 fraction bits, memory in bytes with
mem_unit = 1 (in pages only if the totals do not fit 64 bits), totalhigh = freehigh = 0, padding
zero. 32-bit callers (i386, arm) get `struct compat_sysinfo`, scaled as `compat_sys_sysinfo`
scales it when the totals do not fit 32 bits. Values out of a field's range are clamped where
the kernel would truncate them (procs is a u16).
"""

from __future__ import annotations

import enum
import errno
import logging
import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from procfs.runtime.remote_memory import RemoteWriter
from procfs.runtime.seccomp import (
    AUDIT_ARCH_AARCH64,
    AUDIT_ARCH_ARM,
    AUDIT_ARCH_I386,
    AUDIT_ARCH_X86_64,
    X32_SYSCALL_BIT,
    Listener,
    Notification,
    Response,
)

log = logging.getLogger(__name__)

FSHIFT = 11  # the kernel's avenrun (and /proc/loadavg's) fraction bits
SI_LOAD_SHIFT = 16  # struct sysinfo's loads
U16, U32, U64 = (1 << 16) - 1, (1 << 32) - 1, (1 << 64) - 1
S32_MAX, S64_MAX = (1 << 31) - 1, (1 << 63) - 1
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class SysinfoValues:
    """What one container's sysinfo(2) says."""

    uptime: float  # seconds on the container's boot clock (its /proc/uptime's first number)
    avenrun: tuple[int, int, int]  # 1/5/15-min load, fixed point, 1 << 11 == 1.0 (as /proc/loadavg)
    totalram: int  # bytes (MemTotal)
    freeram: int  # bytes (MemFree)
    sharedram: int  # bytes (Shmem)
    bufferram: int  # bytes (Buffers)
    totalswap: int  # bytes (SwapTotal)
    freeswap: int  # bytes (SwapFree)
    procs: int  # threads in the container (the kernel's nr_threads)


ValuesFn = Callable[[int], SysinfoValues | None]

NATIVE = struct.Struct("=q3Q6QHH4xQQI4x")  # struct sysinfo, 64-bit: 112 bytes
COMPAT = struct.Struct("=i3I6IHHIII8x")  # struct compat_sysinfo: 64 bytes


def _clamp(v: int, top: int) -> int:
    return top if v > top else v if v > 0 else 0


def sysinfo_loads(avenrun: tuple[int, int, int]) -> tuple[int, int, int]:
    shift = SI_LOAD_SHIFT - FSHIFT
    top = U64 >> shift
    a, b, c = avenrun
    return _clamp(a, top) << shift, _clamp(b, top) << shift, _clamp(c, top) << shift


def kernel_uptime(seconds: float) -> int:
    """Whole seconds, rounded up as do_sysinfo rounds any nanoseconds up."""
    if not seconds > 0:  # NaN too
        return 0
    return S64_MAX if seconds >= S64_MAX else math.ceil(seconds)


def _memory(v: SysinfoValues) -> tuple[list[int], int]:
    """The six memory fields and mem_unit, as do_sysinfo leaves them on a 64-bit kernel."""
    mem = [_clamp(v.totalram, U64), _clamp(v.freeram, U64), _clamp(v.sharedram, U64),
           _clamp(v.bufferram, U64), _clamp(v.totalswap, U64), _clamp(v.freeswap, U64)]
    if mem[0] + mem[4] <= U64:
        return mem, 1
    return [x // PAGE_SIZE for x in mem], PAGE_SIZE


def pack_native(v: SysinfoValues) -> bytes:
    mem, unit = _memory(v)
    return NATIVE.pack(kernel_uptime(v.uptime), *sysinfo_loads(v.avenrun), *mem,
                       _clamp(v.procs, U16), 0, 0, 0, unit)


def pack_compat(v: SysinfoValues) -> bytes:
    mem, unit = _memory(v)
    if mem[0] > U32 or mem[4] > U32:
        bits = 0
        while unit < PAGE_SIZE:
            unit <<= 1
            bits += 1
        mem = [x >> bits for x in mem]
    loads = sysinfo_loads(v.avenrun)
    return COMPAT.pack(min(kernel_uptime(v.uptime), S32_MAX),
                       *(_clamp(x, U32) for x in loads), *(_clamp(x, U32) for x in mem),
                       _clamp(v.procs, U16), 0, 0, 0, unit)


@dataclass(frozen=True)
class Abi:
    pack: Callable[[SysinfoValues], bytes]
    pointer_mask: int


_NATIVE_ABI = Abi(pack_native, U64)
_COMPAT_ABI = Abi(pack_compat, U32)

# (seccomp_data.arch, seccomp_data.nr) of sysinfo: arch/*/entry/syscalls tables
SYSINFO_CALLS: dict[tuple[int, int], Abi] = {
    (AUDIT_ARCH_X86_64, 99): _NATIVE_ABI,
    (AUDIT_ARCH_X86_64, 99 | X32_SYSCALL_BIT): _NATIVE_ABI,  # x32: the 64-bit struct
    (AUDIT_ARCH_AARCH64, 179): _NATIVE_ABI,
    (AUDIT_ARCH_I386, 116): _COMPAT_ABI,
    (AUDIT_ARCH_ARM, 116): _COMPAT_ABI,
}


class Outcome(enum.Enum):
    ANSWERED = "answered"  # the caller got our numbers
    EFAULT = "efault"  # the caller's pointer was bad: it got EFAULT
    CONTINUED = "continued"  # the kernel answered
    GONE = "gone"  # the caller stopped waiting (killed) before the answer


class SysinfoAnswerer:
    """Answers notifications: sysinfo with `values`, everything else with CONTINUE."""

    def __init__(self, values: ValuesFn, writer: RemoteWriter | None = None) -> None:
        self.values = values
        self.writer = writer or RemoteWriter(NATIVE.size)
        self.errors = 0  # callback exceptions (logged: the first, then every 1000th)
        # The last struct packed: a server that hands out one cached SysinfoValues per
        # container and interval gets it packed once.
        self._last: tuple[SysinfoValues | None, Abi | None, bytes] = (None, None, b"")

    def answer(self, listener: Listener, n: Notification) -> Outcome:
        """Answer `n` (received from `listener`); OSError only from the listener's ioctls."""
        abi = SYSINFO_CALLS.get((n.arch, n.nr))
        if abi is not None and not listener.id_valid(n.id):
            # Checked before anything is asked about or written to `n.pid`: a caller killed
            # after its notification was received may have left its thread id to another
            # process (the seccomp_unotify(2) rule). Between this check and the write, reuse
            # would need the whole pid space to wrap.
            return Outcome.GONE
        v = self._values(n.pid) if abi is not None and n.pid > 0 else None
        if abi is None or v is None:
            return self._continue(listener, n)
        last_v, last_abi, data = self._last
        if v is not last_v or abi is not last_abi:
            data = abi.pack(v)
            self._last = (v, abi, data)
        err = self.writer.write(n.pid, n.arg0 & abi.pointer_mask, data)
        if err not in (0, errno.EFAULT):
            return self._continue(listener, n)
        # Valid still: the caller was alive all along, so the answer goes to it.
        if not listener.id_valid(n.id):
            return Outcome.GONE
        if err:
            return Outcome.EFAULT if listener.send(Response.failure(n.id, err)) else Outcome.GONE
        return Outcome.ANSWERED if listener.send(Response.success(n.id)) else Outcome.GONE

    def _values(self, tid: int) -> SysinfoValues | None:
        try:
            return self.values(tid)
        except Exception:
            if self.errors % 1000 == 0:
                log.exception("sysinfo values for %d (error %d; the kernel answers)", tid,
                              self.errors + 1)
            self.errors += 1
            return None

    @staticmethod
    def _continue(listener: Listener, n: Notification) -> Outcome:
        return Outcome.CONTINUED if listener.send(Response.continue_(n.id)) else Outcome.GONE
