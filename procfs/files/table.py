"""The tree procfs serves: every virtual file, by its path under the mount.

Each feature contributes its nodes here; the FUSE layer, `attach` and `docker-flags` all take
the list of paths from `all_nodes`, so they always agree.
"""

from __future__ import annotations

from procfs.files.io import io_nodes
from procfs.files.time import TASK_STATES_TTL, TimeViews
from procfs.fuse.nodes import FileNode, OverlayNode
from procfs.kmsg.node import KmsgNode
from procfs.server.services import Services
from procfs.sources.loadavg import LoadTracker

CPU_DIR = "sys/devices/system/cpu"


def memory_and_cpu_nodes(s: Services) -> list[FileNode]:
    views, host = s.views, s.host
    return [
        OverlayNode("proc/meminfo", views.meminfo, host.proc_file("meminfo")),
        OverlayNode("proc/cpuinfo", views.cpuinfo, host.proc_file("cpuinfo")),
        OverlayNode("proc/swaps", views.swaps, host.proc_file("swaps")),
        *(
            OverlayNode(f"{CPU_DIR}/{name}", views.cpulist, host.sys_file(f"{CPU_DIR[4:]}/{name}"))
            for name in ("online", "possible", "present")
        ),
    ]


def time_nodes(s: Services) -> list[FileNode]:
    """proc/stat, proc/uptime, proc/loadavg; the loadavg sampler joins `s.background`."""
    def first_tracker() -> LoadTracker:  # once per server: the history survives reloads
        tracker = LoadTracker(lambda c: None)  # its counter: the TimeViews made below
        s.background.append(tracker.run)
        return tracker

    t = TimeViews(s.host, s.views, tracker=s.keep("loadavg", first_tracker),
                  task_ttl=TASK_STATES_TTL, clock=s.clock)
    host = s.host
    return [
        OverlayNode("proc/stat", t.stat, host.proc_file("stat")),
        OverlayNode("proc/uptime", t.uptime, host.proc_file("uptime")),
        OverlayNode("proc/loadavg", t.loadavg, host.proc_file("loadavg")),
    ]


def kmsg_nodes(s: Services) -> list[FileNode]:
    return [KmsgNode(s.kmsg)] if s.kmsg is not None else []


def all_nodes(s: Services) -> list[FileNode]:
    return [*memory_and_cpu_nodes(s), *io_nodes(s), *time_nodes(s), *kmsg_nodes(s)]
