"""Issue 4 acceptance: a container's own disk I/O in /proc/diskstats (read by vmstat -d and
iostat), its own memory pressure in /proc/pressure/memory, and /proc/slabinfo."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.support.sandbox import Limits, Sandbox, Server, have

MIB = 1 << 20
SECTORS_64MIB = 64 * MIB // 512  # 131072


def backing_disk(path: Path) -> tuple[str, str] | None:
    """("MAJ:MIN", name) of the whole disk under the filesystem holding `path`, or None when it
    is not on a block device (tmpfs, overlayfs)."""
    st = os.stat(path)
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    sysdir = Path("/sys/dev/block", dev)
    if not sysdir.exists():
        return None
    sysdir = sysdir.resolve()
    if (sysdir / "partition").exists():  # I/O is accounted to the whole disk
        sysdir = sysdir.parent
    uevent = dict(line.split("=", 1) for line in (sysdir / "uevent").read_text().splitlines()
                  if "=" in line)
    return f"{uevent['MAJOR']}:{uevent['MINOR']}", uevent["DEVNAME"]


def sectors_written(diskstats: str, name: str) -> int:
    """Field 7 (sectors written) of `name`'s line; 0 when the device is not listed."""
    for line in diskstats.splitlines():
        parts = line.split()
        if len(parts) >= 14 and parts[2] == name:
            return int(parts[9])
    return 0


def test_diskstats_counts_the_containers_own_writes(make_container, tmp_path: Path) -> None:
    disk = backing_disk(tmp_path)
    if disk is None:
        pytest.skip(f"{tmp_path} is not on a block device")
    dev, name = disk
    # A generous throttle rule, as a runtime sets for --device-write-bps: v1 blkio counts
    # only while the cgroup has one.
    limits = Limits(write_bps={dev: 1 << 30})
    writer, sibling = make_container(limits), make_container(limits)
    before = sectors_written(writer.sh("cat /proc/diskstats"), name)
    sibling_before = sectors_written(sibling.sh("cat /proc/diskstats"), name)
    target = tmp_path / "dd.out"
    try:
        writer.run(["dd", "if=/dev/zero", f"of={target}", "bs=1M", "count=64", "oflag=direct"])
    finally:
        target.unlink(missing_ok=True)
    inside = writer.sh("cat /proc/diskstats")
    after = sectors_written(inside, name)
    sibling_after = sectors_written(sibling.sh("cat /proc/diskstats"), name)
    print(f"{name} sectors written: writer {before} -> {after}, "
          f"sibling {sibling_before} -> {sibling_after}\n{inside}")
    assert after - before >= SECTORS_64MIB, inside
    assert sibling_after == sibling_before
    with open("/proc/diskstats") as f:  # the container's counters, not the host's
        assert after < sectors_written(f.read(), name)
    # Each line has as many columns as the host kernel prints.
    with open("/proc/diskstats") as f:
        host_columns = len(f.readline().split())
    assert {len(line.split()) for line in inside.splitlines()} == {host_columns}

    # procps and sysstat parse it.
    vmstat = writer.run(["vmstat", "-d"])
    row = next(line.split() for line in vmstat.stdout.splitlines() if line.startswith(name))
    assert int(row[7]) == after  # writes: total merged sectors ms
    if have("iostat"):
        iostat = writer.run(["iostat", "-d", "-k", name])
        assert any(line.startswith(name) for line in iostat.stdout.splitlines()), iostat.stdout


def pressure(sb: Sandbox, kind: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for line in sb.sh(f"cat /proc/pressure/{kind}").splitlines():
        what, *pairs = line.split()
        out[what] = {k: float(v) for k, v in (p.split("=") for p in pairs)}
    return out


def test_memory_pressure_is_the_containers(make_container) -> None:
    if not os.path.exists("/proc/pressure/memory"):
        pytest.skip("the kernel has no PSI")
    if not have("stress-ng"):
        pytest.skip("needs stress-ng")
    squeezed = make_container(Limits(memory=64 * MIB))
    idle = make_container()
    assert squeezed.cgroup is not None and idle.cgroup is not None
    if "unified" not in squeezed.cgroup.dirs:
        pytest.skip("no v2 hierarchy: PSI per cgroup is not available")
    # Near its limit, the worker keeps reclaiming (its exit status may tell of an OOM kill).
    squeezed.run(["stress-ng", "--vm", "1", "--vm-bytes", "60M", "--timeout", "3s", "--quiet"],
                 timeout=30, check=False)
    hot, cold = pressure(squeezed, "memory"), pressure(idle, "memory")
    own = Path(squeezed.cgroup.dirs["unified"], "memory.pressure").read_text()
    print("squeezed:", hot, "idle:", cold)
    assert hot["some"]["total"] > 0 and hot["full"]["total"] > 0
    assert float(own.split()[4].split("=")[1]) >= hot["some"]["total"]  # the cgroup's file
    assert cold["some"]["total"] == 0 and cold["some"]["avg10"] == 0
    for kind in ("cpu", "io"):  # well-formed for every kind
        assert set(pressure(idle, kind)) <= {"some", "full"}


def test_host_and_slabinfo(make_container, server: Server) -> None:
    mount = server.mountpoint
    with open(f"{mount}/proc/diskstats") as f, open("/proc/diskstats") as real:
        assert [line.split()[:3] for line in f] == [line.split()[:3] for line in real]
    if os.path.exists("/proc/pressure/cpu"):
        with open(f"{mount}/proc/pressure/cpu") as f:
            assert f.read().startswith("some avg10=")
    assert stat.S_IMODE(os.stat(f"{mount}/proc/slabinfo").st_mode) == 0o400
    sb = make_container()
    # No per-cgroup slab caches on this kernel (memory.kmem.slabinfo is empty since 5.9, and
    # absent on v2): the host's file, header first.
    assert sb.sh("head -1 /proc/slabinfo").strip() == "slabinfo - version: 2.1"
