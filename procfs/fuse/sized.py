"""The rendering a container's file was sized by, kept for the open that follows.

A container's file reports the length of its rendering as its size (so `wc -c`, `tail`,
splice and sendfile agree with `cat`): the kernel asks for it with a GETATTR at every open and
`stat`. The open that follows reads that very rendering, rendered once: on a busy server the
turns between the GETATTR and the first read outlast the render cache's 10 ms, and a second
rendering would cost the time again and could have another length. Kept here, not by the open
(an open holds nothing until it is read): per inode (a container's own), for the first read of
one open, young (`Staleness.sized`) and bounded in bytes for all containers together.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from procfs.config import Staleness

MAX_BYTES = 4 << 20  # renderings sized but not opened (a `stat` alone) go oldest first


class Sized:
    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 max_age: float = Staleness.sized, max_bytes: int = MAX_BYTES) -> None:
        self.clock = clock
        self.max_age = max_age
        self.max_bytes = max_bytes
        self._kept: OrderedDict[int, tuple[float, bytes]] = OrderedDict()
        self.size = 0

    def keep(self, inode: int, data: bytes) -> None:
        self._drop(inode)
        self._kept[inode] = (self.clock(), data)
        self.size += len(data)
        while self.size > self.max_bytes:
            self.size -= len(self._kept.popitem(last=False)[1][1])

    def take(self, inode: int) -> bytes | None:
        """The rendering `inode` was last sized by, if young enough; once."""
        found = self._drop(inode)
        if found is None or self.clock() - found[0] > self.max_age:
            return None
        return found[1]

    def _drop(self, inode: int) -> tuple[float, bytes] | None:
        found = self._kept.pop(inode, None)
        if found is not None:
            self.size -= len(found[1])
        return found
