"""The render cache: a rendering is reused by the same container only, and for `ttl` at most."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pyfuse3
import pytest

from procfs.config import Config
from procfs.files.table import all_nodes
from procfs.fuse.ops import ProcFS
from procfs.fuse.rendercache import RenderCache
from procfs.server.services import Services
from tests.trees import HOST_PIDNS, FakeHost, ManualClock, v2_cgroup
from tests.unit.test_fs_ops import Ctx, cat, inode_of

MIB = 1 << 20


@pytest.fixture
def cached(tmp_path: Path) -> tuple[Path, ProcFS, ManualClock]:
    host = FakeHost(tmp_path, ncpus=4)
    cg = tmp_path / "cgroup"
    for name, mem in (("a", 256), ("b", 512)):
        v2_cgroup(cg, f"/{name}", {"memory.max": f"{mem * MIB}\n", "memory.current": "0\n",
                                    "memory.stat": "anon 0\n", "cpu.max": "max 100000\n"})
    host.add_process(1, ppid=0, pidns=HOST_PIDNS, nspid=(1,))
    host.add_process(50, ppid=1, pidns=4026532100, nspid=(50, 1), cgroup="0::/a\n")
    host.add_process(60, ppid=1, pidns=4026532200, nspid=(60, 1), cgroup="0::/b\n")
    clock = ManualClock(100.0)
    services = Services.build(Config(proc_root=str(host.proc), sys_root=str(host.sys),
                                     cgroup_root=str(cg)), clock=clock)
    assert services.render_cache is not None and services.render_cache.ttl == 0.01
    ops = ProcFS(all_nodes(services), services.resolver, services.render_cache)
    return cg, ops, clock


def total(text: bytes) -> int:
    return int(text.split(b"\n", 1)[0].split()[1])


async def test_reused_within_ttl_then_rendered_again(
        cached: tuple[Path, ProcFS, ManualClock]) -> None:
    cg, ops, clock = cached
    assert total(await cat(ops, "proc/meminfo", 50)) == 256 * 1024
    (cg / "a/memory.max").write_text(f"{128 * MIB}\n")
    clock.now += 0.005
    assert total(await cat(ops, "proc/meminfo", 50)) == 256 * 1024  # within the bound
    clock.now += 0.006
    assert total(await cat(ops, "proc/meminfo", 50)) == 128 * 1024


async def test_never_shared_between_containers_or_with_the_host(
        cached: tuple[Path, ProcFS, ManualClock]) -> None:
    _, ops, _ = cached
    assert total(await cat(ops, "proc/meminfo", 50)) == 256 * 1024
    assert total(await cat(ops, "proc/meminfo", 60)) == 512 * 1024
    assert total(await cat(ops, "proc/meminfo", 1)) == 16384000
    assert total(await cat(ops, "proc/meminfo", 50)) == 256 * 1024
    assert ops.cache is not None and ops.cache.hits == 1


async def test_writes_still_refused(cached: tuple[Path, ProcFS, ManualClock]) -> None:
    _, ops, _ = cached
    await cat(ops, "proc/meminfo", 50)
    with pytest.raises(pyfuse3.FUSEError) as e:
        await ops.open(inode_of(ops, "proc/meminfo"), os.O_RDWR, Ctx(50))
    assert e.value.errno == errno.EACCES


async def test_an_open_reads_the_rendering_its_getattr_sized(
        cached: tuple[Path, ProcFS, ManualClock]) -> None:
    """GETATTR (every open) renders for the size; the open after it reads that rendering even
    when its first read comes after the cache's bound (turns on a busy server): the size is
    the length read, and nothing is rendered twice."""
    cg, ops, clock = cached
    own = await ops.lookup(pyfuse3.ROOT_INODE, b"proc", Ctx(50))
    own = await ops.lookup(own.st_ino, b"meminfo", Ctx(50))
    size = (await ops.getattr(own.st_ino, Ctx(50))).st_size
    info = await ops.open(own.st_ino, os.O_RDONLY, Ctx(50))
    assert ops.held.total == 0  # an open holds nothing until it is read
    (cg / "a/memory.max").write_text(f"{128 * MIB}\n")
    clock.now += 0.05  # past the bound
    data = await ops.read(info.fh, 0, 1 << 20)
    await ops.release(info.fh)
    assert len(data) == size and total(data) == 256 * 1024
    assert total(await cat(ops, "proc/meminfo", 50)) == 128 * 1024  # the next open: afresh


def test_bounded_in_bytes() -> None:
    cache = RenderCache(10.0, max_bytes=1600)
    cache.put(("a", None), b"x" * 1000)  # more than a sixteenth: not kept
    assert cache.get(("a", None)) is None
    for i in range(40):
        cache.put((str(i), (1, 2, 3)), b"y" * 100)
    assert sum(cache.get((str(i), (1, 2, 3))) is not None for i in range(40)) <= 16


async def test_rewind_renders_again_once_the_bound_passed(
        cached: tuple[Path, ProcFS, ManualClock]) -> None:
    cg, ops, clock = cached
    info = await ops.open(inode_of(ops, "proc/meminfo"), os.O_RDONLY, Ctx(50))
    assert total(await ops.read(info.fh, 0, 1 << 16)) == 256 * 1024
    (cg / "a/memory.max").write_text(f"{128 * MIB}\n")
    assert total(await ops.read(info.fh, 0, 1 << 16)) == 256 * 1024  # within the bound
    clock.now += 0.02
    assert total(await ops.read(info.fh, 0, 1 << 16)) == 128 * 1024  # top's lseek(0) + read
    await ops.release(info.fh)
