"""Renderings held by open files, capped per container and in all.

An open file holds its rendering from its first read until a read reaches its end
(`procfs.fuse.nodes.BytesFile`). A process that opens many files and reads each only in part
would make the server hold all of them; beyond a container's share, or the server's, the
renderings read least recently are let go (the next read of such a file renders it again,
as a reader that rewinds would get). The container holding the most is trimmed first, so one
container's opens never cost another's renderings. When what is held falls far below its peak
(a burst of held opens closed), the memory is handed back to the system (`malloc_trim`): the
allocator keeps freed pages otherwise, and the server's RSS would stay at the burst's peak. Not
for the steady churn of renderings let go at EOF: their pages are reused at once, and a trim
costs the request that waits behind it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import trio

log = logging.getLogger(__name__)

Owner = tuple[int, int, int] | None  # a container's key; None: the host

MAX_HELD_PER_CONTAINER = 32 << 20
MAX_HELD = 256 << 20
TRIM_AFTER = 16 << 20  # held this far below its peak: trim at once (a burst still closing)
TRIM_SETTLED = 1 << 20  # ... this far, once a second (`settle`)
SETTLE_EVERY = 1.0  # seconds


class Holding(Protocol):
    def held(self) -> int: ...

    def drop(self) -> None: ...


def malloc_trim() -> None:
    """Hand the allocator's free pages back to the system (glibc; elsewhere nothing)."""
    if _trim is not None:
        _trim(0)


def _find_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None  # not glibc
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_trim = _find_trim()


class Held:
    """Which open files hold a rendering, how much, and whose; `seen` after every read."""

    def __init__(self, per_container: int = MAX_HELD_PER_CONTAINER, total: int = MAX_HELD,
                 trim: Callable[[], None] | None = None) -> None:
        self.per_container = per_container
        self.total_cap = total
        self.trim = trim if trim is not None else malloc_trim
        self.total = 0
        self._by: dict[Owner, OrderedDict[int, tuple[Holding, int]]] = {}
        self._sums: dict[Owner, int] = {}
        self.peak = 0  # of `total` since the last trim

    def seen(self, fh: int, owner: Owner, handle: Holding) -> None:
        """`handle` (of `owner`, as `fh`) was just read: account what it holds now."""
        self._remove(fh, owner)
        size = handle.held()
        if size:
            self._by.setdefault(owner, OrderedDict())[fh] = (handle, size)
            self._sums[owner] = self._sums.get(owner, 0) + size
            self.total += size
            if owner is not None:
                while self._sums.get(owner, 0) > self.per_container:
                    self._evict(owner)
            while self.total > self.total_cap:
                self._evict(max(self._sums, key=self._sums.__getitem__))
            self.peak = max(self.peak, self.total)
        self._maybe_trim(TRIM_AFTER)

    def forget(self, fh: int, owner: Owner) -> None:
        """`fh` was released: what it held is let go."""
        self._remove(fh, owner)
        self._maybe_trim(TRIM_AFTER)

    async def settle(self) -> None:
        """A server's task: hand back what a burst let go, once a second."""
        while True:
            await trio.sleep(SETTLE_EVERY)
            self._maybe_trim(TRIM_SETTLED)

    def of(self, owner: Owner) -> int:
        return self._sums.get(owner, 0)

    def _remove(self, fh: int, owner: Owner) -> int:
        """Stop accounting `fh`; what it was accounted for."""
        entries = self._by.get(owner)
        if entries is None or fh not in entries:
            return 0
        _, size = entries.pop(fh)
        self._sums[owner] -= size
        self.total -= size
        if not entries:
            del self._by[owner], self._sums[owner]
        return size

    def _evict(self, owner: Owner) -> None:
        entries = self._by[owner]
        fh, (handle, size) = next(iter(entries.items()))
        self._remove(fh, owner)
        handle.drop()
        log.debug("let go of %d bytes held by an open file of %s", size, owner)

    def _maybe_trim(self, fallen: int) -> None:
        if self.peak - self.total >= fallen:
            self.peak = self.total
            self.trim()
