"""Time files: /proc/stat, /proc/uptime and /proc/loadavg of a container.

Time as the kernel shows it to a process in the container, so that `ps` (STARTED = btime +
starttime, ELAPSED = uptime − starttime), psutil and `top` compute right from these files and
the unchanged /proc/PID/stat:
- a container with a time namespace of its own (runc/crun `time` namespace, `procfs-runc`,
  `unshare --time`): uptime is that namespace's CLOCK_BOOTTIME (the host's + the boottime
  offset) and btime the host's boot time − the offset, as the kernel formats them for a reader
  inside it (the kernel also shifts every process's starttime there);
- a container without one: uptime counts from its init's start (as LXCFS), and btime is the
  host's, since the kernel shows it the host's starttimes.
CPU time is accounted over the real time since the init started (`elapsed`), whatever the
namespace's offset: idle = elapsed × CPUs − busy − steal, in /proc/stat and /proc/uptime alike.
The daemon reads field 22 of the init's stat in its own time namespace, as it reads its own
CLOCK_BOOTTIME, so their difference is that real time.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

from cachetools import LRUCache, TTLCache

from overlays import loadavg, stat, uptime
from overlays.cpuview import CpuView
from overlays.stat import CpuTimes, host_cpu_lines
from procfs.errors import ProcfsError
from procfs.files.host import HostFiles
from procfs.sources.containers import Container
from procfs.sources.cpu_time import NS, CpuUsage, read_cpu_usage, spread
from procfs.sources.hostproc import HostProc
from procfs.sources.loadavg import LoadTracker
from procfs.sources.tasks import TaskCount, count_tasks

Key = tuple[int, int, int]
V = TypeVar("V")


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def clock_ticks() -> int:
    try:
        return max(os.sysconf("SC_CLK_TCK"), 1)
    except (ValueError, OSError):
        return 100


def elapsed_since(now_boottime: float, start_ticks: int, hz: int) -> float:
    """Real seconds since a process started `start_ticks` after the host's boot (never
    negative: clock granularity)."""
    return max(now_boottime - start_ticks / max(hz, 1), 0.0)


def container_uptime(c: Container, now_boottime: float, hz: int) -> float:
    """The container's /proc/uptime: its time namespace's CLOCK_BOOTTIME when it has one of its
    own, else the time since its init started. Never negative (the kernel refuses an offset
    that would make it so, but a garbled file must not show one)."""
    if c.timens:
        return max(now_boottime + c.boottime_offset_ns / NS, 0.0)
    return elapsed_since(now_boottime, c.reaper_start, hz)


def container_btime(c: Container, host_btime: int, now_realtime: float,
                    now_boottime: float) -> int:
    """The container's `btime`: the host's, shifted back by a time namespace's boottime offset
    as the kernel shifts it (`timens_sub_boottime`)."""
    if not c.timens:
        return host_btime
    return int((now_realtime - now_boottime) - c.boottime_offset_ns / NS)


def host_btime(stat_text: str) -> int:
    """The `btime` line of the host's /proc/stat (0 when missing)."""
    for line in stat_text.splitlines():
        if line.startswith("btime "):
            value = line[6:].strip()
            return int(value) if value.isascii() and value.isdigit() else 0
    return 0


class _LastValues:
    """What each container was last shown, so that its counters never go backwards; bounded."""

    def __init__(self, maxsize: int = 4096) -> None:
        self.maxsize = maxsize
        self._cpus: OrderedDict[Key, tuple[CpuTimes, ...]] = OrderedDict()
        self._idle: OrderedDict[Key, float] = OrderedDict()

    def cpus(self, key: Key, cur: tuple[CpuTimes, ...]) -> tuple[CpuTimes, ...]:
        shown = stat.never_backwards(self._cpus.get(key), cur)
        self._put(self._cpus, key, shown)
        return shown

    def idle(self, key: Key, cur: float) -> float:
        shown = max(self._idle.get(key, 0.0), cur)
        self._put(self._idle, key, shown)
        return shown

    def _put(self, d: OrderedDict[Key, V], key: Key, value: V) -> None:
        d[key] = value
        d.move_to_end(key)
        while len(d) > self.maxsize:
            d.popitem(last=False)


def load_counter(host: HostProc) -> Callable[[Container], TaskCount | None]:
    """How the load sampler counts a container's tasks: afresh, never from a read's counts (a
    count a read took includes that reader, caught running in its own read)."""
    def count(c: Container) -> TaskCount | None:
        return count_tasks(host, c.cgroups, c.pidns_level, False, key=(c.key, False))

    return count


class TimeFiles:
    def __init__(
        self,
        host: HostProc,
        files: HostFiles,
        *,
        boottime: Callable[[], float] = boottime,
        realtime: Callable[[], float] = time.time,
        hz: int | None = None,
        tracker: LoadTracker | None = None,
        task_ttl: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.files = files
        self.boottime = boottime
        self.realtime = realtime
        self.hz = hz or clock_ticks()
        # not `tracker or ...`: an empty tracker has len() 0 and is falsy
        self.loads = tracker if tracker is not None else LoadTracker(load_counter(host))
        self._last = _LastValues()
        # Counts of the container's tasks by state, reused for `task_ttl` s: they cost a read of
        # every task's stat (and schedstat), the bulk of rendering stat and loadavg.
        self._states: TTLCache[Hashable, TaskCount] | None = (
            TTLCache(maxsize=4096, ttl=task_ttl, timer=clock) if task_ttl > 0 else None)
        # per container, the (host tid, pid inside) of its newest task found last
        self._newest: LRUCache[Hashable, tuple[int, int]] = LRUCache(maxsize=4096)

    # Readers.

    def uptime_seconds(self, c: Container) -> float:
        return container_uptime(c, self.boottime(), self.hz)

    def elapsed(self, c: Container) -> float:
        return elapsed_since(self.boottime(), c.reaper_start, self.hz)

    def host_cpus(self, cpus: tuple[int, ...]) -> tuple[CpuTimes, ...]:
        """The host's own lines for these CPUs (a container without a cgroup of its own)."""
        lines = host_cpu_lines(self.files.recent_text("stat"))
        return tuple(lines.get(cpu, CpuTimes()) for cpu in cpus)

    def count_tasks(self, c: Container, waits: bool = False) -> TaskCount | None:
        """The container's tasks by state (with `waits`: and their time waiting for a CPU; as
        /proc/stat wants them, whose newest pid may then be as old as the counts)."""
        return count_tasks(self.host, c.cgroups, c.pidns_level, waits, self._states,
                           (c.key, waits), fresh_newest=not waits, newest=self._newest)

    def cpu_times(self, c: Container, elapsed: float, usage: CpuUsage | None,
                  waited_ns: int = 0, view: CpuView | None = None) -> tuple[CpuTimes, ...]:
        """The container's cpuN lines: its busy time per CPU, steal, and idle over `elapsed`
        (`view`: its CPUs, when the caller read them already)."""
        view = view or self.files.cpu_view(c)
        if usage is None:
            return self._last.cpus(c.key, self.host_cpus(view.cpus))
        tick_ns = NS // self.hz
        busy = tuple((u // tick_ns, s // tick_ns) for u, s in spread(usage, view.cpus))
        steal = tuple(w // tick_ns for w, _ in spread(CpuUsage(waited_ns, 0), view.cpus))
        return self._last.cpus(c.key, stat.busy_idle(busy, int(elapsed * self.hz), steal))

    # Renderers, one per file.

    def stat(self, c: Container) -> bytes:
        host_text = self.files.recent_text("stat")
        tasks = self.count_tasks(c, waits=True) or TaskCount(0, 0, 0, 0)
        usage = read_cpu_usage(c.cgroups, self.hz)
        boot, elapsed = self.boottime(), self.elapsed(c)
        view = self.files.cpu_view(c)  # (its cpuset and quota files: read once)
        cpus = self.cpu_times(c, elapsed, usage, tasks.waited_ns, view)
        btime = container_btime(c, host_btime(host_text), self.realtime(), boot)
        # its lines cover its life (the host's whole uptime when they are the host's lines)
        share = elapsed / boot if usage is not None and boot > 0 else 1.0
        return stat.render(stat.StatSnapshot(host_text, cpus, btime, tasks.newest_pid,
                                             tasks.running, tasks.blocked, view.cpus, share))

    def uptime(self, c: Container) -> bytes:
        """Its clock, and the idle of its CPUs as /proc/stat counts it (steal is not idle)."""
        up = self.uptime_seconds(c)
        usage = read_cpu_usage(c.cgroups, self.hz)
        if usage is not None:
            tasks = self.count_tasks(c, waits=True) or TaskCount(0, 0, 0, 0)
            lines = self.cpu_times(c, self.elapsed(c), usage, tasks.waited_ns)
            idle = sum(t.idle for t in lines) / self.hz
        else:  # no CPU time of its own: the host's idle share of those CPUs
            view = self.files.cpu_view(c)
            host = self.host_cpus(view.cpus)
            total = sum(sum(t.columns()) for t in host)
            idle = up * view.count * (sum(t.idle for t in host) / total if total else 1.0)
        idle = self._last.idle(c.key, idle)
        return uptime.render(uptime.UptimeSnapshot(up, max(idle, 0.0)))

    def loadavg(self, c: Container) -> bytes:
        counted = self.count_tasks(c)
        if counted is None:
            raise ProcfsError(f"container {c.key} has no cgroup of its own to count tasks in")
        return loadavg.render(self.loads.read(c, counted, self.elapsed(c)))
