"""proc/cpuinfo and sys/devices/system/cpu/{online,possible,present} of a container: the CPUs
its cpuset (capped by its CFS quota) gives it."""

from __future__ import annotations

import re
from collections.abc import Callable

from overlays import cpuinfo, cpulist
from overlays.cpuview import CpuView
from procfs.files.host import HostFiles
from procfs.sources.containers import Container

CPU_DIR_NAME = re.compile(r"cpu[0-9]+")
# Distinct CPU views whose cpuinfo rendering is kept: a host has few distinct cpusets in use.
CPUINFO_VIEWS = 256


class CpuFiles:
    def __init__(self, host: HostFiles) -> None:
        self.host = host
        # cpuinfo renderings per CPU view, for the host text they were made from
        self._cpuinfo: tuple[str, dict[CpuView, bytes]] = ("", {})

    def cpuinfo(self, c: Container) -> bytes:
        text = self.host.static_text("cpuinfo", lambda: self.host.host.text("cpuinfo"))
        view = self.host.cpu_view(c)
        if self._cpuinfo[0] is not text:  # a new reading of the host's file: forget the old
            self._cpuinfo = (text, {})
        done = self._cpuinfo[1]
        data = done.get(view)
        if data is None:
            if len(done) >= CPUINFO_VIEWS:
                done.clear()
            data = done[view] = cpuinfo.render(cpuinfo.CpuinfoSnapshot(text, view))
        return data

    def hidden(self, c: Container | None, rel: str, name: str) -> bool:
        """In sys/devices/system/cpu, the cpuN directories of CPUs `c` does not see."""
        if c is None or rel or not CPU_DIR_NAME.fullmatch(name):
            return False
        return int(name[3:]) not in self.host.cpu_view(c).cpus

    def cpulist(self, kind: str) -> Callable[[Container], bytes]:
        """The renderer of sys/devices/system/cpu/`kind` (online, possible, present, offline)."""
        def render(c: Container) -> bytes:
            return cpulist.render(cpulist.CpulistSnapshot("", self.host.cpu_view(c), kind))

        return render
