"""Issue 22: after `make install` (and nothing else), every runtime path works as shipped.

The module's machine is a `HostView`: a mount namespace where /usr, /etc, /var/lib and /run are
overlays of this host's, so `make install` runs with its defaults (PREFIX=/usr/local, the OCI
hook in /usr/share/containers/oci/hooks.d, the LXC snippet in common.conf.d) and the server
serves /var/lib/procfs as the installed systemd unit starts it, without touching the machine.
In it, as docs/install.md says:
- podman, with its default hooks directory: a container's `free` shows its memory limit;
- LXC, a busybox container given the snippet with `lxc.include`: its /proc/meminfo;
- runc with the installed hook (path and arguments from the hooks.d file);
- Docker with `docker run $(procfs docker-flags)`, and compose with the `--compose` file;
- `systemd-analyze verify` of the installed units; the keeper's unit outlives the server's;
- `make uninstall` leaves nothing behind (the last test).

Host-specific flags, not procfs's: podman runs runc (crun refuses this hybrid cgroup host) with
lowered ulimits (this sandbox lacks CAP_SYS_RESOURCE, and podman's defaults raise them); every
container runs without a network (no bridge here); the runtimes put their cgroups under one of
the view's own (removed with it), LXC's container gets `lxc.net.0.type = empty`.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from procfs.sources.cgroups import CgroupLayout

from .hostview import REPO, HostView, Unavailable
from .images import rootfs_tar
from .oci_bundle import Bundle

MIB = 1 << 20
LIMIT = 256 * MIB
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # a fresh root shell's
MOUNT = "/var/lib/procfs"
UNIT = "/usr/local/lib/systemd/system/procfs.service"
KEEPER_UNIT = "/usr/local/lib/systemd/system/procfs-keeper.service"
HOOK = "/usr/share/containers/oci/hooks.d/procfs.json"
LXC_SNIPPET = "/usr/share/lxc/config/common.conf.d/00-procfs.conf"
MANIFEST = "/usr/local/share/procfs/install-manifest.txt"
DOCKER = "/usr/bin/docker"  # Debian's client (20.10), as dockerd


@dataclass
class Installed:
    host: HostView
    server: subprocess.Popen[bytes] | None
    log: str
    image_tar: str
    keeper: subprocess.Popen[bytes] | None = None

    def start_server(self) -> None:
        """As the installed unit starts it (systemd is not pid 1 here)."""
        pre, start = unit_commands(self.host.read(UNIT))
        for argv in pre:
            self.host.run(argv)
        with open(self.log, "ab") as out:
            self.server = self.host.popen(start, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL,
                                          env={**os.environ, "PATH": PATH})
        server = self.server
        # the DaemonSet's probe: the control socket answers
        wait_for(lambda: server.poll() is not None or self.sh(f"procfs stats {MOUNT}")
                 .returncode == 0, 30, lambda: "the server did not answer:\n"
                 + self.server_log())
        assert server.poll() is None, self.server_log()

    def sysinfo(self) -> dict[str, Any]:
        """The server's sysinfo stats (its control socket, in the view's /run)."""
        r = self.sh("/usr/local/lib/procfs/bin/python -c 'import json; from procfs.server."
                    "control import request, socket_path; print(json.dumps(request("
                    f"socket_path(\"{MOUNT}\", \"/run/procfs\"), \"sysinfo\")))'")
        assert r.returncode == 0, r.stderr
        found: dict[str, Any] = json.loads(r.stdout)
        return found

    def sh(self, script: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.host.sh(f"export PATH={PATH}; {script}", **kw)

    def server_log(self) -> str:
        return read(self.log)

    def stop_server(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        self.server = None


def unit_commands(text: str) -> tuple[list[list[str]], list[str]]:
    """ExecStartPre lines (their `-` dropped) and ExecStart of a unit, as argv lists."""
    pre, start = [], []
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "ExecStartPre":
            pre.append(shlex.split(value.lstrip("-")))
        elif key == "ExecStart":
            start = shlex.split(value)
    return pre, start


def wait_for(check: Callable[[], bool], timeout: float, why: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(why())
        time.sleep(0.1)


def read(path: str) -> str:
    with open(path, errors="replace") as f:
        return f.read()


def need(*programs: str) -> None:
    for p in programs:
        if shutil.which(p) is None:
            pytest.skip(f"{p} is not installed")


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    need("unshare", "nsenter", "make")
    try:
        host = HostView().__enter__()
    except Unavailable as e:
        pytest.skip(str(e))
    with host:
        done = host.sh(f"export PATH={PATH}; make -C {REPO} install", timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        log = os.path.join(host.dir, "server.log")
        it = Installed(host, None, log, rootfs_tar(os.path.join(host.dir, "rootfs.tar")))
        try:
            # Started as the installed units say (systemd is not pid 1 here): the keeper of
            # the sysinfo listeners first (procfs.service wants it, after it), then the server.
            _, keeper = unit_commands(host.read(KEEPER_UNIT))
            with open(os.path.join(host.dir, "keeper.log"), "wb") as out:
                it.keeper = host.popen(keeper, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env={**os.environ, "PATH": PATH})
            it.start_server()
            yield it
        finally:
            it.stop_server()
            if it.keeper is not None:
                it.keeper.kill()  # no listener to drain: nothing ran procfs-runc here
                it.keeper.wait()


def mem_total(free_output: str) -> int:
    (line,) = [x for x in free_output.splitlines() if x.startswith("Mem:")]
    return int(line.split()[1])


def test_installed_paths(installed: Installed) -> None:
    host = installed.host
    assert os.readlink(f"/proc/{host.pid}/root/usr/local/bin/procfs") == \
        "/usr/local/lib/procfs/bin/procfs"
    hook = json.loads(host.read(HOOK))
    assert hook["hook"]["path"] == "/usr/local/bin/procfs"
    assert hook["hook"]["args"][1:] == ["oci-hook", "--mount", MOUNT]
    assert "lxc.hook.mount = /usr/local/share/procfs/lxc.mount.hook" in host.read(LXC_SNIPPET)
    assert host.exists("/usr/local/share/doc/procfs/install.md")
    # runs from the environment of its own, not from this checkout
    r = installed.sh("procfs attach --help >/dev/null && head -1 /usr/local/lib/procfs/bin/procfs")
    assert r.returncode == 0 and r.stdout.strip() == "#!/usr/local/lib/procfs/bin/python"
    r = installed.sh("/usr/local/lib/procfs/bin/python -c 'import procfs; print(procfs.__file__)'")
    assert r.stdout.startswith("/usr/local/lib/procfs/lib/"), r.stdout + r.stderr


def test_systemd_unit_verifies(installed: Installed) -> None:
    need("systemd-analyze")
    for unit in (UNIT, KEEPER_UNIT):
        r = installed.sh(f"systemd-analyze verify {unit}")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "procfs" not in r.stdout + r.stderr
        for line in installed.host.read(unit).splitlines():
            if line.startswith("Documentation=file://"):
                assert installed.host.exists(line.removeprefix("Documentation=file://"))


def test_the_keeper_unit_outlives_the_servers(installed: Installed) -> None:
    """The containers' sysinfo listeners are held by procfs-keeper.service's process, not by
    one the server starts in its own unit, whose stop or restart (KillMode) would end it and
    leave every procfs-runc container's sysinfo(2) failing with ENOSYS."""
    keeper = installed.keeper
    assert keeper is not None and keeper.poll() is None, read(installed.log)
    wait_for(lambda: installed.sysinfo()["keeper_pid"] == keeper.pid, 15,
             lambda: f"the server took no listeners from the keeper unit's {keeper.pid}: "
             f"{installed.sysinfo()}\n{installed.server_log()}")
    server = installed.server
    assert server is not None
    server.kill()  # as systemd ends the server's unit: everything in it, the keeper not
    server.wait()
    installed.start_server()  # Restart=on-failure
    assert keeper.poll() is None
    wait_for(lambda: installed.sysinfo()["keeper_pid"] == keeper.pid, 15,
             lambda: f"{installed.sysinfo()}\n{installed.server_log()}")


def test_podman_reads_the_installed_hook(installed: Installed) -> None:
    need("podman", "runc")
    d = os.path.join(installed.host.dir, "podman")
    podman = (f"podman --root {d}/root --runroot {d}/run --runtime runc "
              f"--cgroup-manager cgroupfs")
    image = f"localhost/procfs-test-{uuid.uuid4().hex[:8]}:1"
    r = installed.sh(f"{podman} import {installed.image_tar} {image}")
    assert r.returncode == 0, r.stderr
    limits = ("--network none --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 "
              f"--cgroup-parent /{installed.host.cgroup}/podman")
    try:
        # as docs/install.md: `podman run --memory 256m IMAGE free -b`, nothing else for procfs
        r = installed.sh(f"{podman} run --rm {limits} --memory 256m {image} free -b")
        assert r.returncode == 0, r.stderr + installed.server_log()
        assert mem_total(r.stdout) == LIMIT
        r = installed.sh(f"{podman} run --rm {limits} --memory 256m "
                         f"--annotation io.procfs.disable=true {image} free -b")
        assert mem_total(r.stdout) > LIMIT  # opted out: the host's files
    finally:
        installed.sh(f"{podman} rmi -af")


def test_lxc_busybox_container_with_the_include(installed: Installed) -> None:
    need("lxc-create", "lxc-start")
    name = f"procfs-test-{uuid.uuid4().hex[:8]}"
    conf = os.path.join(installed.host.dir, f"{name}.conf")
    with open(conf, "w") as f:
        f.write("lxc.net.0.type = empty\n")  # no lxcbr0 here
    layout = CgroupLayout.from_mountinfo()
    limit = ("lxc.cgroup2.memory.max" if layout.version_of("memory") == 2
             else "lxc.cgroup.memory.limit_in_bytes")  # as docs/install.md: "= 256M"
    r = installed.sh(f"lxc-create -n {name} -t busybox -f {conf}")
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        # docs/install.md: the config the busybox template writes does not include common.conf
        config = f"/var/lib/lxc/{name}/config"
        assert "common.conf" not in installed.host.read(config)
        installed.sh(f"echo 'lxc.include = {LXC_SNIPPET}' >> {config}; "
                     f"echo '{limit} = 256M' >> {config}", check=True)
        cg = installed.host.cgroup  # not procfs's business: LXC's cgroups under the view's
        installed.sh(f"printf 'lxc.cgroup.dir.container = {cg}/lxc/{name}\n"
                     f"lxc.cgroup.dir.monitor = {cg}/lxc-monitor/{name}\n"
                     f"lxc.cgroup.dir.monitor.pivot = {cg}/lxc-pivot\n' >> {config}",
                     check=True)
        log = os.path.join(installed.host.dir, f"{name}.log")
        r = installed.sh(f"lxc-start -n {name} -d -l info -o {log}")
        assert r.returncode == 0, r.stderr + read(log)
        # busybox's `free` asks sysinfo(2), which no file answers: the file itself
        r = installed.sh(f"lxc-attach -n {name} -- head -1 /proc/meminfo")
        assert r.returncode == 0, r.stderr
        assert r.stdout.split()[1] == str(LIMIT // 1024), r.stdout + read(log)
        r = installed.sh(f"lxc-attach -n {name} -- grep -c procfs /proc/self/mountinfo")
        assert int(r.stdout) >= 10
    finally:
        installed.sh(f"lxc-stop -n {name} -k; lxc-destroy -n {name}")


def test_runc_with_the_installed_hook(installed: Installed) -> None:
    need("runc")
    hook = json.loads(installed.host.read(HOOK))["hook"]
    wrapper = os.path.join(installed.host.dir, "runc")
    with open(wrapper, "w") as f:
        f.write(f"#!/bin/sh\nexec {shlex.join(installed.host.argv(['runc']))} \"$@\"\n")
    os.chmod(wrapper, 0o755)
    with Bundle(runtime=wrapper, memory=LIMIT, cpus="0") as bundle:
        bundle.hook("createRuntime", {"path": hook["path"], "args": hook["args"]})
        r = bundle.run(["sh", "-c", "free -b; nproc"])
    assert r.returncode == 0, r.stderr
    assert mem_total(r.stdout) == LIMIT
    assert r.stdout.split()[-1] == "1"


@dataclass
class Docker:
    cli: str  # the client, talking to our dockerd
    socket: str
    image: str


@pytest.fixture(scope="module")
def dockerd(installed: Installed) -> Iterator[Docker]:
    need("dockerd", DOCKER)
    d = os.path.join(installed.host.dir, "docker")
    os.makedirs(d)
    sock = f"unix://{d}/sock"
    with open(os.path.join(d, "log"), "wb") as log:
        proc = installed.host.popen(
            ["dockerd", "--data-root", f"{d}/data", "--exec-root", f"{d}/exec", "-H", sock,
             "--pidfile", f"{d}/pid", "--bridge", "none", "--iptables=false",
             "--cgroup-parent", f"/{installed.host.cgroup}/docker",
             # the README's first route
             "--add-runtime", "procfs=/usr/local/bin/procfs-runc"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PATH": PATH})
    try:
        wait_for(lambda: proc.poll() is not None
                 or installed.sh(f"{DOCKER} -H {sock} version").returncode == 0, 60,
                 lambda: "dockerd did not start:\n" + read(os.path.join(d, "log")))
        assert proc.poll() is None, read(os.path.join(d, "log"))
        image = f"procfs-test-{uuid.uuid4().hex[:8]}:1"
        r = installed.sh(f"{DOCKER} -H {sock} import {installed.image_tar} {image}")
        assert r.returncode == 0, r.stderr
        yield Docker(f"{DOCKER} -H {sock}", sock, image)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_docker_run_with_docker_flags(installed: Installed, dockerd: Docker) -> None:
    r = installed.sh(f"{dockerd.cli} run --rm --network none $(procfs docker-flags) "
                     f"--memory 256m {dockerd.image} free -b")
    assert r.returncode == 0, r.stderr
    assert mem_total(r.stdout) == LIMIT


def test_docker_with_the_installed_procfs_runc(installed: Installed, dockerd: Docker) -> None:
    """`docker run --runtime procfs`, as the README's first route: the files by the hook
    procfs-runc adds, busybox `free` answered by the server through sysinfo(2) (the listener
    held by the keeper unit's process), uptime from the container's creation."""
    before = installed.sysinfo()["answered"]
    r = installed.sh(f"{dockerd.cli} run --rm --network none --runtime procfs --memory 256m "
                     f"{dockerd.image} sh -c 'busybox free; head -1 /proc/meminfo; "
                     "cat /proc/uptime'")
    assert r.returncode == 0, r.stderr + installed.server_log()
    lines = r.stdout.splitlines()
    free = [x for x in lines if x.split()[:1] == ["Mem:"]]
    assert free and int(free[0].split()[1]) == LIMIT // 1024, r.stdout  # sysinfo(2): served
    assert next(x for x in lines if x.startswith("MemTotal:")).split()[1] == str(LIMIT // 1024)
    assert float(lines[-1].split()[0]) < 30, r.stdout  # its own boot clock
    assert installed.sysinfo()["answered"] > before


def test_docker_compose_with_the_fragment(installed: Installed, dockerd: Docker) -> None:
    need("docker-compose")
    d = os.path.join(installed.host.dir, f"compose-{uuid.uuid4().hex[:8]}")
    os.makedirs(d)
    with open(os.path.join(d, "compose.yaml"), "w") as f:
        f.write(f"services:\n  app:\n    image: {dockerd.image}\n    mem_limit: 256m\n"
                "    network_mode: none\n    command: [free, -b]\n")
    env = f"cd {d} && export DOCKER_HOST={dockerd.socket} COMPOSE_PROJECT_NAME=procfs{os.getpid()}"
    try:
        r = installed.sh(f"{env} && procfs docker-flags --compose app > procfs.yaml && "
                         "docker-compose -f compose.yaml -f procfs.yaml run --rm -T app")
        assert r.returncode == 0, r.stderr
        assert mem_total(r.stdout) == LIMIT
    finally:
        installed.sh(f"{env} && docker-compose -f compose.yaml down")


def test_uninstall_leaves_nothing(installed: Installed) -> None:
    """Last: removes what the others use."""
    host = installed.host
    manifest = [line.split(" ", 1)[1] for line in host.read(MANIFEST).splitlines()]
    installed.stop_server()
    r = installed.sh(f"make -C {REPO} uninstall")
    assert r.returncode == 0, r.stdout + r.stderr
    assert [p for p in manifest if host.exists(p)] == []
    # What remains written under /usr: only directories the host has (their copy-up), and the
    # bytecode the system's Python caches beside its own modules.
    upper = host.upper("/usr")
    left = []
    for root, dirs, files in os.walk(upper):
        rel = "/usr" + root[len(upper):]
        for name in dirs:
            if not os.path.isdir(os.path.join(rel, name)):
                left.append(os.path.join(rel, name))
        for name in files:
            if os.path.basename(root) != "__pycache__" or not os.path.isdir(
                    os.path.dirname(rel)):
                left.append(os.path.join(rel, name))
    assert left == []
