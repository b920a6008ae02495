"""Issue 21 with containerd: a containerd of our own, an OCI image archive made here
(`ctr image import`), `ctr run --runc-binary procfs-runc` (the runc v2 shim's BinaryName, which
the CRI's `options.BinaryName` sets too) with containerd's default seccomp profile, and
`ctr task exec`."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator

import pytest

from tests.support.sandbox import Server, unique_name

from .engines import Containerd, engine_for_test
from .images import oci_archive, rootfs_tar_or_skip
from .runtime_support import (
    MIB,
    Listener,
    host_time_ns,
    listener,
    sysinfo_calls,
)

VIEW = ("/usr/bin/free -b | grep ^Mem:; readlink /proc/1/ns/time; readlink /proc/self/ns/time; "
        "grep ^Seccomp: /proc/self/status; busybox free >/dev/null")


@pytest.fixture(scope="module")
def notify() -> Iterator[Listener]:
    with listener() as lst:
        yield lst


@pytest.fixture(scope="module")
def containerd(server: Server, notify: Listener) -> Iterator[Containerd]:
    with engine_for_test(lambda env: Containerd(env).start(), server.mountpoint,
                         notify.path) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def image(containerd: Containerd) -> str:
    name = f"docker.io/library/{unique_name('procfs-image')}:test"
    with tempfile.TemporaryDirectory(prefix="procfs-rootfs-") as d:
        layer = rootfs_tar_or_skip(os.path.join(d, "rootfs.tar"))
        containerd.ctr("image", "import", oci_archive(layer, os.path.join(d, "oci.tar"), name))
    return name


def run_args(containerd: Containerd) -> list[str]:
    return ["--runc-binary", containerd.runtime, "--memory-limit", str(256 * MIB), "--seccomp"]


def test_ctr_run(containerd: Containerd, image: str, notify: Listener) -> None:
    before = len(sysinfo_calls(notify))
    r = containerd.ctr("run", "--rm", *run_args(containerd), image, unique_name("procfs-ctr"),
                       "sh", "-c", VIEW)
    mem, init_ns, self_ns, seccomp = r.stdout.splitlines()
    assert int(mem.split()[1]) == 256 * MIB
    assert init_ns == self_ns != host_time_ns()
    assert seccomp.split() == ["Seccomp:", "2"]  # containerd's default profile (--seccomp)
    assert len(sysinfo_calls(notify)) > before


def test_ctr_task_exec(containerd: Containerd, image: str, notify: Listener) -> None:
    cid = unique_name("procfs-ctr")
    containerd.ctr("run", "-d", *run_args(containerd), image, cid, "sleep", "1000")
    try:
        init = int(containerd.ctr("tasks", "ls").stdout.split(cid)[1].split()[0])
        before = len(sysinfo_calls(notify))
        out = containerd.ctr("tasks", "exec", "--exec-id", "probe", cid, "sh", "-c",
                             VIEW).stdout
        mem, init_ns, self_ns, _ = out.splitlines()
        assert int(mem.split()[1]) == 256 * MIB
        assert init_ns == self_ns == os.readlink(f"/proc/{init}/ns/time") != host_time_ns()
        assert len(sysinfo_calls(notify)) > before
        containerd.ctr("tasks", "kill", "-s", "KILL", cid)  # through the wrapper
        deadline = time.monotonic() + 10
        while "STOPPED" not in containerd.ctr("tasks", "ls").stdout:
            assert time.monotonic() < deadline, containerd.ctr("tasks", "ls").stdout
            time.sleep(0.1)
    finally:
        containerd.ctr("tasks", "rm", "-f", cid, check=False)
        containerd.ctr("containers", "rm", cid, check=False)
