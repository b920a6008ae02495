"""Snapshots of what a container sees, read from the host and its cgroups, and rendered.

Each method takes a resolved Container, reads what its file needs into a typed snapshot and hands
it to the pure renderer in `overlays/`. The host's own files are passed through unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from overlays import cpuinfo, cpulist, meminfo, swaps
from overlays.cpuview import CpuView
from procfs.sources.containers import Container
from procfs.sources.cpuset import CpuViewMode, read_cpu_view
from procfs.sources.hostproc import HostProc
from procfs.sources.memory import read_memory

# Host files that change only with CPU hotplug (and cpuinfo's MHz): re-read at most this often.
STATIC_TTL = 1.0
# Host files that change all the time but of which a container sees only the slow lines (the
# host's meminfo: its Vmalloc*, HugePages*, CommitLimit... lines; stat's intr and ctxt) or that
# name its devices (diskstats): read at most this often.
HOST_TTL = 0.01


class Views:
    def __init__(
        self,
        host: HostProc,
        cpu_mode: CpuViewMode = CpuViewMode.QUOTA,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.cpu_mode = cpu_mode
        self.clock = clock
        self._static: dict[str, tuple[float, str]] = {}
        self._host_meminfo: tuple[float, meminfo.HostMeminfo] | None = None
        # cpuinfo renderings per CPU view, for the host text they were made from
        self._cpuinfo: tuple[str, dict[CpuView, bytes]] = ("", {})

    def _kept(self, key: str, ttl: float, read: Callable[[], str]) -> str:
        now = self.clock()
        hit = self._static.get(key)
        if hit is not None and now - hit[0] < ttl:
            return hit[1]
        text = read()
        self._static[key] = (now, text)
        return text

    def static_text(self, key: str, read: Callable[[], str]) -> str:
        return self._kept(key, STATIC_TTL, read)

    def recent_text(self, name: str) -> str:
        """The host's /proc/`name` (stat, diskstats), re-read at most every HOST_TTL s: many
        containers rendering at once need one reading, not one each."""
        return self._kept("/proc/" + name, HOST_TTL, lambda: self.host.text(name))

    def host_online(self) -> tuple[int, ...]:
        text = self.static_text("online", lambda: ",".join(map(str, self.host.online_cpus())))
        return tuple(int(x) for x in text.split(",") if x)

    def cpu_view(self, c: Container) -> CpuView:
        return read_cpu_view(c.cgroups, self.host_online(), self.cpu_mode)

    # Renderers of container views, one per file.

    def host_meminfo(self) -> meminfo.HostMeminfo:
        now = self.clock()
        if self._host_meminfo is None or now - self._host_meminfo[0] >= HOST_TTL:
            self._host_meminfo = (now, meminfo.parse_host(self.host.text("meminfo")))
        return self._host_meminfo[1]

    def meminfo(self, c: Container) -> bytes:
        host = self.host_meminfo()
        return meminfo.render(meminfo.MeminfoSnapshot(host, read_memory(c.cgroups)))

    def swaps(self, c: Container) -> bytes:
        mem = read_memory(c.cgroups)
        if mem is None:
            return self.host.text("swaps").encode()
        host = self.host_meminfo()
        own = meminfo.container_values(host, mem)
        used = own["SwapTotal"] - own["SwapFree"]
        return swaps.render(swaps.SwapsSnapshot("", own["SwapTotal"], used))

    def cpuinfo(self, c: Container) -> bytes:
        text = self.static_text("cpuinfo", lambda: self.host.text("cpuinfo"))
        view = self.cpu_view(c)
        if self._cpuinfo[0] is not text:  # a new reading of the host's file: forget the old
            self._cpuinfo = (text, {})
        done = self._cpuinfo[1]
        data = done.get(view)
        if data is None:
            if len(done) >= 256:  # bounded: a host has few distinct cpusets in use
                done.clear()
            data = done[view] = cpuinfo.render(cpuinfo.CpuinfoSnapshot(text, view))
        return data

    def cpulist(self, c: Container) -> bytes:
        return cpulist.render(cpulist.CpulistSnapshot("", self.cpu_view(c)))
