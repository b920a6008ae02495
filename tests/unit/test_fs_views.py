"""Each container's own inodes (why: the kernel's page cache is per inode, and splice reads
through it), `.pid/PID` for attach, `.binds`, and the sys/devices/system/cpu mirror, through the
FUSE operations on a fixture tree."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

import pyfuse3
import pytest
import trio

from procfs.config import Config, KmsgConfig, Staleness
from procfs.files.table import all_nodes
from procfs.fuse.ops import ProcFS
from procfs.fuse.tree import FIRST_VIEW_INODE, normal
from procfs.server.services import Services
from tests.trees import HOST_PIDNS, FakeHost, v2_cgroup

MIB = 1 << 20
A, B = 4026532101, 4026532102  # two containers' pid namespaces


@dataclass
class Ctx:
    pid: int
    uid: int = 0
    gid: int = 0


@pytest.fixture
def ops(tmp_path: Path) -> ProcFS:
    host = FakeHost(tmp_path, ncpus=4)
    cpu = host.sys / "devices/system/cpu"
    for i in range(4):
        (cpu / f"cpu{i}/topology").mkdir(parents=True)
        (cpu / f"cpu{i}/topology/core_id").write_text(f"{i}\n")
        os.symlink("../../../../bus/cpu", cpu / f"cpu{i}/subsystem")
    (cpu / "kernel_max").write_text("8191\n")
    (cpu / "vulnerabilities").mkdir()
    (cpu / "vulnerabilities/meltdown").write_text("Not affected\n")
    cg = tmp_path / "cg"
    v2_cgroup(cg, "/a", {"memory.max": f"{256 * MIB}\n", "memory.current": "0\n",
                         "memory.stat": "anon 0\n", "cpuset.cpus.effective": "1\n"})
    v2_cgroup(cg, "/b", {"memory.max": f"{512 * MIB}\n", "memory.current": "0\n",
                         "memory.stat": "anon 0\n", "cpuset.cpus.effective": "2-3\n"})
    host.add_process(1, ppid=0, pidns=HOST_PIDNS, nspid=(1,))
    host.add_process(50, ppid=1, pidns=A, nspid=(50, 1), cgroup="0::/a\n")
    host.add_process(51, ppid=50, pidns=A, nspid=(51, 2), cgroup="0::/a\n")
    host.add_process(60, ppid=1, pidns=B, nspid=(60, 1), cgroup="0::/b\n")
    config = Config(cache_ttl=0, proc_root=str(host.proc), sys_root=str(host.sys),
                    cgroup_root=str(cg), kmsg=KmsgConfig(enabled=False))
    services = Services.build(config)
    return ProcFS(all_nodes(services), services.resolver)


async def walk(ops: ProcFS, path: str, pid: int) -> pyfuse3.EntryAttributes:
    attrs = await ops.getattr(pyfuse3.ROOT_INODE)
    for name in path.split("/"):
        attrs = await ops.lookup(attrs.st_ino, name.encode(), Ctx(pid))
    return attrs


async def read(ops: ProcFS, inode: int, pid: int) -> bytes:
    info = await ops.open(inode, os.O_RDONLY, Ctx(pid))
    try:
        return await ops.read(info.fh, 0, 1 << 20)
    finally:
        await ops.release(info.fh)


async def test_each_container_looks_up_inodes_of_its_own(ops: ProcFS) -> None:
    a = await walk(ops, "proc/meminfo", 51)
    b = await walk(ops, "proc/meminfo", 60)
    host = await walk(ops, "proc/meminfo", 1)
    assert len({a.st_ino, b.st_ino, host.st_ino}) == 3
    assert a.st_ino >= FIRST_VIEW_INODE and host.st_ino < FIRST_VIEW_INODE
    # entries a host directory gives are not cached: the next caller may be another container
    root = pyfuse3.ROOT_INODE
    assert (await ops.lookup(root, b"proc", Ctx(51))).entry_timeout == 0
    assert (await ops.lookup(root, b"proc", Ctx(1))).entry_timeout == 0
    assert host.entry_timeout == 0
    # a container's file: a size above its rendering (splice reads up to it), asked again at
    # every open; the host's: 0, as the kernel's /proc files
    assert a.st_size >= 4096 and a.st_size % 4096 == 0 and a.attr_timeout == 0
    assert host.st_size == 0
    assert b"262144 kB" in await read(ops, a.st_ino, 51)
    assert b"524288 kB" in await read(ops, b.st_ino, 60)
    # a GETATTR (every open, every stat): the length of what the open reads, as a regular
    # file's (`wc -c` and `tail` go by it); the host's stays 0
    assert (await ops.getattr(a.st_ino, Ctx(51))).st_size == len(await read(ops, a.st_ino, 51))
    assert (await ops.getattr(host.st_ino, Ctx(1))).st_size == 0
    # the same container looks up the same inode again
    assert (await walk(ops, "proc/meminfo", 50)).st_ino == a.st_ino


async def test_no_container_opens_anothers_inode(ops: ProcFS) -> None:
    a = await walk(ops, "proc/meminfo", 51)
    with pytest.raises(pyfuse3.FUSEError) as e:
        await ops.open(a.st_ino, os.O_RDONLY, Ctx(60))
    assert e.value.errno == errno.EACCES
    # the host may look at what a container sees (its numbers, not the host's)
    assert b"262144 kB" in await read(ops, a.st_ino, 1)


async def test_pid_names_a_containers_tree_for_attach(ops: ProcFS) -> None:
    by_pid = await walk(ops, ".pid/50/proc/meminfo", 1)
    assert by_pid.st_ino == (await walk(ops, "proc/meminfo", 51)).st_ino
    assert by_pid.entry_timeout > 0  # inside a container's tree, entries are its own
    with pytest.raises(pyfuse3.FUSEError):
        await walk(ops, ".pid/1/proc/meminfo", 1)  # a host process has no tree of its own
    with pytest.raises(pyfuse3.FUSEError):
        await walk(ops, ".pid/50/proc/meminfo", 60)  # another container may not name it
    with pytest.raises(pyfuse3.FUSEError):
        await walk(ops, ".pid/x", 1)


async def test_binds_lists_what_attach_binds(ops: ProcFS) -> None:
    binds = (await read(ops, (await walk(ops, ".binds", 1)).st_ino, 1)).decode().split()
    assert "proc/meminfo" in binds and "proc/vmstat" in binds
    assert "sys/devices/system/cpu" in binds  # the directory, whole
    assert not any(b.startswith("sys/devices/system/cpu/") for b in binds)


async def listing(ops: ProcFS, inode: int, pid: int) -> dict[str, pyfuse3.EntryAttributes]:
    fh = await ops.opendir(inode, Ctx(pid))
    out: dict[str, pyfuse3.EntryAttributes] = {}
    original = pyfuse3.readdir_reply

    def collect(token: object, name: bytes, attrs: pyfuse3.EntryAttributes, next_id: int
                ) -> bool:
        out[name.decode()] = attrs
        return True

    pyfuse3.readdir_reply = collect  # type: ignore[assignment]
    try:
        await ops.readdir(fh, 0, None)
    finally:
        pyfuse3.readdir_reply = original  # type: ignore[assignment]
        await ops.releasedir(fh)
    return out


async def test_cpu_directory_shows_a_container_its_cpus_only(ops: ProcFS) -> None:
    a = await walk(ops, "sys/devices/system/cpu", 51)
    names = await listing(ops, a.st_ino, 51)
    assert {n for n in names if n.startswith("cpu")} == {"cpu1"}  # cpuset 1
    assert {"online", "possible", "present", "offline", "kernel_max",
            "vulnerabilities"} <= set(names)
    host = await listing(ops, (await walk(ops, "sys/devices/system/cpu", 1)).st_ino, 1)
    assert {n for n in host if n.startswith("cpu")} == {"cpu0", "cpu1", "cpu2", "cpu3"}
    with pytest.raises(pyfuse3.FUSEError) as e:
        await walk(ops, "sys/devices/system/cpu/cpu0", 51)
    assert e.value.errno == errno.ENOENT
    # the rest is the host's, read through; the lists are the container's own
    core = await walk(ops, "sys/devices/system/cpu/cpu1/topology/core_id", 51)
    assert await read(ops, core.st_ino, 51) == b"1\n"
    assert await read(ops, (await walk(ops, "sys/devices/system/cpu/online", 51)).st_ino,
                      51) == b"1\n"
    assert await read(ops, (await walk(ops, "sys/devices/system/cpu/kernel_max", 51)).st_ino,
                      51) == b"8191\n"
    link = await walk(ops, "sys/devices/system/cpu/cpu1/subsystem", 51)
    assert await ops.readlink(link.st_ino, Ctx(51)) == b"../../../../bus/cpu"
    b = await listing(ops, (await walk(ops, "sys/devices/system/cpu", 60)).st_ino, 60)
    assert {n for n in b if n.startswith("cpu")} == {"cpu2", "cpu3"}


async def test_forget_drops_a_containers_inodes(ops: ProcFS) -> None:
    a = await walk(ops, "proc/meminfo", 51)
    held = ops.inodes.views()
    await ops.forget([(a.st_ino, 1)])
    assert ops.inodes.views() == held - 1
    with pytest.raises(pyfuse3.FUSEError):
        await ops.getattr(a.st_ino)
    assert (await walk(ops, "proc/meminfo", 51)).st_ino != a.st_ino  # numbers never reused


def test_mountinfo_roots_are_the_trees_paths() -> None:
    assert normal("/.pid/4242/proc/meminfo") == "/proc/meminfo"
    assert normal("/proc/meminfo//deleted") == "/proc/meminfo"
    assert normal("/sys/devices/system/cpu") == "/sys/devices/system/cpu"


async def test_every_request_that_costs_waits_in_its_containers_line(ops: ProcFS) -> None:
    proc = await walk(ops, "proc", 51)
    meminfo = await walk(ops, "proc/meminfo", 51)
    opened = await ops.open(meminfo.st_ino, os.O_RDONLY, Ctx(51))
    a = ops.resolver.resolve(51)
    assert a is not None
    done: list[str] = []
    requests = {
        "lookup": lambda: ops.lookup(proc.st_ino, b"meminfo", Ctx(51)),
        "getattr": lambda: ops.getattr(meminfo.st_ino),
        "open": lambda: ops.open(meminfo.st_ino, os.O_RDONLY, Ctx(51)),
        "read": lambda: ops.read(opened.fh, 0, 1 << 20),
    }

    async def request(name: str) -> None:
        await requests[name]()
        done.append(name)

    async with trio.open_nursery() as nursery:
        await nursery.start(ops.gate.run)
        await ops.gate.enter("a crowd's")  # another container's request in progress
        for name in requests:
            nursery.start_soon(request, name)
        await trio.sleep(0.05)
        assert done == [] and list(ops.gate._lines) == [a.key]
        assert ops.gate.in_progress == 1 + len(requests)
        ops.gate.leave()
        await trio.sleep(0.05)
        assert sorted(done) == sorted(requests)
        nursery.cancel_scope.cancel()
    await ops.release(opened.fh)


def test_every_staleness_bound_reaches_what_it_bounds(tmp_path: Path) -> None:
    """The bounds live in Config.staleness alone: each one given there is the one in force."""
    host = FakeHost(tmp_path, ncpus=1)
    v2_cgroup(tmp_path / "cg", "/a", {"memory.max": "max\n"})
    bounds = Staleness(render=0.25, cgroup_paths=3.0)
    services = Services.build(Config(proc_root=str(host.proc), sys_root=str(host.sys),
                                     cgroup_root=str(tmp_path / "cg"), staleness=bounds,
                                     cache_ttl=bounds.render, kmsg=KmsgConfig(enabled=False)))
    assert services.resolver.cgroup_ttl == 3.0
    assert services.render_cache is not None and services.render_cache.ttl == 0.25
