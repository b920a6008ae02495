"""Open files render at their first read, let go at their end, and what they hold in between
is capped per container and in all (procfs.fuse.nodes.BytesFile, procfs.fuse.held)."""

from __future__ import annotations

import itertools

import trio
import trio.testing

from procfs.fuse.held import SETTLE_EVERY, TRIM_AFTER, Held
from procfs.fuse.nodes import BytesFile, LastGood


class Renders:
    def __init__(self, size: int) -> None:
        self.size = size
        self.count = itertools.count(1)
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return bytes([next(self.count) % 256]) * self.size


async def test_rendered_at_the_first_read_and_let_go_at_the_end() -> None:
    render = Renders(10)
    f = BytesFile(render)
    assert render.calls == 0 and f.held() == 0  # opened, never read: holds nothing
    assert await f.read(0, 4) == b"\x01" * 4
    assert f.held() == 10
    assert await f.read(4, 4) == b"\x01" * 4  # the same generation
    assert await f.read(8, 4) == b"\x01" * 2  # its end: let go
    assert f.held() == 0
    assert await f.read(10, 4) == b""  # EOF, not a new generation
    assert render.calls == 1
    assert await f.read(0, 100) == b"\x02" * 10  # a rewind: the next generation
    assert render.calls == 2 and f.held() == 0


async def test_a_partly_read_file_let_go_renders_again_where_it_was() -> None:
    render = Renders(10)
    f = BytesFile(render)
    await f.read(0, 3)
    f.drop()
    assert f.held() == 0
    assert await f.read(3, 3) == b"\x02" * 3
    assert render.calls == 2


def _files(held: Held, owner: tuple[int, int, int] | None, first_fh: int, n: int,
           size: int) -> list[BytesFile]:
    files = []
    for fh in range(first_fh, first_fh + n):
        f = BytesFile(Renders(size))
        f.data = f.render() if f.render else None  # as after a read of its first part
        held.seen(fh, owner, f)
        files.append(f)
    return files


def test_a_containers_share_is_capped_oldest_first_and_others_keep_theirs() -> None:
    trims: list[int] = []
    held = Held(per_container=1000, total=10_000, trim=lambda: trims.append(1))
    a, b = (1, 1, 1), (2, 2, 2)
    theirs = _files(held, b, 100, 5, 100)
    mine = _files(held, a, 1, 30, 100)  # 3000 bytes asked for, 1000 allowed
    assert held.of(a) == 1000 and held.of(b) == 500
    assert [f.held() for f in mine] == [0] * 20 + [100] * 10  # the 20 read first let go
    assert all(f.held() == 100 for f in theirs)
    assert held.total == 1500


def test_past_the_servers_cap_the_container_holding_most_gives_first() -> None:
    held = Held(per_container=5000, total=6000, trim=lambda: None)
    a, b = (1, 1, 1), (2, 2, 2)
    small = _files(held, b, 100, 10, 100)  # 1000
    _files(held, a, 1, 50, 100)  # 5000: at the server's cap
    _files(held, None, 200, 5, 100)  # the host's 500 more: a gives
    assert held.total <= 6000
    assert held.of(b) == 1000 and all(f.held() for f in small)
    assert held.of(a) == 4500


def test_memory_let_go_in_bulk_is_handed_back() -> None:
    trims: list[int] = []
    held = Held(per_container=1 << 40, total=1 << 40, trim=lambda: trims.append(1))
    owner = (1, 1, 1)
    size = 1 << 20
    _files(held, owner, 1, TRIM_AFTER // size + 1, size)
    assert trims == []
    for fh in range(1, TRIM_AFTER // size + 2):
        held.forget(fh, owner)
    assert trims == [1] and held.total == 0


def test_what_a_burst_let_go_is_handed_back_once_it_is_over() -> None:
    trims: list[float] = []
    held = Held(per_container=1 << 40, total=1 << 40,
                trim=lambda: trims.append(trio.current_time()))
    owner = (1, 1, 1)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(held.settle)
            await trio.sleep(5)
            assert trims == []  # nothing let go: nothing to do
            _files(held, owner, 1, 2000, 1024)
            for fh in range(1, 2001):  # 2 MB let go: below the burst's threshold
                held.forget(fh, owner)
            await trio.sleep(SETTLE_EVERY + 0.01)
            assert len(trims) == 1
            await trio.sleep(10)
            assert len(trims) == 1  # once
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_last_good_views_are_bounded_in_bytes() -> None:
    kept = LastGood(max_bytes=1000)
    for i in range(20):
        kept.put("proc/meminfo", (i, 0, 0), b"x" * 100)
    assert kept.size == 1000
    assert kept.get("proc/meminfo", (9, 0, 0)) is None  # the oldest let go
    assert kept.get("proc/meminfo", (19, 0, 0)) == b"x" * 100
    kept.put("proc/meminfo", (19, 0, 0), b"y" * 10)  # replaced, not added
    assert kept.size == 910 and kept.get("proc/meminfo", (19, 0, 0)) == b"y" * 10


async def test_what_reads_render() -> None:
    render = Renders(10)
    f = BytesFile(render)
    await f.read(0, 4)
    assert render.calls == 1  # the first read
    await f.read(4, 4)
    assert render.calls == 1  # a slice of what it holds
    await f.read(0, 4)
    assert render.calls == 2  # a rewind
    await f.read(4, 100)  # to its end: let go
    assert await f.read(10, 100) == b"" and await f.read(20, 100) == b""  # EOF
    assert render.calls == 2
    await f.read(3, 4)
    await f.read(0, 4)
    assert render.calls == 4  # read again: rendered again


async def test_the_steady_churn_of_renderings_read_to_their_end_is_never_trimmed() -> None:
    trims: list[int] = []
    held = Held(trim=lambda: trims.append(1))
    for fh in range(20000):  # 20000 reads of a 4 KiB file: 80 MB rendered and let go
        f = BytesFile(Renders(4096))
        await f.read(0, 1000)
        held.seen(fh, (1, 1, 1), f)
        await f.read(1000, 65536)
        held.seen(fh, (1, 1, 1), f)
        held.forget(fh, (1, 1, 1))
    assert trims == [] and held.total == 0
