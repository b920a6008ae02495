"""Descriptors: a server of more containers than it has descriptors to spare, and the pidfds that
validate its cache once their numbers pass 1023 (past what select() takes)."""

from __future__ import annotations

import contextlib
import os
import resource
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from procfs.sources.cgroups import CgroupLayout
from procfs.sources.containers import SWEEP_PERIOD, Resolver
from procfs.sources.hostproc import HostProc
from tests.support.sandbox import Limits, Sandbox, Server, container

MIB = 1 << 20


class LimitedServer(Server):
    """`procfs serve` started with the descriptor limits `soft`:`hard`."""

    def __init__(self, soft: int, hard: int, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.soft, self.hard = soft, hard

    def command(self) -> list[str]:
        return ["prlimit", f"--nofile={self.soft}:{self.hard}", "--", *super().command()]

    def open_files_limits(self) -> list[str]:
        """[soft, hard] of the running server, from /proc/PID/limits."""
        assert self.proc is not None
        limits = Path(f"/proc/{self.proc.pid}/limits").read_text().splitlines()
        return next(x for x in limits if x.startswith("Max open files")).split()[3:5]


def test_more_containers_than_descriptors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """64 descriptors and 70 live containers: each still sees its own memory limit (before, the
    server held a pidfd per container until it ran out and answered ESRCH)."""
    monkeypatch.setenv("PROCFS_STATE", str(tmp_path / "state"))
    count = 70
    with ExitStack() as stack:
        srv = stack.enter_context(LimitedServer(64, 64, args=["--control-dir", str(tmp_path)]))
        assert srv.open_files_limits() == ["64", "64"]  # soft = hard: it cannot raise them
        boxes = [stack.enter_context(container(None, Limits(memory=(32 + i) * MIB)))
                 for i in range(count)]
        meminfo = os.path.join(srv.mountpoint, "proc/meminfo")
        seen = {}
        for i, sb in enumerate(boxes):
            r = sb.run(["head", "-1", meminfo], check=False)
            seen[i] = r.stdout.split()[1] if r.returncode == 0 else r.stderr.strip()
        assert seen == {i: str((32 + i) * 1024) for i in range(count)}
        assert "Traceback" not in srv.log()


def test_soft_descriptor_limit_is_raised_to_the_hard_one(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCFS_STATE", str(tmp_path / "state"))

    with LimitedServer(64, 4096, args=["--control-dir", str(tmp_path)]) as srv:
        assert srv.open_files_limits() == ["4096", "4096"]


@contextlib.contextmanager
def descriptors_taken_below(number: int) -> Iterator[None]:
    """Hold every free descriptor below `number`, so that the next one opened is above it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < number + 64:
        pytest.skip(f"the hard descriptor limit {hard} is below {number + 64}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, number + 64), hard))
    held: list[int] = []
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        held.append(null)
        while held[-1] < number:
            held.append(os.dup(null))
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_pidfds_past_1023(make_container) -> None:
    """A resolver whose pidfds are numbered past 1023 still tells live containers from dead
    ones (select() raised ValueError there: every open from such a container failed)."""
    a = make_container(Limits(memory=48 * MIB))
    b = make_container(Limits(memory=56 * MIB))
    with descriptors_taken_below(1100):
        r = Resolver(HostProc("/proc", "/sys"), CgroupLayout.from_mountinfo("/proc"))
        try:
            ca, cb = r.resolve(a.pid), r.resolve(b.pid)
            assert ca is not None and cb is not None and ca.reaper == a.pid
            assert r.resolve(a.pid) == ca and r.resolve(b.pid) == cb  # from the cache
            assert r._pidfds_held == 2
            b.stop()
            assert [c.key for c in r.containers()] == [ca.key]
        finally:
            r.close()


def test_pidfd_budget(make_container) -> None:
    """Past its pidfd budget the resolver validates containers by their init's start time."""
    boxes: list[Sandbox] = [make_container(Limits(memory=(40 + 8 * i) * MIB)) for i in range(3)]
    r = Resolver(HostProc("/proc", "/sys"), CgroupLayout.from_mountinfo("/proc"), pidfds=1)
    try:
        found = [r.resolve(sb.pid) for sb in boxes]
        assert [c.reaper for c in found if c is not None] == [sb.pid for sb in boxes]
        assert r._pidfds_held == 1
        assert [r.resolve(sb.pid) for sb in boxes] == found
        boxes[0].stop()  # the one with the pidfd
        boxes[2].stop()  # one validated by start time
        assert [c.key for c in r.containers()] == [found[1].key]  # type: ignore[union-attr]
        assert r._pidfds_held == 1  # not closed until dropped
        r.resolve(boxes[1].pid)
    finally:
        r.close()
    assert r._pidfds_held == 0


def _family(pid: int) -> list[int]:
    """`pid` and its children (a server's shards)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [pid, *map(int, f.read().split())]
    except OSError:
        return [pid]


def _fds(pids: list[int]) -> int:
    return sum(len(os.listdir(f"/proc/{p}/fd")) for p in pids)


def _rss_kib(pids: list[int]) -> int:
    total = 0
    for p in pids:
        with open(f"/proc/{p}/status") as f:
            total += next(int(x.split()[1]) for x in f if x.startswith("VmRSS:"))
    return total


def test_churn_of_short_lived_containers_leaves_nothing_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """300 containers one after another, each reading its files once: the server and its shards
    hold no more descriptors after than before, and about the same memory (issue 24: 89 → 1367
    descriptors after 640 containers, a pidfd per dead container until the LRU's bound)."""
    monkeypatch.setenv("PROCFS_STATE", str(tmp_path / "attached.json"))
    count = int(os.environ.get("PROCFS_CHURN_CONTAINERS", "300"))
    with Server(args=["--control-dir", str(tmp_path), "--workers", "auto"]) as srv:
        assert srv.proc is not None
        first = container(srv.mountpoint, Limits(memory=48 * MIB))
        with first as sb:
            sb.sh("cat /proc/meminfo /proc/stat /proc/uptime > /dev/null")
        time.sleep(SWEEP_PERIOD + 1)
        family = _family(srv.proc.pid)
        fds, rss = _fds(family), _rss_kib(family)
        for i in range(count):
            mib = 32 + i % 64
            with container(srv.mountpoint, Limits(memory=mib * MIB)) as sb:
                out = sb.sh("head -1 /proc/meminfo; cat /proc/stat /proc/uptime > /dev/null")
                assert out.split()[1] == str(mib * 1024), out
        peak = _fds(family)
        time.sleep(SWEEP_PERIOD + 1)
        assert _family(srv.proc.pid) == family  # no shard restarted meanwhile
        fds_after, rss_after = _fds(family), _rss_kib(family)
        print(f"churn of {count} containers: descriptors {fds} → {peak} → {fds_after}, "
              f"RSS {rss} → {rss_after} kB ({len(family)} serving processes)")
        assert fds_after <= fds + 4, (fds, peak, fds_after)
        assert rss_after - rss <= 8 * 1024 * len(family), (rss, rss_after)
        assert "Traceback" not in srv.log()
