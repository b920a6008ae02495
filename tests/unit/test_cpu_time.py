"""CPU-time and task readers on v1 and v2 fixture trees, and the spread over the view's CPUs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from procfs.sources import cpu_time, tasks
from procfs.sources import text as sysfiles
from procfs.sources.cgroups import CgroupDirs, CgroupLayout, parse_proc_cgroup
from procfs.sources.cpu_time import CpuUsage, read_cpu_usage, spread
from procfs.sources.hostproc import HostProc
from procfs.sources.tasks import count_tasks
from tests.trees import HOST_PIDNS, FakeHost, v1_cgroup, v2_cgroup

HZ = 100


def dirs_of(root: Path, cgroup_lines: str) -> CgroupDirs:
    return CgroupDirs(CgroupLayout.from_directory(str(root)), parse_proc_cgroup(cgroup_lines))


def test_v1_usage_all_per_cpu(tmp_path: Path) -> None:
    v1_cgroup(tmp_path, "cpu,cpuacct", "/box", {
        "cpuacct.usage_all": "cpu user system\n0 3000000000 1000000000\n1 0 0\n"
                             "2 500000000 250000000\n3 junk 7\n",
        "cpuacct.stat": "user 350\nsystem 125\n",
    })
    u = read_cpu_usage(dirs_of(tmp_path, "4:cpu,cpuacct:/box\n"), HZ)
    rows = ((0, 3_000_000_000, 1_000_000_000), (1, 0, 0), (2, 500_000_000, 250_000_000))
    assert u == CpuUsage(3_500_000_000, 1_250_000_000, rows)


def test_v1_usage_all_needs_no_cpuacct_stat(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    v1_cgroup(tmp_path, "cpuacct", "/box", {"cpuacct.usage_all": "cpu user system\n0 7 5\n",
                                            "cpuacct.stat": "user 350\nsystem 125\n"})
    read: list[str] = []

    def spy(path: str) -> str | None:
        read.append(os.path.basename(path))
        return sysfiles.read_optional(path)

    monkeypatch.setattr(cpu_time, "read_optional", spy)
    u = read_cpu_usage(dirs_of(tmp_path, "3:cpuacct:/box\n"), HZ)
    assert u == CpuUsage(7, 5, ((0, 7, 5),))
    assert read == ["cpuacct.usage_all"]  # one file per rendering of stat and uptime


def test_v1_older_kernels_split_usage_by_cpuacct_stat(tmp_path: Path) -> None:
    box = v1_cgroup(tmp_path, "cpuacct", "/box", {
        "cpuacct.usage_percpu": "4000000000 0 -5 \n",
        "cpuacct.stat": "user 300\nsystem 100\n",
    })
    dirs = dirs_of(tmp_path, "3:cpuacct:/box\n")
    u = read_cpu_usage(dirs, HZ)
    assert u is not None
    assert u.per_cpu == ((0, 3_000_000_000, 1_000_000_000), (1, 0, 0), (2, 0, 0))
    (box / "cpuacct.usage_percpu").unlink()
    (box / "cpuacct.usage").write_text("8000000000\n")
    assert read_cpu_usage(dirs, HZ) == CpuUsage(6_000_000_000, 2_000_000_000)
    (box / "cpuacct.usage").unlink()
    assert read_cpu_usage(dirs, HZ) == CpuUsage(3_000_000_000, 1_000_000_000)  # ticks → ns
    (box / "cpuacct.stat").write_text("garbage\n")
    assert read_cpu_usage(dirs, HZ) is None


def test_v2_cpu_stat(tmp_path: Path) -> None:
    box = v2_cgroup(tmp_path, "/box", {
        "cpu.stat": "usage_usec 5000000\nuser_usec 4000000\nsystem_usec 1000000\n"
                    "nr_periods 0\n"})
    dirs = dirs_of(tmp_path, "0::/box\n")
    assert read_cpu_usage(dirs, HZ) == CpuUsage(4_000_000_000, 1_000_000_000)
    (box / "cpu.stat").write_text("usage_usec 7\n")  # no user/system split: all user
    assert read_cpu_usage(dirs, HZ) == CpuUsage(7000, 0)
    (box / "cpu.stat").unlink()
    assert read_cpu_usage(dirs, HZ) is None


def test_hybrid_host_without_v2_cpu_controller_reads_unified_cpu_stat(tmp_path: Path) -> None:
    # v1 hierarchies hold no cpuacct, the v2 mount has no controllers but cpu.stat is core
    v1_cgroup(tmp_path, "memory", "/box", {})
    (tmp_path / "unified/box").mkdir(parents=True)
    (tmp_path / "unified/box/cpu.stat").write_text("user_usec 10\nsystem_usec 20\n")
    dirs = dirs_of(tmp_path, "4:memory:/box\n0::/box\n")
    assert read_cpu_usage(dirs, HZ) == CpuUsage(10_000, 20_000)


def test_root_cgroup_has_no_cpu_time_of_its_own(tmp_path: Path) -> None:
    v2_cgroup(tmp_path, "/", {"cpu.stat": "user_usec 10\nsystem_usec 20\n"})
    assert read_cpu_usage(dirs_of(tmp_path, "0::/\n"), HZ) is None
    v1_cgroup(tmp_path / "v1", "cpuacct", "/", {"cpuacct.stat": "user 1\nsystem 1\n"})
    assert read_cpu_usage(dirs_of(tmp_path / "v1", "3:cpuacct:/\n"), HZ) is None
    # a cgroup that vanished reads as "none of its own", not an exception
    assert read_cpu_usage(dirs_of(tmp_path, "0::/gone\n"), HZ) is None


def test_spread_keeps_own_cpus_and_shares_the_rest() -> None:
    u = CpuUsage(700, 70, ((0, 100, 10), (1, 200, 20), (2, 400, 40)))
    # the quota view shows two of the three CPUs the tasks ran on: CPU 2's time is shared
    assert spread(u, (0, 1)) == ((300, 30), (400, 40))
    assert spread(u, (2,)) == ((700, 70),)
    # v2 has no per-CPU numbers: all shared, the remainder to the first CPUs
    assert spread(CpuUsage(7, 3), (4, 5)) == ((4, 2), (3, 1))
    assert spread(CpuUsage(7, 3), ()) == ((7, 3),)


usage_rows = st.lists(st.tuples(st.integers(0, 10**15), st.integers(0, 10**15)),
                      min_size=1, max_size=8)


@given(usage_rows, st.integers(1, 8), st.lists(st.integers(0, 10**12), min_size=16, max_size=16))
def test_spread_adds_up_and_never_shrinks(rows: list[tuple[int, int]], n: int,
                                          growth: list[int]) -> None:
    per_cpu = tuple((cpu, u, s) for cpu, (u, s) in enumerate(rows))
    cpus = tuple(range(min(n, len(rows))))
    before = CpuUsage(sum(r[1] for r in per_cpu), sum(r[2] for r in per_cpu), per_cpu)
    grown = tuple((cpu, u + growth[cpu], s + growth[8 + cpu]) for cpu, u, s in per_cpu)
    after = CpuUsage(sum(r[1] for r in grown), sum(r[2] for r in grown), grown)
    a, b = spread(before, cpus), spread(after, cpus)
    assert sum(u for u, _ in a) == before.user_ns and sum(s for _, s in a) == before.system_ns
    assert all(x[0] <= y[0] and x[1] <= y[1] for x, y in zip(a, b, strict=True))


def test_subdirectories_lists_only_directories_with_subdirectories(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "tasks").write_text("1\n")
    (tmp_path / "leaf").mkdir()
    (tmp_path / "leaf" / "tasks").write_text("2\n")
    listed: list[str] = []
    scandir = os.scandir

    def counting(path: str) -> object:
        listed.append(path)
        return scandir(path)

    monkeypatch.setattr(cpu_time.os, "scandir", counting)
    # a link count above 2 (or btrfs's 1): listed, files left out
    assert tasks.subdirectories(str(tmp_path / "a")) == [str(tmp_path / "a" / "b")]
    # 2 links, no subdirectory (the leaf cgroup): a stat, no listing of its files
    assert tasks.subdirectories(str(tmp_path / "leaf")) == []
    assert listed == [str(tmp_path / "a")]
    assert tasks.subdirectories(str(tmp_path / "gone")) == []


def test_count_tasks_walks_sub_cgroups_on_v1_and_v2(tmp_path: Path) -> None:
    host = FakeHost(tmp_path / "h")
    ns = 4026532009
    host.add_process(1, ppid=0, pidns=HOST_PIDNS, nspid=(1,))
    # two levels of pid namespace: the container's init 50 is pid 1 in (50, 1)
    for pid, nspid, state in ((50, (50, 1), "S"), (51, (51, 2), "R"), (52, (52, 3), "D"),
                              (53, (53, 9, 1), "R")):  # 53: pid 9 in ours, 1 in a nested one
        host.add_process(pid, ppid=50, pidns=ns, nspid=nspid, state=state)
    hp = HostProc(str(host.proc), str(host.sys))
    v2 = tmp_path / "v2"
    v2_cgroup(v2, "/box", {"cgroup.threads": "50\n51\n99\n"})  # 99: exited since listed
    v2_cgroup(v2, "/box/inner", {"cgroup.threads": "52\n53\n"})
    v1 = tmp_path / "v1"
    v1_cgroup(v1, "cpu,cpuacct", "/box", {"tasks": "50\n51\n99\n"})
    v1_cgroup(v1, "cpu,cpuacct", "/box/inner", {"tasks": "52\n53\n"})
    (host.proc / "51/schedstat").write_text("100 2500 7\n")
    (host.proc / "53/schedstat").write_text("100 500 7\n")
    for root, line in ((v2, "0::/box\n"), (v1, "4:cpu,cpuacct:/box\n")):
        t = count_tasks(hp, dirs_of(root, line), level=2)
        assert t is not None
        assert (t.running, t.blocked, t.total, t.newest_pid, t.active) == (2, 1, 4, 9, 3)
        assert t.waited_ns == 3000
    # no cgroup of its own: nothing to count in (the host's whole tree is not walked)
    assert count_tasks(hp, dirs_of(v2, "0::/\n"), level=2) is None


def test_an_unchanged_newest_task_is_not_read_again(tmp_path: Path) -> None:
    host = FakeHost(tmp_path / "h")
    ns = 4026532009
    for pid, nspid in ((50, (50, 1)), (51, (51, 2))):
        host.add_process(pid, ppid=50, pidns=ns, nspid=nspid)
    hp = HostProc(str(host.proc), str(host.sys))
    v2_cgroup(tmp_path / "v2", "/box", {"cgroup.threads": "50\n51\n"})
    dirs = dirs_of(tmp_path / "v2", "0::/box\n")
    known: dict[object, tuple[int, int]] = {}

    def newest() -> int:
        t = count_tasks(hp, dirs, level=2, waits=False, key="box", newest=known)
        assert t is not None
        return t.newest_pid

    assert newest() == 2 and known == {"box": (51, 2)}
    (host.proc / "51/status").write_text("garbled\n")  # not read again: 51 is still newest
    assert newest() == 2
    host.add_process(60, ppid=50, pidns=ns, nspid=(60, 5))
    (tmp_path / "v2/box/cgroup.threads").write_text("50\n51\n60\n")
    assert newest() == 5 and known["box"] == (60, 5)
