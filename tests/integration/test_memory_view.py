"""Issue 2 acceptance: free and glibc inside a 256 MiB, CPU-0 container; the host unchanged."""

from __future__ import annotations

import os
import subprocess

from procfs.sandbox import Limits, Server

MIB = 1 << 20


def free_total(output: str) -> int:
    line = next(line for line in output.splitlines() if line.startswith("Mem:"))
    return int(line.split()[1])


def test_free_and_cpu_count_inside(make_container, server: Server) -> None:
    sb = make_container(Limits(memory=256 * MIB, cpus="0"))
    assert free_total(sb.sh("free -b")) == 268435456
    assert sb.sh("getconf _NPROCESSORS_ONLN").strip() == "1"
    assert sb.sh("grep -c ^processor /proc/cpuinfo").strip() == "1"
    assert sb.sh("cat /sys/devices/system/cpu/online").strip() == "0"
    assert sb.sh("python3 -c 'import os; print(os.cpu_count())'").strip() == "1"


def test_host_sees_its_own_values(server: Server) -> None:
    mount = server.mountpoint
    with open(f"{mount}/proc/meminfo") as f, open("/proc/meminfo") as real:
        assert f.readline() == real.readline()
    with open(f"{mount}/proc/cpuinfo") as f, open("/proc/cpuinfo") as real:
        assert f.read().count("processor") == real.read().count("processor")
    with open(f"{mount}/sys/devices/system/cpu/online") as f:
        assert f.read() == open("/sys/devices/system/cpu/online").read()
    out = subprocess.run(["free", "-b"], capture_output=True, text=True, check=True).stdout
    assert free_total(out) == os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
