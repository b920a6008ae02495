"""cgroup v1 and v2 memory readers on fixture trees, and the meminfo renderer."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlays import meminfo
from overlays.meminfo import MeminfoSnapshot, MemoryStats, parse_host
from procfs.errors import CgroupGone
from procfs.sources.cgroups import CgroupDirs, CgroupLayout, parse_proc_cgroup
from procfs.sources.memory import read_memory
from tests.trees import MEMINFO, v1_cgroup, v2_cgroup

MIB = 1 << 20
V2_STAT = """anon 10485760
file 20971520
kernel 3145728
kernel_stack 65536
pagetables 131072
shmem 1048576
file_mapped 2097152
file_dirty 4096
file_writeback 8192
anon_thp 2097152
inactive_anon 4194304
active_anon 6291456
inactive_file 8388608
active_file 12582912
unevictable 0
slab_reclaimable 1048576
slab_unreclaimable 524288
slab 1572864
"""


def v2_dirs(root: Path, path: str = "/c") -> CgroupDirs:
    return CgroupDirs(CgroupLayout.from_directory(str(root)), parse_proc_cgroup(f"0::{path}\n"))


def test_v2_smallest_limit_on_the_path(tmp_path: Path) -> None:
    v2_cgroup(tmp_path, "/pod", {"memory.max": f"{256 * MIB}\n"})
    v2_cgroup(tmp_path, "/pod/c", {"memory.max": "max\n", "memory.current": f"{40 * MIB}\n",
                                   "memory.stat": V2_STAT, "memory.swap.max": f"{64 * MIB}\n",
                                   "memory.swap.current": f"{MIB}\n"})
    mem = read_memory(v2_dirs(tmp_path, "/pod/c"))
    assert mem is not None
    assert mem.limit == 256 * MIB
    assert mem.usage == 40 * MIB
    assert (mem.swap_limit, mem.swap_usage) == (64 * MIB, MIB)
    assert mem.stat["file_dirty"] == 4096


def test_v2_seven_levels_take_the_minimum(tmp_path: Path) -> None:
    path = ""
    limits = [900, 700, 800, 300, 500, 600, 400]
    for i, lim in enumerate(limits):
        path += f"/l{i}"
        v2_cgroup(tmp_path, path, {"memory.max": f"{lim * MIB}\n", "memory.stat": V2_STAT,
                                   "memory.current": "0\n"})
    mem = read_memory(v2_dirs(tmp_path, path))
    assert mem is not None and mem.limit == 300 * MIB


def test_v2_unlimited_and_no_swap_files(tmp_path: Path) -> None:
    v2_cgroup(tmp_path, "/c", {"memory.max": "max\n", "memory.current": "1000\n",
                               "memory.stat": "anon 5\ngarbled line here\nfile x\n"})
    mem = read_memory(v2_dirs(tmp_path))
    assert mem is not None
    assert mem.limit is None and mem.swap_limit is None
    assert mem.stat == {"anon": 5}


def test_v2_vanished_cgroup(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("memory\n")
    with pytest.raises(CgroupGone):
        read_memory(v2_dirs(tmp_path, "/gone"))


V1_STAT = """cache 100
rss 200
total_cache 20971520
total_rss 10485760
total_rss_huge 2097152
total_shmem 1048576
total_mapped_file 2097152
total_dirty 4096
total_writeback 8192
total_swapcached 0
total_active_anon 6291456
total_inactive_anon 4194304
total_active_file 12582912
total_inactive_file 8388608
total_unevictable 0
"""


def v1_dirs(root: Path, path: str = "/c") -> CgroupDirs:
    return CgroupDirs(CgroupLayout.from_directory(str(root)),
                      parse_proc_cgroup(f"4:memory:{path}\n"))


def test_v1_translates_names_and_reads_memsw(tmp_path: Path) -> None:
    v1_cgroup(tmp_path, "memory", "/", {"memory.limit_in_bytes": "9223372036854771712\n"})
    v1_cgroup(tmp_path, "memory", "/c", {
        "memory.limit_in_bytes": f"{256 * MIB}\n", "memory.usage_in_bytes": f"{40 * MIB}\n",
        "memory.stat": V1_STAT, "memory.memsw.limit_in_bytes": f"{320 * MIB}\n",
        "memory.memsw.usage_in_bytes": f"{42 * MIB}\n",
        "memory.kmem.usage_in_bytes": f"{3 * MIB}\n",
    })
    mem = read_memory(v1_dirs(tmp_path))
    assert mem is not None
    assert mem.limit == 256 * MIB
    assert mem.swap_limit == 64 * MIB and mem.swap_usage == 2 * MIB
    assert mem.stat["file"] == 20971520 and mem.stat["anon_thp"] == 2097152
    assert mem.stat["slab"] == 3 * MIB  # v1 has no slab lines: kernel memory stands in
    assert "cache" not in mem.stat


def test_v1_limits_and_swap_come_from_memory_stat_when_it_has_them(tmp_path: Path) -> None:
    # As the kernel prints it: the smallest limit of the cgroup and its ancestors (a parent's
    # 128 MiB under the cgroup's own 256 MiB) and, with swap accounting, the swap in use.
    stat = V1_STAT + (f"hierarchical_memory_limit {128 * MIB}\n"
                      f"hierarchical_memsw_limit {160 * MIB}\ntotal_swap {5 * MIB}\n")
    v1_cgroup(tmp_path, "memory", "/c", {
        "memory.usage_in_bytes": f"{40 * MIB}\n", "memory.stat": stat,
        # the files disagree, and so show which source was read
        "memory.limit_in_bytes": f"{256 * MIB}\n", "memory.memsw.limit_in_bytes": "1\n",
        "memory.memsw.usage_in_bytes": f"{99 * MIB}\n",
    })
    mem = read_memory(v1_dirs(tmp_path))
    assert mem is not None
    assert mem.limit == 128 * MIB
    assert mem.swap_limit == 32 * MIB and mem.swap_usage == 5 * MIB
    # unlimited, and swap accounting off (no memsw line, no memsw files)
    (tmp_path / "memory/c/memory.stat").write_text(
        V1_STAT + "hierarchical_memory_limit 9223372036854771712\n")
    for name in ("memory.memsw.limit_in_bytes", "memory.memsw.usage_in_bytes"):
        (tmp_path / "memory/c" / name).unlink()
    mem = read_memory(v1_dirs(tmp_path))
    assert mem is not None and mem.limit is None and mem.swap_limit is None
    assert mem.swap_usage == 0


def test_v1_without_swap_accounting(tmp_path: Path) -> None:
    v1_cgroup(tmp_path, "memory", "/c", {"memory.limit_in_bytes": "-1\n",
                                         "memory.usage_in_bytes": "4096\n", "memory.stat": ""})
    mem = read_memory(v1_dirs(tmp_path))
    assert mem is not None
    assert mem.limit is None and mem.swap_limit is None and mem.swap_usage == 0


def _render(mem: MemoryStats) -> dict[str, int]:
    out = meminfo.render(MeminfoSnapshot(parse_host(MEMINFO), mem)).decode()
    return parse_like_procps(out)


def parse_like_procps(text: str) -> dict[str, int]:
    """procps library/meminfo.c: `Name: value [kB]` per line, numbers via strtoul."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        assert sep, line
        values[name] = int(rest.split()[0])
    return values


def test_meminfo_container_values() -> None:
    v = _render(MemoryStats(256 * MIB, 40 * MIB, None, 0, {
        "file": 20 * MIB, "active_file": 12 * MIB, "inactive_file": 8 * MIB,
        "slab_reclaimable": MIB, "slab_unreclaimable": MIB // 2, "anon": 10 * MIB,
        "file_dirty": 4096, "anon_thp": 2 * MIB, "shmem": MIB}))
    assert v["MemTotal"] == 262144
    assert v["MemFree"] == 262144 - 40 * 1024
    assert v["MemAvailable"] == v["MemFree"] + 20 * 1024 + 1024
    assert v["Cached"] == 20480 and v["Buffers"] == 0
    assert v["Slab"] == 1536 and v["SReclaimable"] == 1024 and v["SUnreclaim"] == 512
    assert v["Dirty"] == 4 and v["AnonHugePages"] == 2048 and v["Shmem"] == 1024
    assert v["SwapTotal"] == 2097148  # unlimited: the host's swap
    assert v["CommitLimit"] == 10289148  # no per-container source: the host's line


def test_meminfo_layout_as_the_kernel_prints() -> None:
    out = meminfo.render(MeminfoSnapshot(parse_host(MEMINFO), MemoryStats(256 * MIB, 0, None, 0)))
    lines = out.decode().splitlines()
    assert lines[0] == "MemTotal:         262144 kB"
    assert "HugePages_Total:       0" in lines
    assert "VmallocTotal:   34359738367 kB" in lines
    assert [line.split(":")[0] for line in lines] == [
        line.split(":")[0] for line in MEMINFO.splitlines()]


def test_meminfo_renderings_sharing_a_host_reading_keep_their_own_values() -> None:
    # one host reading serves every container that renders within 10 ms (its template too)
    host = parse_host(MEMINFO + "Odd%Line:              7 kB\n")
    a = meminfo.render(MeminfoSnapshot(host, MemoryStats(256 * MIB, 40 * MIB, None, 0))).decode()
    b = meminfo.render(MeminfoSnapshot(host, MemoryStats(
        512 * MIB, 0, None, 0, {"shmem": 8 * MIB}))).decode()
    again = meminfo.render(MeminfoSnapshot(host, MemoryStats(
        256 * MIB, 40 * MIB, None, 0))).decode()
    assert a == again
    assert a.splitlines()[:2] == ["MemTotal:         262144 kB", "MemFree:          221184 kB"]
    assert b.splitlines()[:2] == ["MemTotal:         524288 kB", "MemFree:          524288 kB"]
    assert "Shmem:              8192 kB" in b.splitlines()
    assert "Shmem:                 0 kB" in a.splitlines()
    assert a.splitlines()[-1] == b.splitlines()[-1] == "Odd%Line:              7 kB"


def test_meminfo_swap_limit_capped_by_host() -> None:
    v = _render(MemoryStats(256 * MIB, 0, 64 * 1024 * MIB, 10 * MIB))
    assert v["SwapTotal"] == 2097148 and v["SwapFree"] == 2097148 - 10240
    v = _render(MemoryStats(256 * MIB, 0, 64 * MIB, 100 * MIB))
    assert v["SwapTotal"] == 65536 and v["SwapFree"] == 0


def test_host_caller_gets_the_host_file() -> None:
    out = meminfo.render(MeminfoSnapshot(parse_host(MEMINFO), None)).decode()
    assert parse_like_procps(out) == parse_like_procps(MEMINFO)


sizes = st.integers(min_value=-(1 << 40), max_value=1 << 66)
stat_keys = st.sampled_from(["anon", "file", "active_file", "inactive_file", "slab",
                             "slab_reclaimable", "slab_unreclaimable", "shmem", "file_dirty",
                             "active_anon", "inactive_anon", "anon_thp", "swapcached"])


@given(limit=st.one_of(st.none(), sizes), usage=sizes, swap_limit=st.one_of(st.none(), sizes),
       swap_usage=sizes, stat=st.dictionaries(stat_keys, sizes))
def test_meminfo_properties(limit: int | None, usage: int, swap_limit: int | None,
                            swap_usage: int, stat: dict[str, int]) -> None:
    mem = MemoryStats(limit, max(usage, 0), swap_limit, max(swap_usage, 0), stat)
    v = _render(mem)
    assert all(value >= 0 for value in v.values())
    assert v["MemTotal"] <= 16384000
    assert v["MemFree"] <= v["MemTotal"]
    assert v["MemAvailable"] <= v["MemTotal"]
    assert v["SwapFree"] <= v["SwapTotal"] <= 2097148
    for key in ("Cached", "Active", "Inactive", "Slab", "AnonPages", "Shmem"):
        assert v[key] <= v["MemTotal"]
    # free(1) computes used = total - available; it must not go negative.
    assert v["MemTotal"] - v["MemAvailable"] >= 0
