"""Readers and views of disk I/O, PSI and slabinfo on cgroup v1 and v2 fixture trees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlays.diskstats import DiskCounters
from procfs.config import Config, Staleness
from procfs.errors import CgroupGone, Malformed
from procfs.files.host import HostFiles
from procfs.files.io import IoFiles
from procfs.files.table import all_nodes
from procfs.fuse.nodes import Caller, LastGood, OverlayNode
from procfs.server.services import Services
from procfs.sources import io as cgroup_io
from procfs.sources.cgroups import CgroupDirs, CgroupLayout, CgroupPaths
from procfs.sources.containers import Container
from procfs.sources.hostproc import HostProc
from tests.trees import FakeHost, ManualClock, v1_cgroup, v2_cgroup, write

HOST_DISKSTATS = (
    "   8       0 sda 100 1 2000 30 200 2 4000 40 0 50 70 0 0 0 0 5 6\n"
    "   8       1 sda1 90 1 1800 30 190 2 3800 40 0 50 70 0 0 0 0 0 0\n"
    " 254       0 vda 39457 10487 2997818 19889 7542 24146 1193096 4383 0 6956 24710 4734 23"
    " 158744 384 1004 51\n"
    " 253       0 zram0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
)
HOST_PSI = "some avg10=1.00 avg60=2.00 avg300=3.00 total=456\n" \
           "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
HOST_SLAB = "slabinfo - version: 2.1\n# name ...\nhost-cache 1 1 64 64 1 : tunables 0 0 0" \
            " : slabdata 1 1 0\n"

IO_STAT = (
    "254:0 rbytes=1048576 wbytes=67108864 rios=10 wios=128 dbytes=4096 dios=1\n"
    "8:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0 cost.vrate=100.00 cost.usage=5\n"
    "253:0 rbytes=0 wbytes=0 rios=0 wios=0 dbytes=0 dios=0\n"  # never touched: omitted
    "8:32 rbytes=512 wbytes=1024 rios=1 wios=2 dbytes=0 dios=0\n"  # named by sysfs only
    "9:9 rbytes=512 wbytes=512 rios=1 wios=1 dbytes=0 dios=0\n"  # gone from the host
    "garbage\n"
    "8:x rbytes=1\n"
    "8:48 rbytes=lots wbytes=512 wios=1\n"  # a bad value is 0; the rest is read
)


@pytest.fixture
def host(tmp_path: Path) -> HostProc:
    fake = FakeHost(tmp_path / "host")
    proc, sys = fake.proc, fake.sys
    write(proc / "diskstats", HOST_DISKSTATS)
    write(proc / "slabinfo", HOST_SLAB)
    for kind in ("cpu", "memory", "io"):
        write(proc / "pressure" / kind, HOST_PSI.replace("456", kind))
    write(sys / "dev/block/8:32/uevent", "MAJOR=8\nMINOR=32\nDEVNAME=sdc\nDEVTYPE=disk\n")
    write(sys / "dev/block/8:48/uevent", "MAJOR=8\nMINOR=48\nDEVNAME=sdd\nDEVTYPE=disk\n")
    return HostProc(str(proc), str(sys))


def v2_tree(tmp_path: Path) -> tuple[CgroupLayout, Path]:
    root = tmp_path / "cgroup"
    ctr = v2_cgroup(root, "/kubepods/pod1", {
        "io.stat": IO_STAT,
        "memory.pressure": "some avg10=12.50 avg60=3.00 avg300=0.70 total=987654\n"
                           "full avg10=10.00 avg60=2.00 avg300=0.50 total=876543\n",
        "cpu.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
                        "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        "io.pressure": "nonsense\n",
    })
    return CgroupLayout.from_directory(str(root)), ctr


def v1_tree(tmp_path: Path) -> tuple[CgroupLayout, Path, Path]:
    """A hybrid host: v1 blkio and memory, the controller-less v2 hierarchy at `unified`."""
    root = tmp_path / "cgroup"
    blk = v1_cgroup(root, "blkio", "/ctr", {
        "blkio.throttle.io_service_bytes_recursive":
            "254:0 Read 94208\n254:0 Write 67108864\n254:0 Sync 67203072\n254:0 Async 0\n"
            "254:0 Discard 0\n254:0 Total 67203072\n"
            "8:0 Read 0\n8:0 Write 0\n8:0 Total 0\n"  # a throttle rule, no I/O: omitted
            "Total 67203072\n",
        "blkio.throttle.io_serviced_recursive":
            "254:0 Read 3\n254:0 Write 128\n254:0 Sync 131\n254:0 Async 0\n254:0 Discard 0\n"
            "254:0 Total 131\nbad line here\nTotal 131\n",
        # BFQ statistics for sdb (with its debug files): requests, merges, times in ns.
        "blkio.bfq.io_service_bytes_recursive": "8:16 Read 8192\n8:16 Write 4096\n",
        "blkio.bfq.io_serviced_recursive": "8:16 Read 2\n8:16 Write 1\n",
        "blkio.bfq.io_merged_recursive": "8:16 Read 1\n8:16 Write 3\n",
        "blkio.bfq.io_service_time_recursive": "8:16 Read 5000000\n8:16 Write 7000000\n",
        "blkio.bfq.io_wait_time_recursive": "8:16 Read 2000000\n8:16 Write 1000000\n",
    })
    mem = v1_cgroup(root, "memory", "/ctr", {"memory.kmem.slabinfo": ""})
    v1_cgroup(root, "unified", "/ctr", {})
    return CgroupLayout.from_directory(str(root)), blk, mem


def container(layout: CgroupLayout, v1: dict[str, str] | None = None,
              v2: str | None = None) -> Container:
    return Container(4026531000, 4242, 1000, CgroupDirs(layout, CgroupPaths(v1 or {}, v2)))


# Readers


def test_io_stat_several_devices_and_malformed_lines() -> None:
    stats = cgroup_io.parse_io_stat(IO_STAT)
    assert stats[(254, 0)] == DiskCounters(reads=10, read_bytes=1 << 20, writes=128,
                                           write_bytes=64 << 20, discards=1, discard_bytes=4096)
    assert stats[(8, 0)] == DiskCounters(reads=1, read_bytes=4096)
    assert stats[(8, 48)] == DiskCounters(writes=1, write_bytes=512)
    assert set(stats) == {(254, 0), (8, 0), (253, 0), (8, 32), (9, 9), (8, 48)}


@given(st.text())
def test_io_parsers_never_raise(text: str) -> None:
    for dev, counters in cgroup_io.parse_io_stat(text).items():
        assert min(dev) >= 0 and min(counters.fields()) >= 0
    for dev, ops in cgroup_io.parse_rwstat(text).items():
        assert min(dev) >= 0 and min(ops.values()) >= 0


def test_odd_numbers_are_garbage() -> None:
    big = "9" * 5000  # more digits than int() takes
    assert cgroup_io.parse_io_stat(f"8:0 rbytes=\u00b2 wbytes={big} rios=-1 wios=+2\n") == {
        (8, 0): DiskCounters()}
    assert cgroup_io.parse_rwstat(f"8:0 Read \u00b2\n{big}:0 Read 1\n8:0 Write -1\n") == {}


def test_rwstat_skips_garbage() -> None:
    assert cgroup_io.parse_rwstat("8:0 Read 5\n8:0 Write x\nTotal 5\n8:0 Read\n") == {
        (8, 0): {"Read": 5}}
    assert cgroup_io.parse_rwstat(None) == {}


def test_read_io_v2(tmp_path: Path) -> None:
    layout, _ = v2_tree(tmp_path)
    io = cgroup_io.read_io(container(layout, v2="/kubepods/pod1").cgroups)
    assert io is not None
    assert (253, 0) not in io  # all zero
    assert io[(254, 0)].write_bytes == 64 << 20


def test_read_io_v2_root_or_no_io_controller_is_none(tmp_path: Path) -> None:
    layout, ctr = v2_tree(tmp_path)
    assert cgroup_io.read_io(container(layout, v2="/").cgroups) is None
    (ctr.parent / "other").mkdir()
    assert cgroup_io.read_io(container(layout, v2="/kubepods/other").cgroups) is None
    no_io = CgroupLayout(v2=layout.v2, v2_controllers=frozenset({"memory"}))
    assert cgroup_io.read_io(container(no_io, v2="/kubepods/pod1").cgroups) is None


def test_read_io_vanished_cgroup(tmp_path: Path) -> None:
    layout, _ = v2_tree(tmp_path)
    with pytest.raises(CgroupGone):
        cgroup_io.read_io(container(layout, v2="/kubepods/gone").cgroups)


def test_read_io_v1_throttle_and_bfq(tmp_path: Path) -> None:
    layout, _, _ = v1_tree(tmp_path)
    io = cgroup_io.read_io(container(layout, {"blkio": "/ctr"}, "/ctr").cgroups)
    assert io == {
        (254, 0): DiskCounters(reads=3, read_bytes=94208, writes=128, write_bytes=64 << 20),
        (8, 16): DiskCounters(reads=2, read_merges=1, read_bytes=8192, read_ms=7,
                              writes=1, write_merges=3, write_bytes=4096, write_ms=8,
                              io_ms=12, weighted_ms=15),
    }


def test_v1_scheduler_files_win_over_throttle() -> None:
    files = {
        "blkio.throttle.io_serviced": {(8, 0): {"Read": 9, "Write": 9}},
        "blkio.throttle.io_service_bytes": {(8, 0): {"Read": 9 * 4096, "Write": 9 * 4096}},
        "blkio.io_serviced": {(8, 0): {"Read": 1, "Write": 2}},  # CFQ
        "blkio.io_service_bytes": {(8, 0): {"Read": 4096, "Write": 8192, "Discard": 1024}},
    }
    assert cgroup_io.combine_v1(files) == {
        (8, 0): DiskCounters(reads=1, read_bytes=4096, writes=2, write_bytes=8192,
                             discard_bytes=1024)}


# The files


def test_diskstats_v2_named_and_ordered_as_the_host(tmp_path: Path, host: HostProc) -> None:
    layout, _ = v2_tree(tmp_path)
    out = IoFiles(host).diskstats(container(layout, v2="/kubepods/pod1")).decode()
    assert out == (
        "   8       0 sda 1 0 8 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
        " 254       0 vda 10 0 2048 0 128 0 131072 0 0 0 0 1 0 8 0 0 0\n"
        "   8      32 sdc 1 0 1 0 2 0 2 0 0 0 0 0 0 0 0 0 0\n"
        "   8      48 sdd 0 0 0 0 1 0 1 0 0 0 0 0 0 0 0 0 0\n"
    )  # 253:0 untouched and 9:9 missing from the host are left out


def test_diskstats_columns_follow_the_host(tmp_path: Path, host: HostProc) -> None:
    layout, _ = v2_tree(tmp_path)
    write(Path(host.proc_root) / "diskstats", " 254       0 vda 1 2 3 4 5 6 7 8 9 10 11\n")
    out = IoFiles(host).diskstats(container(layout, v2="/kubepods/pod1")).decode()
    assert out.splitlines()[0] == " 254       0 vda 10 0 2048 0 128 0 131072 0 0 0 0"


def test_diskstats_v1(tmp_path: Path, host: HostProc) -> None:
    layout, _, _ = v1_tree(tmp_path)
    write(Path(host.proc_root) / "diskstats", HOST_DISKSTATS + "   8      16 sdb 0 0 0 0\n")
    out = IoFiles(host).diskstats(container(layout, {"blkio": "/ctr"}, "/ctr")).decode()
    assert out == (
        " 254       0 vda 3 0 184 0 128 0 131072 0 0 0 0 0 0 0 0 0 0\n"
        "   8      16 sdb 2 1 16 7 1 3 8 8 0 12 15 0 0 0 0 0 0\n"
    )


def test_diskstats_without_a_cgroup_of_its_own_is_the_hosts(tmp_path: Path,
                                                           host: HostProc) -> None:
    layout, _, _ = v1_tree(tmp_path)
    views = IoFiles(host)
    assert views.diskstats(container(layout, {"blkio": "/"}, "/")) == HOST_DISKSTATS.encode()
    assert views.diskstats(container(layout, {}, None)) == HOST_DISKSTATS.encode()


def test_pressure_v2_own_files(tmp_path: Path, host: HostProc) -> None:
    layout, ctr = v2_tree(tmp_path)
    c = container(layout, v2="/kubepods/pod1")
    views = IoFiles(host)
    assert views.pressure("memory")(c) == (ctr / "memory.pressure").read_bytes()
    assert views.pressure("cpu")(c) == (ctr / "cpu.pressure").read_bytes()
    with pytest.raises(Malformed):
        views.pressure("io")(c)


def test_pressure_falls_back_to_the_host(tmp_path: Path, host: HostProc) -> None:
    layout, _ = v2_tree(tmp_path)
    views = IoFiles(host)
    # The v2 root, a cgroup with PSI switched off (no files), no v2 path at all.
    for c in (container(layout, v2="/"), container(layout, v2="/kubepods"),
              container(layout, v2=None)):
        assert views.pressure("cpu")(c) == HOST_PSI.replace("456", "cpu").encode()


def test_pressure_on_a_hybrid_host(tmp_path: Path, host: HostProc) -> None:
    layout, _, _ = v1_tree(tmp_path)
    own = "some avg10=0.90 avg60=0.16 avg300=0.03 total=185528\n" \
          "full avg10=0.90 avg60=0.16 avg300=0.03 total=185110\n"
    write(tmp_path / "cgroup" / "unified" / "ctr" / "memory.pressure", own)
    c = container(layout, {"memory": "/ctr", "blkio": "/ctr"}, "/ctr")
    assert IoFiles(host).pressure("memory")(c) == own.encode()


async def test_garbled_pressure_is_never_answered_with_the_hosts_file(
        tmp_path: Path, host: HostProc) -> None:
    """A container whose pressure file cannot be parsed gets its last good rendering, or an
    error when it had none: never the host's PSI."""
    layout, ctr = v2_tree(tmp_path)
    views = IoFiles(host)
    node = OverlayNode("proc/pressure/io", views.pressure("io"),
                       views.host.proc_file("pressure/io"), last_good=LastGood())
    c = container(layout, v2="/kubepods/pod1")
    f = await node.open(Caller(4242, 0, 0, c), os.O_RDONLY)
    with pytest.raises(Malformed):  # rendered at the first read, as the kernel's seq files
        await f.read(0, 4096)
    good = "some avg10=1.00 avg60=0.00 avg300=0.00 total=9\n" \
           "full avg10=0.00 avg60=0.00 avg300=0.00 total=1\n"
    (ctr / "io.pressure").write_text(good)
    f = await node.open(Caller(4242, 0, 0, c), os.O_RDONLY)
    assert await f.read(0, 4096) == good.encode()
    (ctr / "io.pressure").write_text("garbage\n")
    f = await node.open(Caller(4242, 0, 0, c), os.O_RDONLY)
    assert await f.read(0, 4096) == good.encode()


def test_slabinfo(tmp_path: Path, host: HostProc) -> None:
    layout, _, mem = v1_tree(tmp_path)
    views = IoFiles(host)
    c = container(layout, {"memory": "/ctr"}, "/ctr")
    assert views.slabinfo(c) == HOST_SLAB.encode()  # empty file: kernels >= 5.9
    own = "kmalloc-64 2048 2048 64 64 1 : tunables 0 0 0 : slabdata 32 32 0\n"
    write(mem / "memory.kmem.slabinfo", own)
    assert views.slabinfo(c).decode().endswith(own)
    assert views.slabinfo(c).startswith(b"slabinfo - version: 2.1\n")
    v2_layout, _ = v2_tree(tmp_path / "v2")
    assert views.slabinfo(container(v2_layout, v2="/kubepods/pod1")) == HOST_SLAB.encode()


def services(tmp_path: Path, host: HostProc) -> Services:
    v2_tree(tmp_path)
    config = Config(proc_root=host.proc_root, sys_root=host.sys_root,
                    cgroup_root=str(tmp_path / "cgroup"))
    return Services.build(config)


def test_nodes(tmp_path: Path, host: HostProc) -> None:
    s = services(tmp_path, host)
    io = ("proc/diskstats", "proc/slabinfo", "proc/pressure/")
    nodes = {n.path: n for n in all_nodes(s) if n.path.startswith(io)}
    assert set(nodes) == {"proc/diskstats", "proc/slabinfo", "proc/pressure/cpu",
                          "proc/pressure/memory", "proc/pressure/io"}
    assert nodes["proc/slabinfo"].mode == 0o400  # as the kernel's: root only
    for p in Path(host.proc_root, "pressure").iterdir():
        p.unlink()
    Path(host.proc_root, "pressure").rmdir()  # a kernel without PSI: no pressure files
    assert {n.path for n in all_nodes(s) if n.path.startswith(io)} == {"proc/diskstats",
                                                                     "proc/slabinfo"}


def test_absent_v1_files_are_probed_once_per_ttl(tmp_path: Path, host: HostProc) -> None:
    layout, blk, _ = v1_tree(tmp_path)
    write(Path(host.proc_root) / "diskstats", HOST_DISKSTATS + "   8      16 sdb 0 0 0 0\n")
    clock = ManualClock(100.0)
    absent = cgroup_io.AbsentFiles(ttl=10.0, clock=clock)
    views = IoFiles(host, absent=absent)
    a = container(layout, {"blkio": "/ctr"}, "/ctr")
    first = views.diskstats(a)
    # The kernel "gains" CFQ's file (a scheduler loaded): unseen until the ttl has passed.
    (blk / "blkio.io_serviced_recursive").write_text("8:16 Read 40\n8:16 Write 2\n")
    (blk / "blkio.io_service_bytes_recursive").write_text("8:16 Read 80\n8:16 Write 4\n")
    clock.now += 9.0
    assert views.diskstats(a) == first
    clock.now += 1.5
    assert b" sdb 40 " in views.diskstats(a)


def test_a_vanished_cgroup_says_nothing_about_the_kernels_files(tmp_path: Path,
                                                               host: HostProc) -> None:
    layout, blk, _ = v1_tree(tmp_path)
    write(Path(host.proc_root) / "diskstats", HOST_DISKSTATS + "   8      16 sdb 0 0 0 0\n")
    absent = cgroup_io.AbsentFiles(ttl=10.0, clock=ManualClock(100.0))
    gone = container(layout, {"blkio": "/gone"}, "/gone")
    assert absent.read(str(blk.parent / "gone"), "blkio.bfq.io_serviced_recursive") is None
    views = IoFiles(host, absent=absent)
    with pytest.raises(CgroupGone):
        views.diskstats(gone)
    # the BFQ file was never marked absent: a live container still gets its counters
    assert b" sdb 2 1 16 " in views.diskstats(container(layout, {"blkio": "/ctr"}, "/ctr"))


def test_host_diskstats_and_stat_are_read_once_per_host_ttl(tmp_path: Path,
                                                            host: HostProc) -> None:
    layout, _, _ = v1_tree(tmp_path)
    clock = ManualClock(100.0)
    views = HostFiles(host, clock=clock)
    io = IoFiles(host, views.recent_text)
    a = container(layout, {"blkio": "/ctr"}, "/ctr")
    first = io.diskstats(a)
    write(Path(host.proc_root) / "diskstats", HOST_DISKSTATS.replace("vda", "vdz"))
    assert io.diskstats(a) == first  # many containers at once: one reading of the host's
    clock.now += Staleness().host_files
    assert b" vdz " in io.diskstats(a)
