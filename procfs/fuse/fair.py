"""Turns between containers: a container hammering its files cannot make a neighbour wait.

The kernel queues a mount's requests in one line, first come first served: behind a container's
32 tight readers, a neighbour's read waited for 32 renderings (issue 24: p50 4-9 times its
time alone). A serving process renders one request at a time anyway; the gate decides whose
comes next. While it is busy, or while more requests wait in the kernel's line, a request waits
in its container's own line, and the lines take turns, one request each (round robin): a
neighbour's read waits for at most one request of each other container with work. Before a
turn is given, the requests the kernel holds are read first (`pending`), so that a neighbour's
request queued behind a crowd is seen. A request finding the gate idle and the kernel's line
empty goes at once: no turn to give, no cost.
"""

from __future__ import annotations

import os
import select
from collections import deque
from collections.abc import Callable, Hashable

import trio

# Turns given without looking at the kernel's line again: a line that never empties (a crowd
# whose every request is answered before the next is read) must not hold every turn back.
MAX_DRAIN = 64


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
    """One request in progress at a time; waiting requests take turns by owner."""

    def __init__(self, pending: Callable[[], bool] = lambda: False) -> None:
        self.pending = pending  # more requests wait in the kernel's queue
        self.busy = False
        self._lines: dict[Hashable, deque[trio.Event]] = {}
        self._turns: deque[Hashable] = deque()  # owners with a line, the next first
        self._free = trio.Event()  # set when the gate may give a turn
        self.waits = 0  # requests that waited for a turn (stats)
        self.looks = 0  # times the turns waited for the kernel's queue to be read (stats)

    async def enter(self, owner: Hashable) -> None:
        """Wait for `owner`'s turn; `leave` must follow (in a `finally`)."""
        if not self.busy and not self._turns and not self.pending():
            self.busy = True
            return
        self.waits += 1
        turn = trio.Event()
        line = self._lines.get(owner)
        if line is None:
            line = self._lines[owner] = deque()
            self._turns.append(owner)
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
        self.busy = False
        if self._turns:
            if self.pending():
                self._free.set()  # read the kernel's queue first (`run`)
            else:
                self._give()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The task that gives a turn when one is due and requests wait in the kernel's queue:
        it lets the worker tasks read them first, as long as that brings new ones."""
        task_status.started()
        while True:
            await self._free.wait()
            self._free = trio.Event()
            drained = 0
            while self._turns and not self.busy:
                if self.pending() and drained < MAX_DRAIN:
                    seen = self.waits
                    self.looks += 1
                    await trio.lowlevel.checkpoint()  # the worker tasks read what waits
                    drained = drained + 1 if self.waits > seen else MAX_DRAIN
                    continue
                self._give()

    def _give(self) -> None:
        owner = self._turns.popleft()
        line = self._lines[owner]
        turn = line.popleft()
        if line:
            self._turns.append(owner)  # its next request waits for the others' turns
        else:
            del self._lines[owner]
        self.busy = True
        turn.set()

    def _forget(self, owner: Hashable, turn: trio.Event) -> None:
        line = self._lines.get(owner)
        if line is None or turn not in line:
            return
        line.remove(turn)
        if not line:
            del self._lines[owner]
            self._turns.remove(owner)
