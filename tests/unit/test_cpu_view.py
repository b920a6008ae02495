"""cpuset (+ quota) view on v1 and v2 fixture trees; cpuinfo and cpu/online renderers."""

from __future__ import annotations

from pathlib import Path

from overlays import cpuinfo, cpulist
from overlays.cpuinfo import CpuinfoSnapshot
from overlays.cpulist import CpulistSnapshot, format_cpulist
from overlays.cpuview import CpuView
from procfs.sources.cgroups import CgroupDirs, CgroupLayout, parse_proc_cgroup
from procfs.sources.cpuset import CpuViewMode, read_cpu_view
from procfs.sources.text import parse_cpulist
from tests.trees import cpuinfo as host_cpuinfo
from tests.trees import v1_cgroup, v2_cgroup

ONLINE = (0, 1, 2, 3, 4, 5, 6, 7)


def test_cpulist_round_trip_and_garbage() -> None:
    assert parse_cpulist("0-3,8,10-11\n") == (0, 1, 2, 3, 8, 10, 11)
    assert parse_cpulist("3-1,x,,5") == (5,)
    assert parse_cpulist("") == ()
    assert format_cpulist((0, 1, 2, 5, 7, 8)) == "0-2,5,7-8"


def test_v2_cpuset_and_quota(tmp_path: Path) -> None:
    v2_cgroup(tmp_path, "/c", {"cpuset.cpus": "", "cpuset.cpus.effective": "2-5\n",
                               "cpu.max": "150000 100000\n"})
    dirs = CgroupDirs(CgroupLayout.from_directory(str(tmp_path)), parse_proc_cgroup("0::/c\n"))
    assert read_cpu_view(dirs, ONLINE, CpuViewMode.CPUSET).cpus == (2, 3, 4, 5)
    assert read_cpu_view(dirs, ONLINE, CpuViewMode.QUOTA).cpus == (2, 3)


def test_v1_cpuset_from_ancestor_and_quota_max(tmp_path: Path) -> None:
    v1_cgroup(tmp_path, "cpuset", "/p", {"cpuset.cpus": "1,3\n"})
    v1_cgroup(tmp_path, "cpuset", "/p/c", {"cpuset.cpus": "\n"})
    v1_cgroup(tmp_path, "cpu,cpuacct", "/p/c", {"cpu.cfs_quota_us": "-1\n",
                                                "cpu.cfs_period_us": "100000\n"})
    dirs = CgroupDirs(CgroupLayout.from_directory(str(tmp_path)),
                      parse_proc_cgroup("5:cpuset:/p/c\n4:cpu,cpuacct:/p/c\n"))
    assert read_cpu_view(dirs, ONLINE, CpuViewMode.QUOTA).cpus == (1, 3)


def test_offline_cpus_in_a_cpuset_are_dropped(tmp_path: Path) -> None:
    v2_cgroup(tmp_path, "/c", {"cpuset.cpus": "6-9\n"})
    dirs = CgroupDirs(CgroupLayout.from_directory(str(tmp_path)), parse_proc_cgroup("0::/c\n"))
    assert read_cpu_view(dirs, ONLINE, CpuViewMode.CPUSET).cpus == (6, 7)


def test_cpuinfo_filters_and_keeps_the_kernels_numbers() -> None:
    out = cpuinfo.render(CpuinfoSnapshot(host_cpuinfo(4), CpuView((1, 3)))).decode()
    blocks = [b for b in out.split("\n\n") if b.strip()]
    assert len(blocks) == 2
    assert blocks[0].startswith("processor\t: 1\n") and "core id\t\t: 1" in blocks[0]
    assert blocks[1].startswith("processor\t: 3\n") and "apicid\t\t: 3" in blocks[1]
    assert all("siblings\t: 2" in b and "cpu cores\t: 2" in b for b in blocks)
    assert out.endswith("\n\n")


def test_cpuinfo_host_unchanged() -> None:
    text = host_cpuinfo(4)
    assert cpuinfo.render(CpuinfoSnapshot(text, None)) == text.encode()


def test_cpulist_agrees_with_the_view() -> None:
    """online and present: the CPUs it sees, by their numbers (`taskset -c $(cat online)`
    works); possible: 0 to the highest it may run on (sched_getcpu() indexes what it sizes);
    offline: the rest of possible."""
    def lists(view: CpuView) -> tuple[bytes, ...]:
        return tuple(cpulist.render(CpulistSnapshot("0-7\n", view, kind))
                     for kind in ("online", "present", "possible", "offline"))

    assert lists(CpuView((4, 5, 6))) == (b"4-6\n", b"4-6\n", b"0-6\n", b"0-3\n")
    assert lists(CpuView((1,))) == (b"1\n", b"1\n", b"0-1\n", b"0\n")
    # a quota of one CPU over a cpuset of 0-3: one CPU seen, any of the four may run it
    assert lists(CpuView((0,), (0, 1, 2, 3))) == (b"0\n", b"0\n", b"0-3\n", b"1-3\n")
    assert lists(CpuView((0, 1))) == (b"0-1\n", b"0-1\n", b"0-1\n", b"\n")
    assert cpulist.render(CpulistSnapshot("0-7\n", None)) == b"0-7\n"
