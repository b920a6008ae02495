"""Issue 21 with crun (PROCFS_RUNTIME=crun) through `procfs-runc`.

crun 1.8 refuses hybrid cgroups ("cgroups in hybrid mode not supported, drop all controllers
from cgroupv2"): on such a host every crun command runs in a private mount namespace without
the v2 mount, where crun sees plain v1. Its own "time" namespace cannot be used in 1.8.1: with a
new pid namespace it forks the container's init from the pid namespace's first process, which
then exits and takes the init with it (offsets only from the annotation run.oci.timens_offset;
linux.timeOffsets from 1.8.4). So the wrapper makes the namespace for crun as for runc.
(crun outside the namespace calls the container stopped too, unless its init started in the
namespace's first clock tick: crun skips the start-time check when the recorded start is 0.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from tests.support.sandbox import Server

from .oci_bundle import Bundle, ensure_runc
from .runtime_support import (
    CLOCK_PROBE,
    MIB,
    WRAPPER,
    Clock,
    Container,
    host_time_ns,
    listener,
    sysinfo_calls,
    wrapper_env,
)

WAIT = 2.0


def hybrid() -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == "/sys/fs/cgroup/unified" and " - cgroup2 " in line
                   for line in f)


def crun_prefix(crun: str) -> list[str]:
    """Run a command the way crun 1.8 accepts on this host."""
    if not hybrid():
        return []
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'umount /sys/fs/cgroup/unified && exec "$@"', "crun-without-cgroup2"]


@pytest.fixture(scope="module")
def crun() -> str:
    path = shutil.which("crun")
    if path is None:
        pytest.skip("crun is not installed")
    if ensure_runc() is None:  # the bundle's config comes from `runc spec`
        pytest.skip("runc is not installed")
    if not os.path.exists(WRAPPER):
        pytest.skip("procfs-runc is not installed (make setup)")
    probe = subprocess.run([*crun_prefix(path), path, "--version"], capture_output=True,
                           text=True)
    if probe.returncode != 0:
        pytest.skip(f"crun cannot run here: {probe.stderr.strip()}")
    return path


@pytest.fixture
def container(crun: str, server: Server) -> Iterator[Container]:
    with tempfile.TemporaryDirectory(prefix="procfs-state-") as d, \
            Bundle(memory=256 * MIB, cpus="0") as b:
        env = wrapper_env(server.mountpoint, state=os.path.join(d, "attached.json"),
                          PROCFS_RUNTIME=crun)
        with Container(b, [*crun_prefix(crun), WRAPPER], env) as c:
            yield c


def test_crun_view_and_exec_in_its_time_namespace(container: Container) -> None:
    container.create()
    state = container.state()
    assert state["status"] == "running"
    assert isinstance(state["pid"], int)
    init_ns = os.readlink(f"/proc/{state['pid']}/ns/time")
    assert init_ns != host_time_ns()
    out = container.exec("free -b | grep ^Mem:; getconf _NPROCESSORS_ONLN; "
                         "readlink /proc/self/ns/time")
    mem, cpus, ns = out.splitlines()
    assert (int(mem.split()[1]), int(cpus)) == (256 * MIB, 1)
    assert ns == init_ns


def test_crun_clock_from_the_kernel(container: Container) -> None:
    container.bundle.config["annotations"] = {"io.procfs.hook": "false"}
    created = container.create()
    time.sleep(WAIT)
    clock = Clock.parse(container.exec(CLOCK_PROBE))
    clock.check(created, WAIT, time.time())
    assert clock.init_ns == clock.self_ns != host_time_ns()


def test_crun_hands_sysinfo_to_the_listener(container: Container) -> None:
    with listener() as lst:
        container.env["PROCFS_SYSINFO_SOCKET"] = lst.path
        container.create()
        assert int(container.exec("busybox free | grep Mem:").split()[1]) > 0
        assert lst.fds() == 2  # crun sends the init's fd, then the exec'd process's
        assert sysinfo_calls(lst), lst.text()
