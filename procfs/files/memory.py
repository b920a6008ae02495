"""proc/meminfo, proc/swaps and proc/vmstat of a container: its memory cgroup's limits, usage
and statistics (and its block I/O for vmstat's paging counters) on the host's lines."""

from __future__ import annotations

import os

from overlays import meminfo, swaps, vmstat
from procfs.files.host import HostFiles
from procfs.sources.containers import Container
from procfs.sources.io import AbsentFiles, read_io
from procfs.sources.memory import read_memory, read_oom_kills

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class MemoryFiles:
    def __init__(self, host: HostFiles, absent: AbsentFiles | None = None) -> None:
        self.host = host
        self.absent = absent  # the v1 blkio files this kernel lacks (shared with diskstats)

    def meminfo(self, c: Container) -> bytes:
        return meminfo.render(meminfo.MeminfoSnapshot(self.host.meminfo(),
                                                      read_memory(c.cgroups)))

    def swaps(self, c: Container) -> bytes:
        mem = read_memory(c.cgroups)
        if mem is None:
            return self.host.host.text("swaps").encode()
        own = meminfo.container_values(self.host.meminfo(), mem)
        used = own["SwapTotal"] - own["SwapFree"]
        return swaps.render(swaps.SwapsSnapshot("", own["SwapTotal"], used))

    def vmstat(self, c: Container) -> bytes:
        host_text = self.host.recent_text("vmstat")
        mem = read_memory(c.cgroups)
        if mem is None:  # no memory cgroup of its own: it is the host's memory
            return host_text.encode()
        own = meminfo.container_values(self.host.meminfo(), mem)
        io = read_io(c.cgroups, self.absent) or {}
        return vmstat.render(vmstat.VmstatSnapshot(
            host_text, mem.stat, free_bytes=own["MemFree"] * meminfo.KIB,
            read_bytes=sum(d.read_bytes for d in io.values()),
            write_bytes=sum(d.write_bytes for d in io.values()),
            oom_kills=read_oom_kills(c.cgroups), page_size=PAGE_SIZE))
