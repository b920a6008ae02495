"""Issue 3 acceptance: top, uptime, /proc/stat, /proc/uptime and /proc/loadavg inside real
containers (own cgroup, new pid + mount (+ time) namespaces) on the real machine."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time

from tests.support.sandbox import Limits, Sandbox, Server

DAY = 86400


def top_header(sb: Sandbox) -> str:
    return sb.sh("top -bn1 -1 -w 512 | head -n 3")


def proc_uptime(sb: Sandbox) -> float:
    return float(sb.sh("cat /proc/uptime").split()[0])


def cpu_rows(stat: str) -> dict[str, list[int]]:
    return {x.split()[0]: [int(v) for v in x.split()[1:]] for x in stat.splitlines()
            if x.startswith("cpu")}


def busy_share(a: list[int], b: list[int]) -> float:
    """Busy share of one `cpu` line between two reads, as top computes it."""
    delta = [y - x for x, y in zip(a, b, strict=True)]
    assert all(d >= 0 for d in delta), (a, b)  # counters never go backwards
    idle = delta[3] + delta[4]
    total = sum(delta[:8])
    return (total - idle) / total if total else 0.0


def test_top_and_uptime_in_a_one_cpu_container(make_container) -> None:
    started, started_wall = time.monotonic(), time.time()
    sb = make_container(Limits(cpus="0"))
    header = top_header(sb)
    age = time.monotonic() - started
    # top's per-CPU mode (-1): exactly one CPU line, and the container's uptime (< 1 minute)
    assert re.findall(r"%Cpu\d+", header) == ["%Cpu0"], header
    assert re.search(r"^top - \S+ up 0 min,", header), header
    assert re.search(r" up 0 min,", sb.sh("uptime")), sb.sh("uptime")
    up = proc_uptime(sb)
    assert 0 <= up <= age + 2
    with open("/proc/uptime") as f:
        assert float(f.read().split()[0]) > up  # the host has been up longer
    stat = sb.sh("cat /proc/stat")
    rows = cpu_rows(stat)
    assert list(rows) == ["cpu", "cpu0"] and all(len(r) == 10 for r in rows.values())
    # no time namespace of its own: the kernel gives it the host's start times, so btime must
    # stay the host's for `ps` to be right (now - uptime would put its processes in the future)
    assert btime_of(stat) == btime_of(host_file("/proc/stat"))
    assert_ps_times_right(sb, started_wall, elapsed=False)


def btime_of(stat: str) -> int:
    return int(re.search(r"^btime (\d+)$", stat, re.M).group(1))  # type: ignore[union-attr]


def assert_ps_times_right(sb: Sandbox, started_wall: float, elapsed: bool = True) -> None:
    """`ps` STARTED (btime + starttime) of the container's init within seconds of the real one,
    not in the future; and its ELAPSED (uptime - starttime) too where it can be right: in a time
    namespace of its own (without one, the kernel's start times count from the host's boot while
    uptime counts from the container's: that is what procfs-runc's time namespace is for)."""
    out = sb.sh("ps -o etimes=,lstart= -p 1").split(None, 1)
    etimes, lstart = int(out[0]), out[1].strip()
    if elapsed:
        assert 0 <= etimes <= time.time() - started_wall + 2, out
    started = time.mktime(time.strptime(lstart, "%a %b %d %H:%M:%S %Y"))
    assert abs(started - started_wall) <= 2, (lstart, time.ctime(started_wall))


def host_file(path: str) -> str:
    with open(path) as f:
        return f.read()


def host_uptime() -> float:
    return float(host_file("/proc/uptime").split()[0])


def test_one_day_boottime_offset(make_container) -> None:
    """A time namespace whose boot clock runs a day ahead of the host's: uptime is the kernel's
    for a reader in there (the host's + a day), btime a day earlier, and `ps` still right (the
    kernel shifts the start times by the same day)."""
    started, started_wall = time.monotonic(), time.time()
    sb = make_container(Limits(cpus="0"), boottime_offset=DAY)
    up = proc_uptime(sb)
    assert abs(up - (host_uptime() + DAY)) <= 2, up
    assert re.search(r" up 1 day, ", sb.sh("uptime")), sb.sh("uptime")
    assert re.search(r"^top - \S+ up 1 day, ", top_header(sb), re.M)
    host_btime = btime_of(host_file("/proc/stat"))
    assert abs(btime_of(sb.sh("cat /proc/stat")) - (host_btime - DAY)) <= 1
    assert_ps_times_right(sb, started_wall)
    # idle counts the CPU's real idle time since the container started, not the offset
    assert 0 <= float(sb.sh("cat /proc/uptime").split()[1]) <= time.monotonic() - started + 2


def test_boot_clock_from_zero(make_container) -> None:
    """`unshare --time --boottime -(host uptime)` (what procfs-runc gives every container):
    the kernel's own uptime in there starts at 0 with the container, and so does the served
    one (it stayed at 0.00, the init's start subtracted twice)."""
    started, started_wall = time.monotonic(), time.time()
    sb = make_container(Limits(cpus="0"), boottime_offset=-int(host_uptime()))
    time.sleep(1.5)
    up = proc_uptime(sb)
    assert 1.0 <= up <= time.monotonic() - started + 2, up
    assert re.search(r" up 0 min,", sb.sh("uptime")), sb.sh("uptime")
    assert_ps_times_right(sb, started_wall)


def test_busy_and_idle_containers_side_by_side(make_container, make_cgroup) -> None:
    """One busy task (a shell loop, in a sub-cgroup of the container) under a one-CPU quota,
    beside an idle container: CPU shares over one second, then load averages after 15 s."""
    busy = make_container(Limits(quota=(100000, 100000)))
    idle = make_container(Limits(quota=(100000, 100000)))
    assert busy.cgroup is not None
    inner = make_cgroup(parent=busy.cgroup)
    stress = busy.popen(["timeout", "18", "sh", "-c", "while :; do :; done"], cgroup=inner,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    try:
        time.sleep(1.0)
        # the first reads: from now on the sampler follows both containers
        for sb in (busy, idle):
            assert re.fullmatch(r"\d+\.\d\d \d+\.\d\d \d+\.\d\d \d+/\d+ \d+\n",
                                sb.sh("cat /proc/loadavg"))
        read_twice = "cat /proc/stat; echo --; sleep 1; cat /proc/stat"
        before_ns = busy.cgroup.cpu_usage_ns()
        first, second = busy.sh(read_twice).split("--\n")
        used_s = (busy.cgroup.cpu_usage_ns() - before_ns) / 1e9
        a, b = cpu_rows(first), cpu_rows(second)
        assert list(a) == ["cpu", "cpu0"]  # quota 1 CPU: one CPU line
        # Busy as top counts it: everything but idle. On a loaded host part of it is steal
        # (the task was runnable but waited for a CPU), as a VM shows its host's contention.
        assert busy_share(a["cpu"], b["cpu"]) >= 0.8, (a, b)
        # what the view calls user + system is what the cgroup used, read from the host
        busy_ticks = sum(b["cpu"][:3]) - sum(a["cpu"][:3])
        assert abs(busy_ticks / 100 - used_s) <= 0.25, (busy_ticks, used_s)
        first, second = idle.sh(read_twice).split("--\n")
        assert busy_share(cpu_rows(first)["cpu"], cpu_rows(second)["cpu"]) <= 0.10
        # top sees one CPU and its busy task inside the busy container
        assert re.findall(r"%Cpu\d+", top_header(busy)) == ["%Cpu0"]
        time.sleep(max(0.0, 16.0 - (time.monotonic() - t0)))
        load_busy = busy.sh("cat /proc/loadavg").split()
        load_idle = idle.sh("cat /proc/loadavg").split()
        assert stress.poll() is None, "the busy loop ended early"
        # The kernel's averages start from 0 at boot: 16 s after its start, one busy task
        # has brought the 1-minute average to about 1 - e^(-15/60) = 0.22, not 1.00.
        assert 0.1 <= float(load_busy[0]) <= 0.5, load_busy
        assert float(load_idle[0]) < 0.1, load_idle
        running, total = (int(x) for x in load_busy[3].split("/"))
        assert 1 <= running <= total
        # field 5: the newest pid in the container's namespace (the `cat` the shell forked)
        shell, loadavg = busy.sh("echo $$; cat /proc/loadavg").splitlines()
        assert int(shell) < int(loadavg.split()[4]) <= int(shell) + 20
    finally:
        stress.kill()
        stress.wait()


def test_uptime_idle_is_stats_idle_when_tasks_wait(make_container, make_cgroup) -> None:
    """/proc/uptime's idle is the idle of /proc/stat's CPU lines: time the container's tasks
    were runnable but throttled is steal there, not idle here (issue 20 item 8: uptime counted
    it idle). One busy loop under half a CPU of quota: half the time used, half throttled."""
    sb = make_container(Limits(cpus="0", quota=(50000, 100000)))
    assert sb.cgroup is not None
    inner = make_cgroup(parent=sb.cgroup)
    loop = sb.popen(["sh", "-c", "while :; do :; done"], cgroup=inner,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2.0)
        up, stat = sb.sh("cat /proc/uptime; echo --; cat /proc/stat").split("--\n")
        row = cpu_rows(stat)["cpu"]
        assert row[7] >= 50, row  # steal: at least 0.5 s throttled by now
        idle_up, idle_stat = float(up.split()[1]), row[3] / 100
        assert abs(idle_up - idle_stat) <= 0.3, (up, row)
    finally:
        loop.kill()  # (the nsenter before it)
        loop.wait()
        for pid in inner.procs():  # the loop: our cgroup's own
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_the_host_sees_its_own_files(server: Server) -> None:
    mount = server.mountpoint
    with open(f"{mount}/proc/stat") as f, open("/proc/stat") as real:
        ours, theirs = f.read(), real.read()
    assert len(cpu_rows(ours)) == len(cpu_rows(theirs))
    with open(f"{mount}/proc/uptime") as f, open("/proc/uptime") as real:
        assert abs(float(f.read().split()[0]) - float(real.read().split()[0])) < 2
    with open(f"{mount}/proc/loadavg") as f:
        assert len(f.read().split()) == 5
