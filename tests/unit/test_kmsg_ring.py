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
from procfs.kmsg.delivery import RETURN_WAIT
from procfs.kmsg.node import SIZE, KmsgFile, KmsgNode
from procfs.kmsg.record import RECORD_OVERHEAD
from procfs.kmsg.ring import Cursor, Ring
from procfs.kmsg.service import GREETING, GREETING_PRI, KmsgService
from procfs.sources.containers import Container
from procfs.sources.hostproc import HostProc
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
    async with trio.open_nursery() as n:
        await n.start(svc.patrol)
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
        n.cancel_scope.cancel()


def box(i: int) -> Container:
    """Container `i` (0: the one `open_file` opens for): a pid namespace and init of its own."""
    return container("/c", pidns=4026530000 + i, reaper=100 + i) if i else container("/c")


async def readers_at_end(svc: KmsgService, n: int, proc: FakeProc, c: Container | None = None,
                         first_pid: int = 300) -> list[KmsgFile]:
    """`n` files of container `c` (box 0), each opened by a process of its own and read up to
    the end (the next read of each waits)."""
    files = []
    for pid in range(first_pid, first_pid + n):
        proc.add(pid)
        f = await KmsgNode(svc).open(Caller(pid, 0, 0, c or box(0)), os.O_RDONLY)
        assert isinstance(f, KmsgFile)
        await f.read(0, 2048)
        files.append(f)
    return files


async def test_blocked_readers_past_the_places_wait_in_line_and_get_every_record(
        proc: FakeProc, mock_clock: trio.testing.MockClock) -> None:
    """Issue 24: the 9th (and 40th) blocking reader of a container got EAGAIN. Past its places
    a reader waits in line, and gets the next records as the others do; records reach the
    readers a wave of `places` at a time."""
    mock_clock.autojump_threshold = 0
    svc = service(proc, trio.current_time, places_per_container=8)
    files = await readers_at_end(svc, 40, proc)
    e = svc.entry(container("/c"))
    got: dict[int, list[bytes]] = {i: [] for i in range(40)}

    async def reader(i: int, f: KmsgFile) -> None:
        for _ in range(3):  # as cat does: read, and at once read again
            got[i].append(await f.read(f.next_offset, 2048))

    async with trio.open_nursery() as n:
        for i, f in enumerate(files):
            n.start_soon(reader, i, f)
        await trio.sleep(60)  # many wake-ups: none refused, none answered
        assert e.readers.taken == 8 and e.readers.in_line == 32
        assert e.ring.waiting == 8  # what one record wakes at once
        assert all(not g for g in got.values())
        svc.append(e, 6, b"one")
        svc.append(e, 6, b"two")
        await trio.sleep(1)
        assert all(len(g) == 2 for g in got.values())
        assert e.ring.waiting == 8 and e.readers.in_line == 32  # the third reads wait
        svc.append(e, 6, b"three")
    assert all([r.split(b";")[1] for r in g] == [b"one\n", b"two\n", b"three\n"]
               for g in got.values())
    assert e.readers.taken == 0 and e.readers.in_line == 0


async def test_one_containers_readers_take_no_place_of_anothers(
        proc: FakeProc, mock_clock: trio.testing.MockClock) -> None:
    """Issue 24: 4 containers × 8 readers used up the global 32 and a fifth's reader got
    EAGAIN. Places are per container: a crowd elsewhere leaves a container its own."""
    mock_clock.autojump_threshold = 0
    svc = service(proc, trio.current_time, places_per_container=8)
    crowds = [await readers_at_end(svc, 12, proc, box(i), 1000 + 100 * i) for i in range(4)]
    mine = (await readers_at_end(svc, 1, proc, box(5), 2000))[0]
    got: list[bytes] = []

    async def read_mine() -> None:
        got.append(await mine.read(mine.next_offset, 2048))

    async with trio.open_nursery() as n:
        for files in crowds:
            for f in files:
                n.start_soon(f.read, f.next_offset, 2048)
        n.start_soon(read_mine)
        await trio.sleep(10)
        own = svc.entry(box(5))
        assert (own.readers.taken, own.readers.in_line) == (1, 0)
        svc.append(own, 6, b"mine")
        await trio.sleep(0.01)
        assert got and got[0].endswith(b";mine\n")
        n.cancel_scope.cancel()  # the server stops
    assert all(e.readers.taken == 0 and e.readers.in_line == 0 for e in svc.entries.values())


async def test_a_crowds_records_come_out_of_its_budget_and_a_lone_reader_reads_on(
        proc: FakeProc, mock_clock: trio.testing.MockClock) -> None:
    """A record wakes every reader of its container: a crowd is handed its records at the
    container's `delivery_rate` after a burst, so that it works the server no harder than a few
    readers (before: at most 8 readers, each handed the record at once); a lone reader reading
    through the ring (`dmesg`) is not held to it."""
    mock_clock.autojump_threshold = 0
    svc = service(proc, trio.current_time, places_per_container=4, delivery_rate=10.0,
                  delivery_burst=5.0)
    files = await readers_at_end(svc, 20, proc)
    (await readers_at_end(svc, 1, proc, box(0), 2000))[0].release()  # no lone reader reads on
    e = svc.entry(box(0))
    handed: list[float] = []

    async def reader(f: KmsgFile) -> None:
        assert (await f.read(f.next_offset, 2048)).endswith(b";to all\n")
        handed.append(trio.current_time())
        await f.read(f.next_offset, 2048)  # and at once asks for the next, as cat does

    async with trio.open_nursery() as n:
        for f in files:
            n.start_soon(reader, f)
        await trio.sleep(10)  # the budget is full again: 5
        start = trio.current_time()
        svc.append(e, 6, b"to all")
        await trio.sleep(10)
        n.cancel_scope.cancel()
    after = [round(t - start, 6) for t in handed]
    assert after[:5] == [0.0] * 5  # the burst
    assert after[5:] == [round(0.1 * i, 6) for i in range(1, 16)]  # then 10 a second
    lone = (await readers_at_end(svc, 1, proc, box(1), 5000))[0]
    other = svc.entry(box(1))
    for i in range(50):
        svc.append(other, 6, b"%d" % i)
    start = trio.current_time()
    got = [await lone.read(lone.next_offset, 2048) for _ in range(50)]
    assert got[-1].endswith(b";49\n") and trio.current_time() == start  # 45 past its budget


async def test_a_record_goes_out_once_the_last_reader_asked_again(
        proc: FakeProc, mock_clock: trio.testing.MockClock) -> None:
    """Readers answered all at once would ask again all at once, and the kernel would queue
    everyone else's requests behind theirs: the next record goes out once the reader handed
    the last one has asked again, or RETURN_WAIT later (before: all at once)."""
    mock_clock.autojump_threshold = 0
    svc = service(proc, trio.current_time, places_per_container=4)
    slow = await readers_at_end(svc, 3, proc)  # answered, they do not ask again
    quick = await readers_at_end(svc, 3, proc, box(1), 1000)  # they ask again at once
    for last in (await readers_at_end(svc, 1, proc, box(0), 2000) +
                 await readers_at_end(svc, 1, proc, box(1), 2001)):
        last.release()  # the last records went to files since closed: no lone reader reads on
    handed: dict[str, list[float]] = {"slow": [], "quick": []}

    async def reader(kind: str, f: KmsgFile) -> None:
        await f.read(f.next_offset, 2048)
        handed[kind].append(trio.current_time())
        if kind == "quick":
            await f.read(f.next_offset, 2048)

    async with trio.open_nursery() as n:
        for kind, files in (("slow", slow), ("quick", quick)):
            for f in files:
                n.start_soon(reader, kind, f)
        await trio.sleep(1)
        start = trio.current_time()
        svc.append(svc.entry(box(0)), 6, b"to the slow")
        await trio.sleep(1)
        assert [round(t - start, 6) for t in handed["slow"]] == [0.0, RETURN_WAIT, 2 * RETURN_WAIT]
        start = trio.current_time()
        svc.append(svc.entry(box(1)), 6, b"to the quick")
        await trio.sleep(1)
        # the first waits out the last slow one; each next one had asked again at once
        assert [round(t - start, 6) for t in handed["quick"]] == [RETURN_WAIT, RETURN_WAIT,
                                                                   RETURN_WAIT]
        n.cancel_scope.cancel()


class CountingProc(HostProc):
    """The fake /proc, counting the status reads (the signal checks)."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.status_reads = 0

    def pid_text(self, pid: int, name: str) -> str:
        self.status_reads += name == "status"
        return super().pid_text(pid, name)


async def test_signal_checks_of_a_container_have_a_budget(
        proc: FakeProc, mock_clock: trio.testing.MockClock) -> None:
    """However many readers a container blocks, the server looks for their signals `places`
    times per `wake_interval` (before: each reader every 0.2 s, on a timer of its own); a
    reader in line still ends with EINTR once its process is signalled, a little later."""
    mock_clock.autojump_threshold = 0
    svc = service(proc, trio.current_time, places_per_container=4, wake_interval=0.2)
    files = await readers_at_end(svc, 100, proc)
    few = await readers_at_end(svc, 2, proc, box(1), 1000)
    counting = CountingProc(str(proc.root))
    svc.host = counting
    codes: dict[int, int] = {}

    async def reader(i: int, f: KmsgFile) -> None:
        try:
            await f.read(f.next_offset, 2048)
        except Refused as e:
            codes[i] = e.code

    async with trio.open_nursery() as n:
        await n.start(svc.patrol)
        for i, f in enumerate(files + few):
            n.start_soon(reader, i, f)
        await trio.sleep(1.1)
        counting.status_reads = 0
        await trio.sleep(10)
        # 4 of the crowd's 100 and both of the other's 2, every 0.2 s (before: each of the 102
        # every 0.2 s, 5100 in 10 s)
        assert counting.status_reads == (4 + 2) * 10 / 0.2
        e = svc.entry(box(0))
        assert (e.readers.taken, e.readers.in_line) == (4, 96)
        last = files[-1].opener
        assert last is not None
        proc.add(last.pid, shdpnd=1 << 8)  # SIGKILL for the last in line
        start = trio.current_time()
        while 99 not in codes:
            await trio.sleep(0.01)
        assert trio.current_time() - start <= 0.2 * 100 / 4 + 1e-6
        assert codes == {99: errno.EINTR} and e.readers.in_line == 95
        n.cancel_scope.cancel()


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
