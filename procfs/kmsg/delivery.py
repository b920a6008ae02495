"""Handing records to readers: one container's crowd must not take the server from the others.

A record written wakes all of a container's readers, and each reader answered asks again at
once. The kernel queues FUSE requests in order of arrival and pyfuse3 takes them in one at a
time, so a crowd answered together has everyone else's next request wait behind all of theirs
(docs/kmsg.md: 200 readers woken at a container's write rate took a neighbour's meminfo read
from 2.4 to 211 ms, p50). So:
- a record goes out only once the reader handed the last one (in the whole server) has asked
  again, or RETURN_WAIT has passed: the kernel then holds at most one such request before
  anyone else's;
- containers take turns: one reader of each waits for that at a time (fair locks: first come,
  first served), so a crowd delays another container's readers by a turn, not by its size;
- each container's readers are handed at most `rate` records a second after a burst
  (`KmsgConfig.delivery_rate`), as a writer is held to its rate;
- the reader handed its container's last record, with no one else of its container in line,
  reads on at once: a lone reader's requests queue only behind each other (`dmesg` printing
  the ring is not slowed).
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from procfs.kmsg.ratelimit import TokenBucket

# How long the next record waits for the reader handed the last one to ask again: a reader busy
# elsewhere (or one that never reads again) holds the others up no longer than this.
RETURN_WAIT = 0.005


class Budget:
    """One container's: its rate, its line, and who was handed its last record."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.bucket = TokenBucket(rate, burst, now)
        self.line = trio.Lock()
        self.last: object = None

    def forget(self, reader: object) -> None:
        if self.last is reader:
            self.last = None


class Deliveries:
    """The server's: who was handed the last record, until it asks again."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._turns = trio.Lock()
        self._handed_to: object = None
        self._came_back = trio.Event()

    async def deliver(self, budget: Budget, reader: object) -> None:
        """Leave to hand `reader` one record of the container `budget` is of."""
        if budget.last is reader and not budget.line.locked():
            return
        async with budget.line:
            while not budget.bucket.take(self.clock()):
                await trio.sleep(budget.bucket.wait_time())
            async with self._turns:
                if self._handed_to is not None:
                    with trio.move_on_after(RETURN_WAIT):
                        await self._came_back.wait()
                self._handed_to, self._came_back = reader, trio.Event()
                budget.last = reader

    def asks(self, reader: object) -> None:
        """`reader` asks for its next record (or is closed): the next may go out."""
        if self._handed_to is reader:
            self._handed_to = None
            self._came_back.set()
