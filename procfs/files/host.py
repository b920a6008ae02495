"""The host's own files as the containers' renderings use them: each read at most once per its
staleness bound (`procfs.config.Staleness`), however many containers render at once."""

from __future__ import annotations

import time
from collections.abc import Callable

from overlays import meminfo
from overlays.cpuview import CpuView
from procfs.config import CpuViewMode, Staleness
from procfs.sources.containers import Container
from procfs.sources.cpuset import read_cpu_view
from procfs.sources.hostproc import HostProc


class HostFiles:
    def __init__(
        self,
        host: HostProc,
        cpu_mode: CpuViewMode = CpuViewMode.QUOTA,
        clock: Callable[[], float] = time.monotonic,
        staleness: Staleness | None = None,
    ) -> None:
        self.host = host
        self.cpu_mode = cpu_mode
        self.clock = clock
        self.staleness = staleness or Staleness()
        self._texts: dict[str, tuple[float, str]] = {}
        self._meminfo: tuple[float, meminfo.HostMeminfo] | None = None

    def _kept(self, key: str, ttl: float, read: Callable[[], str]) -> str:
        now = self.clock()
        hit = self._texts.get(key)
        if hit is not None and now - hit[0] < ttl:
            return hit[1]
        text = read()
        self._texts[key] = (now, text)
        return text

    def static_text(self, key: str, read: Callable[[], str]) -> str:
        """A host file that changes only with CPU hotplug (cpuinfo, the online CPUs)."""
        return self._kept(key, self.staleness.static_host_files, read)

    def recent_text(self, name: str) -> str:
        """The host's /proc/`name` (stat, diskstats): many containers rendering at once need one
        reading, not one each."""
        return self._kept("/proc/" + name, self.staleness.host_files,
                          lambda: self.host.text(name))

    def meminfo(self) -> meminfo.HostMeminfo:
        """The host's /proc/meminfo, parsed once per reading."""
        now = self.clock()
        if self._meminfo is None or now - self._meminfo[0] >= self.staleness.host_files:
            self._meminfo = (now, meminfo.parse_host(self.host.text("meminfo")))
        return self._meminfo[1]

    def online(self) -> tuple[int, ...]:
        """The host's online CPUs."""
        text = self.static_text("online", lambda: ",".join(map(str, self.host.online_cpus())))
        return tuple(int(x) for x in text.split(",") if x)

    def cpu_view(self, c: Container) -> CpuView:
        """The CPUs `c` sees: shared by cpuinfo, the cpu lists, stat and uptime."""
        return read_cpu_view(c.cgroups, self.online(), self.cpu_mode)
