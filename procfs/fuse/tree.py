"""The served tree, and its inodes: one set for the host's callers, one for each container.

Why a container has inodes of its own. The kernel keeps one page cache per inode, and its
splice and sendfile paths (busybox `cat`, Python's `shutil.copyfile`, `sendfile(2)`) read
through that cache even for our direct-I/O files: had all containers shared an inode, one
container's rendering, cached by its splice, would be read by the next container's. So a path
looked up by a container's process (runc binding `-v MOUNT/proc/meminfo`, a container walking a
mounted directory) gives an inode of that container, and `procfs attach` binds each container
the inodes of `.pid/PID/...`, PID one of its processes. A file reports a size above any rendering
of it (so that splice reads it to its end) and no attribute caching (so that every open learns
that size again after a splice cut it to the length it read).

The host's callers share the host's inodes, which report size 0 as the kernel's /proc files
do: the page cache never holds them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from procfs.fuse.mirror import MirrorNode
from procfs.fuse.nodes import FileNode
from procfs.sources.containers import Container

View = tuple[int, int, int] | None  # the Container.key whose inode it is; None: the host's
PIDS = ".pid"  # host callers (attach) reach a container's inodes as .pid/PID/<path>
BINDS = ".binds"  # what attach binds into a container, one path a line
HIDDEN = frozenset({PIDS, BINDS})  # in the root, not listed
FIRST_VIEW_INODE = 1 << 32  # containers' inodes: never a host inode's number, never reused

Node = FileNode | MirrorNode


@dataclass
class Tree:
    files: dict[str, FileNode] = field(default_factory=dict)  # path → node
    dirs: dict[str, list[str]] = field(default_factory=dict)  # path → its entries, sorted
    mirrors: dict[str, MirrorNode] = field(default_factory=dict)

    @classmethod
    def of(cls, nodes: Iterable[Node]) -> Tree:
        """The tree of `nodes`; ValueError on a bad or duplicate path."""
        tree = cls(dirs={"": []})
        for node in nodes:
            path = node.path.strip("/")
            *parents, name = path.split("/")
            if not name or any(p in ("", ".", "..") for p in [*parents, name]) or \
                    path in HIDDEN:
                raise ValueError(f"bad path {node.path!r}")
            cur = ""
            for part in parents:
                child = f"{cur}/{part}".lstrip("/")
                if child in tree.files:
                    raise ValueError(f"{node.path}: {child} is a file")
                if child not in tree.dirs:
                    tree.dirs[child] = []
                    tree.dirs[cur].append(part)
                cur = child
            if path in tree.files or path in tree.mirrors or (
                    path in tree.dirs and not isinstance(node, MirrorNode)):
                raise ValueError(f"duplicate path {node.path}")
            if path not in tree.dirs:  # a mirror may be the parent of files named before it
                tree.dirs[cur].append(name)
            if isinstance(node, MirrorNode):
                tree.mirrors[path] = node
                tree.dirs.setdefault(path, [])
            else:
                tree.files[path] = node
        for names in tree.dirs.values():
            names.sort()
        return tree

    def mirror_of(self, path: str) -> tuple[MirrorNode, str] | None:
        """The mirrored directory `path` is in (or is), and `path` inside it."""
        for top, mirror in self.mirrors.items():
            if path == top:
                return mirror, ""
            if path.startswith(top + "/"):
                return mirror, path[len(top) + 1:]
        return None

    def bind_points(self) -> list[str]:
        """What is bound into a container: each file, except those in a mirrored directory,
        which is bound whole."""
        return sorted([*(p for p in self.files if self.mirror_of(p) is None), *self.mirrors])


@dataclass(eq=False)
class Inode:
    number: int
    view: View
    path: str  # in the tree: "" (the root), "proc", "proc/meminfo"; under PIDS for .pid/N
    container: Container | None = None  # the view's container, as first resolved
    lookups: int = 0  # the kernel's references (FORGET gives them back)


class Inodes:
    """Inode numbers: the host's for good (a path keeps its number across reloads, which the
    kernel has cached), containers' while the kernel holds them."""

    def __init__(self) -> None:
        self._host: dict[str, Inode] = {}
        self._views: dict[tuple[View, str], Inode] = {}
        self._numbers: dict[int, Inode] = {}
        self._next_host = 1  # pyfuse3.ROOT_INODE
        self._next_view = FIRST_VIEW_INODE

    def host(self, path: str) -> Inode:
        inode = self._host.get(path)
        if inode is None:
            inode = self._host[path] = Inode(self._next_host, None, path)
            self._numbers[inode.number] = inode
            self._next_host += 1
        return inode

    def of(self, c: Container | None, path: str) -> Inode:
        """The inode of `path` for `c`'s callers (None: the host's)."""
        if c is None:
            return self.host(path)
        inode = self._views.get((c.key, path))
        if inode is None:
            inode = Inode(self._next_view, c.key, path, c)
            self._next_view += 1
            self._views[(c.key, path)] = inode
            self._numbers[inode.number] = inode
        return inode

    def get(self, number: int) -> Inode | None:
        return self._numbers.get(number)

    def looked_up(self, inode: Inode) -> None:
        inode.lookups += 1

    def forget(self, number: int, count: int) -> None:
        """The kernel dropped `count` references: a container's inode goes with the last."""
        inode = self._numbers.get(number)
        if inode is None or inode.view is None:
            return
        inode.lookups -= count
        if inode.lookups <= 0:
            del self._numbers[number]
            if self._views.get((inode.view, inode.path)) is inode:
                del self._views[(inode.view, inode.path)]

    def __len__(self) -> int:
        return len(self._numbers)

    def views(self) -> int:
        """Containers' inodes held now."""
        return len(self._views)


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def split_pids(path: str) -> tuple[int, str] | None:
    """`.pid/123/proc/meminfo` → (123, "proc/meminfo"); None for any other path."""
    if not path.startswith(PIDS + "/"):
        return None
    head, _, rest = path[len(PIDS) + 1:].partition("/")
    return (int(head), rest) if head.isascii() and head.isdigit() else None


def normal(root: str) -> str:
    """A bind's source as /proc/PID/mountinfo shows it, as the tree's path: without the
    `/.pid/N` attach looked it up under, without the `//deleted` of an entry looked up again
    since by another caller."""
    root = root.removesuffix("//deleted")
    found = split_pids(root.lstrip("/"))
    return "/" + found[1] if found is not None else root


def path_under(mount: str, pid: int, rel: str) -> str:
    """Where attach looks up `rel` for the container of `pid`."""
    return os.path.join(mount, PIDS, str(pid), rel)
