"""Rendered files kept for a few milliseconds, per file and container.

A burst of reads of one file by one container (a monitoring agent that reopens /proc/meminfo,
`top` and `free` in a loop, a shell script) costs one rendering per `ttl` instead of one per open.
Keys are (inode, `Container.key`) — the pid-namespace inode, the init's pid and its start
time — never a bare pid, so an entry can never be served to another container; host callers
share the key (inode, None). What a reader sees is at most `ttl` seconds older than an uncached
rendering (the kernel itself flushes memcg statistics only every 2 s). The cache holds at most
`max_bytes` of renderings; expired ones are dropped as new ones come in.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cachetools import TTLCache

DEFAULT_TTL = 0.01  # seconds: the staleness bound the README states
DEFAULT_MAX_BYTES = 8 << 20

Key = tuple[int, tuple[int, int, int] | None]


class RenderCache:
    def __init__(self, ttl: float = DEFAULT_TTL, max_bytes: int = DEFAULT_MAX_BYTES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_bytes = max_bytes
        self._cache: TTLCache[Key, bytes] = TTLCache(max_bytes, ttl, timer=clock, getsizeof=len)
        self.hits = self.misses = 0

    def get(self, key: Key) -> bytes | None:
        data = self._cache.get(key)
        if data is None:
            self.misses += 1
        else:
            self.hits += 1
        return data

    def put(self, key: Key, data: bytes) -> None:
        if len(data) <= self.max_bytes // 16:  # one huge file must not flush everyone's
            self._cache[key] = data
