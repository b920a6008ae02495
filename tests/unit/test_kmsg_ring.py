"""The ring and the dev/kmsg file: wrap-around, EPIPE, EINVAL, EAGAIN, seeks by offset, blocking
reads that end on a record or a signal, poll, and writes."""

from __future__ import annotations

import errno
import os
import select
from pathlib import Path

import pytest
import trio
import trio.testing

from procfs.errors import Refused
from procfs.fuse.nodes import Caller
from procfs.kmsg.node import SIZE, KmsgFile, KmsgNode
from procfs.kmsg.record import RECORD_OVERHEAD
from procfs.kmsg.ring import Cursor, Ring
from procfs.kmsg.service import GREETING, GREETING_PRI, KmsgService
from tests.unit.kmsg_fixtures import FakeProc, container, service

RDONLY_NB = os.O_RDONLY | os.O_NONBLOCK


def fill(ring: Ring, n: int, size: int = 10) -> None:
    for i in range(n):
        ring.append(6, i, b"%0*d" % (size, i))


def test_ring_wraps_within_its_bound() -> None:
    cost = RECORD_OVERHEAD + 10
    ring = Ring(max_bytes=cost * 5)
    fill(ring, 12)
    assert ring.bytes <= ring.max_bytes
    assert [r.seq for r in ring.records] == [7, 8, 9, 10, 11]
    assert ring.first_seq == 7 and ring.next_seq == 12
    assert ring.get(6) is None and ring.get(12) is None
    assert ring.get(9) is not None and ring.get(9).text == b"0000000009"  # type: ignore[union-attr]


def test_ring_keeps_one_record_larger_than_its_bound() -> None:
    ring = Ring(max_bytes=10)
    ring.append(6, 0, b"x" * 500)
    assert len(ring.records) == 1


def test_epipe_once_then_oldest() -> None:
    ring = Ring(max_bytes=(RECORD_OVERHEAD + 10) * 3)
    fill(ring, 1)
    cur = Cursor(ring)
    assert cur.take(2048) == b"6,0,0,-;0000000000\n"
    fill(ring, 5)  # seqs 1..5; 1 and 2 fall out
    with pytest.raises(Refused) as e:
        cur.take(2048)
    assert e.value.code == errno.EPIPE
    assert cur.take(2048) == b"6,3,2,-;0000000002\n"  # the oldest held
    assert cur.take(2048) is not None and cur.take(2048) is not None
    assert cur.take(2048) is None


def test_small_buffer_is_einval_and_keeps_the_position() -> None:
    ring = Ring(4096)
    fill(ring, 1)
    cur = Cursor(ring)
    with pytest.raises(Refused) as e:
        cur.take(5)
    assert e.value.code == errno.EINVAL
    assert cur.take(19) == b"6,0,0,-;0000000000\n"


# The file, over a service with a fake /proc.

@pytest.fixture
def proc(tmp_path: Path) -> FakeProc:
    p = FakeProc(tmp_path)
    p.add(100)  # the container's init
    p.add(200)  # the process that opens dev/kmsg
    return p


async def open_file(svc: KmsgService, flags: int, pid: int = 200) -> KmsgFile:
    f = await KmsgNode(svc).open(Caller(pid, 0, 0, container("/c")), flags)
    assert isinstance(f, KmsgFile)
    return f


def records(svc: KmsgService) -> list[bytes]:
    e = svc.entry(container("/c"))
    return [r.text for r in e.ring.records]


async def test_first_record_greets_and_reads_one_per_call(proc: FakeProc) -> None:
    svc = service(proc, trio.current_time, boottime_s=12.5)
    f = await open_file(svc, RDONLY_NB)
    first = await f.read(0, 2048)
    assert first == b"%d,0,12500000,-;%s\n" % (GREETING_PRI, GREETING)
    w = await open_file(svc, os.O_WRONLY)
    assert await w.write(0, b"<6>one\n") == 7
    assert await w.write(0, b"two") == 3
    assert await f.read(len(first), 2048) == b"14,1,12500000,-;one\n"
    with pytest.raises(Refused) as e:
        await f.read(len(first) + 20, 4)
    assert e.value.code == errno.EINVAL
    assert await f.read(len(first) + 20, 2048) == b"12,2,12500000,-;two\n"
    with pytest.raises(Refused) as e:
        await f.read(len(first) + 40, 2048)
    assert e.value.code == errno.EAGAIN


async def test_timestamps_are_the_containers_monotonic_clock(proc: FakeProc) -> None:
    """Records are stamped on the clock `dmesg -T` makes a time of day of: the kernel's
    (CLOCK_MONOTONIC) in the container's time namespace (the host's + its offset), not the
    time since the container's start."""
    from procfs.kmsg.service import CLK_TCK
    svc = service(proc, trio.current_time, boottime_s=100.0)
    c = container("/c", start=40 * CLK_TCK, monotonic_offset_ns=5_000_000_000)
    assert svc.container_ts_usec(c) == 105_000_000  # 100 + 5 s
    c = container("/c", start=40 * CLK_TCK, monotonic_offset_ns=-95_000_000_000,
                  boottime_offset_ns=-95_000_000_000)
    assert svc.container_ts_usec(c) == 5_000_000  # a clock started at 0 five seconds ago
    assert svc.container_ts_usec(container("/c", start=40 * CLK_TCK)) == 100_000_000


async def test_seeks_arrive_as_offsets(proc: FakeProc) -> None:
    svc = service(proc, trio.current_time)
    e = svc.entry(container("/c"))
    svc.append(e, 6, b"a")
    f = await open_file(svc, RDONLY_NB)
    r0 = await f.read(0, 2048)
    r1 = await f.read(len(r0), 2048)
    assert r1.endswith(b";a\n")
    assert await f.read(0, 2048) == r0  # SEEK_SET 0 / SEEK_DATA 0: the oldest again
    with pytest.raises(Refused):
        await f.read(SIZE, 2048)  # SEEK_END: nothing new yet
    svc.append(e, 6, b"b")
    assert (await f.read(SIZE, 2048)).endswith(b";b\n")
    # pread at some other offset: /dev/kmsg ignores positions, so it reads on
    svc.append(e, 6, b"c")
    assert (await f.read(12345, 2048)).endswith(b";c\n")


async def test_write_checks(proc: FakeProc) -> None:
    svc = service(proc, trio.current_time)
    r = await open_file(svc, os.O_RDONLY)
    with pytest.raises(Refused) as e:
        await r.write(0, b"x")
    assert e.value.code == errno.EBADF
    w = await open_file(svc, os.O_WRONLY)
    with pytest.raises(Refused) as e:
        await w.write(0, b"x" * 1025)
    assert e.value.code == errno.EINVAL
    with pytest.raises(Refused) as e:
        await w.read(0, 2048)
    assert e.value.code == errno.EBADF


async def test_host_may_not_open(proc: FakeProc) -> None:
    svc = service(proc, trio.current_time)
    with pytest.raises(Refused) as e:
        await KmsgNode(svc).open(Caller(1, 0, 0, None), os.O_RDONLY)
    assert e.value.code == errno.EPERM


async def blocking_reader_at_end(
        proc: FakeProc, mock_clock: trio.testing.MockClock) -> tuple[KmsgService, KmsgFile]:
    mock_clock.autojump_threshold = 0
    svc = service(proc, trio.current_time)
    f = await open_file(svc, os.O_RDONLY)
    await f.read(0, 2048)  # the greeting: the next read waits
    return svc, f


async def test_blocking_read_waits_for_the_next_record(
        proc: FakeProc, mock_clock: trio.testing.MockClock) -> None:
    svc, f = await blocking_reader_at_end(proc, mock_clock)
    got: list[bytes] = []

    async def reader() -> None:
        got.append(await f.read(100, 2048))

    async with trio.open_nursery() as n:
        n.start_soon(reader)
        await trio.sleep(30)  # many wake-ups, no signal, no record: still waiting
        assert not got
        svc.append(svc.entry(container("/c")), 6, b"late")
        # (the nursery waits for the reader)
    assert got[0].endswith(b";late\n")


async def test_blocking_read_ends_with_eintr_when_its_process_is_signalled(
        proc: FakeProc, mock_clock: trio.testing.MockClock) -> None:
    svc, f = await blocking_reader_at_end(proc, mock_clock)
    proc.add(200, sigblk=1 << 1, sigpnd=1 << 1)  # SIGINT pending but blocked: keep waiting
    with trio.move_on_after(5) as scope:
        await f.read(100, 2048)
    assert scope.cancelled_caught
    proc.add(200, shdpnd=(1 << 1) | (1 << 8))  # SIGINT made fatal: SIGKILL too
    start = trio.current_time()
    with pytest.raises(Refused) as e:
        await f.read(100, 2048)
    assert e.value.code == errno.EINTR
    assert trio.current_time() - start <= svc.config.wake_interval + 1e-6


async def test_blocked_readers_are_capped(
        proc: FakeProc, mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = 0
    svc = service(proc, trio.current_time, max_waiting=2)
    files = [await open_file(svc, os.O_RDONLY) for _ in range(3)]
    for f in files:
        await f.read(0, 2048)
    codes: list[int] = []

    async def reader(f: KmsgFile) -> None:
        try:
            await f.read(100, 2048)
        except Refused as e:
            codes.append(e.code)

    async with trio.open_nursery() as n:
        for f in files:
            n.start_soon(reader, f)
        await trio.sleep(1)
        assert codes == [errno.EAGAIN]  # the third found no place to wait
        assert svc.waiting == 2
        n.cancel_scope.cancel()  # the server stops
    assert svc.waiting == 0


class Handle:
    def __init__(self) -> None:
        self.notified = 0

    def notify(self) -> None:
        self.notified += 1


async def test_poll(proc: FakeProc) -> None:
    svc = service(proc, trio.current_time, ring_bytes=(RECORD_OVERHEAD + 10) * 2)
    f = await open_file(svc, RDONLY_NB)
    assert f.poll(None) == select.POLLIN | select.POLLRDNORM  # the greeting
    await f.read(0, 2048)
    h = Handle()
    assert f.poll(h) == 0
    e = svc.entry(container("/c"))
    svc.append(e, 6, b"0123456789")
    assert h.notified == 1
    assert f.poll(None) == select.POLLIN | select.POLLRDNORM
    svc.append(e, 6, b"0123456789")
    svc.append(e, 6, b"0123456789")  # the unread record is overwritten
    assert f.poll(None) & select.POLLERR
    f.release()
