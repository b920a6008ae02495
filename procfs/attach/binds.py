"""The binds themselves: what the forked child does inside a container's mount namespace.

`attach_child` opens a detached bind mount of every file (`open_tree`) while it still sees the
procfs mount, enters the container's mount namespace and root, and moves each one over its twin
(`move_mount`); `detach_child` unmounts them. One layer per file: a twin that already carries
this server's file is left alone, layers of a server that is gone are unmounted first. All or
nothing: when one bind fails, those made by this call are undone.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from procfs.attach.errors import HalfAttached, NoPermission, NoProcess
from procfs.config import FSTYPE
from procfs.fuse.tree import normal, path_under
from procfs.sources.mountinfo import MountEntry, parse_mountinfo
from procfs.util.nsmount import CLONE_NEWNS, move_mount, open_tree, setns, umount

CREATE_WHEN_MISSING = frozenset({"dev/kmsg"})


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


def _layers(entries: list[MountEntry], target: str, rel: str) -> list[MountEntry]:
    """The procfs binds of `rel` stacked at `target`, bottom first."""
    return [e for e in entries if e.mountpoint == target and e.fstype == FSTYPE
            and normal(e.root) == "/" + rel]


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


def attach_child(t: Target, proc_root: str) -> dict[str, Any]:
    with open(os.path.join(proc_root, str(t.pid), "mountinfo")) as f:
        entries = parse_mountinfo(f.read())
    # the container's own inodes (procfs.fuse.tree), named by a pid of it
    trees = {b.rel: open_tree(path_under(b.mount, t.pid, b.rel)) for b in t.binds}
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


def detach_child(t: Target, proc_root: str, created: Sequence[str]) -> dict[str, Any]:
    with open(os.path.join(proc_root, str(t.pid), "mountinfo")) as f:
        entries = parse_mountinfo(f.read())
    ns, root = _enter(t.pid, proc_root)
    _switch(ns, root)
    res = Result(t.pid)
    # Every procfs bind of a file at its own twin: ours, whichever server made it.
    for e in entries:
        source = normal(e.root)
        if e.fstype == FSTYPE and source != "/" and e.mountpoint == t.prefix + source:
            umount(e.mountpoint)
            res.removed.append(source.lstrip("/"))
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
