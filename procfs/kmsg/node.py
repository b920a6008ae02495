"""`dev/kmsg`: a container's ring with the /dev/kmsg ABI.

Positions. pyfuse3 has no lseek: the kernel moves the file position itself (SEEK_SET, SEEK_CUR;
SEEK_END from st_size; SEEK_DATA, once FUSE_LSEEK answered ENOSYS, from st_size too) and hands
the position to `read`. The file reports `SIZE` as its st_size and each open remembers where its
last read ended, so a read's offset says what the reader did: where the last read ended —
go on; 0 — it rewound (SEEK_SET 0, SEEK_DATA 0: the oldest record); `SIZE` — it went to the end
(SEEK_END 0: only records written from now on). Any other offset reads on, as /dev/kmsg ignores
positions. (SEEK_CUR answers a number instead of the kernel's ESPIPE; and since the daemon sees a
seek only with the next read, poll(2) right after a seek answers for the old position: at worst
one wake-up that reads EAGAIN.)

Blocking. A read that waits holds a pyfuse3 worker task (the process serving dev/kmsg runs as
many as there are readers: `procfs.fuse.ops.MANY_TASKS`) and is never refused for want of room:
past its container's places it waits in line for one (`places`). Since pyfuse3 drops
FUSE_INTERRUPT, it is not told when its process is signalled: the service's patrol looks every
`wake_interval` (a container with more readers than places: each less often) and the read
answers EINTR once the process that opened the file has a signal pending (see `signals`). When
the server stops, the kernel ends every read still waiting as the FUSE connection closes
(ECONNABORTED). Readers that use poll(2) (journald) hold nothing while they wait.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
from typing import Any

from procfs.errors import Refused
from procfs.fuse.nodes import Caller, OpenFile
from procfs.kmsg.record import MAX_WRITE, parse_write
from procfs.kmsg.ring import Cursor
from procfs.kmsg.service import Entry, KmsgService
from procfs.kmsg.signals import signalled
from procfs.sources.identity import ProcessIdentity

# The st_size of dev/kmsg: where SEEK_END lands. Large enough that no reader's running position
# gets there, small enough that a reader sizing a buffer by st_size (Python's readall) copes.
SIZE = 1 << 30

POLL_READY = select.POLLIN | select.POLLRDNORM
POLL_OVERTAKEN = POLL_READY | select.POLLERR | select.POLLPRI


class KmsgNode:
    path = "dev/kmsg"
    mode = 0o644
    size = SIZE
    waits = True  # a blocking read holds a worker task until a record comes

    def __init__(self, service: KmsgService) -> None:
        self.service = service

    async def open(self, caller: Caller, flags: int) -> OpenFile:
        if caller.container is None:
            raise Refused("dev/kmsg serves containers; the host has its own /dev/kmsg",
                          errno.EPERM)
        return KmsgFile(self.service, self.service.entry(caller.container), caller, flags)


class KmsgFile:
    def __init__(self, service: KmsgService, entry: Entry, caller: Caller, flags: int) -> None:
        self.service = service
        self.entry = entry
        access = flags & os.O_ACCMODE
        self.readable = access in (os.O_RDONLY, os.O_RDWR)
        self.writable = access in (os.O_WRONLY, os.O_RDWR)
        self.nonblock = bool(flags & os.O_NONBLOCK)
        self.cursor = Cursor(entry.ring)
        self.next_offset = 0  # where the last read ended
        self.opener = ProcessIdentity.of(caller.pid, service.host)
        self._watch: Any = None

    def _seek(self, offset: int) -> None:
        if offset == self.next_offset:
            return
        if offset == 0:
            self.cursor.rewind()
        elif offset == SIZE:
            self.cursor.to_end()
        self.next_offset = offset

    async def read(self, offset: int, size: int) -> bytes:
        if not self.readable:
            raise Refused("dev/kmsg not open for reading", errno.EBADF)
        self.service.deliveries.asks(self)
        self._seek(offset)
        data = self.cursor.take(size)
        if data is None:
            if self.nonblock:
                raise Refused("no record yet", errno.EAGAIN)
            data = await self._wait(size)
        await self.service.deliveries.deliver(self.entry.delivery, self)
        self.next_offset = offset + len(data)
        return data

    async def _wait(self, size: int) -> bytes:
        """The next record, once there is one: waiting on the ring in one of the container's
        places (in line for one first) until a record comes or the patrol finds the opener
        signalled (EINTR)."""
        places = self.entry.readers
        self.service.patrolled.add(places)
        with places.waiter(self._signalled) as waiter, waiter.scope:
            await places.take()
            try:
                while (data := self.cursor.take(size)) is None:
                    await self.entry.ring.wait()
                return data
            finally:
                places.give_back()
        # interrupted; a record that came meanwhile is still answered rather than EINTR
        if (data := self.cursor.take(size)) is not None:
            return data
        raise Refused("reader signalled", errno.EINTR)

    def _signalled(self) -> bool:
        return self.opener is not None and signalled(self.opener, self.service.host)

    async def write(self, offset: int, data: bytes) -> int:
        if not self.writable:
            raise Refused("dev/kmsg not open for writing", errno.EBADF)
        if len(data) > MAX_WRITE:
            raise Refused(f"{len(data)} bytes is more than one record", errno.EINVAL)
        pri, text = parse_write(data)
        await self.service.write(self.entry, pri, text)
        return len(data)

    def poll(self, handle: Any) -> int:
        if not self.readable:
            return 0
        if self.cursor.seq < self.entry.ring.first_seq:
            return POLL_OVERTAKEN
        if self.cursor.ready():
            return POLL_READY
        if handle is not None:
            self._unwatch()

            def notify() -> None:
                self._watch = None
                with contextlib.suppress(OSError):
                    handle.notify()

            self._watch = notify
            self.entry.ring.watch(notify)
        return 0

    def _unwatch(self) -> None:
        if self._watch is not None:
            self.entry.ring.unwatch(self._watch)
            self._watch = None

    def release(self) -> None:
        self._unwatch()
        self.service.deliveries.asks(self)
        self.entry.delivery.forget(self)
