"""The FUSE operations driven directly (no mount) over fixture trees: the tree, the per-open
generation, and bad input answered with a fallback or a clean errno."""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pyfuse3
import pytest
import trio
import trio.testing

from procfs.config import Config
from procfs.files.table import all_nodes
from procfs.fuse.held import Held
from procfs.fuse.ops import ProcFS
from procfs.server.services import Services
from tests.trees import HOST_PIDNS, MEMINFO, FakeHost, v2_cgroup

MIB = 1 << 20
NS = 4026532100


@dataclass
class Ctx:
    pid: int
    uid: int = 0
    gid: int = 0


@pytest.fixture
def world(tmp_path: Path) -> tuple[FakeHost, Path, ProcFS]:
    host = FakeHost(tmp_path, ncpus=4)
    cg = tmp_path / "cgroup"
    v2_cgroup(cg, "/box", {"memory.max": f"{256 * MIB}\n", "memory.current": f"{10 * MIB}\n",
                           "memory.stat": "anon 1048576\nfile 2097152\n",
                           "cpuset.cpus.effective": "1\n", "cpu.max": "max 100000\n"})
    host.add_process(1, ppid=0, pidns=HOST_PIDNS, nspid=(1,))
    host.add_process(50, ppid=1, pidns=NS, nspid=(50, 1), cgroup="0::/box\n")
    host.add_process(51, ppid=50, pidns=NS, nspid=(51, 2), cgroup="0::/box\n")
    config = Config(cache_ttl=0, proc_root=str(host.proc), sys_root=str(host.sys),
                    cgroup_root=str(cg))
    services = Services.build(config)
    ops = ProcFS(all_nodes(services), services.resolver)
    return host, cg, ops


def inode_of(ops: ProcFS, path: str) -> int:
    return next(i for i, n in ops.files.items() if n.path == path)


async def cat(ops: ProcFS, path: str, pid: int, chunk: int = 7) -> bytes:
    info = await ops.open(inode_of(ops, path), os.O_RDONLY, Ctx(pid))
    out = b""
    while piece := await ops.read(info.fh, len(out), chunk):
        out += piece
    await ops.release(info.fh)
    return out


async def test_tree_and_lookup(world: tuple[FakeHost, Path, ProcFS]) -> None:
    _, _, ops = world
    assert {"proc/meminfo", "proc/cpuinfo", "proc/swaps", "sys/devices/system/cpu/online",
            "sys/devices/system/cpu/possible", "sys/devices/system/cpu/present"} <= set(ops.paths())
    proc = await ops.lookup(pyfuse3.ROOT_INODE, b"proc")
    meminfo = await ops.lookup(proc.st_ino, b"meminfo")
    assert meminfo.st_mode & 0o777 == 0o444
    with pytest.raises(pyfuse3.FUSEError) as e:
        await ops.lookup(proc.st_ino, b"nope")
    assert e.value.errno == errno.ENOENT


async def test_container_and_host_views(world: tuple[FakeHost, Path, ProcFS]) -> None:
    _, _, ops = world
    inside = (await cat(ops, "proc/meminfo", 51)).decode()
    assert inside.startswith("MemTotal:         262144 kB\n")
    assert (await cat(ops, "sys/devices/system/cpu/online", 51)) == b"1\n"  # cpuset 1
    assert (await cat(ops, "proc/cpuinfo", 51)).count(b"processor") == 1
    assert (await cat(ops, "proc/meminfo", 1)).decode().splitlines()[0] == MEMINFO.splitlines()[0]


async def test_one_generation_per_open(world: tuple[FakeHost, Path, ProcFS]) -> None:
    _, cg, ops = world
    info = await ops.open(inode_of(ops, "proc/meminfo"), os.O_RDONLY, Ctx(51))
    first = await ops.read(info.fh, 0, 40)
    (cg / "box/memory.max").write_text(f"{128 * MIB}\n")
    rest = await ops.read(info.fh, 40, 1 << 16)
    await ops.release(info.fh)
    assert (first + rest).startswith(b"MemTotal:         262144 kB")
    assert (await cat(ops, "proc/meminfo", 51)).startswith(b"MemTotal:         131072 kB")


async def test_vanished_cgroup_never_serves_the_hosts_file(
        world: tuple[FakeHost, Path, ProcFS], caplog: pytest.LogCaptureFixture) -> None:
    """A container whose cgroup is removed (or renamed) under it gets its last rendering of
    the file, and an error when it had none: never the host's file and its numbers."""
    host, cg, ops = world
    host.add_process(60, ppid=1, pidns=NS + 1, nspid=(60, 1), cgroup="0::/box\n")
    assert (await cat(ops, "proc/meminfo", 51)).startswith(b"MemTotal:         262144 kB")
    for f in (cg / "box").iterdir():
        f.unlink()
    (cg / "box").rmdir()
    with caplog.at_level(logging.INFO):
        assert (await cat(ops, "proc/meminfo", 51)).startswith(b"MemTotal:         262144 kB")
        with pytest.raises(pyfuse3.FUSEError):  # a container that never had a rendering
            await cat(ops, "proc/meminfo", 60)
    assert "serving its last rendering" in caplog.text
    assert MEMINFO.splitlines()[0] not in caplog.text


async def test_vanished_caller_gets_esrch_and_server_goes_on(
        world: tuple[FakeHost, Path, ProcFS]) -> None:
    host, _, ops = world
    with pytest.raises(pyfuse3.FUSEError) as e:
        await ops.open(inode_of(ops, "proc/meminfo"), os.O_RDONLY, Ctx(4242))
    assert e.value.errno == errno.ESRCH
    host.remove_process(51)
    with pytest.raises(pyfuse3.FUSEError):
        await ops.open(inode_of(ops, "proc/meminfo"), os.O_RDONLY, Ctx(51))
    assert (await cat(ops, "proc/meminfo", 50)).startswith(b"MemTotal:         262144 kB")


async def test_garbled_and_unlimited_memory(world: tuple[FakeHost, Path, ProcFS]) -> None:
    _, cg, ops = world
    (cg / "box/memory.max").write_text("max\n")
    (cg / "box/memory.stat").write_text("anon\nfile 12 13\n\x00\x01garbage\nshmem -5\n")
    (cg / "box/memory.current").write_text("999999999999999999999999\n")
    out = (await cat(ops, "proc/meminfo", 51)).decode()
    values = {line.split(":")[0]: int(line.split()[1]) for line in out.splitlines()}
    assert values["MemTotal"] == 16384000  # unlimited: the host's total
    assert values["MemFree"] == 0 and values["MemAvailable"] == 0
    assert values["Shmem"] == 0


async def test_write_and_bad_handles_refused(world: tuple[FakeHost, Path, ProcFS]) -> None:
    _, _, ops = world
    with pytest.raises(pyfuse3.FUSEError) as e:
        await ops.open(inode_of(ops, "proc/meminfo"), os.O_WRONLY, Ctx(51))
    assert e.value.errno == errno.EACCES
    with pytest.raises(pyfuse3.FUSEError) as e:
        await ops.read(12345, 0, 10)
    assert e.value.errno == errno.EBADF
    assert ops.open_handles() == 0


async def test_the_server_holds_a_containers_share_of_partly_read_opens(
        world: tuple[FakeHost, Path, ProcFS]) -> None:
    """A container process opening thousands of files and reading each in part holds no more
    than its share of renderings; closing them gives every byte back."""
    _, _, ops = world
    ops.held = Held(per_container=64 << 10, total=1 << 20, trim=lambda: None)
    inode = inode_of(ops, "proc/meminfo")
    fhs = []
    for _ in range(2000):
        info = await ops.open(inode, os.O_RDONLY, Ctx(51))
        assert await ops.read(info.fh, 0, 16)
        fhs.append(info.fh)
    owner = next(iter(ops._open))  # the container: its only owner
    assert ops.held.of(owner) <= 64 << 10
    first = await ops.read(fhs[0], 16, 32)  # let go: rendered again where it was
    assert first and b"\n" in (await ops.read(fhs[0], 0, 4096))
    for fh in fhs:
        await ops.release(fh)
    assert ops.held.total == 0 and ops.open_handles() == 0


async def test_blocked_kmsg_reads_are_never_refused_nor_hold_up_their_container(
        world: tuple[FakeHost, Path, ProcFS], mock_clock: trio.testing.MockClock) -> None:
    """Issue 24, through the FUSE operations: 40 blocked dev/kmsg reads of one container all
    wait and all get the next record (before: the 9th got EAGAIN from kmsg's cap of 8 waiting
    readers per container), and meanwhile the container's other files read as usual."""
    _, _, ops = world
    mock_clock.autojump_threshold = 0
    kmsg = inode_of(ops, "dev/kmsg")
    at: dict[int, int] = {}
    for _ in range(40):
        fh = (await ops.open(kmsg, os.O_RDONLY, Ctx(51))).fh
        at[fh] = len(await ops.read(fh, 0, 2048))  # the greeting: the next read waits
    got: list[bytes] = []

    async def reader(fh: int) -> None:
        got.append(await ops.read(fh, at[fh], 2048))

    async with trio.open_nursery() as n:
        for fh in at:
            n.start_soon(reader, fh)
        await trio.sleep(5)
        assert not got
        assert (await cat(ops, "proc/meminfo", 51)).startswith(b"MemTotal:         262144 kB")
        service = ops.tree.files["dev/kmsg"].service  # type: ignore[attr-defined]
        entry = next(iter(service.entries.values()))
        service.append(entry, 6, b"for all forty")
    assert len(got) == 40 and all(g.endswith(b";for all forty\n") for g in got)
    for fh in at:
        await ops.release(fh)
