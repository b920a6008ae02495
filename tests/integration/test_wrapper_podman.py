"""Issue 21 with podman: `podman --runtime procfs-runc run` (conmon calls the wrapper for
create and exec, podman itself for start, kill and delete) and `podman exec`, with an image
imported from a rootfs made here."""

from __future__ import annotations

import os
import resource
import tempfile
from collections.abc import Iterator

import pytest

from tests.support.sandbox import Server, unique_name

from .engines import Podman, engine_for_test
from .images import rootfs_tar_or_skip
from .runtime_support import MIB, host_time_ns

VIEW = "/usr/bin/free -b | grep ^Mem:; readlink /proc/1/ns/time; readlink /proc/self/ns/time"


def ulimits() -> list[str]:
    """podman asks runc for RLIMIT_NOFILE 1048576 and a high RLIMIT_NPROC; where the caller
    may not raise its hard limits (no CAP_SYS_RESOURCE, as here) runc cannot set them, with or
    without the wrapper. Ask for what the caller has."""
    args = []
    for name, which in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        hard = resource.getrlimit(which)[1]
        value = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
        args += ["--ulimit", f"{name}={value}:{value}"]
    return args


@pytest.fixture(scope="module")
def podman(server: Server) -> Iterator[Podman]:
    with engine_for_test(Podman, server.mountpoint) as engine:
        yield engine


@pytest.fixture(scope="module")
def image(podman: Podman) -> str:
    name = f"localhost/{unique_name('procfs-image')}:test"
    with tempfile.TemporaryDirectory(prefix="procfs-rootfs-") as d:
        podman.podman("import", rootfs_tar_or_skip(os.path.join(d, "rootfs.tar")), name)
    return name


def run_args(podman: Podman) -> list[str]:
    return ["--network", "none", "-m", "256m", "--cgroup-parent", f"/{podman.name}", *ulimits()]


def test_podman_run_and_exec(podman: Podman, image: str) -> None:
    out = podman.podman("run", "--rm", *run_args(podman), image, "sh", "-c", VIEW).stdout
    mem, init_ns, self_ns = out.splitlines()
    assert int(mem.split()[1]) == 256 * MIB
    assert init_ns == self_ns != host_time_ns()

    name = unique_name("procfs-podman")
    podman.podman("run", "-d", "--name", name, *run_args(podman), image, "sleep", "1000")
    try:
        init = int(podman.podman("inspect", "-f", "{{.State.Pid}}", name).stdout)
        mem, init_ns, self_ns = podman.podman("exec", name, "sh", "-c",
                                              VIEW).stdout.splitlines()
        assert int(mem.split()[1]) == 256 * MIB
        assert init_ns == self_ns == os.readlink(f"/proc/{init}/ns/time")
        podman.podman("stop", "-t", "1", name)
        assert podman.podman("inspect", "-f", "{{.State.Running}}", name).stdout.strip() \
            == "false"
    finally:
        podman.podman("rm", "-f", "-t", "0", name, check=False)
