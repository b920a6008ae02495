"""The FUSE operations over the served tree (`procfs.fuse.tree`).

Work happens in `open` (find the container, render its view); `read` only slices what the open
kept, since pyfuse3 gives `read` no request context. A host inode is rendered for whoever opens
it (the host's file for a host process); a container's inode is rendered for its container,
and only its processes (or those of a pid namespace nested in it, or the host) may open it.
Only `pyfuse3.FUSEError` leaves a handler: `guarded` maps every other exception to an errno
through `procfs.errors.to_errno` and logs it.
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
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import pyfuse3

from procfs.errors import ProcessGone, ProcfsError, Refused, to_errno
from procfs.fuse.fair import Gate
from procfs.fuse.held import Held
from procfs.fuse.nodes import BytesFile, Caller, FileNode, OpenFile
from procfs.fuse.rendercache import RenderCache
from procfs.fuse.sized import Sized
from procfs.fuse.tree import BINDS, HIDDEN, PIDS, Inode, Inodes, Node, Tree, join
from procfs.sources.containers import Container, Resolver

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

# Short timeouts, as LXCFS: the tree never changes, but a stale entry must not outlive long a
# server that was restarted. Entries a host directory gives are never cached: the next caller,
# of another container, must get its own inode (procfs.fuse.tree).
ENTRY_TIMEOUT = 1.0
ATTR_TIMEOUT = 1.0

# What one container may hold of the server: open files (each keeps a rendering while it is
# read, procfs.fuse.held). Its requests in progress are not capped: they take turns with the
# other containers' (procfs.fuse.fair), each waiting in a worker task of its own.
MAX_OPEN_PER_CONTAINER = 4096

# pyfuse3's worker tasks (`pyfuse3.main(max_tasks=...)`): requests waiting for their turn
# (procfs.fuse.fair) or for a record (a blocking dev/kmsg read) each hold one, and a bound of all
# would let one container's requests use up everyone's. Idle tasks do not pile up: pyfuse3 ends
# one that finishes while two others wait to read.
MANY_TASKS = 2**31 - 1


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


def _owner(i: Inode) -> Owner:
    """Whose turn a request on `i` takes (procfs.fuse.fair): its container's, for a container's
    inode (what binds reach); the host's line for the rest."""
    return i.container.key if i.container is not None else None


def _enoent() -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(errno.ENOENT)


@dataclass
class _Listing:
    """An open directory: the inode, and whose inodes its entries are."""

    inode: Inode
    viewer: Container | None


class ProcFS(pyfuse3.Operations):
    def __init__(self, nodes: Sequence[Node], resolver: Resolver,
                 cache: RenderCache | None = None) -> None:
        super().__init__()
        self.resolver = resolver
        self.cache = cache
        self.inodes = Inodes()
        self.inodes.host("")  # the root: pyfuse3.ROOT_INODE
        self.worker_tasks = MANY_TASKS
        self.tree = Tree()
        self.install(self.build_tree(nodes))
        self._handles: dict[int, OpenFile] = {}
        self._owners: dict[int, Owner] = {}  # fh → the container the file was opened for
        self._open: dict[Owner, int] = {}  # container → its open files
        self.held = Held()  # renderings the open files hold
        self._sized = Sized()  # inode → the rendering its last GETATTR sized
        self.gate = Gate()  # whose request is served next (its `pending` set once mounted)
        self._listings: dict[int, _Listing] = {}
        self._next_fh = itertools.count(1)
        self._mtime_ns = time.time_ns()

    def build_tree(self, nodes: Sequence[Node]) -> Tree:
        """The tree of `nodes`, its host inodes numbered (a path keeps its number across trees:
        a reload installs a new one under a kernel that cached the old numbers); raises
        ValueError on a bad path."""
        tree = Tree.of(nodes)
        for path in [*tree.dirs, *tree.files, PIDS, BINDS]:
            self.inodes.host(path)
        return tree

    def install(self, tree: Tree) -> None:
        """Serve `tree` from the next request on (one assignment: no request sees a mix).
        Files already open keep their handles, and with them what they rendered."""
        if self.cache is not None:
            self.cache.clear()  # renderings of the old code
        self.tree = tree

    @property
    def files(self) -> dict[int, FileNode]:
        """The host inode of every file, by number."""
        return {self.inodes.host(path).number: node for path, node in self.tree.files.items()}

    def paths(self) -> list[str]:
        """Every file's path."""
        return sorted(self.tree.files)

    # What a path is.

    def _kind(self, path: str, viewer: Container | None) -> str | None:
        """"dir", "file", "mirror" (an entry of a host directory served through) or None when
        `viewer` has no such path."""
        tree = self.tree
        if path in tree.files:
            return "file"
        if path in tree.dirs:
            return "dir"
        found = tree.mirror_of(path)
        if found is None:
            return None
        mirror, rel = found
        try:
            mirror.lstat(rel)
        except OSError:
            return None
        return "mirror" if mirror.visible(viewer, rel) else None

    def _inode(self, number: int) -> Inode:
        inode = self.inodes.get(number)
        if inode is None:
            raise _enoent()
        return inode

    def _attrs(self, inode: Inode, entry_timeout: float = ENTRY_TIMEOUT
               ) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = inode.number
        a.st_blksize = 4096
        a.st_uid = a.st_gid = 0
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = self._mtime_ns
        a.entry_timeout = entry_timeout
        a.attr_timeout = ATTR_TIMEOUT
        path, own = inode.path, inode.view is not None
        if inode.view is None and path == BINDS:
            a.st_mode, a.st_nlink = stat.S_IFREG | 0o444, 1
            return a
        if inode.view is None and (path == PIDS or path.startswith(PIDS + "/")):
            a.st_mode, a.st_nlink = stat.S_IFDIR | 0o555, 2
            return a
        kind = self._kind(path, inode.container)
        if kind == "dir":
            a.st_mode, a.st_nlink = stat.S_IFDIR | 0o555, 2
        elif kind == "file":
            node = self.tree.files[path]
            a.st_mode, a.st_nlink = stat.S_IFREG | node.mode, 1
            # the host's: 0, as the kernel's /proc files (readers read until EOF); a
            # container's: its rendering's length at GETATTR (`getattr`), asked for again on
            # every open; here (a lookup, a listing), above any rendering
            bound = getattr(node, "size_bound", None)
            a.st_size = bound() if own and bound is not None else getattr(node, "size", 0)
            if own:
                a.attr_timeout = 0
        elif kind == "mirror":
            found = self.tree.mirror_of(path)
            assert found is not None
            try:
                st = found[0].lstat(found[1])
            except OSError as e:
                raise pyfuse3.FUSEError(e.errno or errno.ENOENT) from None
            a.st_mode, a.st_nlink = st.st_mode, st.st_nlink
            a.st_uid, a.st_gid = st.st_uid, st.st_gid
            a.st_size = st.st_size
            if own and stat.S_ISREG(st.st_mode):
                a.attr_timeout = 0
        else:
            raise _enoent()
        return a

    def _caller(self, pid: int) -> Container | None:
        if pid == -1:  # no request context (a test calling in): the host
            return None
        try:
            return self.resolver.resolve(pid)
        except ProcessGone:
            raise pyfuse3.FUSEError(errno.ESRCH) from None

    def _child(self, parent: Inode, name: str, pid: int) -> tuple[Inode, float]:
        """The inode `name` in `parent` is for the process `pid`, and its entry timeout."""
        if parent.view is not None:  # in a container's tree: that container's
            path = join(parent.path, name)
            if self._kind(path, parent.container) is None:
                raise _enoent()
            return self.inodes.of(parent.container, path), ENTRY_TIMEOUT
        if parent.path == PIDS:  # .pid/PID: the tree of PID's container
            if not (name.isascii() and name.isdigit()):
                raise _enoent()
            try:
                c = self.resolver.resolve(int(name))
            except ProcfsError:
                raise _enoent() from None
            if c is None:  # a host process has no tree of its own
                raise _enoent()
            # the host's (attach), or a hook's inside that very container (crun's, LXC's)
            viewer = self._caller(pid)
            if viewer is not None and viewer.key != c.key and not self.resolver.within(pid, c):
                raise _enoent()
            return self.inodes.of(c, ""), 0.0
        if parent.path == "" and name in HIDDEN:
            return self.inodes.host(name), ENTRY_TIMEOUT
        path = join(parent.path, name)
        viewer = self._caller(pid)
        if self._kind(path, viewer) is None:
            raise _enoent()
        # the next caller may be of another container: never cached
        return self.inodes.of(viewer, path), 0.0

    @guarded
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None
                     ) -> pyfuse3.EntryAttributes:
        parent = self._inode(parent_inode)
        owner = _owner(parent)
        await self.gate.enter(owner)
        try:
            if name == b".":
                return self._attrs(parent)
            if name == b"..":
                return self._attrs(self._parent(parent))
            inode, timeout = self._child(parent, os.fsdecode(name), ctx.pid if ctx else -1)
            attrs = self._attrs(inode, timeout)
            self.inodes.looked_up(inode)
            return attrs
        finally:
            self.gate.leave()

    def _parent(self, inode: Inode) -> Inode:
        if inode.view is not None and inode.path == "":
            return self.inodes.host(PIDS)
        return self.inodes.of(inode.container, inode.path.rpartition("/")[0])

    @guarded
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        i = self._inode(inode)
        await self.gate.enter(_owner(i))
        try:
            attrs = self._attrs(i)
            if i.container is not None and stat.S_ISREG(attrs.st_mode):
                data = self._rendering(i, i.container, ctx)
                if data is not None:
                    attrs.st_size = len(data)
                    self._sized.keep(i.number, data)
            return attrs
        finally:
            self.gate.leave()

    def _rendering(self, i: Inode, known: Container, ctx: Any) -> bytes | None:
        """The rendering of a container's file that the next open reads (`_sized`), whose
        length is the file's size, as `wc -c`, `tail`, splice and sendfile take it. None: not
        a rendered file, or not renderable now."""
        node = self.tree.files.get(i.path)
        rendering = getattr(node, "rendering", None)
        if rendering is None:
            return None
        try:
            container = self.resolver.current(known)
        except ProcfsError:
            return None
        pid = ctx.pid if ctx is not None else -1
        data: bytes | None = rendering(Caller(pid, 0, 0, container))
        return data

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for number, count in inode_list:
            self.inodes.forget(number, count)

    @guarded
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        i = self._inode(inode)
        found = self.tree.mirror_of(i.path)
        if found is None:
            raise pyfuse3.FUSEError(errno.EINVAL)
        return found[0].readlink(found[1])

    @guarded
    async def opendir(self, inode: int, ctx: Any) -> int:
        i = self._inode(inode)
        if not stat.S_ISDIR(self._attrs(i).st_mode):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        viewer = i.container if i.view is not None else self._caller(ctx.pid)
        fh = next(self._next_fh)
        self._listings[fh] = _Listing(i, viewer)
        return fh

    def _names(self, listing: _Listing) -> list[str]:
        i = listing.inode
        if i.view is None and (i.path == PIDS or i.path.startswith(PIDS + "/")):
            return []  # containers are reached by name only
        names = list(self.tree.dirs.get(i.path, []))
        found = self.tree.mirror_of(i.path)
        if found is not None:
            own = set(names)
            names += [n for n in found[0].names(listing.viewer, found[1]) if n not in own]
        return sorted(names)

    @guarded
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        listing = self._listings.get(fh)
        if listing is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        parent = listing.inode
        for i, name in enumerate(self._names(listing)[start_id:], start_id + 1):
            path = join(parent.path, name)
            viewer = parent.container if parent.view is not None else listing.viewer
            if self._kind(path, viewer) is None:  # gone since the listing
                continue
            inode = self.inodes.of(viewer, path)
            timeout = ENTRY_TIMEOUT if parent.view is not None else 0.0
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self._attrs(inode, timeout),
                                         i):
                break
            self.inodes.looked_up(inode)  # readdirplus: an entry is a lookup

    async def releasedir(self, fh: int) -> None:
        self._listings.pop(fh, None)

    @guarded
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        i = self._inode(inode)
        await self.gate.enter(_owner(i))
        try:
            return await self._open_in_turn(i, flags, ctx)
        finally:
            self.gate.leave()

    async def _open_in_turn(self, i: Inode, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        log.debug("open %s (%s) by pid %d", i.path, i.view, ctx.pid)
        if i.view is None and i.path == BINDS:
            handle: OpenFile = BytesFile("".join(p + "\n" for p in self.tree.bind_points())
                                         .encode())
            return self._opened(handle, None)
        kind = self._kind(i.path, i.container)
        if kind is None:
            raise _enoent()
        if kind == "dir":
            raise pyfuse3.FUSEError(errno.EISDIR)
        container = self._for_whom(i, ctx.pid)
        owner = container.key if container is not None else None
        if owner is not None and self._open.get(owner, 0) >= MAX_OPEN_PER_CONTAINER:
            raise Refused(f"container {owner} holds {MAX_OPEN_PER_CONTAINER} open files",
                          errno.ENFILE)
        caller = Caller(ctx.pid, ctx.uid, ctx.gid, container)
        if kind == "file":
            # Renders nothing yet: its first read renders, or takes what its GETATTR sized.
            handle = await self.tree.files[i.path].open(caller, flags)
            if container is not None and isinstance(handle, BytesFile):
                handle.first = functools.partial(self._sized.take, i.number)
        else:
            found = self.tree.mirror_of(i.path)
            assert found is not None
            handle = await found[0].open(found[1], caller, flags)
        return self._opened(handle, owner)

    def _for_whom(self, i: Inode, pid: int) -> Container | None:
        """Whose view an open of `i` by `pid` renders: a host inode is rendered for its
        caller; a container's inode for its container, opened by one of its processes, a
        process of a pid namespace nested in it, or the host's (root, which may look)."""
        caller = self._caller(pid)
        if i.container is None:
            return caller
        try:
            container = self.resolver.current(i.container)
        except ProcessGone:
            raise Refused(f"container {i.view} is gone", errno.ESRCH) from None
        if caller is not None and caller.key != container.key and \
                not self.resolver.within(pid, container):
            raise Refused(f"pid {pid} of container {caller.key} opened a file of container "
                          f"{container.key}", errno.EACCES)
        return container

    def _opened(self, handle: OpenFile, owner: Owner) -> pyfuse3.FileInfo:
        fh = next(self._next_fh)
        self._handles[fh] = handle
        self._owners[fh] = owner
        self._open[owner] = self._open.get(owner, 0) + 1
        return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False, nonseekable=False)

    def _handle(self, fh: int) -> OpenFile:
        handle = self._handles.get(fh)
        if handle is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        return handle

    @guarded
    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self._handle(fh)
        if not isinstance(handle, BytesFile):
            # dev/kmsg: bounded per container by its service; a read waiting for a record
            # must not hold the others' turns
            return await handle.read(off, size)
        owner = self._owners.get(fh)
        await self.gate.enter(owner)
        try:
            return await handle.read(off, size)
        finally:
            self.gate.leave()
            self.held.seen(fh, owner, handle)

    @guarded
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self._handle(fh).write(off, buf)  # dev/kmsg's (every other file refuses)

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
            self.held.forget(fh, owner)

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
                "requests_in_progress": self.gate.in_progress,
                "rendered_bytes_held": self.held.total,
                "requests_that_waited_their_turn": self.gate.waits,
                "turns_that_waited_for_the_kernels_queue": self.gate.looks,
                "container_inodes": self.inodes.views(),
                "worker_tasks": self.worker_tasks}
