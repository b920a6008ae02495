"""The numbers a container's sysinfo(2) answers (busybox `free` and `uptime`, glibc's
`sysconf(_SC_PHYS_PAGES)`), from the same readings as its /proc/meminfo, /proc/uptime and
/proc/loadavg, so that the call and the files agree. The answering itself is
`procfs.runtime.sysinfo_service`'s."""

from __future__ import annotations

import time
from collections.abc import Callable

from overlays import meminfo
from procfs.errors import ProcfsError
from procfs.files.host import HostFiles
from procfs.files.time import TimeFiles
from procfs.runtime.sysinfo import SysinfoValues
from procfs.sources.containers import Resolver
from procfs.sources.memory import read_memory

KIB = 1024


class SysinfoNumbers:
    """`numbers(tid)`: the SysinfoValues of the calling thread's container, None for a host
    thread or one that has no memory cgroup of its own (the kernel answers those). Reused for
    `ttl` seconds per container (the same object: the answerer skips packing it again)."""

    def __init__(self, resolver: Resolver, host: HostFiles, time_files: TimeFiles,
                 ttl: float = 0.01, clock: Callable[[], float] = time.monotonic) -> None:
        self.resolver = resolver
        self.host = host
        self.time = time_files
        self.ttl = ttl
        self.clock = clock
        self._kept: dict[tuple[int, int, int], tuple[float, SysinfoValues]] = {}

    def __call__(self, tid: int) -> SysinfoValues | None:
        try:
            c = self.resolver.resolve(tid)
        except ProcfsError:
            return None
        if c is None:
            return None
        now = self.clock()
        kept = self._kept.get(c.key)
        if kept is not None and now - kept[0] < self.ttl:
            return kept[1]
        mem = read_memory(c.cgroups)
        if mem is None:
            return None
        own = meminfo.container_values(self.host.meminfo(), mem)
        counted = self.time.count_tasks(c)
        loads = (0, 0, 0)
        if counted is not None:
            loads = self.time.loads.read(c, counted, self.time.elapsed(c)).avenrun
        values = SysinfoValues(
            uptime=self.time.uptime_seconds(c), avenrun=loads,
            totalram=own["MemTotal"] * KIB, freeram=own["MemFree"] * KIB,
            sharedram=own["Shmem"] * KIB, bufferram=own["Buffers"] * KIB,
            totalswap=own["SwapTotal"] * KIB, freeswap=own["SwapFree"] * KIB,
            procs=counted.total if counted is not None else 1)
        if len(self._kept) > 4096:  # bounded: the oldest half goes
            for key in list(self._kept)[:2048]:
                del self._kept[key]
        self._kept[c.key] = (now, values)
        return values
