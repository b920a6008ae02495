"""Issue 6 with a real runtime: `procfs oci-hook` in runc's hooks, and `docker-flags` as OCI
bind mounts (what Docker hands runc)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

from procfs.attach.attach import served_files
from procfs.attach.docker import docker_flags
from procfs.attach.oci import DISABLE_ANNOTATION
from procfs.attach.state import StateFile
from procfs.server.shards import served_by
from tests.support.sandbox import Server

from .oci_bundle import Bundle, ensure_runc, hook_command

MIB = 1 << 20
HOST_TOTAL = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
PROBE = ("free -b | grep ^Mem: | tr -s ' ' | cut -d' ' -f2; getconf _NPROCESSORS_ONLN; "
         "grep -c ^processor /proc/cpuinfo; cut -d' ' -f1 /proc/uptime")


@pytest.fixture(scope="module")
def runc() -> str:
    path = ensure_runc()
    if path is None:
        pytest.skip("runc is not installed and apt-get could not install it")
    return path


@pytest.fixture
def bundle(runc: str) -> Iterator[Bundle]:
    with Bundle(memory=256 * MIB, cpus="0") as b:
        yield b


def probe(bundle: Bundle) -> tuple[int, int, int, float]:
    r = bundle.run(["sh", "-c", PROBE])
    assert r.returncode == 0, r.stderr
    total, online, processors, uptime = r.stdout.split()
    return int(total), int(online), int(processors), float(uptime)


@pytest.mark.parametrize("stage", ["createRuntime", "createContainer", "prestart"])
def test_oci_hook_in_runc(stage: str, bundle: Bundle, server: Server, state_path: str) -> None:
    bundle.hook(stage, hook_command(server.mountpoint, state_path))
    total, online, processors, uptime = probe(bundle)
    assert (total, online, processors) == (268435456, 1, 1)
    if "proc/uptime" in served_files(server.mountpoint):
        assert uptime < 30
    entries = StateFile(state_path).load()
    assert [e.container_id for e in entries] == [bundle.id]
    assert entries[0].rootfs == bundle.rootfs
    assert "proc/meminfo" in entries[0].files
    assert StateFile(state_path).live() == []  # the container is gone: pruned on next write


def test_oci_hook_opt_out_by_annotation(bundle: Bundle, server: Server, state_path: str) -> None:
    bundle.config["annotations"] = {DISABLE_ANNOTATION: "true"}
    bundle.hook("createRuntime", hook_command(server.mountpoint, state_path))
    total, _, _, _ = probe(bundle)
    assert total == HOST_TOTAL
    assert not os.path.exists(state_path)


def test_oci_hook_with_the_server_down(bundle: Bundle, state_path: str) -> None:
    with tempfile.TemporaryDirectory(prefix="procfs-nomnt-") as empty:
        bundle.hook("createRuntime", hook_command(empty, state_path))
        total, _, _, _ = probe(bundle)  # the container starts, with the host's files
        assert total == HOST_TOTAL
        bundle.config["hooks"]["createRuntime"] = [hook_command(empty, state_path, "--strict")]
        r = bundle.run(["true"])
    assert r.returncode != 0  # --strict: no container without its files
    assert "no procfs server mounted" in r.stderr


def test_docker_flags_are_binds_runc_accepts(bundle: Bundle, server: Server) -> None:
    flags = docker_flags(server.mountpoint).split("\n")
    assert flags and all(f.startswith("-v ") for f in flags)
    for flag in flags:
        source, dest, mode = flag[3:].split(":")
        # from the server's mount or, with --workers auto on several CPUs, one of its shards'
        assert mode == "rw" and source in {os.path.join(m, dest[1:])
                                           for m in served_by(server.mountpoint)}
        bundle.bind(source, dest, readonly=False)
    total, online, processors, _ = probe(bundle)
    assert (total, online, processors) == (268435456, 1, 1)


def test_runc_refuses_binds_under_proc_outside_its_list(bundle: Bundle, server: Server) -> None:
    """Why docker-flags leaves out e.g. /proc/pressure/*: runc's allow-list (checkProcMount)."""
    bundle.bind(os.path.join(server.mountpoint, "proc/meminfo"), "/proc/zoneinfo",
                readonly=False)
    r = bundle.run(["true"])
    assert r.returncode != 0
    assert "/proc/zoneinfo" in r.stderr
