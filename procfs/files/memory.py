"""proc/meminfo and proc/swaps of a container: its memory cgroup's limits, usage and statistics
on the host's lines."""

from __future__ import annotations

from overlays import meminfo, swaps
from procfs.files.host import HostFiles
from procfs.sources.containers import Container
from procfs.sources.memory import read_memory


class MemoryFiles:
    def __init__(self, host: HostFiles) -> None:
        self.host = host

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
