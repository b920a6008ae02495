"""One notification at a time, against a real filter (`tests.notify_child`): what the caller
gets back for each answer the answerer chooses, and what it does when the caller is gone."""

from __future__ import annotations

import ctypes
import os
import select
import signal
from collections.abc import Iterator

import pytest

from procfs.runtime.remote_memory import RemoteWriter
from procfs.runtime.seccomp import Listener, Response, is_listener
from procfs.runtime.sysinfo import Outcome, SysinfoAnswerer, SysinfoValues
from tests.notify_child import GETPPID, SYSINFO, SYSINFO_STRUCT, NotifyChild

MIB = 1 << 20
VALUES = SysinfoValues(uptime=99.5, avenrun=(4096, 2048, 1024), totalram=256 * MIB,
                       freeram=128 * MIB, sharedram=2 * MIB, bufferram=MIB, totalswap=0,
                       freeswap=0, procs=3)


def host_totalram() -> int:
    buf = ctypes.create_string_buffer(SYSINFO_STRUCT.size)
    assert ctypes.CDLL(None).sysinfo(buf) == 0
    return int(SYSINFO_STRUCT.unpack(buf.raw)[4])


@pytest.fixture
def child() -> Iterator[NotifyChild]:
    c = NotifyChild.start([SYSINFO, GETPPID])
    try:
        yield c
    finally:
        c.close()


def call(c: NotifyChild, answerer: SysinfoAnswerer, cmd: str) -> tuple[dict[str, object],
                                                                        Outcome]:
    assert c.listener is not None
    listener = Listener(c.listener)
    c.send(cmd)
    assert select.select([c.listener], [], [], 10)[0], "no notification"
    n = listener.receive()
    assert n is not None and n.pid == c.proc.pid
    outcome = answerer.answer(listener, n)
    return c.reply_now(), outcome


def test_sysinfo_gets_the_values(child: NotifyChild) -> None:
    assert child.listener is not None and is_listener(child.listener)
    asked: list[int] = []
    answerer = SysinfoAnswerer(lambda tid: asked.append(tid) or VALUES)
    reply, outcome = call(child, answerer, "sysinfo")
    assert outcome is Outcome.ANSWERED and asked == [child.proc.pid]
    assert reply == {"ret": 0, "errno": 0, "si": {
        "uptime": 100, "loads0": 131072, "loads1": 65536, "loads2": 32768,
        "totalram": 256 * MIB, "freeram": 128 * MIB, "sharedram": 2 * MIB, "bufferram": MIB,
        "totalswap": 0, "freeswap": 0, "procs": 3, "totalhigh": 0, "freehigh": 0,
        "mem_unit": 1}}
    reply, _ = call(child, answerer, "phys-pages")
    assert reply["value"] == 256 * MIB // os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("cmd", ["sysinfo-null", "sysinfo-ro"])
def test_a_bad_pointer_fails_with_efault(child: NotifyChild, cmd: str) -> None:
    """As the kernel's own sysinfo: NULL, and a read-only page (which /proc/PID/mem would have
    written through)."""
    reply, outcome = call(child, SysinfoAnswerer(lambda tid: VALUES), cmd)
    assert (reply, outcome) == ({"ret": -1, "errno": 14}, Outcome.EFAULT)


def test_none_lets_the_kernel_answer(child: NotifyChild) -> None:
    reply, outcome = call(child, SysinfoAnswerer(lambda tid: None), "sysinfo")
    assert outcome is Outcome.CONTINUED
    assert reply["si"]["totalram"] == host_totalram()  # type: ignore[index]


def test_a_failing_callback_lets_the_kernel_answer(child: NotifyChild) -> None:
    def broken(tid: int) -> SysinfoValues:
        raise KeyError(tid)

    answerer = SysinfoAnswerer(broken)
    reply, outcome = call(child, answerer, "sysinfo")
    assert outcome is Outcome.CONTINUED and answerer.errors == 1
    assert reply["si"]["totalram"] == host_totalram()  # type: ignore[index]


def test_other_syscalls_are_continued(child: NotifyChild) -> None:
    reply, outcome = call(child, SysinfoAnswerer(lambda tid: VALUES), "getppid")
    assert (reply, outcome) == ({"ret": os.getpid()}, Outcome.CONTINUED)


def test_a_caller_killed_while_waiting(child: NotifyChild) -> None:
    """Killed after we received its notification: the id is no longer valid, nothing is
    written or sent, and no new notification appears for it."""
    assert child.listener is not None
    listener = Listener(child.listener)
    child.send("sysinfo")
    assert select.select([child.listener], [], [], 10)[0]
    n = listener.receive()
    assert n is not None and listener.id_valid(n.id)
    os.kill(child.proc.pid, signal.SIGKILL)
    child.proc.wait()
    assert not listener.id_valid(n.id)
    asked: list[int] = []

    class Writer(RemoteWriter):
        def write(self, pid: int, addr: int, data: bytes) -> int:
            asked.append(pid)  # into a thread that may be another process's by now
            return super().write(pid, addr, data)

    def values(tid: int) -> SysinfoValues:
        asked.append(tid)
        return VALUES

    assert SysinfoAnswerer(values, Writer(4096)).answer(listener, n) is Outcome.GONE
    assert asked == []  # neither asked about nor written to
    assert not listener.send(Response.continue_(n.id))
    p = select.poll()
    p.register(child.listener, select.POLLIN)
    assert p.poll(1000) == [(child.listener, select.POLLHUP)]  # no task left on its filter
