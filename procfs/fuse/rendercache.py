"""Rendered files kept for a few milliseconds, per file and container.

A burst of reads of one file by one container (a monitoring agent that reopens /proc/meminfo,
`top` and `free` in a loop, a shell script) costs one rendering per `ttl` instead of one per open.
Keys are (path, `Container.key`) — the pid-namespace inode, the init's pid and its start
time — never a bare pid, so an entry can never be served to another container; host callers
share the key (path, None). What a reader sees is at most `ttl` seconds older than an uncached
rendering (the kernel itself flushes memcg statistics only every 2 s). The cache holds at most
`max_bytes` of renderings; expired ones are dropped at least once a second.

Not thread-safe: the server calls it from its one trio thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable

DEFAULT_TTL = 0.01  # seconds: the staleness bound the README states
DEFAULT_MAX_BYTES = 8 << 20
PURGE_EVERY = 1.0  # seconds between sweeps of expired entries

Key = tuple[str, tuple[int, int, int] | None]


class RenderCache:
    def __init__(self, ttl: float = DEFAULT_TTL, max_bytes: int = DEFAULT_MAX_BYTES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.clock = clock
        self._entries: dict[Key, tuple[float, bytes]] = {}  # key → (expiry, data), oldest first
        self._bytes = 0
        self._next_purge = clock() + PURGE_EVERY
        self.hits = self.misses = 0

    def get(self, key: Key) -> bytes | None:
        entry = self._entries.get(key)
        if entry is not None and self.clock() < entry[0]:
            self.hits += 1
            return entry[1]
        self.misses += 1
        return None

    def put(self, key: Key, data: bytes) -> None:
        if len(data) > self.max_bytes // 16:  # one huge file must not flush everyone's
            return
        now = self.clock()
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(old[1])
        self._entries[key] = (now + self.ttl, data)
        self._bytes += len(data)
        if self._bytes > self.max_bytes or now >= self._next_purge:
            self._purge(now)

    def _purge(self, now: float) -> None:
        self._next_purge = now + PURGE_EVERY
        for key, (expiry, data) in list(self._entries.items()):
            if expiry <= now or self._bytes > self.max_bytes:  # expired, or the oldest
                del self._entries[key]
                self._bytes -= len(data)

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)
