"""/proc/stat, /proc/uptime and the CPU view on v1 and v2 fixture trees: through the FUSE
operations (so cpuinfo, cpu/online and stat are seen to agree) and through the views with
injected clocks (uptime, time namespaces, idle, counters that never go backwards)."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

import pyfuse3
import pytest

from overlays.stat import COLUMNS, CpuTimes, StatSnapshot, busy_idle, never_backwards, render
from overlays.uptime import UptimeSnapshot
from overlays.uptime import render as render_uptime
from procfs.config import Config, CpuViewMode
from procfs.files.host import HostFiles
from procfs.files.table import all_nodes
from procfs.files.time import TimeFiles, container_uptime, elapsed_since
from procfs.fuse.ops import ProcFS
from procfs.server.services import Services
from procfs.sources.containers import Container
from procfs.sources.text import parse_cpulist
from tests.trees import HOST_PIDNS, FakeHost, ManualClock, v1_cgroup, v2_cgroup

NS_BOX = 4026532300
HOST_STAT = "".join(
    [f"cpu  {800} 8 {400} 99999 80 0 8 0 0 0\n"]
    + [f"cpu{i} 100 1 50 12500 10 0 1 0 0 0\n" for i in range(8)]
    + ["intr 12345 0 1 2\n", "ctxt 6789\n", "btime 1700000000\n", "processes 4242\n",
       "procs_running 3\n", "procs_blocked 1\n", "softirq 55 1 2 3\n"]
)


def host_files(s: Services) -> HostFiles:
    return HostFiles(s.host, s.config.cpu_view, s.clock)


@dataclass
class Ctx:
    pid: int
    uid: int = 0
    gid: int = 0


@dataclass
class World:
    host: FakeHost
    cg: Path
    box: Path  # the directory holding the CPU-time and quota files
    version: int
    services: Services

    def ops(self) -> ProcFS:
        return ProcFS(all_nodes(self.services), self.services.resolver)

    def times(self, boot: float = 1000.0, real: float = 1_800_000_000.0) -> TimeFiles:
        return TimeFiles(self.services.host, host_files(self.services), boottime=lambda: boot,
                         realtime=lambda: real, hz=100)

    def container(self) -> Container:
        c = self.services.resolver.resolve(51)
        assert c is not None
        return c

    def quota(self, quota: str, period: str = "100000") -> None:
        if self.version == 2:
            (self.box / "cpu.max").write_text(f"{quota} {period}\n")
        else:
            (self.box / "cpu.cfs_quota_us").write_text(quota + "\n")
            (self.box / "cpu.cfs_period_us").write_text(period + "\n")

    def cpuset(self, cpus: str) -> None:
        d = self.box if self.version == 2 else self.cg / "cpuset/box"
        (d / "cpuset.cpus").write_text(cpus + "\n")

    def cpu_seconds(self, user: float, system: float) -> None:
        if self.version == 2:
            (self.box / "cpu.stat").write_text(
                f"usage_usec {int((user + system) * 1e6)}\nuser_usec {int(user * 1e6)}\n"
                f"system_usec {int(system * 1e6)}\n")
        else:  # all on the cpuset's first CPU
            (self.box / "cpuacct.usage_all").write_text(
                f"cpu user system\n0 {int(user * 1e9)} {int(system * 1e9)}\n1 0 0\n")


def make_world(tmp_path: Path, version: int, *, timens: str | None = None,
               mode: CpuViewMode = CpuViewMode.QUOTA) -> World:
    host = FakeHost(tmp_path / "h", ncpus=8)
    (host.proc / "stat").write_text(HOST_STAT)
    (host.proc / "uptime").write_text("5000.00 39000.00\n")
    (host.proc / "loadavg").write_text("0.50 0.40 0.30 2/300 4242\n")
    cg = tmp_path / "cg"
    if version == 2:
        box = v2_cgroup(cg, "/box", {"cgroup.threads": "50\n51\n52\n"})
        line = "0::/box\n"
    else:
        v1_cgroup(cg, "cpuset", "/box", {"tasks": "50\n51\n52\n"})
        box = v1_cgroup(cg, "cpu,cpuacct", "/box", {"tasks": "50\n51\n52\n",
                                                    "cpuacct.stat": "user 0\nsystem 0\n"})
        line = "5:cpuset:/box\n4:cpu,cpuacct:/box\n"
    host.add_process(1, ppid=0, pidns=HOST_PIDNS, nspid=(1,))
    host.add_process(50, ppid=1, pidns=NS_BOX, nspid=(50, 1), cgroup=line, start=1000,
                     timens=timens)
    host.add_process(51, ppid=50, pidns=NS_BOX, nspid=(51, 2), cgroup=line, state="R")
    host.add_process(52, ppid=50, pidns=NS_BOX, nspid=(52, 3), cgroup=line, state="D")
    config = Config(cache_ttl=0, proc_root=str(host.proc), sys_root=str(host.sys),
                    cgroup_root=str(cg), cpu_view=mode)
    w = World(host, cg, box, version, Services.build(config))
    w.cpuset("0-3")
    w.quota("150000")
    w.cpu_seconds(0, 0)
    return w


def inode_of(ops: ProcFS, path: str) -> int:
    return next(i for i, n in ops.files.items() if n.path == path)


async def cat(ops: ProcFS, path: str, pid: int) -> str:
    info = await ops.open(inode_of(ops, path), os.O_RDONLY, Ctx(pid))
    out = b""
    while piece := await ops.read(info.fh, len(out), 5):
        out += piece
    await ops.release(info.fh)
    return out.decode()


async def cpu_ids(ops: ProcFS, pid: int) -> tuple[int, ...]:
    """The CPU numbers of cpuinfo's processors, cpu/online and stat's cpuN lines: they must
    agree (the kernel's numbers in all three)."""
    info = tuple(int(x.split(":")[1]) for x in (await cat(ops, "proc/cpuinfo", pid)).splitlines()
                 if x.startswith("processor"))
    online = parse_cpulist(await cat(ops, "sys/devices/system/cpu/online", pid))
    stat = await cat(ops, "proc/stat", pid)
    lines = [x.split() for x in stat.splitlines() if x.startswith("cpu") and x[3:4].isdigit()]
    assert all(len(x) == 1 + COLUMNS for x in lines)
    assert info == online == tuple(int(x[0][3:]) for x in lines)
    return online


async def cpu_counts(ops: ProcFS, pid: int) -> tuple[int, int, int]:
    """(cpuinfo processors, CPUs in cpu/online, cpuN lines in stat): they must agree."""
    n = len(await cpu_ids(ops, pid))
    return n, n, n


@pytest.mark.parametrize("version", [1, 2])
async def test_quota_over_a_four_cpu_cpuset_shows_two_cpus_everywhere(
        tmp_path: Path, version: int) -> None:
    w = make_world(tmp_path, version)
    ops = w.ops()
    assert await cpu_counts(ops, 51) == (2, 2, 2)
    assert await cpu_counts(ops, 1) == (8, 8, 8)  # the host: its own files
    w.quota("max" if version == 2 else "-1")
    assert await cpu_counts(ops, 51) == (4, 4, 4)  # no quota: the cpuset


@pytest.mark.parametrize("version", [1, 2])
async def test_cpuset_view_ignores_the_quota(tmp_path: Path, version: int) -> None:
    w = make_world(tmp_path, version, mode=CpuViewMode.CPUSET)
    assert await cpu_counts(w.ops(), 51) == (4, 4, 4)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize(("cpuset", "quota", "period", "expected"), [
    ("0-3", "150000", "0", 4),  # period 0 limits nothing
    ("0-3", "0", "100000", 4),  # nor does quota 0
    ("0-3", str(10**30), "100000", 4),  # quota above the host: the cpuset
    ("0-3", "-7", "100000", 4),
    ("0-3", "lots", "x", 4),
    ("0-3", "1", "100000", 1),  # a sliver of a CPU is one CPU
    ("6-11", "max", "100000", 2),  # 8-11 are not online here
    ("12-15", "max", "100000", 8),  # nothing online: the host's CPUs
    ("1,3,5", "200000", "100000", 2),
])
async def test_bad_quota_and_cpuset_values_give_sensible_counts(
        tmp_path: Path, version: int, cpuset: str, quota: str, period: str,
        expected: int) -> None:
    w = make_world(tmp_path, version)
    w.cpuset(cpuset)
    if version == 1 and quota == "max":
        quota = "-1"
    w.quota(quota, period)
    assert await cpu_counts(w.ops(), 51) == (expected,) * 3


@pytest.mark.parametrize("version", [1, 2])
def test_time_without_a_time_namespace_of_its_own(tmp_path: Path, version: int) -> None:
    """Uptime counts from the init's start (as LXCFS); btime stays the host's, because the
    kernel shows the container the host's starttimes (so `ps` STARTED is right)."""
    # init started 1000 ticks (10 s) after boot; the host has been up 1000 s
    w = make_world(tmp_path, version)
    w.cpu_seconds(100, 20)
    c = w.container()
    assert not c.timens
    # 990 s on 2 CPUs (the quota view), 120 s of them busy
    assert w.times().uptime(c) == b"990.00 1860.00\n"
    stat = w.times(real=1_800_000_000.0).stat(c).decode()
    assert "\nbtime 1700000000\n" in stat  # the host's, whatever the clocks say


@pytest.mark.parametrize("version", [1, 2])
def test_time_in_a_time_namespace_is_the_kernels(tmp_path: Path, version: int) -> None:
    """In a time namespace of its own, uptime is that namespace's CLOCK_BOOTTIME (the host's +
    the offset) and btime the host's boot shifted back by the offset, as the kernel formats
    them for a reader in there; idle still counts the real time since the init started."""
    w = make_world(tmp_path, version, timens="monotonic 5 0\nboottime 86400 500000000\n")
    w.cpu_seconds(100, 20)
    c = w.container()
    assert c.timens and c.boottime_offset_ns == 86_400_500_000_000
    assert w.times(boot=1000.0).uptime(c) == b"87400.50 1860.00\n"
    # boot was at 1_800_000_000 - 1000 on the wall clock; minus the offset
    stat = w.times(boot=1000.0, real=1_800_000_000.0).stat(c).decode()
    assert "\nbtime 1799912599\n" in stat
    # `unshare --time --boottime -N` with N = -(host uptime then): the container's clock
    # started at 0 when it did and goes on from there (procfs-runc makes this)
    w2 = make_world(tmp_path / "zero", version, timens=f"boottime {-995} 0\n")
    c2 = w2.container()
    assert w2.times(boot=1000.0).uptime(c2).startswith(b"5.00 ")
    btime = int(next(x for x in w2.times(boot=1000.0, real=1_800_000_000.0).stat(c2)
                     .decode().splitlines() if x.startswith("btime")).split()[1])
    assert btime == 1_800_000_000 - 5  # where its clock read 0


def test_container_uptime_edge_values() -> None:
    def box(offset_ns: int, timens: bool) -> Container:
        return Container(NS_BOX, 50, 1000, None, boottime_offset_ns=offset_ns,  # type: ignore
                         timens=timens)

    assert container_uptime(box(0, False), 1000.0, 100) == 990.0
    assert container_uptime(box(-(10**13), True), 1000.0, 100) == 0.0  # never negative
    assert container_uptime(box(0, False), 1000.0, 0) == 0.0  # a zero hz divides by 1
    assert elapsed_since(5.0, 1000, 100) == 0.0  # a start after "now": clock granularity
    assert render_uptime(UptimeSnapshot(float("nan"), -5.0)) == b"0.00 0.00\n"


@pytest.mark.parametrize("version", [1, 2])
def test_idle_is_never_negative(tmp_path: Path, version: int) -> None:
    w = make_world(tmp_path, version)
    w.cpu_seconds(5000, 100)  # more than 990 s on 2 CPUs (the cgroup is older than its init)
    c = w.container()
    t = w.times()
    lines = [x.split() for x in t.stat(c).decode().splitlines() if x.startswith("cpu")]
    assert all(int(v) >= 0 for x in lines for v in x[1:])
    idle = [int(x[4]) for x in lines]  # of cpu, cpu0, cpu1
    # v1 puts all that time on cpu0 (cpu1 stays idle); v2 spreads it over both
    assert idle == ([99000, 0, 99000] if version == 1 else [0, 0, 0])
    # and /proc/uptime's idle is the sum of those idle columns, as the kernel's
    assert t.uptime(c) == (b"990.00 990.00\n" if version == 1 else b"990.00 0.00\n")


@pytest.mark.parametrize("version", [1, 2])
def test_stat_columns_add_up_to_the_wall_time(tmp_path: Path, version: int) -> None:
    w = make_world(tmp_path, version)
    w.cpu_seconds(30, 10)
    # 51 waited 4 s for a CPU (runnable, not running): steal, spread over the view's CPUs
    (w.host.proc / "51/schedstat").write_text("123 4000000000 9\n")
    (w.host.proc / "52/schedstat").write_text("garbage\n")
    c = w.container()
    text = w.times().stat(c).decode()
    rows = {x.split()[0]: [int(v) for v in x.split()[1:]] for x in text.splitlines()
            if x.startswith("cpu")}
    assert set(rows) == {"cpu", "cpu0", "cpu1"}
    assert all(sum(rows[f"cpu{i}"]) == 99000 for i in range(2))  # 990 s in ticks
    assert rows["cpu"] == [a + b for a, b in zip(rows["cpu0"], rows["cpu1"], strict=True)]
    assert rows["cpu"][0] == 3000 and rows["cpu"][2] == 1000  # user, system: 30 s, 10 s
    assert rows["cpu0"][7] == rows["cpu1"][7] == 200  # steal
    # /proc/uptime's idle is /proc/stat's idle, steal not counted (the files agree)
    assert float(w.times().uptime(c).split()[1]) == rows["cpu"][3] / 100 == 990 * 2 - 40 - 4
    if version == 1:  # v1 knows the time ran on host CPU 0, the container's cpu0
        assert rows["cpu0"][:3] == [3000, 0, 1000]
    # counts are the container's (51 in R, 52 in D); the host's intr/ctxt/softirq are scaled
    # to the 990 s of its 1000 s that the container has lived, so that vmstat's first line
    # (a counter over the CPU lines' time) shows the host's average rate, not its total
    for line in ("intr 12221 0 0 1", "ctxt 6721", "softirq 54 0 1 2", "procs_running 1",
                 "procs_blocked 1", "processes 3"):
        assert f"\n{line}\n" in text
    assert abs(12221 / 990 - 12345 / 1000) < 0.01
    assert text.startswith("cpu  ")


@pytest.mark.parametrize("version", [1, 2])
def test_counters_never_go_backwards(tmp_path: Path, version: int) -> None:
    w = make_world(tmp_path, version)
    w.cpu_seconds(300, 100)
    c = w.container()
    boot = [1000.0]
    t = TimeFiles(w.services.host, host_files(w.services), boottime=lambda: boot[0],
                  realtime=lambda: 1.8e9, hz=100)

    def cpu_rows() -> list[list[int]]:
        return [[int(v) for v in x.split()[1:]] for x in t.stat(c).decode().splitlines()
                if x.startswith("cpu")]

    def idle() -> float:
        return float(t.uptime(c).split()[1])

    first, first_idle = cpu_rows(), idle()
    boot[0] += 1.0
    w.cpu_seconds(302, 100)  # 2 s busy in 1 s on 2 CPUs: idle = wall − busy would shrink
    second, second_idle = cpu_rows(), idle()
    w.cpu_seconds(0, 0)  # a garbled or reset counter
    boot[0] += 1.0
    third, third_idle = cpu_rows(), idle()
    for a, b in ((first, second), (second, third)):
        assert all(x <= y for ra, rb in zip(a, b, strict=True) for x, y in
                   zip(ra, rb, strict=True))
    assert first_idle <= second_idle <= third_idle
    assert third[0][3] > second[0][3]  # time passed: idle moved on


def test_renderer_pads_and_keeps_host_lines() -> None:
    snap = StatSnapshot("cpu  1 2\ncpu0 1 2\nintr 1\nbtime 5\nbtime 6\nweird line\n",
                        (CpuTimes(user=5, idle=7),), btime=-3, processes=9, procs_running=2,
                        procs_blocked=0)
    assert render(snap) == (b"cpu  5 0 0 7 0 0 0 0 0 0\ncpu0 5 0 0 7 0 0 0 0 0 0\nintr 1\n"
                            b"btime 0\nweird line\nprocesses 9\nprocs_running 2\n"
                            b"procs_blocked 0\n")
    assert busy_idle(((5, 3), (-1, 200)), 100) == (CpuTimes(user=5, system=3, idle=92),
                                                   CpuTimes(user=0, system=200, idle=0))
    # steal takes from idle, never more than is left of the wall time
    assert busy_idle(((5, 3), (50, 0), (1, 1)), 100, (10, 80)) == (
        CpuTimes(user=5, system=3, idle=82, steal=10), CpuTimes(user=50, idle=0, steal=50),
        CpuTimes(user=1, system=1, idle=98))
    prev = (CpuTimes(user=9, idle=1),)
    assert never_backwards(prev, (CpuTimes(user=3, idle=4),)) == (CpuTimes(user=9, idle=4),)
    assert never_backwards(prev, (CpuTimes(), CpuTimes())) == (CpuTimes(), CpuTimes())


@pytest.mark.parametrize("version", [1, 2])
async def test_init_that_exits_between_reads(tmp_path: Path, version: int) -> None:
    w = make_world(tmp_path, version)
    w.cpu_seconds(3, 1)
    c = w.container()
    t = w.times()
    assert t.uptime(c).startswith(b"990.00 ")
    w.host.remove_process(50)  # the init exits; the container object is still in hand
    assert t.uptime(c).startswith(b"990.00 ")  # its start time was kept at resolution
    assert b"\nprocs_running 1\n" in t.stat(c)
    assert t.loadavg(c).startswith(b"0.00 0.00 0.00 1/2 ")
    # a new open from the dying namespace: a clean errno, never a crash
    ops = w.ops()
    with pytest.raises(pyfuse3.FUSEError) as e:
        await cat(ops, "proc/uptime", 51)
    assert e.value.errno == errno.ESRCH


async def test_container_without_a_cgroup_of_its_own_sees_the_hosts_cpu_lines(
        tmp_path: Path) -> None:
    host = FakeHost(tmp_path / "h", ncpus=8)
    (host.proc / "stat").write_text(HOST_STAT)
    cg = tmp_path / "cg"
    v2_cgroup(cg, "/", {"cpu.stat": "user_usec 1\nsystem_usec 1\n"})
    host.add_process(1, ppid=0, pidns=HOST_PIDNS, nspid=(1,))
    host.add_process(50, ppid=1, pidns=NS_BOX, nspid=(50, 1), start=1000)
    host.add_process(51, ppid=50, pidns=NS_BOX, nspid=(51, 2))
    services = Services.build(Config(cache_ttl=0, proc_root=str(host.proc), sys_root=str(host.sys),
                                     cgroup_root=str(cg)))
    c = services.resolver.resolve(51)
    assert c is not None
    t = TimeFiles(services.host, host_files(services), boottime=lambda: 1000.0, hz=100)
    stat = t.stat(c).decode()
    assert stat.count("\ncpu") == 8 and "\ncpu7 100 1 50 12500 10 0 1 0 0 0\n" in stat
    # 990 s on 8 CPUs at the host's idle share (12500 of 12662 ticks)
    up, idle = (float(x) for x in t.uptime(c).split())
    assert up == 990.0 and idle == pytest.approx(990 * 8 * 12500 / 12662, abs=0.01)


async def test_a_rewound_read_renders_afresh_like_top_does(tmp_path: Path) -> None:
    """top keeps /proc/stat open and reads it again from offset 0 on every refresh."""
    w = make_world(tmp_path, 2)
    w.cpu_seconds(1, 0)
    ops = w.ops()
    info = await ops.open(inode_of(ops, "proc/stat"), os.O_RDONLY, Ctx(51))
    head = await ops.read(info.fh, 0, 10)
    w.cpu_seconds(50, 0)
    rest = await ops.read(info.fh, 10, 1 << 16)  # the same pass: the same generation
    assert cpu_rows_of((head + rest).decode())["cpu"][0] == 100
    again = await ops.read(info.fh, 0, 1 << 16)  # lseek(0) + read: a new generation
    assert cpu_rows_of(again.decode())["cpu"][0] == 5000
    await ops.release(info.fh)


def cpu_rows_of(text: str) -> dict[str, list[int]]:
    return {x.split()[0]: [int(v) for v in x.split()[1:]] for x in text.splitlines()
            if x.startswith("cpu")}


@pytest.mark.parametrize("version", [1, 2])
def test_task_states_are_reused_briefly_but_the_newest_pid_is_fresh(tmp_path: Path,
                                                                    version: int) -> None:
    w = make_world(tmp_path, version)
    clock = ManualClock(100.0)
    t = TimeFiles(w.services.host, host_files(w.services), boottime=lambda: 1000.0,
                  realtime=lambda: 1_800_000_000.0, hz=100, task_ttl=0.5, clock=clock)
    c = w.container()
    first = t.stat(c)
    assert b"\nprocs_running 1\n" in first
    processes = next(x for x in first.decode().splitlines() if x.startswith("processes "))
    assert processes != "processes 7"
    # 52 wakes up and a new task 53 appears in the container's cgroup
    w.host.add_process(52, ppid=50, pidns=NS_BOX, nspid=(52, 3), state="R")
    w.host.add_process(53, ppid=50, pidns=NS_BOX, nspid=(53, 7), state="R")
    threads = "cgroup.threads" if version == 2 else "tasks"
    for d in {w.box, w.cg / "cpuset/box"} if version == 1 else {w.box}:
        (d / threads).write_text("50\n51\n52\n53\n")
    clock.now += 0.4
    text = t.stat(c).decode()
    assert "\nprocs_running 1\n" in text  # counts by state: from 0.4 s ago
    assert f"\n{processes}\n" in text  # and stat's newest pid with them: tasks not listed
    counted = t.count_tasks(c)
    assert counted is not None and counted.newest_pid == 7  # loadavg's newest pid: now
    clock.now += 0.2
    text = t.stat(c).decode()
    assert "\nprocs_running 3\n" in text  # past the 0.5 s bound: counted again
    assert "\nprocesses 7\n" in text
