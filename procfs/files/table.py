"""Every file procfs serves, in one table: its path under the mount, the function that renders
it for a container, and the host's file a host caller gets.

Adding a file: a pure renderer in `overlays/`, a method that reads its snapshot in the module of
its group here (`memory`, `cpu`, `time`, `io`), its source in `procfs/sources/` if it is new, and
one line below (CONTRIBUTING.md). The FUSE layer, `attach` and `docker-flags` all take the list
of paths from this table, so they always agree.
"""

from __future__ import annotations

import os

from overlays import cpulist
from procfs.files.cpu import CpuFiles
from procfs.files.host import HostFiles
from procfs.files.io import PRESSURE_KINDS, IoFiles
from procfs.files.memory import MemoryFiles
from procfs.files.sysinfo import SysinfoNumbers
from procfs.files.time import TimeFiles, load_counter
from procfs.fuse.mirror import MirrorNode
from procfs.fuse.nodes import LastGood, OverlayNode, Render
from procfs.fuse.tree import Node
from procfs.kmsg.node import KmsgNode
from procfs.server.services import Services
from procfs.sources.io import AbsentFiles
from procfs.sources.loadavg import LoadTracker

CPU_DIR = "sys/devices/system/cpu"


def all_nodes(s: Services) -> list[Node]:
    host, staleness = s.host, s.config.staleness
    files = HostFiles(host, s.config.cpu_view, s.clock, staleness)
    absent = AbsentFiles(staleness.absent_files, clock=s.clock)
    memory, cpu, io = MemoryFiles(files, absent), CpuFiles(files), IoFiles(host, files.recent_text,
                                                                            absent)

    def first_tracker() -> LoadTracker:  # once per server: the history survives reloads
        tracker = LoadTracker(load_counter(host), period=staleness.load_period)
        s.background.append(tracker.run)
        return tracker

    time = TimeFiles(host, files, tracker=s.keep("loadavg", first_tracker),
                     task_ttl=staleness.task_states, clock=s.clock)

    last_good = s.keep("last_good", LastGood)

    def file(path: str, render: Render, host_file: str, mode: int = 0o444
             ) -> OverlayNode:
        """`path` rendered by `render` for a container; a host caller gets `host_file` (under
        the host's /proc, or /sys for a path under sys/)."""
        read = (host.sys_file(host_file[4:]) if host_file.startswith("sys/")
                else host.proc_file(host_file))
        return OverlayNode(path, render, read, mode, s.render_cache, last_good, s.clock)

    nodes: list[Node] = [
        file("proc/meminfo", memory.meminfo, "meminfo"),
        file("proc/swaps", memory.swaps, "swaps"),
        file("proc/vmstat", memory.vmstat, "vmstat"),
        file("proc/cpuinfo", cpu.cpuinfo, "cpuinfo"),
        # the host's directory, with only the container's cpuN, and these four lists its own
        MirrorNode(CPU_DIR, os.path.join(host.sys_root, CPU_DIR[4:]), cpu.hidden),
        *(file(f"{CPU_DIR}/{kind}", cpu.cpulist(kind), f"{CPU_DIR}/{kind}")
          for kind in cpulist.KINDS),
        file("proc/stat", time.stat, "stat"),
        file("proc/uptime", time.uptime, "uptime"),
        file("proc/loadavg", time.loadavg, "loadavg"),
        file("proc/diskstats", io.diskstats, "diskstats"),
        file("proc/slabinfo", io.slabinfo, "slabinfo", mode=0o400),
    ]
    if os.path.isdir(host.path("pressure")):  # a kernel with PSI
        nodes += [file(f"proc/pressure/{kind}", io.pressure(kind), f"pressure/{kind}")
                  for kind in PRESSURE_KINDS]
    if s.kmsg is not None:
        nodes.append(KmsgNode(s.kmsg))
    return nodes


def sysinfo_numbers(s: Services) -> SysinfoNumbers:
    """What containers' sysinfo(2) answers, from the same readings as their files (the load
    history is the file's, kept by the server)."""
    host, staleness = s.host, s.config.staleness
    files = HostFiles(host, s.config.cpu_view, s.clock, staleness)
    tracker = s.kept.get("loadavg")
    time = TimeFiles(host, files, tracker=tracker, task_ttl=staleness.task_states, clock=s.clock)
    return SysinfoNumbers(s.resolver, files, time, staleness.render, s.clock)
