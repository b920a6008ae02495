"""The FUSE operations: a static tree of directories and virtual files.

Work happens in `open` (resolve the caller, render its view); `read` only slices what the open
kept, since pyfuse3 gives `read` no request context. Only `pyfuse3.FUSEError` leaves a handler:
`guarded` maps every other exception to an errno through `procfs.errors.to_errno` and logs it.
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import select
import stat
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import pyfuse3

from procfs.errors import ProcfsError, Refused, to_errno
from procfs.fuse.nodes import Caller, FileNode, OpenFile
from procfs.fuse.rendercache import RenderCache
from procfs.sources.containers import Resolver

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

# Short timeouts, as LXCFS: the tree never changes, but a stale entry must not outlive long a
# server that was restarted.
ENTRY_TIMEOUT = 1.0
ATTR_TIMEOUT = 1.0

# What one container may hold of the server: open files (each keeps one rendering, at most
# nodes.MAX_RENDERED bytes) and requests in progress at once (a blocking read holds one of
# pyfuse3's worker tasks; without a cap one container could take them all and starve the rest).
MAX_OPEN_PER_CONTAINER = 4096
MAX_BUSY_PER_CONTAINER = 16

# pyfuse3's worker tasks (`pyfuse3.main(max_tasks=...)`). With more than one, two idle tasks hand
# pyfuse3's read lock to each other on every request (README, Speed: 20-40 % more CPU per read
# with 8 readers). Only a handler that waits (a blocking dev/kmsg read) needs a second task, so
# a tree without such a file is served by one.
MANY_TASKS = 99  # pyfuse3's default


def worker_tasks(nodes: Iterable[FileNode]) -> int:
    """The worker tasks a server of `nodes` needs: one unless a node's requests may wait."""
    return MANY_TASKS if any(getattr(n, "waits", False) for n in nodes) else 1

Owner = tuple[int, int, int] | None  # a container's key; None: the host


def guarded(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except Exception as e:
            code = to_errno(e)
            if isinstance(e, ProcfsError | OSError):
                log.info("%s: %s: %s", fn.__name__, type(e).__name__, e)
            else:
                log.exception("%s failed; answering %s", fn.__name__, errno.errorcode.get(code))
            raise pyfuse3.FUSEError(code) from None

    return wrapper


@dataclass
class Dir:
    inode: int
    parent: int
    children: dict[str, int] = field(default_factory=dict)


@dataclass
class Tree:
    dirs: dict[int, Dir]
    files: dict[int, FileNode]


class ProcFS(pyfuse3.Operations):
    def __init__(self, nodes: list[FileNode], resolver: Resolver,
                 cache: RenderCache | None = None) -> None:
        super().__init__()
        self.resolver = resolver
        self.cache = cache
        self._inodes: dict[str, int] = {"": pyfuse3.ROOT_INODE}  # path → inode, for good
        self._next_inode = itertools.count(pyfuse3.ROOT_INODE + 1)
        self.worker_tasks = worker_tasks(nodes)  # fixed once pyfuse3.main runs with it
        self.install(self.build_tree(nodes))
        self._handles: dict[int, OpenFile] = {}
        self._owners: dict[int, Owner] = {}  # fh → the container that opened it
        self._open: dict[Owner, int] = {}  # container → its open files
        self._busy: dict[Owner, int] = {}  # container → its requests in progress
        self._next_fh = itertools.count(1)
        self._mtime_ns = time.time_ns()

    def _inode(self, path: str) -> int:
        inode = self._inodes.get(path)
        if inode is None:
            inode = self._inodes[path] = next(self._next_inode)
        return inode

    def build_tree(self, nodes: list[FileNode]) -> Tree:
        """The tree of `nodes`. A path keeps its inode number across trees (a reload installs a
        new one under a kernel that cached the old numbers); raises ValueError on a bad path."""
        root = pyfuse3.ROOT_INODE
        tree = Tree({root: Dir(root, root)}, {})
        for node in nodes:
            *parents, name = node.path.strip("/").split("/")
            if not name or any(p in ("", ".", "..") for p in [*parents, name]):
                raise ValueError(f"bad path {node.path!r}")
            cur, path = tree.dirs[root], ""
            for part in parents:
                path = f"{path}/{part}".lstrip("/")
                inode = cur.children.get(part)
                if inode is None:
                    inode = self._inode(path + "/")
                    tree.dirs[inode] = Dir(inode, cur.inode)
                    cur.children[part] = inode
                elif inode not in tree.dirs:
                    raise ValueError(f"{node.path}: {path} is a file")
                cur = tree.dirs[inode]
            if name in cur.children:
                raise ValueError(f"duplicate path {node.path}")
            inode = self._inode(node.path.strip("/"))
            cur.children[name] = inode
            tree.files[inode] = node
        if worker_tasks(tree.files.values()) > self.worker_tasks:
            raise ValueError("a file that waits (dev/kmsg) needs more worker tasks than this "
                             "server runs with: restart it, a reload cannot add one")
        return tree

    def install(self, tree: Tree) -> None:
        """Serve `tree` from the next request on (one assignment: no request sees a mix).
        Files already open keep their handles, and with them what they rendered."""
        if self.cache is not None:
            self.cache.clear()  # renderings of the old code
        self.dirs, self.files = tree.dirs, tree.files

    def paths(self) -> list[str]:
        """Every file's path, for attach and docker-flags."""
        return sorted(node.path for node in self.files.values())

    def _attrs(self, inode: int) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        if inode in self.dirs:
            a.st_mode = stat.S_IFDIR | 0o555
            a.st_nlink = 2
        elif inode in self.files:
            a.st_mode = stat.S_IFREG | self.files[inode].mode
            a.st_nlink = 1
            # 0 as the kernel's own /proc files (readers read until EOF), unless the node says
            # otherwise (dev/kmsg: where SEEK_END lands).
            a.st_size = getattr(self.files[inode], "size", 0)
        else:
            raise pyfuse3.FUSEError(errno.ENOENT)
        a.st_ino = inode
        a.st_blksize = 4096
        a.st_uid = a.st_gid = 0
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = self._mtime_ns
        a.entry_timeout = ENTRY_TIMEOUT
        a.attr_timeout = ATTR_TIMEOUT
        return a

    @guarded
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self._attrs(inode)

    @guarded
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: Any = None
    ) -> pyfuse3.EntryAttributes:
        d = self.dirs.get(parent_inode)
        if d is None:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if name == b".":
            return self._attrs(d.inode)
        if name == b"..":
            return self._attrs(d.parent)
        inode = d.children.get(os.fsdecode(name))
        if inode is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attrs(inode)

    @guarded
    async def opendir(self, inode: int, ctx: Any) -> int:
        if inode not in self.dirs:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    @guarded
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        entries = sorted(self.dirs[fh].children.items())
        for i, (name, inode) in enumerate(entries[start_id:], start_id + 1):
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self._attrs(inode), i):
                break

    async def releasedir(self, fh: int) -> None:
        return None

    @guarded
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        node = self.files.get(inode)
        if node is None:
            raise pyfuse3.FUSEError(errno.EISDIR if inode in self.dirs else errno.ENOENT)
        log.debug("open %s by pid %d", node.path, ctx.pid)
        caller = Caller(ctx.pid, ctx.uid, ctx.gid, self.resolver.resolve(ctx.pid))
        owner = caller.container.key if caller.container is not None else None
        if owner is not None and self._open.get(owner, 0) >= MAX_OPEN_PER_CONTAINER:
            raise Refused(f"container {owner} holds {MAX_OPEN_PER_CONTAINER} open files",
                          errno.ENFILE)
        self._enter(owner)
        try:
            handle = await node.open(caller, flags)
        finally:
            self._leave(owner)
        fh = next(self._next_fh)
        self._handles[fh] = handle
        self._owners[fh] = owner
        self._open[owner] = self._open.get(owner, 0) + 1
        return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False, nonseekable=False)

    # A request of `owner` in progress: `_enter` counts it (EAGAIN beyond its share), `_leave`
    # in a `finally` uncounts it. Two calls, not a context manager: every request passes here.
    def _enter(self, owner: Owner) -> None:
        busy = self._busy.get(owner, 0)
        if owner is not None and busy >= MAX_BUSY_PER_CONTAINER:
            raise Refused(f"container {owner} has {busy} requests in progress", errno.EAGAIN)
        self._busy[owner] = busy + 1

    def _leave(self, owner: Owner) -> None:
        left = self._busy[owner] - 1
        if left:
            self._busy[owner] = left
        else:
            del self._busy[owner]

    def _handle(self, fh: int) -> OpenFile:
        handle = self._handles.get(fh)
        if handle is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        return handle

    @guarded
    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self._handle(fh)
        owner = self._owners.get(fh)
        self._enter(owner)
        try:
            return await handle.read(off, size)
        finally:
            self._leave(owner)

    @guarded
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self._handle(fh)
        owner = self._owners.get(fh)
        self._enter(owner)
        try:
            return await handle.write(off, buf)
        finally:
            self._leave(owner)

    @guarded
    async def poll(self, inode: int, fh: int, poll_handle: Any, ctx: Any) -> int:
        # A handle with a `poll(handle) -> mask` method answers itself (and may keep the handle
        # to notify later); other files are always ready, as regular files are.
        handle = self._handle(fh)
        poll = getattr(handle, "poll", None)
        if poll is None:
            return select.POLLIN | select.POLLRDNORM | select.POLLOUT | select.POLLWRNORM
        mask: int = poll(poll_handle)
        return mask

    async def flush(self, fh: int) -> None:
        # ENOSYS once and the kernel stops sending FLUSH: one round trip less per close.
        raise pyfuse3.FUSEError(errno.ENOSYS)

    @guarded
    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh, None)
        if handle is not None:
            owner = self._owners.pop(fh, None)
            left = self._open.get(owner, 1) - 1
            if left > 0:
                self._open[owner] = left
            else:
                self._open.pop(owner, None)
            handle.release()

    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_namemax = 255
        return s

    def open_handles(self) -> int:
        return len(self._handles)

    async def stats(self, args: dict[str, Any]) -> dict[str, Any]:
        """The control command `stats`: what the server holds now (a queue of unsent releases
        shows as open files far above the readers' count)."""
        return {"open_files": self.open_handles(),
                "containers_with_open_files": len(self._open),
                "most_open_by_one_container": max(self._open.values(), default=0),
                "requests_in_progress": sum(self._busy.values()),
                "worker_tasks": self.worker_tasks}
