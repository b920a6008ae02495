"""Who is calling: a FUSE request's pid → its container.

A container is the init ("reaper") of the caller's pid namespace and that init's cgroups, as in
LXCFS: every process of the container, whatever sub-cgroup it sits in, sees the same values.

Caching is keyed by the pid namespace's inode and validated by the reaper's identity: a pidfd
where the kernel gives one (alive ⇒ the namespace, and so its inode number, is alive), else the
reaper's start time. Pidfds are held for at most half of the descriptor limit's worth of
containers (a host with thousands must not run the server out of descriptors for its own
reads); the others are validated by start time. The caller's own pid is never cached: it is
looked up on every request, so a reused pid cannot carry one container's answer to another.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import resource
import select
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

import trio

from procfs.errors import ProcessGone, ProcfsError
from procfs.sources.cgroups import CgroupDirs, CgroupLayout, parse_proc_cgroup
from procfs.sources.hostproc import HostProc
from procfs.sources.identity import ProcessIdentity

log = logging.getLogger(__name__)

RELOAD = False  # the resolver and the containers in its cache outlive a reload
NS_GET_PARENT = 0xB702  # ioctl: the parent of a pid namespace (linux/nsfs.h)
SWEEP_PERIOD = 5.0  # seconds between two sweeps of the containers whose init exited


@dataclass(frozen=True)
class Container:
    pidns: int  # inode of the container's pid namespace
    reaper: int  # its init, as a pid in the daemon's namespace
    reaper_start: int  # the init's start time, clock ticks after the host's boot
    cgroups: CgroupDirs
    monotonic_offset_ns: int = 0  # the init's time namespace offsets
    boottime_offset_ns: int = 0
    pidns_level: int = 0  # the namespace's depth (its init's NSpid entries); 0: no pids known
    timens: bool = False  # the init has a time namespace of its own (not the server's)

    @property
    def key(self) -> tuple[int, int, int]:
        """An identity no other container can ever have (pid and start time are unique)."""
        return (self.pidns, self.reaper, self.reaper_start)


@dataclass
class _Entry:
    container: Container
    pidfd: int | None
    poller: select.poll | None  # polls `pidfd` (select() cannot take descriptors past 1023)
    cgroups_read_at: float


class Resolver:
    """Resolve pids to containers; caches at most `maxsize` namespaces."""

    def __init__(
        self,
        host: HostProc,
        layout: CgroupLayout,
        *,
        clock: Callable[[], float] = time.monotonic,
        cgroup_ttl: float = 1.0,
        maxsize: int = 4096,
        pidfds: int | None = None,
    ) -> None:
        """`pidfds`: the most pidfds to hold (default: half the soft descriptor limit, none for
        a fixture /proc)."""
        self.host = host
        self.layout = layout
        self.clock = clock
        self.cgroup_ttl = cgroup_ttl
        self.maxsize = maxsize
        self.host_pidns = host.pid_ns("self")
        self.host_timens = self._timens("self")
        if pidfds is None:
            real = os.path.realpath(host.proc_root) == "/proc" and hasattr(os, "pidfd_open")
            pidfds = resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 2 if real else 0
        self.pidfds = pidfds
        self._pidfds_held = 0
        self._pidfd_failed = False  # logged once until a pidfd opens again
        self._cache: OrderedDict[int, _Entry] = OrderedDict()

    def resolve(self, pid: int) -> Container | None:
        """The caller's container, or None for the host (or a process sharing its pid namespace).

        Raises ProcessGone when `pid` vanished (or is 0: not visible from our namespace)."""
        if pid <= 0:
            raise ProcessGone("caller not visible in the server's pid namespace")
        ns = self.host.pid_ns(pid)
        if ns == self.host_pidns:
            return None
        entry = self._cache.get(ns)
        if entry is not None and self._alive(entry):
            self._cache.move_to_end(ns)
            if self.clock() - entry.cgroups_read_at > self.cgroup_ttl:
                self._refresh_cgroups(ns, entry)
            return entry.container
        if entry is not None:
            self._drop(ns)
        return self._insert(ns, self._build(pid, ns))

    def current(self, c: Container) -> Container:
        """`c` as it is now (its cgroups re-read when stale), for a file bound into it: raises
        ProcessGone once its init has exited, however its pid namespace inode is reused."""
        entry = self._cache.get(c.pidns)
        if entry is not None and entry.container.key == c.key and self._alive(entry):
            self._cache.move_to_end(c.pidns)
            if self.clock() - entry.cgroups_read_at > self.cgroup_ttl:
                self._refresh_cgroups(c.pidns, entry)
            return entry.container
        if not ProcessIdentity(c.reaper, c.reaper_start).alive(self.host):
            raise ProcessGone(f"container {c.key}: its init exited")
        if entry is not None:
            self._drop(c.pidns)
        found = self._insert(c.pidns, self._build(c.reaper, c.pidns))
        if found.key != c.key:  # its init exited between the two looks
            raise ProcessGone(f"container {c.key}: its init exited")
        return found

    def within(self, pid: int, c: Container) -> bool:
        """Whether `pid` lives in `c`'s pid namespace or in one nested in it (a sandbox its
        processes made: Chrome's, `unshare --pid`)."""
        try:
            fd = os.open(self.host.path(pid, "ns/pid"), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            for _ in range(32):  # the kernel nests pid namespaces at most 32 deep
                if os.fstat(fd).st_ino == c.pidns:
                    return True
                try:
                    parent = fcntl.ioctl(fd, NS_GET_PARENT)
                except OSError:  # the top, or one we may not see: not inside `c`
                    return False
                os.close(fd)
                fd = parent
            return False
        finally:
            os.close(fd)

    def sweep(self) -> int:
        """Forget the containers whose init has exited (closing their pidfds: a host that
        churns through containers must not keep a descriptor for each until the cache's bound
        evicts it); how many went."""
        gone = [ns for ns, entry in self._cache.items() if not self._alive(entry)]
        for ns in gone:
            self._drop(ns)
        return len(gone)

    async def sweeper(self, period: float = SWEEP_PERIOD,
                      task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """A trio task: `sweep` every `period` seconds."""
        task_status.started()
        while True:
            await trio.sleep(period)
            gone = self.sweep()
            if gone:
                log.debug("forgot %d containers whose init exited", gone)

    def containers(self) -> list[Container]:
        """The containers seen recently (and still alive)."""
        return [e.container for e in list(self._cache.values()) if self._alive(e)]

    def _alive(self, entry: _Entry) -> bool:
        if entry.poller is not None:
            return not entry.poller.poll(0)  # a pidfd turns readable when its process exits
        c = entry.container
        return ProcessIdentity(c.reaper, c.reaper_start).alive(self.host)

    def _timens(self, pid: int | str) -> int | None:
        """The inode of `pid`'s time namespace; None on a kernel without time namespaces."""
        try:
            return self.host.pid_ns(pid, "time")
        except ProcfsError:
            return None

    def _refresh_cgroups(self, ns: int, entry: _Entry) -> None:
        c = entry.container
        try:
            paths = parse_proc_cgroup(self.host.pid_text(c.reaper, "cgroup"))
        except ProcfsError:
            self._drop(ns)
            raise
        entry.container = replace(c, cgroups=CgroupDirs(self.layout, paths))
        entry.cgroups_read_at = self.clock()

    def _find_reaper(self, pid: int, ns: int) -> tuple[int, int]:
        """(the namespace's init, the namespace's depth)"""
        # Usually the init is an ancestor: climb while the parent shares the namespace.
        cur = pid
        for _ in range(256):
            status = self.host.status(cur)
            if status.nspid and status.nspid[-1] == 1:
                return cur, len(status.nspid)
            parent = status.ppid
            try:
                if parent <= 0 or self.host.pid_ns(parent) != ns:
                    break
            except ProcessGone:
                break
            cur = parent
        # A process that entered with setns (runc exec, nsenter) has its parent outside.
        for candidate in self.host.pids():
            try:
                if self.host.pid_ns(candidate) != ns:
                    continue
                nspid = self.host.status(candidate).nspid
            except (ProcfsError, OSError):  # exited, or a process we may not inspect
                continue
            if nspid and nspid[-1] == 1:
                return candidate, len(nspid)
        raise ProcessGone(f"pid namespace {ns} has no init")

    def _build(self, pid: int, ns: int) -> _Entry:
        reaper, level = self._find_reaper(pid, ns)
        pidfd = self._open_pidfd(reaper)
        try:
            start = self.host.stat(reaper).start_ticks
            paths = parse_proc_cgroup(self.host.pid_text(reaper, "cgroup"))
            mono, boot = self.host.timens_offsets(reaper)
            timens = self._timens(reaper)
            # Between finding the init and opening its pidfd the pid may have been reused.
            if self.host.pid_ns(reaper) != ns:
                raise ProcessGone(f"init {reaper} of namespace {ns} exited")
        except BaseException:
            self._close_pidfd(pidfd)
            raise
        container = Container(ns, reaper, start, CgroupDirs(self.layout, paths), mono, boot,
                              level, timens is not None and timens != self.host_timens)
        log.debug("pid %d → container %s (init %d)", pid, container.key, reaper)
        poller = None
        if pidfd is not None:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
        return _Entry(container, pidfd, poller, self.clock())

    def _open_pidfd(self, reaper: int) -> int | None:
        """A pidfd of `reaper`, or None: over the budget, or out of descriptors (then its
        start time validates the entry)."""
        if self._pidfds_held >= self.pidfds:
            return None
        try:
            pidfd = os.pidfd_open(reaper)
        except ProcessLookupError as e:
            raise ProcessGone(f"init {reaper} exited") from e
        except OSError as e:
            if not self._pidfd_failed:
                log.warning("no pidfd for init %d (%s); validating containers by start time",
                            reaper, e)
                self._pidfd_failed = True
            return None
        self._pidfd_failed = False
        self._pidfds_held += 1
        return pidfd

    def _close_pidfd(self, pidfd: int | None) -> None:
        if pidfd is not None:
            self._pidfds_held -= 1
            with contextlib.suppress(OSError):
                os.close(pidfd)

    def _insert(self, ns: int, entry: _Entry) -> Container:
        self._cache[ns] = entry
        while len(self._cache) > self.maxsize:
            self._drop(next(iter(self._cache)))
        return entry.container

    def _drop(self, ns: int) -> None:
        entry = self._cache.pop(ns, None)
        if entry is not None:
            self._close_pidfd(entry.pidfd)

    def close(self) -> None:
        for ns in list(self._cache):
            self._drop(ns)
