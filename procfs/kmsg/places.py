"""One container's waiting readers: a few hold a place at a time, the rest wait in line, and a
patrol looks at them for signals on a budget.

A blocked `dev/kmsg` read holds one of pyfuse3's worker tasks until it is answered (pyfuse3
replies only when the handler returns), and must never be refused: the kernel's /dev/kmsg
blocks. What a container's readers may cost the others is bounded here instead, per container:
- only the readers holding a place wait on the ring, so a new record wakes at most `size` of
  them at once; the rest follow as places are handed on, `size` at a time, with other
  requests served in between. A line is first come, first served.
- pyfuse3 drops FUSE_INTERRUPT, so a blocked reader is not told when its process is signalled:
  the service's patrol (`KmsgService.patrol`) asks, every `wake_interval`, up to `size` of a
  container's waiting readers, those asked longest ago first, whether their process has a
  signal pending, and interrupts those that have. A container's readers cost the same few
  checks a second however many there are (a reader has no timer of its own), and one with
  more readers than places waits a little longer for its EINTR.
A reader that leaves (interrupted, or cancelled as the server stops) strands no one.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator

import trio


class Waiter:
    """One waiting reader, as the patrol sees it."""

    __slots__ = ("check", "scope")

    def __init__(self, check: Callable[[], bool]) -> None:
        self.check = check  # True: its process has a signal pending
        self.scope = trio.CancelScope()  # the reader waits inside it; cancelled: interrupted

    @property
    def interrupted(self) -> bool:
        return self.scope.cancel_called


class Places:
    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.taken = 0
        self._line: deque[trio.Event] = deque()
        self._waiters: OrderedDict[Waiter, None] = OrderedDict()  # first: asked longest ago

    @property
    def in_line(self) -> int:
        return len(self._line)

    @property
    def waiting(self) -> int:
        """Readers waiting, with a place or in line."""
        return len(self._waiters)

    @contextlib.contextmanager
    def waiter(self, check: Callable[[], bool]) -> Iterator[Waiter]:
        """A reader waiting: seen by the patrol until it leaves."""
        w = Waiter(check)
        self._waiters[w] = None
        try:
            yield w
        finally:
            del self._waiters[w]

    def patrol(self, budget: int) -> int:
        """Ask up to `budget` waiting readers, those asked longest ago first, whether they are
        signalled, and interrupt those that are. Returns how many were asked."""
        asked = list(itertools.islice(self._waiters, budget))
        for w in asked:
            self._waiters.move_to_end(w)
            if not w.interrupted and w.check():
                w.scope.cancel()
        return len(asked)

    def try_take(self) -> bool:
        """A place now (never ahead of anyone in line), or False."""
        if self.taken < self.size and not self._line:
            self.taken += 1
            return True
        return False

    async def take(self) -> None:
        """A place, in turn; the caller must `give_back` it."""
        if self.try_take():
            return
        turn = trio.Event()
        self._line.append(turn)
        try:
            await turn.wait()
        except BaseException:  # interrupted or cancelled: leave the line, or pass on a place
            if turn.is_set():  # handed over in the same instant
                self.give_back()
            else:
                self._line.remove(turn)
            raise

    def give_back(self) -> None:
        """The place goes to the first in line (it stays taken), or is free again."""
        if self._line:
            self._line.popleft().set()
        else:
            self.taken -= 1
