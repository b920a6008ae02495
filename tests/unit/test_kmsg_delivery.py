"""Handing records out: a reader that asked again lets the next record go, one that does not
holds the others up RETURN_WAIT at most, and containers take turns."""

from __future__ import annotations

import trio
import trio.testing

from procfs.kmsg.delivery import RETURN_WAIT, Budget, Deliveries


async def test_containers_take_turns(mock_clock: trio.testing.MockClock) -> None:
    """A crowd of 10 whose readers never ask again, then one reader of another container: it
    waits a turn, not for the crowd."""
    mock_clock.autojump_threshold = 0
    deliveries = Deliveries(trio.current_time)
    crowd, other = Budget(1e6, 1e6, 0.0), Budget(1e6, 1e6, 0.0)
    handed: list[tuple[str, float]] = []

    async def reader(name: str, budget: Budget) -> None:
        await deliveries.deliver(budget, object())
        handed.append((name, round(trio.current_time(), 6)))

    async with trio.open_nursery() as n:
        for i in range(10):
            n.start_soon(reader, f"crowd{i}", crowd)
        await trio.testing.wait_all_tasks_blocked()
        n.start_soon(reader, "other", other)
    at = dict(handed)
    assert at["other"] <= 2 * RETURN_WAIT  # behind at most one of the crowd
    assert max(at.values()) == 10 * RETURN_WAIT  # the crowd: one each RETURN_WAIT


async def test_a_reader_asking_again_lets_the_next_go(mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = 0
    deliveries = Deliveries(trio.current_time)
    budget = Budget(1e6, 1e6, 0.0)
    readers = [object() for _ in range(5)]
    handed: list[float] = []

    async def reader(r: object) -> None:
        await deliveries.deliver(budget, r)
        handed.append(trio.current_time())
        deliveries.asks(r)  # as cat does: at once

    async with trio.open_nursery() as n:
        for r in readers:
            n.start_soon(reader, r)
    assert handed == [0.0] * 5
    await deliveries.deliver(Budget(1e6, 1e6, 0.0), "elsewhere")  # and it never asks again
    start = trio.current_time()
    last = budget.last
    await deliveries.deliver(budget, last)  # its container's last one: reads on, no turn
    assert trio.current_time() == start
    another = next(r for r in readers if r is not last)
    await deliveries.deliver(budget, another)  # waits out "elsewhere"
    assert trio.current_time() == start + RETURN_WAIT
    budget.forget(another)  # closed
    assert budget.last is None
