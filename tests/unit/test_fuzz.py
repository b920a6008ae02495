"""Bad input never takes the server down: every parser, reader and renderer is fed garbled,
truncated, huge, negative and missing kernel files. Readers may only raise `ProcfsError` (the
FUSE layer maps it to an errno); renderers never raise and never print a negative number."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from overlays import cpuinfo, cpulist, diskstats, meminfo, pressure, slabinfo, stat, swaps
from overlays.cpulist import format_cpulist
from overlays.cpuview import CpuView
from procfs.errors import ProcfsError
from procfs.files.cpu import CpuFiles
from procfs.files.host import HostFiles
from procfs.files.memory import MemoryFiles
from procfs.sources import cgroups as cgroup_layout
from procfs.sources import hostproc
from procfs.sources import io as cgroup_io
from procfs.sources import text as sysfiles
from procfs.sources.cgroups import CgroupDirs, CgroupLayout, parse_proc_cgroup
from procfs.sources.containers import Resolver
from procfs.sources.cpuset import CpuViewMode, read_cpu_view
from procfs.sources.hostproc import HostProc
from procfs.sources.memory import read_memory, read_oom_kills
from tests.trees import HOST_PIDNS, FakeHost, write

FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

NUMBER = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["max", "", "-", "0x10", "1e9", "NaN", "١٢", "18446744073709551615",
                     "9223372036854771712", " 42 ", "-1"]),
)
GARBLE = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=300)


def lines_of(keys: list[str]) -> st.SearchStrategy[str]:
    """`key value` lines with these keys, garbled values, shuffled, truncated or garbage."""
    line = st.tuples(st.sampled_from(keys), NUMBER).map(lambda kv: f"{kv[0]} {kv[1]}")
    body = st.lists(st.one_of(line, GARBLE), max_size=40).map("\n".join)
    return st.one_of(body, body.map(lambda t: t[: len(t) // 2]), GARBLE)


MEMORY_STAT_KEYS = ["anon", "file", "shmem", "file_mapped", "file_dirty", "file_writeback",
                    "slab", "slab_reclaimable", "slab_unreclaimable", "active_anon",
                    "inactive_anon", "active_file", "inactive_file", "unevictable", "total_rss",
                    "total_cache", "total_active_file", "total_inactive_file", "anon_thp"]
NEGATIVE = re.compile(rb"(?<![\w.])-\d")


def only_procfs_errors(fn: Callable[[], object]) -> object:
    try:
        return fn()
    except ProcfsError:
        return None


# Parsers of kernel text.

@FUZZ
@given(GARBLE)
def test_text_parsers_never_raise(text: str) -> None:
    sysfiles.parse_int(text)
    sysfiles.parse_limit(text)
    sysfiles.parse_flat_keyed(text)
    assert all(c >= 0 for c in sysfiles.parse_cpulist(text))
    sysfiles.ns_inode(text)
    hostproc.parse_pid_status(text)
    hostproc.parse_timens_offsets(text)
    only_procfs_errors(lambda: hostproc.parse_pid_stat(text))
    parse_proc_cgroup(text)
    cgroup_layout.parse_mountinfo(text)
    meminfo.parse_host(text)
    pressure.parse(text)
    diskstats.parse_host(text)
    slabinfo.has_caches(text)
    cgroup_io.parse_io_stat(text)
    cgroup_io.parse_rwstat(text)
    cgroup_io.parse_device(text)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["cpu", "cpu0", "cpu7", "cpu²", "cpu١", "cpux", "cpu"
                                           + "9" * 30, "intr", "ctxt"]),
                          st.lists(NUMBER, max_size=12)), max_size=10))
def test_host_cpu_lines(lines: list[tuple[str, list[str]]]) -> None:
    """The host's /proc/stat cpu lines: garbled columns read as 0, names that are not a CPU
    number are no cpu line; ten non-negative columns each."""
    text = "\n".join(f"{name} {' '.join(cols)}" for name, cols in lines)
    parsed = stat.host_cpu_lines(text)
    assert set(parsed) <= {0, 7}
    assert all(len(t.columns()) == stat.COLUMNS and min(t.columns()) >= 0
               for t in parsed.values())


def test_host_cpu_lines_with_digits_of_other_scripts() -> None:
    # str.isdigit() is true for "²" and "١" while int() refuses them: garbage, read as 0
    assert stat.host_cpu_lines("cpu0 1 \u00b2 3\ncpu\u00b2 4\n") == {0: stat.CpuTimes(1, 0, 3)}


@FUZZ
@given(st.lists(NUMBER, min_size=0, max_size=60), st.text(max_size=40))
def test_pid_stat_with_garbled_fields(fields: list[str], name: str) -> None:
    text = f"123 ({name}) " + " ".join(fields)
    only_procfs_errors(lambda: hostproc.parse_pid_stat(text))


@FUZZ
@given(st.lists(st.tuples(st.integers(-5, 70000), st.integers(-5, 70000)), max_size=8))
def test_cpulist_ranges(ranges: list[tuple[int, int]]) -> None:
    text = ",".join(f"{a}-{b}" for a, b in ranges)
    cpus = sysfiles.parse_cpulist(text)
    assert list(cpus) == sorted(set(cpus)) and all(c >= 0 for c in cpus)
    if cpus and cpus[-1] <= 65536:  # wider ranges are refused on purpose
        assert sysfiles.parse_cpulist(format_cpulist(cpus)) == cpus


# Renderers.

@FUZZ
@given(lines_of(["MemTotal:", "MemFree:", "MemAvailable:", "SwapTotal:", "SwapFree:",
                 "Cached:", "HugePages_Total:"]),
       st.one_of(st.none(), st.integers(-(2**66), 2**66)), st.integers(-(2**66), 2**66),
       st.one_of(st.none(), st.integers(-(2**66), 2**66)), st.integers(-(2**66), 2**66),
       st.dictionaries(st.sampled_from(MEMORY_STAT_KEYS), st.integers(-(2**66), 2**66)))
# free plus reclaimable above the total: available is still at most the total
@example("MemTotal: 1000 kB\n", None, 0, None, 0, {"active_file": 1 << 30})
def test_meminfo_render(host_text: str, limit: int | None, usage: int, swap_limit: int | None,
                        swap_usage: int, stat: dict[str, int]) -> None:
    host = meminfo.parse_host(host_text)
    mem = meminfo.MemoryStats(limit, usage, swap_limit, swap_usage, stat)
    out = meminfo.render(meminfo.MeminfoSnapshot(host, mem))
    values = meminfo.container_values(host, mem)
    assert 0 <= values["MemAvailable"] <= values["MemTotal"]
    assert not NEGATIVE.search(out)
    swaps.render(swaps.SwapsSnapshot("", values["SwapTotal"],
                                     values["SwapTotal"] - values["SwapFree"]))


@FUZZ
@given(GARBLE, st.lists(st.integers(0, 4096), max_size=16))
def test_cpu_renderers(host_text: str, cpus: list[int]) -> None:
    view = CpuView(tuple(cpus))
    cpuinfo.render(cpuinfo.CpuinfoSnapshot(host_text, view))
    cpuinfo.render(cpuinfo.CpuinfoSnapshot(host_text, None))
    for kind in cpulist.KINDS:
        out = cpulist.render(cpulist.CpulistSnapshot(host_text, view, kind))
        assert re.fullmatch(rb"(\d+(-\d+)?(,\d+(-\d+)?)*)?\n", out)
        assert set(sysfiles.parse_cpulist(out.decode())) <= set(view.possible)


@FUZZ
@given(GARBLE, st.one_of(st.none(), st.integers(-(2**64), 2**64)), st.integers(-(2**64), 2**64))
def test_swaps_render(host_text: str, total: int | None, used: int) -> None:
    out = swaps.render(swaps.SwapsSnapshot(host_text, total, used))
    if total is not None:
        assert out.startswith(b"Filename")


# Readers on fixture trees (cgroup v1 and v2) with garbled, missing and odd files.

CGROUP_FILES_V2 = ["memory.stat", "memory.current", "memory.max", "memory.swap.max",
                   "memory.swap.current", "cpu.max", "cpuset.cpus", "cpuset.cpus.effective",
                   "io.stat", "memory.pressure", "memory.events"]
CGROUP_FILES_V1 = ["memory.stat", "memory.usage_in_bytes", "memory.limit_in_bytes",
                   "memory.memsw.usage_in_bytes", "memory.memsw.limit_in_bytes",
                   "memory.kmem.usage_in_bytes", "memory.oom_control"]
FILE_CONTENT = st.one_of(st.none(), NUMBER, lines_of(MEMORY_STAT_KEYS), GARBLE,
                         lines_of(["oom_kill", "oom", "under_oom"]),
                         st.just("0-1,3\n"), st.just("max 100000\n"), st.just("-5 0\n"))


def _fill(d: Path, names: list[str], contents: list[str | None]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in zip(names, contents, strict=False):
        if text is None:
            continue  # missing
        write(d / name, text)


def _read_all(dirs: CgroupDirs) -> None:
    only_procfs_errors(lambda: read_memory(dirs))
    kills = only_procfs_errors(lambda: read_oom_kills(dirs))
    assert kills is None or (isinstance(kills, int) and kills >= 0), kills
    view = read_cpu_view(dirs, (0, 1, 2, 3), CpuViewMode.QUOTA)
    assert view.count >= 1
    read_cpu_view(dirs, (), CpuViewMode.CPUSET)
    only_procfs_errors(lambda: cgroup_io.read_io(dirs))


@FUZZ
@given(st.lists(FILE_CONTENT, min_size=len(CGROUP_FILES_V2), max_size=len(CGROUP_FILES_V2)),
       st.lists(FILE_CONTENT, min_size=len(CGROUP_FILES_V2), max_size=len(CGROUP_FILES_V2)),
       st.sampled_from(["/a/b", "/a", "/", "/gone", "/a/../../etc", "//a//b/"]))
def test_v2_readers(child: list[str | None], parent: list[str | None], path: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write(root / "cgroup.controllers", "cpuset cpu io memory pids\n")
        _fill(root / "a", CGROUP_FILES_V2, parent)
        _fill(root / "a/b", CGROUP_FILES_V2, child)
        layout = CgroupLayout.from_directory(tmp)
        _read_all(CgroupDirs(layout, parse_proc_cgroup(f"0::{path}\n")))


@FUZZ
@given(st.lists(FILE_CONTENT, min_size=len(CGROUP_FILES_V1), max_size=len(CGROUP_FILES_V1)),
       st.lists(FILE_CONTENT, min_size=3, max_size=3),
       st.sampled_from(["/a/b", "/", "/gone"]))
def test_v1_readers(memory: list[str | None], cpu: list[str | None], path: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _fill(root / "memory/a/b", CGROUP_FILES_V1, memory)
        _fill(root / "memory/a", CGROUP_FILES_V1, memory[::-1])
        _fill(root / "cpu,cpuacct/a/b", ["cpu.cfs_quota_us", "cpu.cfs_period_us"], cpu)
        _fill(root / "cpuset/a/b", ["cpuset.cpus"], cpu[2:])
        _fill(root / "blkio/a/b", ["blkio.io_serviced_recursive"], cpu[:1])
        layout = CgroupLayout.from_directory(tmp)
        text = "".join(f"{i}:{c}:{path}\n" for i, c in
                       enumerate(["memory", "cpu,cpuacct", "cpuset", "blkio"], 1))
        _read_all(CgroupDirs(layout, parse_proc_cgroup(text)))


PROC_FILES = st.fixed_dictionaries({
    "status": st.one_of(st.none(), GARBLE, st.just("PPid:\t1\nNSpid:\t77\t1\n"),
                        st.just("PPid:\t-3\nNSpid:\tx 1\n")),
    "stat": st.one_of(st.none(), GARBLE, st.just("77 (a) b) S 1" + " 0" * 30)),
    "cgroup": st.one_of(st.none(), GARBLE, st.just("0::/a/b\n"), st.just("0::\n::::\n")),
    "timens_offsets": st.one_of(st.none(), GARBLE, st.just("monotonic -5 x\nboottime 9 9\n")),
    "ns": st.one_of(st.none(), st.just("pid:[4026532999]"), st.just("pid:[garbage"),
                    st.just(f"pid:[{HOST_PIDNS}]")),
})


@FUZZ
@given(PROC_FILES, PROC_FILES)
def test_resolve_on_garbled_proc(caller: dict[str, str | None],
                                 init: dict[str, str | None]) -> None:
    """A caller (77) and its supposed init (50) with garbled or missing /proc files."""
    with tempfile.TemporaryDirectory() as tmp:
        host = FakeHost(Path(tmp))
        for pid, files in ((77, caller), (50, init)):
            d = host.proc / str(pid)
            for name in ("status", "stat", "cgroup", "timens_offsets"):
                text = files[name]
                if text is not None:
                    write(d / name, text)
            if files["ns"] is not None:
                (d / "ns").mkdir(parents=True, exist_ok=True)
                os.symlink(files["ns"], d / "ns/pid")
        hp = HostProc(str(host.proc), str(host.sys))
        resolver = Resolver(hp, CgroupLayout.from_directory(tmp), clock=lambda: 0.0)
        files = HostFiles(hp)
        memory, cpu = MemoryFiles(files), CpuFiles(files)
        try:
            c = only_procfs_errors(lambda: resolver.resolve(77))
            if c is not None:
                for render in (memory.meminfo, cpu.cpuinfo, cpu.cpulist("online"),
                               memory.swaps, memory.vmstat):
                    only_procfs_errors(lambda r=render: r(c))  # type: ignore[misc]
        finally:
            resolver.close()


@FUZZ
@given(st.lists(GARBLE, min_size=4, max_size=4))
def test_host_views_on_garbled_host_files(texts: list[str]) -> None:
    """The host's own meminfo, cpuinfo, cpu/online and vmstat garbled: renders still come
    out."""
    with tempfile.TemporaryDirectory() as tmp:
        host = FakeHost(Path(tmp))
        write(host.proc / "meminfo", texts[0])
        write(host.proc / "cpuinfo", texts[1])
        write(host.sys / "devices/system/cpu/online", texts[2])
        write(host.proc / "vmstat", texts[3])
        hp = HostProc(str(host.proc), str(host.sys))
        root = Path(tmp) / "cg"
        write(root / "cgroup.controllers", "cpuset cpu memory\n")
        write(root / "a/memory.stat", "anon 100\n")
        write(root / "a/memory.max", "1048576\n")
        layout = CgroupLayout.from_directory(str(root))
        host.add_process(50, ppid=1, pidns=4026532999, nspid=(50, 1), cgroup="0::/a\n")
        resolver = Resolver(hp, layout, clock=lambda: 0.0)
        try:
            c = resolver.resolve(50)
            assert c is not None
            files = HostFiles(hp)
            memory, cpu = MemoryFiles(files), CpuFiles(files)
            assert memory.meminfo(c).endswith(b"\n")
            cpu.cpuinfo(c)
            assert sysfiles.parse_cpulist(cpu.cpulist("online")(c).decode())
            memory.swaps(c)
            memory.vmstat(c)
        finally:
            resolver.close()
