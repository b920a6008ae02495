"""`procfs attach` / `procfs detach`: bind the served files over their twins in a container.

The work happens in a forked child, never in the calling process (which may be the daemon):
the child opens a detached bind mount of every served file (`open_tree`) while it still sees
the procfs mount, enters the container's mount namespace (`setns`) and root (`/proc/PID/root`),
and attaches each one over its twin (`move_mount`). So it works on a running container after its
pivot_root, and, given `rootfs`, on a runtime's container before its pivot_root (OCI
createRuntime/createContainer hooks, LXC mount hooks): the binds are made under ROOTFS in the
container's mount namespace, after the runtime mounted its /proc there, and move with the root.

Rules:
- only files the mounted server serves (its tree is walked), only twins that exist, except
  `/dev/kmsg`, created empty when missing. A shard (`serve --workers`) serves no file that
  waits (`dev/kmsg`): those come from its server's mount (`Attacher.sources`);
- one layer: a twin that already carries this server's file is left alone; layers of a server
  that is gone (a stale FUSE connection) are unmounted first;
- all or nothing: when one bind fails, those made by this call are unmounted again and the
  files created removed, and the error is raised.

Exit codes of the CLI (`ExitCode`): 0 done, 1 failed (rolled back), 2 usage, 3 no such process,
4 server not mounted, 5 permission denied, 6 failed and could not roll back (half attached).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence

from procfs.attach.binds import Bind, Result, Target, attach_child, detach_child
from procfs.attach.child import in_child
from procfs.attach.errors import NoPermission, NoProcess, Refusal, ServerDown
from procfs.attach.state import Attachment, StateFile
from procfs.config import DEFAULT_MOUNT, FSTYPE, state_dir
from procfs.errors import DEAD_CONNECTION, ProcessGone, ProcfsError
from procfs.fuse.tree import BINDS
from procfs.server.record import ServerRecord
from procfs.server.shards import choose
from procfs.sources.hostproc import HostProc
from procfs.sources.identity import host_start_ticks
from procfs.sources.mountinfo import parse_mountinfo
from procfs.util.lock import locked
from procfs.util.nsmount import dev_of

LOCKS = 64  # attaches of one container run one at a time: a lock file per pid % LOCKS


def served_files(mount: str) -> list[str]:
    """What the server mounted at `mount` binds into a container, relative to it: each file
    ("proc/meminfo", ...) and each directory it serves whole ("sys/devices/system/cpu"), as
    its `.binds` lists them."""
    try:
        with open(os.path.join(mount, BINDS)) as f:
            return sorted(line.strip() for line in f if line.strip())
    except FileNotFoundError:  # a server from before `.binds`: its files, each
        out: list[str] = []
        for root, _, files in os.walk(mount):
            out.extend(os.path.relpath(os.path.join(root, f), mount) for f in files)
        return sorted(out)


def server_dev(mount: str, proc_root: str = "/proc") -> str:
    """The device ("major:minor") of the procfs server mounted at `mount`; ServerDown if none."""
    try:
        st = os.stat(mount)
    except OSError as e:
        if e.errno in DEAD_CONNECTION:
            raise ServerDown(f"the procfs server at {mount} is gone "
                             "(transport endpoint not connected)") from e
        raise ServerDown(f"no procfs server mounted at {mount}: {e.strerror}") from e
    target = os.path.realpath(mount)
    with open(os.path.join(proc_root, "self/mountinfo")) as f:
        entries = parse_mountinfo(f.read())
    if not any(e.mountpoint == target and e.fstype == FSTYPE and e.root == "/" for e in entries):
        raise ServerDown(f"no procfs server mounted at {mount}")
    return dev_of(st)


class Attacher:
    """attach/detach with one server mount, one state file and one /proc."""

    def __init__(self, mount: str = DEFAULT_MOUNT, state: StateFile | None = None,
                 proc_root: str = "/proc", spread: bool = False) -> None:
        self.mount = mount
        self.spread = spread  # bind from one of the server's shards (`serve --workers`)
        self.state = state
        self.proc_root = proc_root
        self.host = HostProc(proc_root)

    def _identity(self, pid: int) -> tuple[int, int, int]:
        """start ticks, pid-ns and mount-ns inodes of `pid`; NoProcess when it is gone."""
        if pid <= 0:
            raise NoProcess(f"no process {pid}")
        try:
            start = host_start_ticks(self.host, pid)
            return start, self.host.pid_ns(pid), self.host.pid_ns(pid, "mnt")
        except ProcessGone as e:
            raise NoProcess(f"no process {pid}") from e
        except PermissionError as e:
            raise NoPermission(f"no permission to inspect pid {pid}") from e

    def _prefix(self, pid: int, rootfs: str | None) -> str:
        """'' when the process already lives in `rootfs` (after pivot_root), else its path."""
        if rootfs is None:
            return ""
        real = os.path.realpath(rootfs)
        try:
            mine, theirs = os.stat(real), os.stat(os.path.join(self.proc_root, str(pid), "root"))
        except FileNotFoundError as e:
            raise Refusal(f"rootfs {rootfs} does not exist") from e
        if (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino):
            return ""
        return real.rstrip("/")

    def _check_target(self, pid: int, mntns: int, prefix: str) -> None:
        if os.geteuid() != 0:
            raise NoPermission("permission denied: attach needs root (CAP_SYS_ADMIN)")
        host_mntns = None
        with contextlib.suppress(ProcfsError, OSError):
            host_mntns = self.host.pid_ns(1, "mnt")
        if not prefix and mntns == host_mntns:
            raise Refusal(f"pid {pid} shares the host's mount namespace: "
                          "refusing to cover the host's /proc (give --rootfs)")

    def sources(self, mount: str, dev: str) -> tuple[dict[str, tuple[str, str]], bool]:
        """{file: (the mount it comes from, that mount's device)} for a container served by
        `mount` (device `dev`): the files `mount` serves, and those only its server serves (a
        shard serves no file that waits: its containers get `dev/kmsg` from its server's mount).
        And whether that is every file: not while the server is down (a shard repairing its
        containers before its restarted server mounted again), when the files only the server
        serves are unknown."""
        sources = dict.fromkeys(served_files(mount), (mount, dev))
        record = ServerRecord.of(mount)
        home = record.shard_of if record is not None else ""
        if not home:
            return sources, True
        try:
            home_dev = server_dev(home, self.proc_root)
        except ServerDown:
            return sources, False
        for rel in served_files(home):
            sources.setdefault(rel, (home, home_dev))
        return sources, True

    @contextlib.contextmanager
    def _one_at_a_time(self, pid: int) -> Iterator[None]:
        """Attaches and detaches of one process run one after another (a restarted server and
        its shards repair the same containers at once, each its own files): an flock on one
        of LOCKS files, by pid. Where no lock file can be made, unlocked."""
        directory = os.path.join(os.path.dirname(os.path.abspath(self.state.path))
                                 if self.state is not None else state_dir(), "locks")
        with contextlib.ExitStack() as stack:
            with contextlib.suppress(OSError):
                stack.enter_context(locked(os.path.join(directory, f"attach-{pid % LOCKS}")))
            yield

    def attach(self, pid: int, *, rootfs: str | None = None, files: Sequence[str] | None = None,
               container_id: str | None = None) -> Result:
        start, pidns, mntns = self._identity(pid)
        mount = choose(self.mount, pidns) if self.spread else self.mount
        dev = server_dev(mount, self.proc_root)
        prefix = self._prefix(pid, rootfs)
        self._check_target(pid, mntns, prefix)
        sources, complete = self.sources(mount, dev)
        binds = tuple(Bind(rel, m, d) for rel, (m, d) in sorted(sources.items())
                      if files is None or rel in files)
        with self._one_at_a_time(pid):
            previous = self.state.find(pid) if self.state is not None else None
            before = set(previous.created if previous else ())
            # only what procfs recorded binding here (never another server's live layer), and
            # only when every file the container may get is known
            dropped = tuple(f for f in (previous.files if previous else ())
                            if complete and f not in sources and (files is None or f in files))
            t = Target(pid, prefix, binds, dropped, tuple(f for f in dropped if f in before))
            res = Result(**in_child(attach_child, t, self.proc_root))
            if self.state is not None and (res.attached or res.dropped):
                self.state.merge(Attachment(
                    pid=pid, start_ticks=start, pidns=pidns, mntns=mntns,
                    mountpoint=os.path.realpath(mount), rootfs=rootfs,
                    files=tuple(res.attached), created=tuple(res.created),
                    container_id=container_id, attached_at=time.time()),
                    handled=[b.rel for b in binds] + list(dropped), uncreated=t.uncreate)
        return res

    def detach(self, pid: int, *, rootfs: str | None = None) -> Result:
        self._identity(pid)
        if os.geteuid() != 0:
            raise NoPermission("permission denied: detach needs root (CAP_SYS_ADMIN)")
        with self._one_at_a_time(pid):
            entry = self.state.find(pid) if self.state is not None else None
            if rootfs is None and entry is not None:
                rootfs = entry.rootfs
            created = entry.created if entry is not None else ()
            t = Target(pid, self._prefix(pid, rootfs))
            res = Result(**in_child(detach_child, t, self.proc_root, created))
            if self.state is not None:
                self.state.forget(pid)
        return res
