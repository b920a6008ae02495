"""Turns between containers: a container hammering its files cannot make a neighbour wait.

The kernel queues a mount's requests in one line, first come first served: behind a container's
32 tight readers, a neighbour's read waited for 32 requests (issue 24: p50 4-10 times its time
alone). A serving process handles one request at a time anyway; the gate decides whose comes
next. While it is busy, or while more requests wait in the kernel's line, a request waits in its
container's own line, and the next turn goes to the line whose container has been served least
(start-time fair queueing, by the measured time of each request): a container that comes back
after a pause starts level with the one being served, so a neighbour's request waits for the
one in progress, not for a crowd's. Before a turn is given, the requests the kernel holds are
read first (`pending`), so that a neighbour's request queued behind a crowd is seen. A request
finding the gate idle and the kernel's line empty goes at once: no turn to give, one poll.
"""

from __future__ import annotations

import os
import select
import time
from collections import deque
from collections.abc import Callable, Hashable

import trio

# Turns given without looking at the kernel's line again: a line that never empties (a crowd
# whose every request is answered before the next is read) must not hold every turn back.
MAX_DRAIN = 64

# Service tags kept for owners with no request waiting, before the oldest are let go (an owner
# coming back after being let go starts level with the one served, as a new one does).
MAX_IDLE_TAGS = 1024


def fuse_fds() -> set[int]:
    """This process's descriptors of /dev/fuse (a FUSE session's is the one opened by its
    mount)."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "/dev/fuse":
                found.add(int(name))
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor)
    return found


def queued(fd: int) -> Callable[[], bool]:
    """Whether requests wait to be read from the FUSE session `fd` (poll, no wait)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return lambda: bool(poller.poll(0))


class Gate:
    """One request in progress at a time; waiting requests take turns, the owner served least
    first."""

    def __init__(self, pending: Callable[[], bool] = lambda: False,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.pending = pending  # more requests wait in the kernel's queue
        self.clock = clock  # measures the service each request takes
        self.busy = False
        self._lines: dict[Hashable, deque[trio.Event]] = {}  # in the order they formed
        self._tags: dict[Hashable, float] = {}  # owner → the service it has been given
        self._now = 0.0  # the tag of the owner in service (a new line starts there)
        self._serving: Hashable = None
        self._since = 0.0
        self._free = trio.Event()  # set when the gate may give a turn
        self.waits = 0  # requests that waited for a turn (stats)
        self.looks = 0  # times the turns waited for the kernel's queue to be read (stats)

    @property
    def in_progress(self) -> int:
        """Requests in service or waiting for their turn."""
        return self.busy + sum(len(line) for line in self._lines.values())

    async def enter(self, owner: Hashable) -> None:
        """Wait for `owner`'s turn; `leave` must follow (in a `finally`)."""
        if not self.busy and not self._lines and not self.pending():
            self._serve(owner)
            return
        self.waits += 1
        turn = trio.Event()
        line = self._lines.get(owner)
        if line is None:
            line = self._lines[owner] = deque()
            self._tags[owner] = max(self._tags.get(owner, self._now), self._now)
        line.append(turn)
        if not self.busy:
            self._free.set()
        try:
            await turn.wait()
        except BaseException:
            if turn.is_set():  # given the turn as it was cancelled: pass it on
                self.leave()
            else:
                self._forget(owner, turn)
            raise

    def leave(self) -> None:
        owner = self._serving
        self._tags[owner] = self._tags.get(owner, self._now) + self.clock() - self._since
        self.busy = False
        if self._lines:
            if self._level() or not self.pending():
                self._give()
            else:
                self._free.set()  # read the kernel's queue first (`run`)

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The task that gives a turn when one is due and requests wait in the kernel's queue:
        it lets the worker tasks read them first, as long as that brings new ones."""
        task_status.started()
        while True:
            await self._free.wait()
            self._free = trio.Event()
            drained = 0
            while self._lines and not self.busy:
                if not self._level() and self.pending() and drained < MAX_DRAIN:
                    seen = self.waits
                    self.looks += 1
                    await trio.lowlevel.checkpoint()  # the worker tasks read what waits
                    drained = drained + 1 if self.waits > seen else MAX_DRAIN
                    continue
                self._give()

    def _serve(self, owner: Hashable) -> None:
        self.busy = True
        self._serving = owner
        self._now = max(self._tags.get(owner, self._now), self._now)
        self._tags[owner] = self._now
        self._since = self.clock()

    def _next(self) -> Hashable:
        return min(self._lines, key=self._tags.__getitem__)  # ties: the line formed first

    def _level(self) -> bool:
        """Whether the next line's owner is level with the one served: no request yet to be
        read from the kernel's queue could go before it (a new line starts level)."""
        return self._tags[self._next()] <= self._now

    def _give(self) -> None:
        tags = self._tags
        owner = self._next()
        line = self._lines[owner]
        turn = line.popleft()
        if not line:
            del self._lines[owner]
            if len(tags) > MAX_IDLE_TAGS:
                self._let_go()
        self._serve(owner)
        turn.set()

    def _let_go(self) -> None:
        """Forget the tags of owners with nothing waiting: first those not ahead of the one
        served (they would start level with it anyway), then the oldest."""
        idle = [o for o in self._tags if o not in self._lines]
        behind = [o for o in idle if self._tags[o] <= self._now]
        ahead = [o for o in idle if self._tags[o] > self._now]
        for owner in behind + ahead[:max(0, len(self._tags) - len(behind) - MAX_IDLE_TAGS)]:
            del self._tags[owner]

    def _forget(self, owner: Hashable, turn: trio.Event) -> None:
        line = self._lines.get(owner)
        if line is None or turn not in line:
            return
        line.remove(turn)
        if not line:
            del self._lines[owner]
