"""Issue 22: `procfs oci-hook` under crun. crun runs a createContainer hook inside the container
(its pid and mount namespaces, before pivot_root) and passes `"pid": 0`: the hook attaches the
init of its own pid namespace.

crun refuses a hybrid cgroup host ("cgroups in hybrid mode not supported") while the empty v2
hierarchy is mounted: here it runs in a mount namespace of its own without that mount."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from procfs.attach.state import StateFile
from procfs.sources.cgroups import CgroupLayout
from tests.support.sandbox import Server

from .oci_bundle import Bundle, hook_command

MIB = 1 << 20
HOST_TOTAL = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
PROBE = "head -1 /proc/meminfo; getconf _NPROCESSORS_ONLN; grep -c ^processor /proc/cpuinfo"

HIDE_V2 = """#!/bin/sh
exec unshare --mount --propagation private sh -c \
    'umount -l {v2} 2>/dev/null; exec crun "$@"' crun "$@"
"""


@pytest.fixture(scope="module")
def crun() -> Iterator[str]:
    """crun, or a wrapper that runs it without the v2 mount of a hybrid host."""
    if shutil.which("crun") is None:
        pytest.skip("crun is not installed")
    layout = CgroupLayout.from_mountinfo()
    hybrid = layout.v2 is not None and bool(layout.v1)
    with tempfile.TemporaryDirectory(prefix="procfs-crun-") as d:
        runtime = "crun"
        if hybrid:
            assert layout.v2 is not None
            runtime = os.path.join(d, "crun")
            with open(runtime, "w") as f:
                f.write(HIDE_V2.format(v2=layout.v2.mountpoint))
            os.chmod(runtime, 0o755)
        with Bundle(runtime=runtime) as probe:
            r = probe.run(["true"])
        if r.returncode != 0:
            pytest.skip(f"crun cannot run a container here: {r.stderr.strip()}")
        yield runtime


@pytest.mark.parametrize("stage", ["createContainer", "createRuntime"])
def test_oci_hook_in_crun(stage: str, crun: str, server: Server, state_path: str) -> None:
    with Bundle(runtime=crun, memory=256 * MIB, cpus="0") as bundle:
        bundle.hook(stage, hook_command(server.mountpoint, state_path, "--strict"))
        r = bundle.run(["sh", "-c", PROBE])
        assert r.returncode == 0, r.stderr
        meminfo, online, processors = r.stdout.splitlines()
        assert meminfo.split()[1] == str(256 * 1024)
        assert (online, processors) == ("1", "1")
        entries = StateFile(state_path).load()
        assert [e.container_id for e in entries] == [bundle.id]
        assert entries[0].rootfs == bundle.rootfs


def test_pid_0_outside_a_container_is_refused(server: Server, state_path: str) -> None:
    """The same state on the host (not in a child pid namespace): nothing to attach to."""
    with tempfile.TemporaryDirectory(prefix="procfs-bundle-") as bundle:
        with open(os.path.join(bundle, "config.json"), "w") as f:
            f.write('{"root": {"path": "rootfs"}}')
        state = f'{{"id": "x", "pid": 0, "bundle": "{bundle}"}}'
        argv = hook_command(server.mountpoint, state_path, "--strict")["args"]
        r = subprocess.run(argv, input=state, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "pid 0" in r.stderr
    assert not os.path.exists(state_path)
