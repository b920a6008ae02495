"""Load averages: the kernel's fixed-point arithmetic (known answers), the /proc/loadavg format,
and the sampler driven by trio's MockClock over a fixture /proc and cgroup tree."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from overlays.loadavg import FIXED_1, LoadavgSnapshot, format_load, render
from procfs.files.host import HostFiles
from procfs.files.time import TimeFiles, load_counter
from procfs.sources.cgroups import CgroupLayout
from procfs.sources.containers import Container, Resolver
from procfs.sources.hostproc import HostProc
from procfs.sources.loadavg import EXP, LoadTracker, calc_load, calc_load_n, decay, fixed_power_int
from procfs.sources.tasks import TaskCount
from tests.trees import HOST_PIDNS, FakeHost, ManualClock, v1_cgroup, v2_cgroup

# Produced by compiling the kernel's calc_load()/fixed_power_int() (kernel/sched/loadavg.c,
# include/linux/sched/loadavg.h) in a small C program and feeding it this sequence of active
# task counts, one per 5-second period, from avenrun = 0; the comments are its %lu.%02lu output.
SEQUENCE = (1, 1, 1, 2, 3, 0, 0, 1, 0, 0, 0, 5)
KERNEL = (
    ((164, 34, 11), "0.08 0.02 0.01"),
    ((315, 68, 22), "0.15 0.03 0.01"),
    ((454, 101, 33), "0.22 0.05 0.02"),
    ((746, 168, 55), "0.36 0.08 0.03"),
    ((1179, 268, 88), "0.58 0.13 0.04"),
    ((1084, 263, 87), "0.53 0.13 0.04"),
    ((997, 258, 86), "0.49 0.13 0.04"),
    ((1082, 288, 97), "0.53 0.14 0.05"),
    ((995, 283, 96), "0.49 0.14 0.05"),
    ((915, 278, 95), "0.45 0.14 0.05"),
    ((841, 273, 94), "0.41 0.13 0.05"),
    ((1594, 439, 149), "0.78 0.21 0.07"),
)
# The same program: fixed_power_int(EXP_n, 11, 12) and calc_load(4096, that, FIXED_1).
POWER_12 = (751, 1677, 1919)
TWELVE_AT_ONCE = (2799, 3725, 3967)


def test_decay_matches_the_kernel_for_a_known_sequence() -> None:
    avenrun = (0, 0, 0)
    for active, (expected, text) in zip(SEQUENCE, KERNEL, strict=True):
        avenrun = decay(avenrun, active)
        assert avenrun == expected
        assert " ".join(format_load(a) for a in avenrun) == text


def test_missed_periods_are_caught_up_as_the_kernel_does() -> None:
    assert tuple(fixed_power_int(e, 11, 12) for e in EXP) == POWER_12
    assert tuple(calc_load_n(4096, e, FIXED_1, 12) for e in EXP) == TWELVE_AT_ONCE
    assert decay((4096, 4096, 4096), 1, 12) == TWELVE_AT_ONCE
    assert fixed_power_int(1884, 11, 0) == FIXED_1
    assert decay((7, 8, 9), 3, 0) == (7, 8, 9)  # no period elapsed: unchanged


def test_calc_load_rounds_up_while_rising() -> None:
    # active >= load adds FIXED_1 - 1 before the division: a rising load never lags by rounding
    assert calc_load(0, 1884, FIXED_1) == 164
    assert calc_load(FIXED_1, 1884, FIXED_1) == FIXED_1
    assert calc_load(FIXED_1, 1884, 0) == 1884


def test_huge_and_negative_active_counts_stay_in_range() -> None:
    assert decay((0, 0, 0), -5) == (0, 0, 0)
    high = decay((0, 0, 0), 10**30)
    assert all(0 < a < 2**31 for a in high)


def test_render_fields() -> None:
    out = render(LoadavgSnapshot((454, 101, 33), 1, 7, 42))
    assert out == b"0.22 0.05 0.02 1/7 42\n"
    assert render(LoadavgSnapshot((0, 0, 0), 0, 0, 0)) == b"0.00 0.00 0.00 0/0 0\n"
    assert render(LoadavgSnapshot((-3, 5 * FIXED_1, 0), -1, -2, -9)) == \
        b"0.00 5.00 0.00 0/0 0\n"
    assert format_load(FIXED_1 * 2 + FIXED_1 // 2) == "2.50"


NS_A = 4026532001


def world(tmp_path: Path, version: int) -> tuple[FakeHost, Path, Container, TimeFiles]:
    """A container (init 200, tasks 201-203) whose cgroup lists its threads (v1 `tasks` in
    the cpuacct hierarchy, v2 `cgroup.threads`), a nested sub-cgroup holding 203."""
    host = FakeHost(tmp_path / "h", ncpus=2)
    cg = tmp_path / "cg"
    if version == 2:
        v2_cgroup(cg, "/box", {"cgroup.threads": "200\n201\n202\n"})
        v2_cgroup(cg, "/box/sub", {"cgroup.threads": "203\n"})
        line = "0::/box\n"
    else:
        v1_cgroup(cg, "cpu,cpuacct", "/box", {"tasks": "200\n201\n202\n"})
        v1_cgroup(cg, "cpu,cpuacct", "/box/sub", {"tasks": "203\n"})
        line = "4:cpu,cpuacct:/box\n"
    host.add_process(1, ppid=0, pidns=HOST_PIDNS, nspid=(1,))
    for pid, nspid in ((200, 1), (201, 2), (202, 3), (203, 4)):
        host.add_process(pid, ppid=1, pidns=NS_A, nspid=(pid, nspid), cgroup=line)
    hp = HostProc(str(host.proc), str(host.sys))
    layout = CgroupLayout.from_directory(str(cg))
    c = Resolver(hp, layout).resolve(201)
    assert c is not None
    times = TimeFiles(hp, HostFiles(hp), boottime=lambda: 100.0, realtime=lambda: 1e9, hz=100,
                      tracker=None)
    return host, cg, c, times


def read(tracker: LoadTracker, times: TimeFiles, c: Container) -> LoadavgSnapshot:
    """A read of /proc/loadavg as the file does it: the tasks counted, then the averages."""
    counted = times.count_tasks(c)
    assert counted is not None
    return tracker.read(c, counted)


def set_states(host: FakeHost, states: dict[int, str]) -> None:
    for pid, state in states.items():
        host.add_process(pid, ppid=1, pidns=NS_A, nspid=(pid, pid - 199),
                         cgroup=(host.proc / str(pid) / "cgroup").read_text(), state=state)


def set_active(host: FakeHost, tmp_path: Path, version: int, active: int) -> None:
    """`active` tasks in R or D: among 201-203 (203 in the sub-cgroup), then extra threads
    300, 301, ... in a second sub-cgroup."""
    set_states(host, {pid: ("R" if k % 2 == 0 else "D") if k < active else "S"
                      for k, pid in enumerate((203, 201, 202))})
    extra = range(300, 300 + max(active - 3, 0))
    d = tmp_path / "cg" / ("box" if version == 2 else "cpu,cpuacct/box") / "extra"
    d.mkdir(exist_ok=True)
    (d / ("cgroup.threads" if version == 2 else "tasks")).write_text(
        "".join(f"{tid}\n" for tid in extra))
    for tid in extra:
        host.add_process(tid, ppid=200, pidns=NS_A, nspid=(tid, tid - 250), state="R")


@pytest.mark.parametrize("version", [1, 2])
async def test_sampler_follows_the_kernel_sequence(
        tmp_path: Path, version: int, mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = 0
    host, _, c, times = world(tmp_path, version)
    tracker = LoadTracker(load_counter(times.host), clock=trio.current_time)
    async with trio.open_nursery() as nursery:
        await nursery.start(tracker.run)  # ticks at 5, 10, 15, ...
        t0 = trio.current_time()
        assert render(read(tracker, times, c)).startswith(b"0.00 0.00 0.00 0/4 4")
        await trio.sleep_until(t0 + 7.5)  # the tick at 5 seeded it with 0 active tasks
        assert read(tracker, times, c).avenrun == (0, 0, 0)
        for i, (active, (expected, text)) in enumerate(zip(SEQUENCE, KERNEL, strict=True)):
            set_active(host, tmp_path, version, active)
            await trio.sleep_until(t0 + 12.5 + 5 * i)
            snap = read(tracker, times, c)
            assert snap.avenrun == expected, (i, active)
            assert render(snap).decode().startswith(text + " ")
        nursery.cancel_scope.cancel()


async def test_only_recently_read_containers_are_sampled(
        tmp_path: Path, mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = 0
    _, _, c, times = world(tmp_path, 2)
    counted: list[tuple[int, int, int]] = []

    def count(x: Container) -> TaskCount | None:
        counted.append(x.key)
        return times.count_tasks(x)

    tracker = LoadTracker(count, clock=trio.current_time, keep=60.0, maxsize=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(tracker.run)
        await trio.sleep(30)
        assert counted == []  # nobody read: nothing sampled
        read(tracker, times, c)
        await trio.sleep(20)
        assert len(counted) > 1 and set(counted) == {c.key}
        await trio.sleep(70)  # not read for more than `keep`: dropped, no longer sampled
        assert len(tracker) == 0
        n = len(counted)
        await trio.sleep(30)
        assert len(counted) == n
        nursery.cancel_scope.cancel()


def test_tracker_memory_is_bounded_and_dead_containers_are_dropped(tmp_path: Path) -> None:
    _, cg, c, times = world(tmp_path, 1)
    now = [0.0]
    tracker = LoadTracker(load_counter(times.host), clock=lambda: now[0], maxsize=3)
    others = [Container(NS_A + i, 200, 1000 + i, c.cgroups) for i in range(1, 6)]
    for x in [c, *others]:
        read(tracker, times, x)
    assert len(tracker) == 3
    assert [x.key for x in tracker.tracked()] == [x.key for x in others[-3:]]
    # the cgroup vanishes: the next sample finds nothing to count and forgets the container
    read(tracker, times, c)
    for d in sorted((cg / "cpu,cpuacct").rglob("*"), key=lambda p: len(p.parts), reverse=True):
        d.unlink() if d.is_file() else d.rmdir()
    now[0] = 6.0
    for x in tracker.tracked():
        tracker.sample(x.key)
    assert len(tracker) == 0


def test_newest_pid_and_running_total(tmp_path: Path) -> None:
    host, _, c, times = world(tmp_path, 2)
    set_states(host, {201: "R", 202: "D", 203: "S"})
    now = [0.0]
    tracker = LoadTracker(load_counter(times.host), clock=lambda: now[0])
    # running counts R only (as the kernel's field 4); the newest pid is 203's pid 4 inside
    assert render(read(tracker, times, c)) == b"0.00 0.00 0.00 1/4 4\n"
    # a task that joined the cgroup from outside the namespace (as `unshare` does) counts as
    # one of its tasks but has no pid inside: the newest pid skips it
    host.add_process(900, ppid=1, pidns=HOST_PIDNS, nspid=(900,))
    (tmp_path / "cg/box/cgroup.threads").write_text("200\n201\n202\n900\n")
    assert render(read(tracker, times, c)) == b"0.00 0.00 0.00 1/5 4\n"
    # the newest task exits: the newest pid does not go back; a vanished tid is not counted
    host.remove_process(203)
    assert render(read(tracker, times, c)) == b"0.00 0.00 0.00 1/4 4\n"


def test_server_wiring_samples_the_tracker_the_file_reads() -> None:
    """The node's tracker is the one kept for the server (and sampled by its task), even while
    it tracks nothing yet (an empty tracker is falsy: len() 0)."""
    from procfs.config import Config
    from procfs.files.table import all_nodes
    from procfs.server.services import Services

    s = Services.build(Config(mountpoint="/nonexistent"))
    all_nodes(s)
    tracker = s.kept["loadavg"]
    assert tracker.run in s.background
    node = next(n for n in all_nodes(s) if n.path == "proc/loadavg")
    assert node.render.__self__.loads is tracker  # type: ignore[attr-defined]


def test_the_sampler_never_seeds_from_a_count_a_read_took(tmp_path: Path) -> None:
    """Reads may reuse a count for 0.5 s, but a read's count holds the reader itself, caught
    running: the sampler counts afresh (an idle container would otherwise show load 1)."""
    host, _, c, times = world(tmp_path, 2)
    clock = ManualClock(100.0)
    # as the server builds it: the tracker counts with its own counter, reads with theirs
    t = TimeFiles(times.host, times.files, boottime=lambda: 100.0, realtime=lambda: 1e9, hz=100,
                  tracker=LoadTracker(load_counter(times.host), clock=clock), task_ttl=0.5,
                  clock=clock)
    set_states(host, {201: "R"})  # the reader, running in its own read
    assert t.loadavg(c).split()[3] == b"1/4"
    set_states(host, {201: "S"})  # asleep again
    clock.now += 0.1
    assert t.loadavg(c).split()[3] == b"1/4"  # a read within 0.5 s: the count reused
    t.loads.sample(c.key)
    assert t.loadavg(c).startswith(b"0.00 0.00 0.00 ")  # seeded from a fresh count: idle


def test_the_averages_start_from_zero_at_the_containers_start(tmp_path: Path) -> None:
    """As the kernel's at boot: a container read 6 s after it started, with one busy task,
    shows a load decaying in from 0 (not 1.00 1.00 1.00); one first read an hour after it
    started shows about its steady work (the periods nobody sampled caught up)."""
    host, _, c, times = world(tmp_path, 2)
    set_states(host, {201: "R", 202: "S", 203: "S"})
    now = [100.0]
    tracker = LoadTracker(load_counter(times.host), clock=lambda: now[0])
    counted = times.count_tasks(c)
    assert counted is not None
    assert render(tracker.read(c, counted, age=6.0)).startswith(b"0.00 0.00 0.00 ")
    now[0] += 4.0  # the next tick: two periods since the start
    tracker.sample(c.key)
    assert render(tracker.read(c, counted)).startswith(b"0.15 0.03 0.01 ")
    other = Container(NS_A + 1, 200, 1000, c.cgroups)
    tracker.read(other, counted, age=3600.0)
    tracker.sample(other.key)
    assert render(tracker.read(other, counted)).startswith(b"1.00 1.00 0.98 ")
