"""Rings of all containers: write rate limits, memory bounds, expiry of gone containers,
the control commands, and the signal check of blocked readers."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import trio
import trio.testing

from procfs.errors import NotFound
from procfs.kmsg.record import RECORD_OVERHEAD
from procfs.kmsg.service import KmsgService
from procfs.kmsg.signals import pending_signals
from procfs.server.control import Control, socket_path
from tests.unit.kmsg_fixtures import FakeProc, container, service


@pytest.fixture
def proc(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path)


def texts(svc: KmsgService, path: str = "/c") -> list[bytes]:
    return [r.text for r in svc.entry(container(path)).ring.records]


async def test_writes_over_the_rate_are_dropped_and_counted(
        proc: FakeProc, mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = 0
    svc = service(proc, trio.current_time, rate=10.0, burst=5.0, throttle=0.0)
    e = svc.entry(container("/c"))
    kept = [await svc.write(e, 12, b"m%d" % i) for i in range(20)]
    assert kept == [True] * 5 + [False] * 15
    assert e.suppressed == 15
    dropped = e.suppressed
    await trio.sleep(1.0)  # tokens come back
    assert await svc.write(e, 12, b"after")
    assert texts(svc)[-2:] == [
        b"kmsg: %d output lines suppressed due to ratelimiting" % dropped, b"after"]
    assert e.suppressed == 0


async def test_throttled_writers_wait_only_while_there_is_room(
        proc: FakeProc, mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = 0
    svc = service(proc, trio.current_time, rate=1.0, burst=1.0, throttle=0.5,
                  places_per_container=1)
    e = svc.entry(container("/c"))
    await svc.write(e, 12, b"first")
    durations: list[float] = []

    async def writer() -> None:
        t = trio.current_time()
        await svc.write(e, 12, b"x")
        durations.append(trio.current_time() - t)

    async with trio.open_nursery() as n:
        for _ in range(3):
            n.start_soon(writer)
    assert sorted(durations) == [0.0, 0.0, 0.5]  # one waited, two were dropped at once


async def test_rings_of_gone_containers_go_after_a_while(proc: FakeProc) -> None:
    now = [0.0]
    svc = service(proc, lambda: now[0], gone_ttl=60.0)
    proc.add(100)
    proc.add(200)
    a = svc.entry(container("/a", pidns=1, reaper=100))
    svc.entry(container("/b", pidns=2, reaper=200))
    svc.sweep()
    assert a.gone_since is None
    proc.remove(100)  # A's init exits
    now[0] = 10.0
    svc.sweep()
    assert a.gone_since == 10.0 and len(svc.entries) == 2
    assert [c.reaper for c in svc.containers()] == [200]  # no more routing to A
    now[0] = 69.0
    svc.sweep()
    assert len(svc.entries) == 2  # the host can still read why it died
    now[0] = 70.0
    svc.sweep()
    assert [e.container.reaper for e in svc.entries.values()] == [200]


async def test_all_rings_together_stay_within_the_total(proc: FakeProc) -> None:
    now = [0.0]
    ring = (RECORD_OVERHEAD + 100) * 4
    svc = service(proc, lambda: now[0], ring_bytes=ring, total_bytes=ring * 3)
    assert svc.max_rings == 3
    for i in range(3):
        now[0] = float(i)
        e = svc.entry(container(f"/c{i}", pidns=i, reaper=10 + i))
        for _ in range(20):
            svc.append(e, 6, b"x" * 100)
    svc.entries[(1, 11, 0)].gone_since = 5.0  # c1 is gone: it goes first
    now[0] = 10.0
    svc.entry(container("/c3", pidns=3, reaper=13))
    assert sorted(k[0] for k in svc.entries) == [0, 2, 3]
    now[0] = 11.0
    svc.entry(container("/c4", pidns=4, reaper=14))  # none gone: the least recently used
    assert sorted(k[0] for k in svc.entries) == [2, 3, 4]
    assert sum(e.ring.bytes for e in svc.entries.values()) <= svc.config.total_bytes


async def test_control_commands(proc: FakeProc) -> None:
    svc = service(proc, trio.current_time)
    e = svc.entry(container("/c", pidns=7, reaper=100))
    svc.append(e, 6, b"tab\there")
    listed = await svc.cmd_list({})
    assert [r["id"] for r in listed["rings"]] == ["7:100:0"]
    assert listed["rings"][0]["records"] == 2
    added = await svc.cmd_append({"target": "7:100:0", "text": "container started"})
    assert added == {"ring": "7:100:0", "seq": 2}
    shown = await svc.cmd_show({"target": "100"})  # by its init's pid
    assert [r["text"] for r in shown["records"]][1:] == ["tab\\x09here", "container started"]
    assert shown["records"][2]["pri"] == 6
    with pytest.raises(NotFound):
        await svc.cmd_show({"target": "nope"})


async def test_append_makes_a_ring_only_when_asked(proc: FakeProc) -> None:
    """`procfs kmsg append` asks each process of a `--workers` server with create=False first,
    so that only the one serving the container (or, failing all, the one it is bound from)
    makes its ring."""
    svc = service(proc, trio.current_time)
    c = container("/c", pidns=8, reaper=200)

    class OneContainer:
        def resolve(self, pid: int) -> object:
            return c if pid == 4321 else None

        def containers(self) -> list[object]:
            return [c]

    svc.resolver = OneContainer()  # type: ignore[assignment]
    with pytest.raises(NotFound):
        await svc.cmd_append({"target": "4321", "text": "x", "create": False})
    assert svc.entries == {}
    added = await svc.cmd_append({"target": "4321", "text": "x"})  # create: the default
    assert added["ring"] == "8:200:0"
    again = await svc.cmd_append({"target": "4321", "text": "y", "create": False})
    assert again == {"ring": "8:200:0", "seq": added["seq"] + 1}


def test_pending_signals() -> None:
    status = "SigQ:\t0/1\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000102\n" \
             "SigBlk:\t0000000000000002\nSigIgn:\t0000000000000000\n"
    assert pending_signals(status) == 0x100  # SIGINT blocked, SIGKILL not
    assert pending_signals("SigPnd:\t0000000000000000\nShdPnd:\t0\nSigBlk:\t0\n") == 0
    assert pending_signals("garbled") == 0


async def test_control_socket_round_trip(tmp_path: Path) -> None:
    path = socket_path("/some/mount", str(tmp_path / "run"))
    control = Control(path)

    async def echo(args: dict[str, object]) -> object:
        if args.get("fail"):
            raise ValueError("asked to fail")
        return {"got": args.get("x")}

    control.register("echo", echo, "answer x")
    with pytest.raises(ValueError):
        control.register("echo", echo)

    async def ask(request: bytes) -> dict[str, object]:
        s = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with s:
            await s.connect(path)
            await s.send(request)
            data = b""
            while not data.endswith(b"\n"):
                data += await s.recv(4096)
        answer: dict[str, object] = json.loads(data)
        return answer

    async with trio.open_nursery() as n:
        await n.start(control.serve)
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert await ask(b'{"cmd": "echo", "x": 3}\n') == {"ok": True, "result": {"got": 3}}
        assert (await ask(b'{"cmd": "echo", "fail": 1}\n'))["ok"] is False
        assert (await ask(b'{"cmd": "nope"}\n'))["error"] == "unknown command 'nope'"
        assert (await ask(b"garbage\n"))["error"] == "not JSON"
        assert "echo" in (await ask(b'{"cmd": "help"}\n'))["result"]  # type: ignore[operator]
        n.cancel_scope.cancel()
    assert not os.path.exists(path)
