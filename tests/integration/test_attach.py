"""Issue 6: `procfs attach` / `procfs detach` on a process started with unshare."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator

import pytest

from procfs.attach.attach import served_files
from procfs.attach.errors import ExitCode
from procfs.attach.state import StateFile
from procfs.config import FSTYPE
from procfs.fuse.tree import normal
from procfs.server.shards import served_by
from procfs.sources.mountinfo import parse_mountinfo
from tests.integration.cli import free_total, procfs
from tests.support.sandbox import Cgroup, Limits, Sandbox, Server

MIB = 1 << 20
HOST_TOTAL = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def binds(pid: int) -> dict[str, int]:
    """procfs binds at their twins in pid's mount namespace: path → number of layers."""
    with open(f"/proc/{pid}/mountinfo") as f:
        entries = parse_mountinfo(f.read())
    out: dict[str, int] = {}
    for e in entries:
        if e.fstype == FSTYPE and e.root != "/" and e.mountpoint == normal(e.root):
            out[e.mountpoint] = out.get(e.mountpoint, 0) + 1
    return out


@pytest.fixture
def bare(make_cgroup: Callable[..., Cgroup]) -> Iterator[Sandbox]:
    """An unshare'd init (pid + mount namespaces) in a 256 MiB, CPU-0 cgroup, nothing bound."""
    cg = make_cgroup(Limits(memory=256 * MIB, cpus="0"))
    with Sandbox(cg, None) as sb:
        yield sb


def attach(sb: Sandbox, mount: str, state: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return procfs("attach", str(sb.pid), "--mount", mount, "--state", state, *extra)


def test_attach_gives_the_container_its_view(bare: Sandbox, server: Server,
                                             state_path: str) -> None:
    assert free_total(bare) == HOST_TOTAL  # nothing bound yet
    r = attach(bare, server.mountpoint, state_path)
    assert r.returncode == ExitCode.OK, r.stderr
    assert r.stdout.startswith(f"attached {len(served_files(server.mountpoint))} files")
    assert free_total(bare) == 268435456
    assert bare.sh("getconf _NPROCESSORS_ONLN").strip() == "1"
    assert bare.sh("grep -c ^processor /proc/cpuinfo").strip() == "1"
    if "proc/uptime" in served_files(server.mountpoint):
        assert float(bare.sh("cat /proc/uptime").split()[0]) < 30
    entry = StateFile(state_path).find(bare.pid)
    assert entry is not None
    assert entry.mntns == os.stat(f"/proc/{bare.pid}/ns/mnt").st_ino
    assert entry.pidns == os.stat(f"/proc/{bare.pid}/ns/pid").st_ino
    assert entry.mountpoint in served_by(server.mountpoint)  # its own mount or a shard's
    assert set(entry.files) == {p.lstrip("/") for p in binds(bare.pid)}


def test_attach_twice_is_one_layer_and_detach_undoes_it(bare: Sandbox, server: Server,
                                                        state_path: str) -> None:
    assert attach(bare, server.mountpoint, state_path).returncode == 0
    again = attach(bare, server.mountpoint, state_path)
    assert again.returncode == ExitCode.OK, again.stderr
    assert "already attached" in again.stdout
    layers = binds(bare.pid)
    assert layers and set(layers.values()) == {1}
    assert "/proc/meminfo" in layers
    assert len(StateFile(state_path).live()) == 1

    r = procfs("detach", str(bare.pid), "--mount", server.mountpoint, "--state", state_path)
    assert r.returncode == ExitCode.OK, r.stderr
    assert binds(bare.pid) == {}
    assert free_total(bare) == HOST_TOTAL
    assert StateFile(state_path).find(bare.pid) is None


def test_attach_to_an_exited_pid(server: Server, state_path: str) -> None:
    p = subprocess.Popen(["true"])
    p.wait()
    r = procfs("attach", str(p.pid), "--mount", server.mountpoint, "--state", state_path)
    assert r.returncode == ExitCode.NO_PROCESS
    assert r.stderr.strip() == f"procfs attach: no process {p.pid}"
    assert not os.path.exists(state_path)


def test_attach_with_the_server_down(bare: Sandbox, state_path: str) -> None:
    with tempfile.TemporaryDirectory(prefix="procfs-nomnt-") as empty:
        r = attach(bare, empty, state_path)
    assert r.returncode == ExitCode.NO_SERVER
    assert r.stderr.strip() == f"procfs attach: no procfs server mounted at {empty}"
    assert binds(bare.pid) == {}


def test_reattach_replaces_a_dead_servers_layers(bare: Sandbox, state_path: str) -> None:
    with tempfile.TemporaryDirectory(prefix="procfs-mnt-") as mount:
        first = Server(mount).start()
        try:
            assert attach(bare, mount, state_path).returncode == 0
        finally:
            first.stop()
        # the container's binds now point at a dead FUSE connection
        dead = bare.run(["cat", "/proc/meminfo"], check=False)
        assert "not connected" in dead.stderr
        with Server(mount):
            r = attach(bare, mount, state_path)
            assert r.returncode == ExitCode.OK, r.stderr
            assert "stale replaced" in r.stdout
            assert set(binds(bare.pid).values()) == {1}
            assert free_total(bare) == 268435456
            assert procfs("detach", str(bare.pid), "--state", state_path).returncode == 0


def test_a_failed_bind_rolls_back_the_others(bare: Sandbox, server: Server,
                                             state_path: str) -> None:
    cpu = "/sys/devices/system/cpu"
    if f"{cpu[1:]}/present" not in served_files(server.mountpoint):
        pytest.skip("the server does not serve cpu/present")
    # In the container's namespace only: a tmpfs where `present` is a directory.
    bare.sh(f"mount -t tmpfs none {cpu} && mkdir {cpu}/present && touch {cpu}/online")
    r = attach(bare, server.mountpoint, state_path)
    assert r.returncode == ExitCode.FAILED
    assert "present" in r.stderr
    assert binds(bare.pid) == {}
    assert free_total(bare) == HOST_TOTAL
    assert StateFile(state_path).find(bare.pid) is None


def test_state_file_is_json_the_recovery_can_read(bare: Sandbox, server: Server,
                                                  state_path: str) -> None:
    assert attach(bare, server.mountpoint, state_path).returncode == 0
    with open(state_path) as f:
        data = json.load(f)
    (entry,) = data["attached"]
    assert entry["pid"] == bare.pid
    with open(f"/proc/{bare.pid}/stat") as f:
        assert entry["start_ticks"] == int(f.read().rpartition(")")[2].split()[19])
    bare.stop()
    assert StateFile(state_path).prune() == []


def test_lxc_mount_hook(server: Server, make_cgroup: Callable[..., Cgroup],
                        state_path: str) -> None:
    """contrib/lxc/lxc.mount.hook as LXC runs it: in the container's new pid and mount
    namespaces, after its /proc, /sys and /dev are mounted under the rootfs, before the root
    changes (here a chroot), with LXC_ROOTFS_MOUNT set."""
    hook = os.path.join(os.path.dirname(__file__), "../../contrib/lxc/lxc.mount.hook")
    cg = make_cgroup(Limits(memory=256 * MIB, cpus="0"))
    with tempfile.TemporaryDirectory(prefix="procfs-lxc-") as root:
        for d in ("proc", "sys", "dev", "usr"):
            os.mkdir(os.path.join(root, d))
        for name in ("bin", "lib", "lib64", "sbin"):
            if os.path.islink("/" + name):
                os.symlink(os.readlink("/" + name), os.path.join(root, name))
        script = (f"mount --rbind /usr {root}/usr && mount -t proc proc {root}/proc && "
                  f"mount -t sysfs sysfs {root}/sys && mount -t tmpfs tmpfs {root}/dev && "
                  f"{hook} && exec chroot {root} sh -c "
                  "'free -b | grep ^Mem:; getconf _NPROCESSORS_ONLN; ls /dev/kmsg 2>&1 || :'")
        env = {**os.environ, "LXC_ROOTFS_MOUNT": root, "LXC_NAME": "t",
               "PROCFS_MOUNT": server.mountpoint, "PROCFS_STATE": state_path,
               "PROCFS": os.path.join(os.path.dirname(sys.executable), "procfs")}
        r = subprocess.run(["unshare", "--pid", "--fork", "--mount", "--propagation", "private",
                            "sh", "-ec", script], env=env, capture_output=True, text=True,
                           timeout=30, preexec_fn=lambda: cg.add(os.getpid()))
    assert r.returncode == 0, r.stderr
    mem, online = r.stdout.splitlines()[:2]
    assert int(mem.split()[1]) == 268435456 and online == "1"
    entries = StateFile(state_path).load()
    assert len(entries) == 1 and entries[0].rootfs == root
    assert "proc/meminfo" in entries[0].files
    # recorded: the container's init (pid 1 inside), not the hook's shell
    assert entries[0].pidns != os.stat("/proc/self/ns/pid").st_ino
    if "dev/kmsg" in served_files(server.mountpoint):  # created empty, then bound
        assert r.stdout.splitlines()[2] == "/dev/kmsg"
        assert "dev/kmsg" in entries[0].created


def test_sandbox_can_attach_with_procfs_attach(server: Server,
                                               make_cgroup: Callable[..., Cgroup]) -> None:
    cg = make_cgroup(Limits(memory=256 * MIB, cpus="0"))
    with Sandbox(cg, server.mountpoint, attach=True) as sb:
        assert free_total(sb) == 268435456
        assert set(binds(sb.pid).values()) == {1}
