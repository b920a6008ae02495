"""`serve_sysinfo` as the server runs it, in this trio loop, against a keeper process and
callers under real filters (`tests.notify_child`)."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator

import pytest
import trio

from procfs.runtime.keeper import start_keeper
from procfs.runtime.sysinfo import SysinfoValues
from procfs.runtime.sysinfo_service import SysinfoService, serve_sysinfo
from tests.notify_child import NotifyChild

from .sysinfo_consumer import VALUES
from .sysinfo_support import Sockets, keeper_listeners, kill_and_reap, sockets

STATE = {"ociVersion": "1.0.2-dev", "fds": ["seccompFd"], "pid": 1,
         "state": {"id": "service-test", "pid": 1, "status": "creating"}}
PAGE = os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def socks() -> Iterator[Sockets]:
    with sockets() as s:
        yield s


@pytest.fixture
def keeper(socks: Sockets) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_keeper(socks.runtime, socks.keeper, log_path=socks.log)
    try:
        yield proc
    finally:
        kill_and_reap(proc)


@pytest.fixture
async def children() -> AsyncIterator[list[NotifyChild]]:
    made: list[NotifyChild] = []
    yield made
    for c in made:
        c.close()


def fixed(values: SysinfoValues = VALUES) -> functools.partial[None]:
    return functools.partial(serve_sysinfo, values=lambda tid: values)  # type: ignore[call-arg]


async def wait_for(cond: object, what: str, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not cond():  # type: ignore[operator]
            await trio.sleep(0.02)


async def test_answers_every_listener_the_keeper_holds(
        socks: Sockets, keeper: subprocess.Popen[bytes], children: list[NotifyChild]) -> None:
    children.append(NotifyChild.start(listener_path=socks.runtime, state=STATE))
    await wait_for(lambda: keeper_listeners(keeper.pid) == 1, "the first listener")
    async with trio.open_nursery() as nursery:
        service: SysinfoService = await nursery.start(fixed(), socks.keeper)
        assert service.synced.is_set() and service.keeper_pid == keeper.pid
        assert service.listeners == 1
        children.append(NotifyChild.start(listener_path=socks.runtime, state=STATE))
        for child in children:
            assert await child.arequest("phys-pages") == {"value": VALUES.totalram // PAGE}
            si = (await child.arequest("sysinfo"))["si"]
            assert (si["totalram"], si["freeram"], si["uptime"]) == (256 << 20, 200 << 20, 43)
            assert (await child.arequest("sysinfo-null"))["errno"] == 14
        assert (service.stats.answered, service.stats.efault) == (4, 2)
        assert service.listeners == 2
        for child in children:
            child.close()
        children.clear()
        await wait_for(lambda: service.listeners == 0, "the listeners to be dropped")
        nursery.cancel_scope.cancel()


async def test_a_newer_server_takes_over(socks: Sockets, keeper: subprocess.Popen[bytes],
                                         children: list[NotifyChild]) -> None:
    """The older task closes its copies and returns; only the newer one answers."""
    child = NotifyChild.start(listener_path=socks.runtime, state=STATE)
    children.append(child)
    old_done = trio.Event()

    async def old_server(task_status: trio.TaskStatus[SysinfoService]) -> None:
        try:
            await serve_sysinfo(socks.keeper, lambda tid: VALUES, task_status=task_status)
        finally:
            old_done.set()

    async with trio.open_nursery() as nursery:
        old: SysinfoService = await nursery.start(old_server)
        assert (await child.arequest("sysinfo"))["si"]["totalram"] == VALUES.totalram
        new: SysinfoService = await nursery.start(
            fixed(SysinfoValues(**{**VALUES.__dict__, "totalram": 64 << 20})), socks.keeper)
        with trio.fail_after(10):
            await old_done.wait()
        assert old.listeners == 1  # what it held when it was told to go
        assert (await child.arequest("sysinfo"))["si"]["totalram"] == 64 << 20
        assert new.stats.answered == 1 and old.stats.answered == 1
        nursery.cancel_scope.cancel()


async def test_survives_the_keepers_death_and_hands_its_copies_over(
        socks: Sockets, children: list[NotifyChild]) -> None:
    """Killed keeper: the task's copies answer on; the task starts a new keeper (it was given
    the runtime socket) and hands them over, so they outlive the task too."""
    keepers: list[int] = []
    try:
        async with trio.open_nursery() as nursery:
            service: SysinfoService = await nursery.start(functools.partial(
                serve_sysinfo, socks.keeper, lambda tid: VALUES, runtime_socket=socks.runtime,
                keeper_log=socks.log))
            first = service.keeper_pid
            keepers.append(first)
            child = NotifyChild.start(listener_path=socks.runtime, state=STATE)
            children.append(child)
            assert (await child.arequest("phys-pages"))["value"] == VALUES.totalram // PAGE
            os.kill(first, signal.SIGKILL)
            assert (await child.arequest("phys-pages"))["value"] == VALUES.totalram // PAGE
            await wait_for(lambda: service.keeper_pid not in (0, first), "a new keeper")
            keepers.append(service.keeper_pid)
            await wait_for(lambda: keeper_listeners(service.keeper_pid) == 1, "the handover")
            nursery.cancel_scope.cancel()
        child.send("phys-pages")  # no server now: it waits in the kernel
        with trio.move_on_after(0.3):
            await child.reply()
            pytest.fail("answered with no server")
        async with trio.open_nursery() as nursery:
            await nursery.start(fixed(), socks.keeper)
            with trio.fail_after(10):
                assert (await child.reply())["value"] == VALUES.totalram // PAGE
            nursery.cancel_scope.cancel()
    finally:
        for pid in keepers:  # started by the task: children of ours
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


async def test_starts_before_any_keeper_answers(socks: Sockets) -> None:
    """No keeper and none to start: `start` returns all the same (the task keeps trying)."""
    async with trio.open_nursery() as nursery:
        with trio.fail_after(5):
            service: SysinfoService = await nursery.start(fixed(), socks.keeper)
        assert not service.synced.is_set()
        keeper = start_keeper(socks.runtime, socks.keeper)
        try:
            with trio.fail_after(10):
                await service.synced.wait()
            assert service.keeper_pid == keeper.pid
        finally:
            kill_and_reap(keeper)
        nursery.cancel_scope.cancel()
