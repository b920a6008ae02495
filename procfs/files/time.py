"""Time views: /proc/stat, /proc/uptime and /proc/loadavg of a container.

The container's clock starts when its init started: uptime = the host's CLOCK_BOOTTIME − the
init's start time (field 22 of /proc/PID/stat, kept in `Container.reaper_start`) + the boottime
offset of the init's time namespace. The daemon reads field 22 in its own time namespace, as it
reads its own CLOCK_BOOTTIME, so the difference is the real time since the init started; the
offset is added the way the kernel adds it for a reader inside that namespace.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

from cachetools import LRUCache, TTLCache

from overlays import loadavg, stat, uptime
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


def container_uptime(now_boottime: float, start_ticks: int, hz: int, offset_ns: int) -> float:
    """Seconds on the container's CLOCK_BOOTTIME; never negative (a negative offset larger than
    the time since boot is refused by the kernel, but a garbled file must not show one)."""
    return max(now_boottime - start_ticks / max(hz, 1) + offset_ns / NS, 0.0)


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
        return container_uptime(self.boottime(), c.reaper_start, self.hz, c.boottime_offset_ns)

    def host_cpus(self, cpus: tuple[int, ...]) -> tuple[CpuTimes, ...]:
        """The host's own lines for these CPUs (a container without a cgroup of its own)."""
        lines = host_cpu_lines(self.files.recent_text("stat"))
        return tuple(lines.get(cpu, CpuTimes()) for cpu in cpus)

    def count_tasks(self, c: Container, waits: bool = False) -> TaskCount | None:
        """The container's tasks by state (with `waits`: and their time waiting for a CPU; as
        /proc/stat wants them, whose newest pid may then be as old as the counts)."""
        return count_tasks(self.host, c.cgroups, c.pidns_level, waits, self._states,
                           (c.key, waits), fresh_newest=not waits, newest=self._newest)

    def cpu_times(self, c: Container, up: float, usage: CpuUsage | None,
                  waited_ns: int = 0) -> tuple[CpuTimes, ...]:
        view = self.files.cpu_view(c)
        if usage is None:
            return self._last.cpus(c.key, self.host_cpus(view.cpus))
        tick_ns = NS // self.hz
        busy = tuple((u // tick_ns, s // tick_ns) for u, s in spread(usage, view.cpus))
        steal = tuple(w // tick_ns for w, _ in spread(CpuUsage(waited_ns, 0), view.cpus))
        return self._last.cpus(c.key, stat.busy_idle(busy, int(up * self.hz), steal))

    # Renderers, one per file.

    def stat(self, c: Container) -> bytes:
        host_text = self.files.recent_text("stat")
        up = self.uptime_seconds(c)
        tasks = self.count_tasks(c, waits=True) or TaskCount(0, 0, 0, 0)
        cpus = self.cpu_times(c, up, read_cpu_usage(c.cgroups, self.hz), tasks.waited_ns)
        btime = int(self.realtime() - up)
        return stat.render(stat.StatSnapshot(host_text, cpus, btime, tasks.newest_pid,
                                             tasks.running, tasks.blocked))

    def uptime(self, c: Container) -> bytes:
        up = self.uptime_seconds(c)
        view = self.files.cpu_view(c)
        usage = read_cpu_usage(c.cgroups, self.hz)
        if usage is not None:
            idle = up * view.count - usage.total_ns / NS
        else:  # no CPU time of its own: the host's idle share of those CPUs
            lines = self.host_cpus(view.cpus)
            total = sum(sum(t.columns()) for t in lines)
            idle = up * view.count * (sum(t.idle for t in lines) / total if total else 1.0)
        idle = self._last.idle(c.key, idle)
        return uptime.render(uptime.UptimeSnapshot(up, max(idle, 0.0)))

    def loadavg(self, c: Container) -> bytes:
        counted = self.count_tasks(c)
        if counted is None:
            raise ProcfsError(f"container {c.key} has no cgroup of its own to count tasks in")
        return loadavg.render(self.loads.read(c, counted))
