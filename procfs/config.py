"""Every setting of a server, with its default, in one place.

The command line (`procfs.cli.serve`) reads its defaults from here; a shard gets its server's
`Config` as it is (forked) or as JSON (`to_json`/`from_json`, when restarted by exec); feature
modules take the parts they need. How stale a served number may be is set here too
(`Staleness`): the README's staleness bounds are these numbers.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

DEFAULT_MOUNT = "/var/lib/procfs"  # where `procfs serve` mounts and the hooks look
FSTYPE = "fuse.procfs"  # how mountinfo names a procfs mount (subtype=procfs)
STATE_DIR = "/run/procfs"  # records, control sockets, locks, shards' mountpoints
STATE_FILE = "attached.json"  # under STATE_DIR: the containers `procfs attach` attached


def state_path() -> str:
    """The attachments file: $PROCFS_STATE, else STATE_DIR/STATE_FILE. Its directory is where
    every other record of procfs goes too (so that tests can move all of them at once)."""
    return os.environ.get("PROCFS_STATE") or os.path.join(STATE_DIR, STATE_FILE)


def state_dir() -> str:
    return os.path.dirname(os.path.abspath(state_path()))


class CpuViewMode(Enum):
    QUOTA = "quota"  # the cpuset, further capped by ceil(quota / period): what --cpus limits
    CPUSET = "cpuset"  # the cpuset alone


@dataclass(frozen=True)
class Staleness:
    """How long a reading is reused, in seconds: the bound on how old a served number may be."""

    render: float = 0.01  # one container's rendering of one file (`--cache-ttl`; 0: never)
    # the rendering an open's GETATTR made for the file's size, read by that open (its turns
    # on a busy server in between: procfs.fuse.sized)
    sized: float = 0.1
    host_files: float = 0.01  # the host's meminfo, stat, diskstats, shared by every container
    static_host_files: float = 1.0  # host files that change only with CPU hotplug (cpuinfo...)
    # counts of a container's tasks by state (procs_running/blocked and steal in stat, running
    # and total in loadavg; the kernel's are instantaneous, LXCFS's loadavg counts up to 5 s old)
    task_states: float = 0.5
    cgroup_paths: float = 1.0  # a container's init's cgroup paths (an init moved)
    absent_files: float = 10.0  # a cgroup file found missing (v1 blkio scheduler statistics)
    load_period: float = 5.0  # the load average's sampling period (the kernel's LOAD_FREQ)


@dataclass
class KmsgConfig:
    enabled: bool = True  # False (`serve --no-kmsg`): no dev/kmsg, no rings, no routing
    ring_bytes: int = 256 << 10
    total_bytes: int = 32 << 20
    rate: float = 100.0  # records a second a container may write...
    burst: float = 200.0  # ...and how many it may write at once
    throttle: float = 0.05  # an over-limit writer waits this long for a token before a drop
    gone_ttl: float = 300.0  # a dead container's ring is kept this long (the host may look)
    sweep_interval: float = 10.0
    wake_interval: float = 0.2  # blocked readers are looked at for a pending signal this often
    # Blocked readers of one container that wait on its ring at once (more wait in line for a
    # place: never refused, docs/kmsg.md), and throttled writers that may wait for a token (more
    # are dropped at once). No bound of all containers together: one could use it up.
    places_per_container: int = 16
    # Records a second handed to one container's readers, and how many at once. A record
    # written wakes every reader: without a bound, a container's crowd of readers woken at its
    # write rate took the server from everyone (docs/kmsg.md, measured). A reader reading on
    # alone (`dmesg` printing the ring) is not held to it: its reads wait behind each other,
    # not behind the others' requests.
    delivery_rate: float = 1000.0
    delivery_burst: float = 100.0
    host_log: str = "/dev/kmsg"  # the host's kernel log to route from; "" for none


# `procfs serve --workers`: one shard per CPU, at most procfs.server.shards.MAX_AUTO
SERVE_WORKERS = "auto"


@dataclass
class Config:
    mountpoint: str = ""
    proc_root: str = "/proc"
    sys_root: str = "/sys"
    cgroup_root: str | None = None  # None: find the hierarchies in mountinfo
    cpu_view: CpuViewMode = CpuViewMode.QUOTA
    fuse_debug: bool = False
    cache_ttl: float = Staleness.render  # `--cache-ttl`
    max_background: int = 1024  # the connection's FUSE background requests; 0: the kernel's 12
    control_dir: str = STATE_DIR  # where the control socket goes
    kmsg: KmsgConfig = field(default_factory=KmsgConfig)
    staleness: Staleness = field(default_factory=Staleness)
    sysinfo: bool = True  # answer containers' sysinfo(2) (procfs-runc asks for it)
    # Start a keeper of the seccomp listeners when none answers (`serve --no-keeper-start`:
    # never, wait for the one systemd's procfs-keeper.service runs, outside the server's unit)
    start_keeper: bool = True
    # processes serving, each on a mount of its own (procfs.server.shards); `procfs serve`
    # resolves SERVE_WORKERS, a Config made in code serves from one
    workers: int = 1
    shard_of: str = ""  # a shard's: the mountpoint of the server that runs it
    lifeline: int = -1  # a shard's: EOF on this pipe when that server is gone
    verbose: int = 0  # -v count

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["cpu_view"] = self.cpu_view.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Config:
        """The inverse of `to_json`; unknown keys (a newer server's) are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in known}
        kw["cpu_view"] = CpuViewMode(kw.get("cpu_view", CpuViewMode.QUOTA.value))
        kmsg_known = {f.name for f in dataclasses.fields(KmsgConfig)}
        kw["kmsg"] = KmsgConfig(**{k: v for k, v in dict(kw.get("kmsg") or {}).items()
                                   if k in kmsg_known})
        stale_known = {f.name for f in dataclasses.fields(Staleness)}
        kw["staleness"] = Staleness(**{k: v for k, v in dict(kw.get("staleness") or {}).items()
                                       if k in stale_known})
        return cls(**kw)

    def sysinfo_sockets(self) -> tuple[str, str]:
        """(where runtimes send containers' seccomp listeners (the keeper listens there),
        where the server takes them from the keeper): in the control directory."""
        return (os.path.join(self.control_dir, "sysinfo.sock"),
                os.path.join(self.control_dir, "sysinfo-keeper.sock"))

    def for_shard(self, mountpoint: str) -> Config:
        """The configuration of one of this server's shards: the same settings, its own mount,
        no dev/kmsg (the server lends its own, so that every ring lives in one process and no
        request ever waits in a shard), no sysinfo(2) (one answerer per keeper) and no shards of
        its own."""
        return dataclasses.replace(
            self, mountpoint=mountpoint, shard_of=os.path.realpath(self.mountpoint),
            kmsg=dataclasses.replace(self.kmsg, enabled=False), workers=1, lifeline=-1,
            sysinfo=False)
