"""What a running server is made of, built once from its configuration.

The table of files (`procfs.files.table`) is built from this object, and long-running trio tasks
join `background` (each `async def task(task_status=trio.TASK_STATUS_IGNORED)` that calls
`task_status.started()` once it serves). What must outlive a code reload (kmsg rings, load
history) is made once with `keep`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from procfs.config import Config
from procfs.fuse.rendercache import RenderCache
from procfs.kmsg.service import KmsgService
from procfs.kmsg.setup import setup as setup_kmsg
from procfs.server.control import Control, socket_path
from procfs.sources.cgroups import CgroupLayout
from procfs.sources.containers import Resolver
from procfs.sources.hostproc import HostProc

BackgroundTask = Callable[..., Awaitable[Any]]
T = TypeVar("T")


@dataclass
class Services:
    config: Config
    host: HostProc
    layout: CgroupLayout
    resolver: Resolver
    clock: Callable[[], float] = time.monotonic
    background: list[BackgroundTask] = field(default_factory=list)
    render_cache: RenderCache | None = None
    # State that outlives a reload (`procfs.server.reload` rebuilds the files from new code):
    # the table's builders get it with `keep`, never build it afresh.
    kept: dict[str, Any] = field(default_factory=dict)
    control: Control = field(default_factory=lambda: Control(""))
    kmsg: KmsgService | None = None

    def keep(self, name: str, make: Callable[[], T]) -> T:
        """The object kept under `name`, made (once per server) by `make`: the place for state
        worth keeping across reloads (rings, load history) and for starting its task."""
        if name not in self.kept:
            self.kept[name] = make()
        value: T = self.kept[name]
        return value

    @classmethod
    def build(cls, config: Config, clock: Callable[[], float] = time.monotonic) -> Services:
        host = HostProc(config.proc_root, config.sys_root)
        if config.cgroup_root:
            layout = CgroupLayout.from_directory(config.cgroup_root)
        else:
            layout = CgroupLayout.from_mountinfo(config.proc_root)
        resolver = Resolver(host, layout, clock=clock,
                            cgroup_ttl=config.staleness.cgroup_paths)
        s = cls(config, host, layout, resolver, clock)
        if config.cache_ttl > 0:  # one RenderCache for every tree this server installs
            s.render_cache = RenderCache(config.cache_ttl, clock=clock)
        s.control = Control(socket_path(config.mountpoint, config.control_dir))
        s.background += [s.control.serve, resolver.sweeper]
        if config.kmsg.enabled:
            s.kmsg, tasks = setup_kmsg(config.kmsg, host, resolver, s.control, clock)
            s.background += tasks
        return s

    def close(self) -> None:
        self.resolver.close()
