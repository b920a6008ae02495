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
import stat
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import pyfuse3

from procfs.errors import ProcfsError, to_errno
from procfs.nodes import Caller, FileNode, OpenFile, OverlayNode
from procfs.rendercache import RenderCache
from procfs.resolve import Resolver

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

# Short timeouts, as LXCFS: the tree never changes, but a stale entry must not outlive long a
# server that was restarted.
ENTRY_TIMEOUT = 1.0
ATTR_TIMEOUT = 1.0


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


class ProcFS(pyfuse3.Operations):
    def __init__(self, nodes: list[FileNode], resolver: Resolver,
                 cache: RenderCache | None = None) -> None:
        super().__init__()
        self.resolver = resolver
        self.cache = cache
        root = pyfuse3.ROOT_INODE
        self.dirs: dict[int, Dir] = {root: Dir(root, root)}
        self.files: dict[int, FileNode] = {}
        self._next_inode = itertools.count(pyfuse3.ROOT_INODE + 1)
        for node in nodes:
            self._add(node)
            if cache is not None and isinstance(node, OverlayNode):
                node.cache = cache
        self._handles: dict[int, OpenFile] = {}
        self._next_fh = itertools.count(1)
        self._mtime_ns = time.time_ns()

    def _add(self, node: FileNode) -> None:
        *parents, name = node.path.strip("/").split("/")
        cur = self.dirs[pyfuse3.ROOT_INODE]
        for part in parents:
            inode = cur.children.get(part)
            if inode is None:
                inode = next(self._next_inode)
                self.dirs[inode] = Dir(inode, cur.inode)
                cur.children[part] = inode
            cur = self.dirs[inode]
        if name in cur.children:
            raise ValueError(f"duplicate path {node.path}")
        inode = next(self._next_inode)
        cur.children[name] = inode
        self.files[inode] = node

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
        else:
            raise pyfuse3.FUSEError(errno.ENOENT)
        a.st_ino = inode
        a.st_size = 0  # as the kernel's own /proc files: readers read until EOF
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
        handle = await node.open(caller, flags)
        fh = next(self._next_fh)
        self._handles[fh] = handle
        return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False, nonseekable=False)

    def _handle(self, fh: int) -> OpenFile:
        handle = self._handles.get(fh)
        if handle is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        return handle

    @guarded
    async def read(self, fh: int, off: int, size: int) -> bytes:
        return await self._handle(fh).read(off, size)

    @guarded
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self._handle(fh).write(off, buf)

    async def flush(self, fh: int) -> None:
        # ENOSYS once and the kernel stops sending FLUSH: one round trip less per close.
        raise pyfuse3.FUSEError(errno.ENOSYS)

    @guarded
    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh, None)
        if handle is not None:
            handle.release()

    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_namemax = 255
        return s

    def open_handles(self) -> int:
        return len(self._handles)
