"""Issue 22: the DaemonSet's image, built here from the repository (contrib/kubernetes/
build-image.sh: a debootstrap base of Debian's packages, then the Containerfile), run as
contrib/kubernetes/daemonset.yaml says: its init container puts the node's part on the "node",
its container serves the host's cgroups, its probe answers, and a container podman starts on
the node (which only has what the init container put there, and no Python: the node's is
hidden) gets its memory limit in `free` from the installed hook.

The node is a `HostView` (a mount namespace whose /usr, /etc, /var/lib, /run and /opt are
overlays of this host's); the kubelet's part is played by podman with the flags the pod spec
asks for (hostPID, privileged, hostPath volumes with their propagation). Slow: debootstrap and
pip download and build. PROCFS_BASE_TAR=FILE reuses a tar made by make-base.sh.
"""

from __future__ import annotations

import os
import shlex
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from .hostview import OVERLAID, REPO, HostView, Unavailable
from .images import rootfs_tar

pytestmark = pytest.mark.slow

MIB = 1 << 20
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
K8S = Path(REPO) / "contrib/kubernetes"
# This host: crun refuses hybrid cgroups, the sandbox cannot raise rlimits, and pip goes through
# a proxy whose CA only the host's bundle has. Not the image's or the DaemonSet's concern.
HOST_RUN = "--runtime runc"
HOST_LIMITS = "--ulimit nofile=1024:1024 --ulimit nproc=4096:4096"
# What podman puts its containers under (a cgroup of the view's own, removed with it).
PARENT = "--cgroup-parent /{cgroup}/podman"
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"


@dataclass
class Node:
    host: HostView
    podman: str
    image: str

    @property
    def limits(self) -> str:
        return f"{HOST_LIMITS} {PARENT.format(cgroup=self.host.cgroup)}"

    def sh(self, script: str, **kw: Any) -> Any:
        return self.host.sh(f"export PATH={PATH}; {script}", **kw)


def pod_template() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((K8S / "daemonset.yaml").read_text()) if d]
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    template: dict[str, Any] = ds["spec"]["template"]["spec"]
    return template


def run_args(pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
    """`podman run` options for one of the pod's containers, as the kubelet would set it up."""
    volumes = {v["name"]: v["hostPath"] for v in pod["volumes"]}
    args = ["--network", "none"]
    if pod.get("hostPID"):
        args += ["--pid", "host"]
    if container.get("securityContext", {}).get("privileged"):
        args.append("--privileged")
    for env in container.get("env", []):
        args += ["--env", f"{env['name']}={env['value']}"]
    propagation = {"Bidirectional": "rshared", "HostToContainer": "rslave"}
    for m in container.get("volumeMounts", []):
        path = volumes[m["name"]]["path"]
        options = ["ro" if m.get("readOnly") else "rw"]
        if m.get("mountPropagation") in propagation:
            options.append(propagation[m["mountPropagation"]])
        args += ["-v", f"{path}:{m['mountPath']}:{','.join(options)}"]
    return args


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    for tool in ("podman", "runc", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    base_tar = os.environ.get("PROCFS_BASE_TAR", "")
    if not base_tar and shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed (apt-get install debootstrap)")
    try:
        host = HostView(overlaid=(*OVERLAID, "/opt")).__enter__()
    except Unavailable as e:
        pytest.skip(str(e))
    with host:
        store = os.path.join(host.dir, "podman")
        podman = (f"podman --root {store}/root --runroot {store}/run {HOST_RUN} "
                  f"--cgroup-manager cgroupfs")
        n = Node(host, podman, "")
        build_args = f"{HOST_LIMITS} --cgroup-parent /{host.cgroup}/build"
        if os.path.exists(HOST_CA):
            build_args += f" -v {HOST_CA}:/run/host-ca.crt:ro --build-arg PIP_CERT=/run/host-ca.crt"
        env = (f"TOOL_ARGS={shlex.quote(podman.removeprefix('podman '))} "
               f"BUILD_ARGS={shlex.quote(build_args)} BASE_TAR={shlex.quote(base_tar)}")
        r = n.sh(f"{env} {K8S}/build-image.sh podman", timeout=1800)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        n.image = r.stdout.split()[-1]
        try:
            yield n
        finally:
            n.sh(f"{podman} rm -af -t 10; {podman} rmi -af", timeout=120)


def test_image_is_the_daemonsets(node: Node) -> None:
    pod = pod_template()
    version = node.image.rpartition(":")[2]
    assert [c["image"] for c in pod["initContainers"] + pod["containers"]] == \
        [f"localhost/procfs:{version}"] * 2


def test_daemonset_serves_the_node(node: Node) -> None:
    pod = pod_template()
    (init,) = pod["initContainers"]
    (daemon,) = pod["containers"]
    volumes = {v["name"]: v["hostPath"] for v in pod["volumes"]}
    # What the kubelet does for the hostPath volumes: DirectoryOrCreate; and the node's mounts
    # are shared (systemd makes / shared), which Bidirectional propagation needs.
    for v in volumes.values():
        if v["type"] == "DirectoryOrCreate":
            node.sh(f"mkdir -p {v['path']}", check=True)
    for m in daemon["volumeMounts"]:
        if m.get("mountPropagation") == "Bidirectional":
            path = volumes[m["name"]]["path"]
            node.sh(f"mount --bind {path} {path} && mount --make-shared {path}", check=True)

    for _ in range(2):  # a pod restarted runs it again: the same tree stays
        r = node.sh(f"{node.podman} run --rm {node.limits} {shlex.join(run_args(pod, init))} "
                    f"{node.image} {shlex.join(init['command'])}")
        assert r.returncode == 0, r.stdout + r.stderr
    assert node.host.exists("/usr/share/containers/oci/hooks.d/procfs.json")
    current = os.readlink(f"/proc/{node.host.pid}/root/opt/procfs/current")
    assert current.startswith("versions/")
    assert os.listdir(f"/proc/{node.host.pid}/root/opt/procfs/versions") == [current[9:]]

    name = f"procfs-daemon-{uuid.uuid4().hex[:8]}"
    r = node.sh(f"{node.podman} run -d --name {name} {node.limits} "
                f"{shlex.join(run_args(pod, daemon))} {node.image} "
                f"{shlex.join(daemon['command'])}")
    assert r.returncode == 0, r.stderr
    try:
        probe = shlex.join(daemon["readinessProbe"]["exec"]["command"])
        deadline = time.monotonic() + 60
        while node.sh(f"{node.podman} exec {name} {probe}").returncode != 0:
            logs = node.sh(f"{node.podman} logs {name}")
            assert time.monotonic() < deadline, logs.stdout + logs.stderr
            time.sleep(0.5)
        # the FUSE mount made in the pod reached the node
        mounts = node.sh("cat /proc/self/mountinfo").stdout
        assert " /var/lib/procfs " in mounts and "fuse.procfs" in mounts

        # The node has no Python of its own any more: the hook runs procfs's.
        for d in ("/usr/lib/python3", "/usr/lib/python3.11", "/usr/local/lib/python3.11"):
            if node.host.exists(d):
                node.sh(f"mount -t tmpfs none {d}", check=True)
        assert node.sh("python3 -c 'import json'").returncode != 0  # the node's Python: broken
        tar = rootfs_tar(os.path.join(node.host.dir, "app.tar"))
        app = f"localhost/procfs-app-{uuid.uuid4().hex[:8]}:1"
        assert node.sh(f"{node.podman} import {tar} {app}").returncode == 0
        r = node.sh(f"{node.podman} run --rm {node.limits} --network none --memory 192m "
                    f"{app} free -b")
        assert r.returncode == 0, r.stderr + node.sh(f"{node.podman} logs {name}").stderr
        (mem,) = [line for line in r.stdout.splitlines() if line.startswith("Mem:")]
        assert int(mem.split()[1]) == 192 * MIB
        # what the server runs by executing its own interpreter (fusectl, shards) worked too
        logs = node.sh(f"{node.podman} logs {name}")
        assert "Traceback" not in logs.stderr and "could not" not in logs.stderr, logs.stderr
    finally:
        node.sh(f"{node.podman} stop -t 10 {name}; {node.podman} rm -f {name}", timeout=60)
