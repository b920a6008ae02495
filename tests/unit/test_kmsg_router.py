"""The host-line router on captured OOM lines (cgroup v1 and v2), and the host log follower."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from procfs.kmsg.record import HostRecord
from procfs.kmsg.router import Router, follow_host_log
from procfs.sources.containers import Container
from tests.unit.kmsg_fixtures import FakeProc, container

# Captured on this project's test host (hybrid: memory on v1), kernel 6.18.
V1_LINES = [
    (4, b"python3 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0"),
    (6, b"Memory cgroup stats for /procfs-test-78decdbe8f:"),
    (6, b"oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=procfs-test-78decdbe8f,"
        b"mems_allowed=0,oom_memcg=/procfs-test-78decdbe8f,"
        b"task_memcg=/procfs-test-78decdbe8f,task=python3,pid=16780,uid=0"),
    (3, b"Memory cgroup out of memory: Killed process 16780 (python3) total-vm:75160kB, "
        b"anon-rss:64512kB, file-rss:6680kB, shmem-rss:0kB, UID:0 pgtables:184kB "
        b"oom_score_adj:0"),
]
# The shape cgroup v2 hosts print (systemd + a container runtime), nested task cgroup.
V2_LINES = [
    (6, b"oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
        b"oom_memcg=/system.slice/docker-abc.scope,"
        b"task_memcg=/system.slice/docker-abc.scope/worker,task=stress-ng-vm,pid=4242,uid=0"),
    (3, b"Memory cgroup out of memory: Killed process 4242 (stress-ng-vm) total-vm:138752kB, "
        b"anon-rss:61316kB, file-rss:772kB, shmem-rss:0kB, UID:0 pgtables:192kB "
        b"oom_score_adj:1000"),
    (6, b"oom_reaper: reaped process 4242 (stress-ng-vm), now anon-rss:0kB, file-rss:0kB, "
        b"shmem-rss:0kB"),
]


def make_router(proc: FakeProc, cs: list[Container]) -> tuple[Router, list[tuple[int, bytes]]]:
    out: list[tuple[int, bytes]] = []

    def deliver(c: Container, pri: int, text: bytes) -> None:
        out.append((c.reaper, text))

    return Router(proc.host, lambda: cs, deliver), out


def feed(router: Router, lines: list[tuple[int, bytes]]) -> None:
    for i, (pri, text) in enumerate(lines):
        router.dispatch(HostRecord(pri, 1000 + i, 2643813725 + i, text))


def test_v1_oom_lines_go_to_the_victims_container_in_its_terms(tmp_path: Path) -> None:
    proc = FakeProc(tmp_path)
    a = container("/procfs-test-78decdbe8f", pidns=11, reaper=100)
    b = container("/procfs-test-78decdbe8", pidns=12, reaper=200)  # a prefix, not a parent
    proc.add(16780, pidns=11, nspid=(16780, 13))  # the victim is pid 13 inside A
    router, out = make_router(proc, [b, a])
    feed(router, V1_LINES)
    assert out == [
        (100, b"Memory cgroup stats for /:"),
        (100, b"oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
              b"oom_memcg=/,task_memcg=/,task=python3,pid=13,uid=0"),
        (100, b"Memory cgroup out of memory: Killed process 13 (python3) total-vm:75160kB, "
              b"anon-rss:64512kB, file-rss:6680kB, shmem-rss:0kB, UID:0 pgtables:184kB "
              b"oom_score_adj:0"),
    ]


def test_v2_nested_memcg_and_a_victim_already_gone(tmp_path: Path) -> None:
    proc = FakeProc(tmp_path)  # pid 4242 is not in /proc any more: host pids stay
    outer = container("/system.slice", v2=True, pidns=10, reaper=50)
    c = container("/system.slice/docker-abc.scope", v2=True, pidns=11, reaper=100)
    router, out = make_router(proc, [outer, c])
    feed(router, V2_LINES)
    assert [r for r, _ in out] == [100, 100, 100]  # the longest cgroup that holds it
    assert b"oom_memcg=/,task_memcg=/worker,task=stress-ng-vm,pid=4242" in out[0][1]
    assert out[1][1].startswith(b"Memory cgroup out of memory: Killed process 4242 ")
    assert out[2][1].startswith(b"oom_reaper: reaped process 4242 ")


def test_killed_process_by_live_pid_without_an_oom_kill_line(tmp_path: Path) -> None:
    proc = FakeProc(tmp_path)
    c = container("/c", pidns=11, reaper=100)
    proc.add(777, pidns=11, nspid=(777, 5))
    proc.add(888, pidns=99)  # a host process
    router, out = make_router(proc, [c])
    feed(router, [(3, b"Out of memory: Killed process 777 (x) total-vm:1kB"),
                  (3, b"Out of memory: Killed process 888 (y) total-vm:1kB")])
    assert out == [(100, b"Out of memory: Killed process 5 (x) total-vm:1kB")]


def test_lines_of_no_container_stay_on_the_host(tmp_path: Path) -> None:
    proc = FakeProc(tmp_path)
    root = container("/", pidns=11, reaper=100)  # a container in the root cgroup claims nothing
    other = container("/other", pidns=12, reaper=200)
    router, out = make_router(proc, [root, other])
    feed(router, [*V1_LINES, (6, b"usb 1-1: new high-speed USB device number 2"),
                  (6, b"oom-kill:garbled")])
    assert out == []


async def test_follow_reads_records_from_a_pipe(tmp_path: Path) -> None:
    proc = FakeProc(tmp_path / "proc")
    a = container("/procfs-test-78decdbe8f", pidns=11, reaper=100)
    router, out = make_router(proc, [a])
    fifo = tmp_path / "kmsg"
    os.mkfifo(fifo)
    async with trio.open_nursery() as n:
        await n.start(follow_host_log, str(fifo), router)
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            text = V1_LINES[2][1]
            os.write(fd, b"6,1,2,-;unrelated\n6,2,3,-;" + text[:40])  # a record cut in two
            await trio.sleep(0.05)
            assert out == []
            os.write(fd, text[40:] + b"\n")
            with trio.fail_after(5):
                while not out:
                    await trio.sleep(0.01)
        finally:
            os.close(fd)
        n.cancel_scope.cancel()
    assert out[0][1].startswith(b"oom-kill:constraint=CONSTRAINT_MEMCG")


async def test_follow_without_a_host_log_starts_and_ends(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A host log that cannot be read: the task says it started (the server goes on), logs why,
    and ends by itself instead of waiting forever."""
    router, out = make_router(FakeProc(tmp_path), [])
    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            await n.start(follow_host_log, str(tmp_path / "missing"), router)
    assert out == []
    assert "no host lines will be routed" in caplog.text


def test_pr_cont_pieces_split_by_another_cpu_are_joined(tmp_path: Path) -> None:
    """When another CPU prints in between, the kernel's pr_cont pieces of the oom-kill line and
    of the stats header arrive as records of their own; the router joins them again."""
    proc = FakeProc(tmp_path)
    a = container("/procfs-test-78decdbe8f", pidns=11, reaper=100)
    proc.add(16780, pidns=11, nspid=(16780, 13))
    router, out = make_router(proc, [a])
    oom_kill = V1_LINES[2][1]
    cut = oom_kill.index(b",oom_memcg=")
    feed(router, [
        (6, b"Memory cgroup stats for "), (6, b"/procfs-test-78decdbe8f:"),
        (6, oom_kill[:cut]), (6, oom_kill[cut:]),
        V1_LINES[3],
    ])
    assert [text.split(b":")[0] for _, text in out] == [
        b"Memory cgroup stats for /", b"oom-kill", b"Memory cgroup out of memory"]
    assert all(reaper == 100 for reaper, _ in out)
    assert b"task_memcg=/," in out[1][1] and b"pid=13," in out[1][1]
