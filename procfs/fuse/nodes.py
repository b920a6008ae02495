"""What the FUSE layer serves: files that open into per-open handles.

A node is one path of the tree; `open` does the work (resolve, read, render) and returns an
`OpenFile` that owns whatever that open needs. Overlay files keep one rendered generation per
open, so a reader that reads in chunks never mixes two; `dev/kmsg` keeps a reader position.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from procfs.errors import Refused
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
    """One rendered generation of a read-only file.

    With `refresh`, a read at offset 0 after an earlier read renders a new generation, as the
    kernel's own /proc files do: `top` keeps /proc/stat (and meminfo) open and re-reads it
    after `lseek(0)` every refresh. A reader going through the file in chunks never asks for
    offset 0 twice, so it still sees one consistent generation."""

    __slots__ = ("data", "read_once", "refresh")

    def __init__(self, data: bytes, refresh: Callable[[], bytes] | None = None) -> None:
        self.data = data[:MAX_RENDERED]
        self.refresh = refresh
        self.read_once = False

    async def read(self, offset: int, size: int) -> bytes:
        if offset == 0 and self.read_once and self.refresh is not None:
            self.data = self.refresh()[:MAX_RENDERED]
        self.read_once = True
        return self.data[offset : offset + size]

    async def write(self, offset: int, data: bytes) -> int:
        raise Refused("read-only file", errno.EBADF)

    def release(self) -> None:
        self.data = b""
        self.refresh = None


@dataclass
class OverlayNode:
    """A read-only file rendered at open from the caller's container (None: the host).

    If rendering a container's view fails (its cgroup vanished mid-read, a garbled kernel
    file, a bug), that one open is answered with the host's file and a log line; `host`
    raising too ends the request with an errno.
    """

    path: str
    render: Render
    host: Callable[[], bytes]
    mode: int = 0o444
    cache: RenderCache | None = None  # renderings reused for a few ms (--cache-ttl)

    async def open(self, caller: Caller, flags: int) -> OpenFile:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise Refused(f"{self.path} is read-only", errno.EACCES)
        container = caller.container
        if container is None:
            generate = self.host
        else:

            def generate() -> bytes:
                try:
                    return self.render(container)
                except Exception as e:
                    log.warning("%s for pid %d (container %s): %s: %s; serving the host's file",
                                self.path, caller.pid, container.key, type(e).__name__, e)
                    return self.host()

        cache = self.cache
        if cache is None:
            return BytesFile(generate(), generate)
        key = (self.path, container.key if container is not None else None)

        def cached() -> bytes:
            data = cache.get(key)
            if data is None:
                data = generate()
                cache.put(key, data)
            return data

        return BytesFile(cached(), cached)
