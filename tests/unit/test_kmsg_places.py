"""A container's waiting readers: places first come first served and handed on directly; a
reader that leaves the line (interrupted, or cancelled as the server stops) strands no one;
the patrol asks each in turn, a budget at a time."""

from __future__ import annotations

import trio
import trio.testing

from procfs.kmsg.places import Places


async def test_places_go_in_order_of_arrival(mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = 0
    places = Places(2)
    order: list[int] = []

    async def holder(i: int) -> None:
        await places.take()
        order.append(i)
        await trio.sleep(1)  # holds it a while, then hands it on
        places.give_back()

    async with trio.open_nursery() as n:
        for i in range(7):
            n.start_soon(holder, i)
            await trio.sleep(0.01)  # arrive one after another
        assert places.taken == 2 and places.in_line == 5
        assert not places.try_take()  # no one goes ahead of the line
    assert order == list(range(7))
    assert places.taken == 0 and places.in_line == 0
    assert places.try_take() and places.taken == 1


async def test_leaving_the_line_strands_no_one(mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = 0
    places = Places(1)
    places.try_take()
    got: list[str] = []
    signalled: set[str] = set()
    scopes: dict[str, trio.CancelScope] = {}

    async def reader(name: str) -> None:
        with places.waiter(lambda: name in signalled) as w, w.scope:
            scopes[name] = w.scope
            await places.take()
            got.append(name)  # keeps the place

    async with trio.open_nursery() as n:
        for name in ("interrupted", "cancelled", "last"):
            n.start_soon(reader, name)
            await trio.sleep(0.01)
        assert places.in_line == 3 and places.waiting == 3
        signalled.add("interrupted")
        assert places.patrol(10) == 3  # all three asked; the signalled one interrupted
        await trio.sleep(0.01)
        assert places.in_line == 2 and places.waiting == 2
        scopes["cancelled"].cancel()  # as the server stopping
        await trio.sleep(0.01)
        assert places.in_line == 1
        places.give_back()  # the place passes straight to the last one in line
    assert got == ["last"]
    assert places.taken == 1 and places.in_line == 0 and places.waiting == 0


async def test_a_place_handed_to_one_interrupted_goes_on() -> None:
    places = Places(1)
    places.try_take()
    got: list[str] = []

    async def reader(name: str, scope: trio.CancelScope) -> None:
        with scope:
            await places.take()
            got.append(name)

    first, second = trio.CancelScope(), trio.CancelScope()
    async with trio.open_nursery() as n:
        n.start_soon(reader, "first", first)
        await trio.testing.wait_all_tasks_blocked()
        n.start_soon(reader, "second", second)
        await trio.testing.wait_all_tasks_blocked()
        first.cancel()  # "first" is interrupted, and in the same instant...
        places.give_back()  # ...the place is handed to it: it goes on to "second"
    assert got == ["second"]
    assert places.taken == 1 and places.in_line == 0


async def test_the_patrol_asks_each_in_turn() -> None:
    places = Places(8)
    asked: list[int] = []

    def check(i: int) -> bool:
        asked.append(i)
        return False

    with places.waiter(lambda: check(0)), places.waiter(lambda: check(1)), \
            places.waiter(lambda: check(2)):
        for _ in range(3):
            assert places.patrol(2) == 2
        assert asked == [0, 1, 2, 0, 1, 2]
    assert places.waiting == 0 and places.patrol(2) == 0
