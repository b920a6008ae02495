"""What the FUSE layer serves: files that open into per-open handles.

A node is one path of the tree; `open` does the work (resolve, read, render) and returns an
`OpenFile` that owns whatever that open needs. Overlay files keep one rendered generation per
open, so a reader that reads in chunks never mixes two; `dev/kmsg` keeps a reader position.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from procfs.errors import ProcfsError, Refused
from procfs.fuse.rendercache import RenderCache
from procfs.sources.containers import Container

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    pid: int
    uid: int
    gid: int
    container: Container | None  # None: the host


class OpenFile(Protocol):
    async def read(self, offset: int, size: int) -> bytes: ...

    async def write(self, offset: int, data: bytes) -> int: ...

    def release(self) -> None: ...


class FileNode(Protocol):
    path: str  # relative to the mount's root: "proc/meminfo"
    mode: int  # permission bits

    async def open(self, caller: Caller, flags: int) -> OpenFile: ...


Render = Callable[[Container], bytes]  # a container's view of one file

# Cap on one rendered file: a container cannot make the server hold more than this per open.
MAX_RENDERED = 4 << 20


class BytesFile:
    """A read-only file as one open sees it: one generation of its content at a time.

    The content is rendered when first read, not at open (a process holding thousands of
    opens it never read holds no renderings), and let go once a read reaches its end: a
    reader that goes on reads at that end (EOF) or rewinds. A read at offset 0 after an earlier
    read renders a new generation, as the kernel's own /proc files do: `top` keeps /proc/stat
    open and re-reads it after `lseek(0)` every refresh. A reader going through the file in
    chunks never asks for offset 0 twice, so it sees one consistent generation."""

    __slots__ = ("data", "first", "length", "read_once", "render")

    def __init__(self, render: Callable[[], bytes] | bytes) -> None:
        self.render: Callable[[], bytes] | None
        self.data: bytes | None
        if isinstance(render, bytes):
            self.render, self.data = None, render[:MAX_RENDERED]
        else:
            self.render, self.data = render, None
        self.length = -1  # of the generation let go; -1: none yet
        self.read_once = False
        # the rendering made for this open already, if still there (procfs.fuse.sized)
        self.first: Callable[[], bytes | None] | None = None

    async def read(self, offset: int, size: int) -> bytes:
        data = self.data
        if self.render is not None and (data is None or (offset == 0 and self.read_once)):
            if data is None and 0 <= self.length <= offset and offset != 0:
                return b""  # past the end of the generation read to its end
            ready = self.first() if self.first is not None else None
            self.first = None  # (the first rendering only)
            data = self.data = (ready if ready is not None else self.render())[:MAX_RENDERED]
        assert data is not None
        self.read_once = True
        chunk = data[offset : offset + size]
        if self.render is not None and offset + len(chunk) >= len(data):
            self.drop()  # read to its end: the next read is EOF, or a rewind (a new one)
        return chunk

    def held(self) -> int:
        """Bytes of rendering held now."""
        return len(self.data) if self.data is not None and self.render is not None else 0

    def drop(self) -> None:
        """Let the rendering go (read again, it is rendered again)."""
        if self.data is not None and self.render is not None:
            self.length, self.data = len(self.data), None

    async def write(self, offset: int, data: bytes) -> int:
        raise Refused("read-only file", errno.EBADF)

    def release(self) -> None:
        self.data = None
        self.render = None


PAGE = 4096


def size_bound(host_length: int) -> int:
    """The st_size a container's file reports: above any rendering of it (the kernel's splice
    and sendfile, busybox `cat` and Python's `shutil.copyfile`, stop there, and Node's
    `readFileSync` reads no further), whole pages. A container's rendering of a file is never
    longer than the host's version of it and a page: twice that is room to spare."""
    return min((2 * max(host_length, 0) + PAGE + PAGE - 1) // PAGE * PAGE, MAX_RENDERED)


class LastGood:
    """The last rendering each container got of each file, for when its view cannot be
    computed now (its cgroup removed or renamed mid-read, a garbled kernel file): it is given
    that again, never the host's file. Bounded in bytes, the least recently rendered let go
    first; a reused key is impossible (Container.key)."""

    def __init__(self, max_bytes: int = 32 << 20) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._kept: OrderedDict[tuple[str, tuple[int, int, int]], bytes] = OrderedDict()

    def put(self, path: str, key: tuple[int, int, int], data: bytes) -> None:
        k = (path, key)
        old = self._kept.pop(k, None)
        self.size += len(data) - (len(old) if old is not None else 0)
        self._kept[k] = data
        while self.size > self.max_bytes and self._kept:
            self.size -= len(self._kept.popitem(last=False)[1])

    def get(self, path: str, key: tuple[int, int, int]) -> bytes | None:
        return self._kept.get((path, key))


@dataclass
class OverlayNode:
    """A read-only file rendered for the container it was opened for (None: the host's file),
    at the first read (BytesFile).

    If a container's view cannot be rendered (its cgroup vanished mid-read, a garbled kernel
    file, a bug), that open gets the last rendering the container had of the file, and when it
    had none an error: never the host's file, which would hand it the host's numbers.
    """

    path: str
    render: Render
    host: Callable[[], bytes]
    mode: int = 0o444
    cache: RenderCache | None = None  # renderings reused for a few ms (--cache-ttl)
    last_good: LastGood | None = None
    clock: Callable[[], float] = time.monotonic
    _bound: tuple[float, int] = field(  # (when, st_size for containers)
        default=(float("-inf"), 0), init=False, repr=False)

    def size_bound(self) -> int:
        """st_size of a container's inode of this file (`size_bound`), from the host's file,
        looked at again at most once a second."""
        now = self.clock()
        if now - self._bound[0] >= 1.0:
            try:
                length = len(self.host())
            except Exception:  # the host's file unreadable now: keep what was known
                length = 0
            self._bound = (now, max(size_bound(length), self._bound[1]))
        return self._bound[1]

    def rendering(self, caller: Caller) -> bytes | None:
        """What an open by `caller` would read now (for a GETATTR's size); None if it cannot
        be rendered now (`size_bound` then)."""
        try:
            return self._contents(caller)()
        except Exception:
            return None

    async def open(self, caller: Caller, flags: int) -> OpenFile:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise Refused(f"{self.path} is read-only", errno.EACCES)
        return BytesFile(self._contents(caller))

    def _contents(self, caller: Caller) -> Callable[[], bytes]:
        """What an open of this file by `caller` renders, at its first read."""
        container = caller.container
        if container is None:
            generate = self.host
        else:
            key, kept = container.key, self.last_good

            def generate() -> bytes:
                try:
                    data = self.render(container)
                except Exception as e:
                    last = kept.get(self.path, key) if kept is not None else None
                    level = logging.INFO if isinstance(e, ProcfsError) else logging.WARNING
                    log.log(level, "%s for pid %d (container %s): %s: %s; %s", self.path,
                            caller.pid, key, type(e).__name__, e,
                            "serving its last rendering" if last is not None else "no answer")
                    if last is None:
                        raise
                    return last
                if kept is not None:
                    kept.put(self.path, key, data)
                return data

        cache = self.cache
        if cache is None:
            return generate
        cache_key = (self.path, container.key if container is not None else None)

        def cached() -> bytes:
            data = cache.get(cache_key)
            if data is None:
                data = generate()
                cache.put(cache_key, data)
            return data

        return cached
