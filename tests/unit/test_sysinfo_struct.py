"""struct sysinfo as the kernel fills it: the layout against the running kernel's own bytes,
the fixed-point loads, the rounding, the clamps and the 32-bit (compat) scaling."""

from __future__ import annotations

import ctypes
import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlays.loadavg import format_load
from procfs.runtime.seccomp import AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT
from procfs.runtime.sysinfo import (
    COMPAT,
    NATIVE,
    PAGE_SIZE,
    SYSINFO_CALLS,
    SysinfoValues,
    kernel_uptime,
    pack_compat,
    pack_native,
    sysinfo_loads,
)

libc = ctypes.CDLL(None, use_errno=True)
GIB = 1 << 30


def values(**kw: object) -> SysinfoValues:
    base: dict[str, object] = dict(uptime=10.0, avenrun=(0, 0, 0), totalram=256 << 20,
                                   freeram=100 << 20, sharedram=0, bufferram=0, totalswap=0,
                                   freeswap=0, procs=1)
    return SysinfoValues(**{**base, **kw})  # type: ignore[arg-type]


def kernel_bytes() -> bytes:
    buf = ctypes.create_string_buffer(NATIVE.size + 16)
    assert libc.sysinfo(buf) == 0
    return buf.raw


def test_the_kernels_struct_round_trips_through_pack_native() -> None:
    """Our packing of the kernel's own numbers gives the kernel's own bytes: every offset,
    the padding and the unused tail agree (on a 64-bit kernel mem_unit is 1)."""
    raw = kernel_bytes()
    fields = NATIVE.unpack_from(raw)
    uptime, l0, l1, l2, total, free, shared, buf, tswap, fswap, procs, _, _, _, unit = fields
    assert unit == 1
    assert raw[NATIVE.size:] == bytes(16)  # the kernel writes sizeof(struct sysinfo), no more
    v = SysinfoValues(uptime=float(uptime), avenrun=(l0 >> 5, l1 >> 5, l2 >> 5),
                      totalram=total, freeram=free, sharedram=shared, bufferram=buf,
                      totalswap=tswap, freeswap=fswap, procs=procs)
    assert pack_native(v) == raw[:NATIVE.size]


def test_totalram_is_memtotal() -> None:
    with open("/proc/meminfo") as f:
        memtotal_kib = int(f.readline().split()[1])
    assert NATIVE.unpack_from(kernel_bytes())[4] == memtotal_kib * 1024


def test_loads_are_proc_loadavgs_averages_with_16_fraction_bits() -> None:
    for _ in range(5):  # the averages change every 5 s: a reading may straddle one
        with open("/proc/loadavg") as f:
            before = f.read().split()[:3]
        loads = NATIVE.unpack_from(kernel_bytes())[1:4]
        with open("/proc/loadavg") as f:
            after = f.read().split()[:3]
        if before == after:
            assert [format_load(x >> 5) for x in loads] == after
            return
    pytest.fail("/proc/loadavg kept changing")


def test_fixed_point_loads() -> None:
    assert sysinfo_loads((2048, 1024, 1)) == (65536, 32768, 32)
    assert sysinfo_loads((3 * 2048 + 512, 0, -5)) == (3 * 65536 + 16384, 0, 0)
    huge = sysinfo_loads((1 << 70, 0, 0))[0]
    assert huge < 1 << 64 and huge == ((1 << 64) - 1) >> 5 << 5


@pytest.mark.parametrize(("seconds", "expected"), [
    (42.2, 43), (42.0, 42), (0.0, 0), (0.000001, 1), (-3.0, 0), (math.nan, 0),
    (math.inf, 2**63 - 1),
])
def test_uptime_rounds_up_as_do_sysinfo(seconds: float, expected: int) -> None:
    assert kernel_uptime(seconds) == expected


def test_native_fields_and_clamps() -> None:
    v = values(uptime=5.5, avenrun=(2048, 2048, 2048), totalram=8 * GIB, freeram=-1,
               sharedram=3, bufferram=4, totalswap=GIB, freeswap=GIB // 2, procs=70000)
    up, l0, _, _, total, free, shared, buf, tswap, fswap, procs, pad, high, fhigh, unit = \
        NATIVE.unpack(pack_native(v))
    assert (up, l0, total, free, shared, buf) == (6, 65536, 8 * GIB, 0, 3, 4)
    assert (tswap, fswap, procs, pad, high, fhigh, unit) == (GIB, GIB // 2, 65535, 0, 0, 0, 1)


def test_totals_beyond_64_bits_go_in_pages_as_do_sysinfo_would() -> None:
    v = values(totalram=1 << 63, freeram=1 << 62, totalswap=1 << 63, freeswap=4096)
    f = NATIVE.unpack(pack_native(v))
    assert f[14] == PAGE_SIZE
    assert (f[4], f[5], f[8], f[9]) == ((1 << 63) // PAGE_SIZE, (1 << 62) // PAGE_SIZE,
                                        (1 << 63) // PAGE_SIZE, 4096 // PAGE_SIZE)


def test_compat_struct_layout_and_small_values() -> None:
    assert NATIVE.size == 112 and COMPAT.size == 64
    f = COMPAT.unpack(pack_compat(values(totalram=256 << 20, freeram=100 << 20, procs=9)))
    assert f[0] == 10 and f[4:6] == (256 << 20, 100 << 20) and f[10] == 9 and f[-1] == 1


def test_compat_scales_by_page_size_beyond_32_bits() -> None:
    """compat_sys_sysinfo: mem_unit doubled up to PAGE_SIZE, every memory field shifted."""
    f = COMPAT.unpack(pack_compat(values(totalram=8 * GIB, freeram=GIB + 4095, totalswap=GIB)))
    bits = PAGE_SIZE.bit_length() - 1
    assert f[-1] == PAGE_SIZE
    assert f[4:10] == (8 * GIB >> bits, (GIB + 4095) >> bits, 0, 0, GIB >> bits, 0)


def test_compat_clamps_uptime_and_loads() -> None:
    f = COMPAT.unpack(pack_compat(values(uptime=1e12, avenrun=(1 << 40, 0, 0))))
    assert f[0] == 2**31 - 1 and f[1] == 2**32 - 1


def test_sysinfo_call_table() -> None:
    """x86_64 99 (and x32's 99 | 0x40000000) get the 64-bit struct, i386 116 the compat one."""
    assert SYSINFO_CALLS[AUDIT_ARCH_X86_64, 99].pack is pack_native
    assert SYSINFO_CALLS[AUDIT_ARCH_X86_64, 99 | X32_SYSCALL_BIT].pack is pack_native
    assert SYSINFO_CALLS[AUDIT_ARCH_I386, 116].pack is pack_compat
    assert (AUDIT_ARCH_X86_64, 116) not in SYSINFO_CALLS  # setgroups there


@given(st.floats(allow_nan=True), st.tuples(*[st.integers()] * 3),
       st.lists(st.integers(min_value=-(1 << 70), max_value=1 << 70), min_size=7, max_size=7))
def test_any_values_pack(uptime: float, avenrun: tuple[int, int, int], ints: list[int]) -> None:
    v = SysinfoValues(uptime, avenrun, *ints)
    assert len(pack_native(v)) == 112 and len(pack_compat(v)) == 64
    struct.unpack("=q3Q6QHH4xQQI4x", pack_native(v))

