"""Caller → container on a fixture /proc: reapers, setns'd callers, caching and pid reuse."""

from __future__ import annotations

from pathlib import Path

import pytest

from procfs.errors import ProcessGone
from procfs.sources.cgroups import CgroupLayout
from procfs.sources.containers import Resolver
from procfs.sources.hostproc import HostProc
from tests.trees import HOST_PIDNS, FakeHost, ManualClock

NS_A, NS_B = 4026532001, 4026532002


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    h = FakeHost(tmp_path)
    h.add_process(1, ppid=0, pidns=HOST_PIDNS, nspid=(1,))
    h.add_process(100, ppid=1, pidns=HOST_PIDNS, nspid=(100,), cgroup="0::/\n")
    # container A: init 200, child 201 in a sub-cgroup, 202 entered with setns (parent 100)
    h.add_process(200, ppid=100, pidns=NS_A, nspid=(200, 1), cgroup="0::/a\n", start=5000)
    h.add_process(201, ppid=200, pidns=NS_A, nspid=(201, 7), cgroup="0::/a/sub\n")
    h.add_process(202, ppid=100, pidns=NS_A, nspid=(202, 9), cgroup="0::/a\n")
    return h


def resolver(h: FakeHost, clock: ManualClock | None = None) -> Resolver:
    layout = CgroupLayout.from_mounts([])
    return Resolver(HostProc(str(h.proc), str(h.sys)), layout, clock=clock or ManualClock())


def test_host_process_is_the_host(host: FakeHost) -> None:
    assert resolver(host).resolve(100) is None


def test_container_processes_resolve_to_their_init(host: FakeHost) -> None:
    r = resolver(host)
    a1, a2, a3 = r.resolve(200), r.resolve(201), r.resolve(202)
    assert a1 is not None and a1 == a2 == a3
    assert a1.reaper == 200 and a1.reaper_start == 5000
    assert a1.cgroups.paths.v2 == "/a"  # the init's cgroup, not the caller's sub-cgroup
    assert a1.pidns_level == 2  # kept: counting its tasks needs it on every read


def test_namespace_depth_found_by_either_path_to_the_init(host: FakeHost) -> None:
    # 202 entered with setns: its init is found by scanning, not by climbing
    entered = resolver(host).resolve(202)
    assert entered is not None and entered.reaper == 200 and entered.pidns_level == 2
    host.add_process(300, ppid=201, pidns=NS_B, nspid=(300, 8, 1), cgroup="0::/a/sub/b\n")
    host.add_process(301, ppid=300, pidns=NS_B, nspid=(301, 9, 2), cgroup="0::/a/sub/b\n")
    nested = resolver(host).resolve(301)
    assert nested is not None and nested.reaper == 300 and nested.pidns_level == 3


def test_vanished_caller(host: FakeHost) -> None:
    with pytest.raises(ProcessGone):
        resolver(host).resolve(999)
    with pytest.raises(ProcessGone):
        resolver(host).resolve(0)


def test_reused_init_pid_is_another_container(host: FakeHost) -> None:
    r = resolver(host)
    first = r.resolve(201)
    assert first is not None
    # Container A ends; a new container B reuses pid 200 for its init and 201 for a child.
    for pid in (200, 201, 202):
        host.remove_process(pid)
    host.add_process(200, ppid=100, pidns=NS_B, nspid=(200, 1), cgroup="0::/b\n", start=9000)
    host.add_process(201, ppid=200, pidns=NS_B, nspid=(201, 2), cgroup="0::/b\n")
    second = r.resolve(201)
    assert second is not None and second.key != first.key
    assert second.cgroups.paths.v2 == "/b"


def test_namespace_inode_reused_after_init_died(host: FakeHost) -> None:
    r = resolver(host)
    first = r.resolve(200)
    # A's init exits and a new namespace gets the same inode number, with a new init.
    for pid in (200, 201, 202):
        host.remove_process(pid)
    host.add_process(300, ppid=100, pidns=NS_A, nspid=(300, 1), cgroup="0::/c\n", start=9100)
    second = r.resolve(300)
    assert first is not None and second is not None
    assert second.reaper == 300 and second.cgroups.paths.v2 == "/c"


def test_cgroup_move_seen_after_ttl(host: FakeHost) -> None:
    clock = ManualClock()
    r = resolver(host, clock)
    assert r.resolve(200).cgroups.paths.v2 == "/a"  # type: ignore[union-attr]
    (host.proc / "200/cgroup").write_text("0::/moved\n")
    assert r.resolve(200).cgroups.paths.v2 == "/a"  # type: ignore[union-attr]
    clock.now += 2
    assert r.resolve(200).cgroups.paths.v2 == "/moved"  # type: ignore[union-attr]


def test_time_namespace_offsets(host: FakeHost) -> None:
    host.add_process(400, ppid=100, pidns=NS_B, nspid=(400, 1), cgroup="0::/t\n",
                     timens="monotonic 0 0\nboottime 86400 500\n")
    c = resolver(host).resolve(400)
    assert c is not None and c.boottime_offset_ns == 86400 * 10**9 + 500


def test_cache_is_bounded(host: FakeHost) -> None:
    r = resolver(host)
    r.maxsize = 2
    for i in range(5):
        host.add_process(500 + i, ppid=100, pidns=NS_B + 10 + i, nspid=(500 + i, 1))
        r.resolve(500 + i)
    assert len(r.containers()) == 2


def test_sweep_forgets_containers_whose_init_exited(host: FakeHost) -> None:
    """A churning host must not keep an entry (and a pidfd, on a real /proc) per dead
    container until the cache's bound evicts it."""
    r = resolver(host)
    assert r.resolve(201) is not None and len(r.containers()) == 1
    assert r.sweep() == 0
    for pid in (200, 201, 202):  # the init's death ends its pid namespace
        host.remove_process(pid)
    assert r.sweep() == 1
    assert r._cache == {}  # what the sweep is for
    assert r.sweep() == 0
