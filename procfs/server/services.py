"""What a running server is made of, built once from its configuration.

Feature modules get this object to build their nodes (`registry.all_nodes`) and add long-running
trio tasks to `background` (each `async def task(task_status=trio.TASK_STATUS_IGNORED)` that
calls `task_status.started()` once it serves).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from procfs.files.host import Views
from procfs.fuse.rendercache import DEFAULT_TTL, RenderCache
from procfs.kmsg.service import KmsgConfig, KmsgService
from procfs.kmsg.setup import setup as setup_kmsg
from procfs.server.control import DEFAULT_DIR, Control, socket_path
from procfs.server.fusectl import DEFAULT_MAX_BACKGROUND
from procfs.sources.cgroups import CgroupLayout
from procfs.sources.containers import Resolver
from procfs.sources.cpuset import CpuViewMode
from procfs.sources.hostproc import HostProc

BackgroundTask = Callable[..., Awaitable[Any]]
T = TypeVar("T")


@dataclass
class Config:
    mountpoint: str = ""
    proc_root: str = "/proc"
    sys_root: str = "/sys"
    cgroup_root: str | None = None  # None: find the hierarchies in mountinfo
    cpu_view: CpuViewMode = CpuViewMode.QUOTA
    fuse_debug: bool = False
    cache_ttl: float = DEFAULT_TTL  # seconds a rendering is reused for one container; 0: never
    max_background: int = DEFAULT_MAX_BACKGROUND  # the connection's; 0: the kernel's default
    control_dir: str = DEFAULT_DIR
    kmsg: KmsgConfig = field(default_factory=KmsgConfig)
    workers: int = 1  # processes serving, each on a mount of its own (procfs.server.shards)
    shard_of: str = ""  # a shard's: the mountpoint of the server that runs it
    lifeline: int = -1  # a shard's: EOF on this pipe when that server is gone
    verbose: int = 0  # -v count, passed on to the shards


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
    # State that outlives a reload (`procfs.server.reload` rebuilds the nodes from new code): node
    # builders get it with `keep`, never build it afresh.
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
        resolver = Resolver(host, layout, clock=clock)
        views = Views(host, config.cpu_view, clock=clock)
        s = cls(config, host, layout, resolver, views, clock)
        if config.cache_ttl > 0:
            s.render_cache = RenderCache(config.cache_ttl, clock=clock)
        s.control = Control(socket_path(config.mountpoint, config.control_dir))
        s.background.append(s.control.serve)
        s.kmsg = setup_kmsg(s) if config.kmsg.enabled else None
        return s

    def close(self) -> None:
        self.resolver.close()
