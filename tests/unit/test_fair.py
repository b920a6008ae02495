"""Turns between containers (procfs.fuse.fair): a crowd's requests cannot make a neighbour's
wait for all of them, and the turns go to the container served least."""

from __future__ import annotations

import trio
import trio.testing

from procfs.fuse.fair import MAX_IDLE_TAGS, Gate

WORK = 0.001  # one rendering, in the mock clock's seconds


def new_gate() -> Gate:
    return Gate(clock=trio.current_time)  # the service measured in the mock clock's time


def serve(gate: Gate, owner: str, order: list[str], done: dict[str, float],
          work: float = WORK) -> object:
    async def request(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await gate.enter(owner)
        try:
            order.append(owner)
            await trio.sleep(work)  # stands for the rendering (the gate stays busy meanwhile)
        finally:
            gate.leave()
        done[owner] = trio.current_time()

    return request


def test_a_neighbour_waits_for_one_request_of_the_crowd_not_all() -> None:
    order: list[str] = []
    done: dict[str, float] = {}

    async def main() -> None:
        gate = new_gate()
        async with trio.open_nursery() as nursery:
            await nursery.start(gate.run)
            for _ in range(32):
                await nursery.start(serve(gate, "crowd", order, {}))
            await trio.sleep(WORK / 2)  # the crowd's first request in progress
            await nursery.start(serve(gate, "neighbour", order, done))
            await trio.sleep(1)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert order.index("neighbour") == 1, order  # next after the one in progress, not 33rd
    assert done["neighbour"] <= 2 * WORK
    assert len(order) == 33


def test_the_line_served_least_goes_first() -> None:
    order: list[str] = []

    async def main() -> None:
        gate = new_gate()
        async with trio.open_nursery() as nursery:
            await nursery.start(gate.run)
            for owner, count in (("a", 6), ("b", 3), ("c", 1)):
                for _ in range(count):
                    await nursery.start(serve(gate, owner, order, {}))
            await trio.sleep(1)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    # a's first went at once (the gate was idle); b and c, served less, before a's next; then
    # each in turn while it has requests, ties to the line formed first
    assert order == ["a", "b", "c", "a", "b", "a", "b", "a", "a", "a"], order


def test_turns_share_the_time_not_the_requests() -> None:
    order: list[str] = []

    async def main() -> None:
        gate = new_gate()
        async with trio.open_nursery() as nursery:
            await nursery.start(gate.run)
            await gate.enter("first")  # busy: both lines form before any turn
            for _ in range(40):
                await nursery.start(serve(gate, "heavy", order, {}, 4 * WORK))
                await nursery.start(serve(gate, "light", order, {}))
            gate.leave()
            await trio.sleep(40 * WORK)  # half of what both ask for
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    # requests four times as long get a quarter of the turns: each has about half the time
    assert order.count("light") in range(18, 23), order
    assert order.count("heavy") in range(4, 7), order


def test_a_container_back_from_a_pause_starts_level_not_owed_a_burst() -> None:
    order: list[str] = []

    async def main() -> None:
        gate = new_gate()
        async with trio.open_nursery() as nursery:
            await nursery.start(gate.run)
            for _ in range(3):  # b is served, then idle while a is served long
                await nursery.start(serve(gate, "b", order, {}))
            await trio.sleep(1)
            for _ in range(30):
                await nursery.start(serve(gate, "a", order, {}))
            await trio.sleep(10 * WORK)
            for _ in range(10):
                await nursery.start(serve(gate, "b", order, {}))
            await trio.sleep(1)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    after = "".join(o for o in order[3:])
    assert "bb" not in after, after  # b takes turns with a, no run for its idle time
    assert len(order) == 43


def test_what_is_remembered_of_idle_containers_is_bounded() -> None:
    async def main() -> None:
        gate = new_gate()
        async with trio.open_nursery() as nursery:
            await nursery.start(gate.run)
            for n in range(3 * MAX_IDLE_TAGS):
                await gate.enter("busy")  # each container's one request waits for a turn
                await nursery.start(serve(gate, f"container {n}", [], {}))
                gate.leave()
                await trio.sleep(2 * WORK)
            assert len(gate._tags) <= MAX_IDLE_TAGS + 1
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_an_idle_gate_costs_nothing_and_the_kernels_queue_is_read_first() -> None:
    pending = [3]  # requests the kernel holds, read one per look

    def look() -> bool:
        if pending[0]:
            pending[0] -= 1
            return True
        return False

    async def main() -> None:
        gate = new_gate()
        await gate.enter("a")  # idle, nothing queued: at once, no wait counted
        await trio.sleep(WORK)
        gate.leave()
        assert gate.waits == 0
        gate.pending = look
        async with trio.open_nursery() as nursery:
            await nursery.start(gate.run)
            order: list[str] = []
            await nursery.start(serve(gate, "a", order, {}))
            await trio.sleep(1)
            # a, served already, waited for the queue to be read: a request there may be a
            # neighbour's, which goes first
            assert order == ["a"] and pending == [0]
            assert gate.waits == 1
            pending[0] = 3
            await nursery.start(serve(gate, "b", order, {}))
            await trio.sleep(1)
            # b, level with the one served (none goes before a newcomer), did not wait for
            # the queue: one look (finding it not empty), no drain
            assert order == ["a", "b"] and pending == [2]
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_request_cancelled_while_it_waits_leaves_its_line() -> None:
    async def main() -> None:
        gate = new_gate()
        async with trio.open_nursery() as nursery:
            await nursery.start(gate.run)
            await gate.enter("a")  # busy
            with trio.move_on_after(0.01):
                await gate.enter("b")
            assert not gate._lines and gate.in_progress == 1
            gate.leave()
            await gate.enter("c")  # and the gate goes on
            gate.leave()
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
