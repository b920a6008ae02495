"""Turns between containers (procfs.fuse.fair): a crowd's requests cannot make a neighbour's
wait for all of them."""

from __future__ import annotations

import trio
import trio.testing

from procfs.fuse.fair import Gate

WORK = 0.001  # one rendering, in the mock clock's seconds


def serve(gate: Gate, owner: str, order: list[str], done: dict[str, float]) -> object:
    async def request(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await gate.enter(owner)
        try:
            order.append(owner)
            await trio.sleep(WORK)  # stands for the rendering (the gate stays busy meanwhile)
        finally:
            gate.leave()
        done[owner] = trio.current_time()

    return request


def test_a_neighbour_waits_for_one_request_of_the_crowd_not_all() -> None:
    order: list[str] = []
    done: dict[str, float] = {}

    async def main() -> None:
        gate = Gate()
        async with trio.open_nursery() as nursery:
            await nursery.start(gate.run)
            for _ in range(32):
                await nursery.start(serve(gate, "crowd", order, {}))
            await trio.sleep(WORK / 2)  # the crowd's first request in progress
            await nursery.start(serve(gate, "neighbour", order, done))
            await trio.sleep(1)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert order.index("neighbour") <= 2, order  # not 33rd
    assert done["neighbour"] <= 3 * WORK
    assert len(order) == 33


def test_lines_take_turns_round_robin() -> None:
    order: list[str] = []

    async def main() -> None:
        gate = Gate()
        async with trio.open_nursery() as nursery:
            await nursery.start(gate.run)
            for owner, count in (("a", 6), ("b", 3), ("c", 1)):
                for _ in range(count):
                    await nursery.start(serve(gate, owner, order, {}))
            await trio.sleep(1)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    # a's first went at once (the gate was idle); then turns: a b c a b a b a a
    assert order == ["a", "a", "b", "c", "a", "b", "a", "b", "a", "a"], order


def test_an_idle_gate_costs_nothing_and_the_kernels_queue_is_read_first() -> None:
    pending = [3]  # requests the kernel holds, read one per look

    def look() -> bool:
        if pending[0]:
            pending[0] -= 1
            return True
        return False

    async def main() -> None:
        gate = Gate()
        await gate.enter("a")  # idle, nothing queued: at once, no wait counted
        gate.leave()
        assert gate.waits == 0
        gate.pending = look
        async with trio.open_nursery() as nursery:
            await nursery.start(gate.run)
            order: list[str] = []
            await nursery.start(serve(gate, "a", order, {}))
            await trio.sleep(1)
            assert order == ["a"] and pending == [0]  # waited for the queue to be read
            assert gate.waits == 1
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_request_cancelled_while_it_waits_leaves_its_line() -> None:
    async def main() -> None:
        gate = Gate()
        async with trio.open_nursery() as nursery:
            await nursery.start(gate.run)
            await gate.enter("a")  # busy
            with trio.move_on_after(0.01):
                await gate.enter("b")
            assert not gate._turns and not gate._lines
            gate.leave()
            await gate.enter("c")  # and the gate goes on
            gate.leave()
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
