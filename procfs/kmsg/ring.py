"""One container's kernel log: a bounded ring of records, and the positions of its readers.

Sequence numbers grow by one per record and are never reused; when the ring is over its byte
bound the oldest records go. A reader that was overtaken gets EPIPE once and goes on from the
oldest record still held, as on the kernel's /dev/kmsg.
"""

from __future__ import annotations

import errno
from collections import deque
from collections.abc import Callable

import trio

from procfs.errors import Refused
from procfs.kmsg.record import Record, format_record


class Ring:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.records: deque[Record] = deque()
        self.bytes = 0
        self.next_seq = 0
        self._waiters = trio.lowlevel.ParkingLot()
        self._watchers: list[Callable[[], None]] = []  # poll handles to notify once

    @property
    def first_seq(self) -> int:
        """The oldest record held (next_seq when empty)."""
        return self.records[0].seq if self.records else self.next_seq

    def append(self, pri: int, ts_usec: int, text: bytes,
               dict_lines: tuple[bytes, ...] = ()) -> Record:
        r = Record(self.next_seq, pri, max(0, ts_usec), text, dict_lines)
        self.next_seq += 1
        self.records.append(r)
        self.bytes += r.cost
        while self.bytes > self.max_bytes and len(self.records) > 1:
            self.bytes -= self.records.popleft().cost
        self._waiters.unpark_all()
        watchers, self._watchers = self._watchers, []
        for notify in watchers:
            notify()
        return r

    def get(self, seq: int) -> Record | None:
        first = self.first_seq
        if seq < first or seq >= self.next_seq:
            return None
        return self.records[seq - first]

    @property
    def waiting(self) -> int:
        """Readers waiting for the next append (what one append wakes)."""
        return len(self._waiters)

    async def wait(self) -> None:
        """Until the next append (or until the caller is cancelled: the patrol's EINTR)."""
        await self._waiters.park()

    def watch(self, notify: Callable[[], None]) -> None:
        """Call `notify` once, at the next append."""
        self._watchers.append(notify)

    def unwatch(self, notify: Callable[[], None]) -> None:
        if notify in self._watchers:
            self._watchers.remove(notify)


class Cursor:
    """A reader's position: the sequence number of the next record it reads."""

    def __init__(self, ring: Ring) -> None:
        self.ring = ring
        self.seq = ring.first_seq

    def rewind(self) -> None:
        """SEEK_SET 0 / SEEK_DATA 0: the oldest record held (no kernel `dmesg -C` here)."""
        self.seq = self.ring.first_seq

    def to_end(self) -> None:
        """SEEK_END 0: after the newest record."""
        self.seq = self.ring.next_seq

    def ready(self) -> bool:
        return self.seq < self.ring.next_seq

    def take(self, size: int) -> bytes | None:
        """The next record, formatted; None when there is none yet.

        Raises Refused(EPIPE) once when the position was overwritten (then it is the oldest
        record's), Refused(EINVAL) when `size` cannot hold the record (the position stays)."""
        if self.seq < self.ring.first_seq:
            self.seq = self.ring.first_seq
            raise Refused("reader overtaken by the writers", errno.EPIPE)
        r = self.ring.get(self.seq)
        if r is None:
            return None
        data = format_record(r)
        if len(data) > size:
            raise Refused(f"read buffer of {size} bytes < record of {len(data)}", errno.EINVAL)
        self.seq += 1
        return data
