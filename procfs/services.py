"""What a running server is made of, built once from its configuration.

Feature modules get this object to build their nodes (`registry.all_nodes`) and add long-running
trio tasks to `background` (each `async def task(task_status=trio.TASK_STATUS_IGNORED)` that
calls `task_status.started()` once it serves).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from procfs.cgroup_cpu import CpuViewMode
from procfs.cgroup_layout import CgroupLayout
from procfs.hostproc import HostProc
from procfs.rendercache import DEFAULT_TTL, RenderCache
from procfs.resolve import Resolver
from procfs.views import Views

BackgroundTask = Callable[..., Awaitable[Any]]


@dataclass
class Config:
    mountpoint: str = ""
    proc_root: str = "/proc"
    sys_root: str = "/sys"
    cgroup_root: str | None = None  # None: find the hierarchies in mountinfo
    cpu_view: CpuViewMode = CpuViewMode.QUOTA
    fuse_debug: bool = False
    cache_ttl: float = DEFAULT_TTL  # seconds a rendering is reused for one container; 0: never


@dataclass
class Services:
    config: Config
    host: HostProc
    layout: CgroupLayout
    resolver: Resolver
    views: Views
    clock: Callable[[], float] = time.monotonic
    background: list[BackgroundTask] = field(default_factory=list)
    render_cache: RenderCache | None = None

    @classmethod
    def build(cls, config: Config, clock: Callable[[], float] = time.monotonic) -> Services:
        host = HostProc(config.proc_root, config.sys_root)
        if config.cgroup_root:
            layout = CgroupLayout.from_directory(config.cgroup_root)
        else:
            layout = CgroupLayout.from_mountinfo(config.proc_root)
        resolver = Resolver(host, layout, clock=clock)
        views = Views(host, config.cpu_view, clock=clock)
        cache = RenderCache(config.cache_ttl, clock=clock) if config.cache_ttl > 0 else None
        return cls(config, host, layout, resolver, views, clock, render_cache=cache)

    def close(self) -> None:
        self.resolver.close()
