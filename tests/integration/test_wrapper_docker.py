"""Issue 21 with Docker: a dockerd of our own with `--add-runtime procfs=...`, an image imported
from a rootfs made here, `docker run --runtime procfs -m 256m --cpus 1` and `docker exec`.
Docker hands runc its default seccomp profile: the sysinfo rule must win over its allow rule."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator

import pytest

from procfs.runtime import timens
from tests.support.sandbox import Server, unique_name

from .engines import Dockerd, engine_for_test
from .images import rootfs_tar_or_skip
from .runtime_support import (
    CLOCK_PROBE,
    MIB,
    Clock,
    Listener,
    host_time_ns,
    listener,
    sysinfo_calls,
)

RUN = ["--runtime", "procfs", "--network", "none", "-m", "256m", "--cpus", "1"]
WAIT = 2.0
VIEW = ("/usr/bin/free -b | grep ^Mem:; grep -c ^processor /proc/cpuinfo; "
        "readlink /proc/1/ns/time; readlink /proc/self/ns/time; grep ^Seccomp: /proc/self/status")


@pytest.fixture(scope="module")
def notify() -> Iterator[Listener]:
    with listener() as lst:
        yield lst


@pytest.fixture(scope="module")
def dockerd(server: Server, notify: Listener) -> Iterator[Dockerd]:
    with engine_for_test(lambda env: Dockerd(env).start(), server.mountpoint,
                         notify.path) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def image(dockerd: Dockerd) -> str:
    name = unique_name("procfs-image") + ":test"
    with tempfile.TemporaryDirectory(prefix="procfs-rootfs-") as d:
        dockerd.docker("import", rootfs_tar_or_skip(os.path.join(d, "rootfs.tar")), name)
    return name


def test_docker_run_and_exec(dockerd: Dockerd, image: str, notify: Listener) -> None:
    r = dockerd.docker("run", "--rm", *RUN, image, "sh", "-c", f"{VIEW}; busybox free")
    mem, cpus, init_ns, self_ns, seccomp, *_ = r.stdout.splitlines()
    assert int(mem.split()[1]) == 256 * MIB
    assert cpus == "1"  # --cpus 1 on a host with more
    assert init_ns == self_ns != host_time_ns()
    # Docker's default profile, with the notify rule winning over its allow rule
    assert seccomp.split() == ["Seccomp:", "2"]
    assert sysinfo_calls(notify), notify.text()

    name = unique_name("procfs-docker")
    dockerd.docker("run", "-d", "--name", name, *RUN, image, "sleep", "1000")
    try:
        init = int(dockerd.docker("inspect", "-f", "{{.State.Pid}}", name).stdout)
        before = len(sysinfo_calls(notify))
        out = dockerd.docker("exec", name, "sh", "-c", f"{VIEW}; busybox free").stdout
        mem, cpus, init_ns, self_ns, seccomp, *_ = out.splitlines()
        assert int(mem.split()[1]) == 256 * MIB
        assert init_ns == self_ns == os.readlink(f"/proc/{init}/ns/time")
        assert len(sysinfo_calls(notify)) > before  # the exec'd process's sysinfo too
        # stop and rm go through the wrapper as well: runc must still know its init
        t0 = time.monotonic()
        dockerd.docker("stop", "-t", "1", name)
        assert time.monotonic() - t0 < 10
        assert dockerd.docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip() \
            == "false"
    finally:
        dockerd.docker("rm", "-f", name, check=False)


def test_docker_clock_starts_at_creation(dockerd: Dockerd, image: str) -> None:
    """The kernel's side, which the wrapper owns: the namespace's clocks are 0 at creation."""
    name = unique_name("procfs-docker")
    dockerd.docker("run", "-d", "--name", name, *RUN, image, "sleep", "1000")
    try:
        init = int(dockerd.docker("inspect", "-f", "{{.State.Pid}}", name).stdout)
        with open(f"/proc/{init}/timens_offsets") as f:
            _, boot_offset_ns = timens.parse_offsets(f.read())  # seconds and nanoseconds
        boot = time.clock_gettime(time.CLOCK_BOOTTIME)
        # (the seconds field alone is up to 1 s lower: it failed when the nanoseconds were
        # most of the second)
        assert -boot <= boot_offset_ns / 1e9 <= -boot + 30
        # the kernel's own answers inside: sysinfo(2) uptime (busybox uptime; the test
        # listener lets the call through) and an exec'd process's start time (ticks)
        out = dockerd.docker("exec", name, "sh", "-c",
                             "busybox uptime; awk '{print $22}' /proc/self/stat").stdout
        uptime, ticks = out.splitlines()
        assert " up 0 min," in uptime, uptime
        assert 0 <= int(ticks) < 30 * os.sysconf("SC_CLK_TCK")
    finally:
        dockerd.docker("rm", "-f", name, check=False)


def test_docker_ps_times(dockerd: Dockerd, image: str) -> None:
    name = unique_name("procfs-docker")
    created = time.time()
    dockerd.docker("run", "-d", "--name", name, *RUN, image, "sleep", "1000")
    try:
        time.sleep(WAIT)
        Clock.parse(dockerd.docker("exec", name, "sh", "-c", CLOCK_PROBE).stdout).check(
            created, WAIT, time.time())
    finally:
        dockerd.docker("rm", "-f", name, check=False)
