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
import enum
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from procfs.attach.state import Attachment, StateFile
from procfs.errors import ProcessGone, ProcfsError
from procfs.server.record import ServerRecord, state_dir
from procfs.server.shards import choose
from procfs.sources.hostproc import HostProc
from procfs.sources.mountinfo import MountEntry, parse_mountinfo
from procfs.util.nsmount import (
    CLONE_NEWNS,
    dev_of,
    move_mount,
    open_tree,
    setns,
    umount,
)

DEFAULT_MOUNT = "/var/lib/procfs"
FSTYPE = "fuse.procfs"
CREATE_WHEN_MISSING = frozenset({"dev/kmsg"})
LOCKS = 64  # attaches of one container run one at a time: a lock file per pid % LOCKS


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    NO_PROCESS = 3
    NO_SERVER = 4
    NO_PERMISSION = 5
    HALF_ATTACHED = 6


class AttachError(ProcfsError):
    """A one-line reason `attach`/`detach` did nothing (or undid what it did)."""

    code = ExitCode.FAILED


class NoProcess(AttachError):
    code = ExitCode.NO_PROCESS


class ServerDown(AttachError):
    code = ExitCode.NO_SERVER


class NoPermission(AttachError):
    code = ExitCode.NO_PERMISSION


class Refusal(AttachError):
    code = ExitCode.USAGE


class HalfAttached(AttachError):
    """A bind failed and undoing the others failed too: the container has some of the files."""

    code = ExitCode.HALF_ATTACHED


@dataclass
class Result:
    pid: int
    bound: list[str] = field(default_factory=list)  # newly bound by this call
    kept: list[str] = field(default_factory=list)  # already carried this server's file
    missing: list[str] = field(default_factory=list)  # no twin in the container: skipped
    created: list[str] = field(default_factory=list)  # twins created empty (dev/kmsg)
    replaced: list[str] = field(default_factory=list)  # had a stale layer, rebound
    removed: list[str] = field(default_factory=list)  # detach: unbound
    dropped: list[str] = field(default_factory=list)  # bound before, no longer served: unbound

    @property
    def attached(self) -> list[str]:
        return sorted(self.bound + self.kept)

    def summary(self, verb: str = "attached") -> str:
        if verb == "detached":
            return f"detached {len(self.removed)} files from pid {self.pid}"
        parts = [f"{verb} {len(self.attached)} files to pid {self.pid}"]
        if self.kept:
            parts.append(f"{len(self.kept)} already attached")
        if self.replaced:
            parts.append(f"{len(self.replaced)} stale replaced")
        if self.created:
            parts.append("created " + ", ".join("/" + p for p in self.created))
        if self.missing:
            parts.append("no twin for " + ", ".join("/" + p for p in self.missing))
        if self.dropped:
            parts.append("no longer served: " + ", ".join("/" + p for p in self.dropped))
        return "; ".join(parts)


def served_files(mount: str) -> list[str]:
    """Every file of the mounted tree, relative to it ("proc/meminfo", ...)."""
    out: list[str] = []
    for root, _, files in os.walk(mount):
        out.extend(os.path.relpath(os.path.join(root, f), mount) for f in files)
    return sorted(out)


def server_dev(mount: str, proc_root: str = "/proc") -> str:
    """The device ("major:minor") of the procfs server mounted at `mount`; ServerDown if none."""
    try:
        st = os.stat(mount)
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            raise ServerDown(f"the procfs server at {mount} is gone "
                             "(transport endpoint not connected)") from e
        raise ServerDown(f"no procfs server mounted at {mount}: {e.strerror}") from e
    target = os.path.realpath(mount)
    with open(os.path.join(proc_root, "self/mountinfo")) as f:
        entries = parse_mountinfo(f.read())
    if not any(e.mountpoint == target and e.fstype == FSTYPE and e.root == "/" for e in entries):
        raise ServerDown(f"no procfs server mounted at {mount}")
    return dev_of(st)


def ns_ancestor(ns_pid: int, host: HostProc, depth: int = 8) -> int:
    """The pid, in /proc's namespace, of the process that is `ns_pid` in *our* pid namespace.

    A hook that runs inside a container (OCI createContainer, LXC mount hook) is in the
    container's pid namespace while /proc is still the host's: its init is one of its
    ancestors. Outside a child pid namespace `ns_pid` is already the answer."""
    try:
        me = host.status("self")  # type: ignore[arg-type]
        ours = host.pid_ns("self")
    except ProcfsError:
        return ns_pid
    if len(me.nspid) <= 1:
        return ns_pid
    pid = me.ppid
    for _ in range(depth):
        if pid <= 0:
            break
        try:
            st = host.status(pid)
            if st.nspid and st.nspid[-1] == ns_pid and host.pid_ns(pid) == ours:
                return pid
        except ProcfsError:
            break
        pid = st.ppid
    raise NoProcess(f"pid {ns_pid} of the hook's pid namespace is not among its ancestors")


def caller_init(host: HostProc) -> int:
    """`procfs attach init`: the init of the caller's pid namespace when the caller runs in a
    child pid namespace (an LXC mount hook), else the caller's parent (the hook's shell)."""
    try:
        me = host.status("self")  # type: ignore[arg-type]
    except ProcfsError as e:
        raise NoProcess("cannot read /proc/self/status") from e
    if len(me.nspid) <= 1:
        return me.ppid
    return ns_ancestor(1, host)


def _layers(entries: list[MountEntry], target: str, rel: str) -> list[MountEntry]:
    """The procfs binds of `rel` stacked at `target`, bottom first."""
    return [e for e in entries if e.mountpoint == target and e.fstype == FSTYPE
            and e.root == "/" + rel]


def _in_child(work: Any, *args: Any) -> dict[str, Any]:
    """Run `work(*args)` in a forked child; its JSON-able result, or the error it raised."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        code = 0
        try:
            os.close(r)
            payload: dict[str, Any] = {"ok": work(*args)}
        except AttachError as e:
            payload = {"error": str(e), "kind": type(e).__name__}
        except OSError as e:
            payload = {"error": f"{e.filename or ''}: {e.strerror}".lstrip(": "),
                       "errno": e.errno}
        except BaseException as e:
            payload = {"error": f"{type(e).__name__}: {e}"}
        try:
            os.write(w, json.dumps(payload).encode())
        except BaseException:
            code = 1
        os._exit(code)
    os.close(w)
    chunks = []
    with os.fdopen(r, "rb") as f:
        while chunk := f.read(65536):
            chunks.append(chunk)
    os.waitpid(child, 0)
    try:
        payload = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        payload = {}
    if "ok" in payload:
        result: dict[str, Any] = payload["ok"]
        return result
    message = payload.get("error", "the attach child died without a word")
    kinds: dict[str, type[AttachError]] = {c.__name__: c for c in
                                           (NoProcess, ServerDown, NoPermission, Refusal,
                                            HalfAttached)}
    if payload.get("errno") in (errno.EPERM, errno.EACCES):
        raise NoPermission(f"permission denied: {message}")
    if payload.get("errno") == errno.ESRCH:
        raise NoProcess(message)
    raise kinds.get(payload.get("kind", ""), AttachError)(message)


@dataclass(frozen=True)
class Bind:
    """One file to bind and where it comes from."""

    rel: str  # "proc/meminfo"
    mount: str  # the procfs mount serving it
    dev: str  # that mount's device: a layer of another device is stale


@dataclass(frozen=True)
class Target:
    """What the child needs: the process, its root prefix and the files."""

    pid: int
    prefix: str  # "" after pivot_root, else the rootfs path as the process sees it
    binds: tuple[Bind, ...] = ()
    # Files bound before that this server does not serve (one restarted with `--no-kmsg`):
    # their stale layers are unbound, and of those, the twins procfs created are removed.
    dropped: tuple[str, ...] = ()
    uncreate: tuple[str, ...] = ()

    def path(self, rel: str) -> str:
        return f"{self.prefix}/{rel}"


def _enter(pid: int, proc_root: str) -> tuple[int, int]:
    """Open the process's mount namespace and root (before any setns)."""
    try:
        ns = os.open(os.path.join(proc_root, str(pid), "ns/mnt"), os.O_RDONLY | os.O_CLOEXEC)
        root = os.open(os.path.join(proc_root, str(pid), "root"),
                       os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError as e:
        raise NoProcess(f"no process {pid}") from e
    except PermissionError as e:
        raise NoPermission(f"no permission to enter pid {pid}'s mount namespace") from e
    return ns, root


def _switch(ns: int, root: int) -> None:
    setns(ns, CLONE_NEWNS)
    os.fchdir(root)
    os.chroot(".")
    os.chdir("/")


def _attach_child(t: Target, proc_root: str) -> dict[str, Any]:
    with open(os.path.join(proc_root, str(t.pid), "mountinfo")) as f:
        entries = parse_mountinfo(f.read())
    trees = {b.rel: open_tree(os.path.join(b.mount, b.rel)) for b in t.binds}
    ns, root = _enter(t.pid, proc_root)
    _switch(ns, root)
    res = Result(t.pid)
    done: list[str] = []  # targets this call mounted on, for the rollback
    try:
        for b in t.binds:
            rel, target = b.rel, t.path(b.rel)
            layers = _layers(entries, target, rel)
            if layers and all(e.dev == b.dev for e in layers):
                for _ in layers[1:]:  # more than one of ours: keep one
                    umount(target)
                res.kept.append(rel)
                continue
            for _ in layers:  # a stale server's layers (ENOTCONN)
                umount(target)
            if layers:
                res.replaced.append(rel)
            if not os.path.lexists(target):
                if rel not in CREATE_WHEN_MISSING or not os.path.isdir(os.path.dirname(target)):
                    res.missing.append(rel)
                    continue
                os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC,
                                 0o600))
                res.created.append(rel)
            move_mount(trees[rel], target)
            done.append(rel)
            res.bound.append(rel)
    except BaseException as e:
        stuck = []
        for rel in reversed(done):
            try:
                umount(t.path(rel))
            except OSError:
                stuck.append("/" + rel)
        for rel in res.created:
            with contextlib.suppress(OSError):
                os.unlink(t.path(rel))
        if stuck:
            raise HalfAttached(f"{e}; and could not undo the binds on {', '.join(stuck)}") from e
        raise
    for rel in t.dropped:  # after the binds: a failed attach leaves these as they were
        target = t.path(rel)
        layers = _layers(entries, target, rel)
        for _ in layers:
            umount(target)
        if rel in t.uncreate:
            _remove_created(target)
        if layers or rel in t.uncreate:
            res.dropped.append(rel)
    return res.__dict__


def _detach_child(t: Target, proc_root: str, created: Sequence[str]) -> dict[str, Any]:
    with open(os.path.join(proc_root, str(t.pid), "mountinfo")) as f:
        entries = parse_mountinfo(f.read())
    ns, root = _enter(t.pid, proc_root)
    _switch(ns, root)
    res = Result(t.pid)
    # Every procfs bind of a file at its own twin: ours, whichever server made it.
    for e in entries:
        if e.fstype == FSTYPE and e.root != "/" and e.mountpoint == t.prefix + e.root:
            umount(e.mountpoint)
            res.removed.append(e.root.lstrip("/"))
    for rel in created:
        _remove_created(t.path(rel))
    res.removed = sorted(set(res.removed))
    return res.__dict__


def _remove_created(target: str) -> None:
    """Remove a twin procfs created (an empty dev/kmsg), unless the container has since made it
    something else (written to it, replaced it, mounted on it)."""
    with contextlib.suppress(OSError):
        st = os.lstat(target)
        if st.st_size == 0 and os.path.isfile(target) and not os.path.ismount(target):
            os.unlink(target)


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
            start = self.host.stat(pid).start_ticks
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
        of LOCKS files, by pid. Without the directory, unlocked, as before there were shards."""
        directory = os.path.join(os.path.dirname(os.path.abspath(self.state.path))
                                 if self.state is not None else state_dir(), "locks")
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
            fd = os.open(os.path.join(directory, f"attach-{pid % LOCKS}"),
                         os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

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
            res = Result(**_in_child(_attach_child, t, self.proc_root))
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
            res = Result(**_in_child(_detach_child, t, self.proc_root, created))
            if self.state is not None:
                self.state.forget(pid)
        return res
