"""contrib/: every file parses, and the fields sit where the runtimes look for them."""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from procfs.attach.docker import RUNC_PROC_MOUNTS, docker_flags, flag_files

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
COMPOSE_TOP_LEVEL = {"version", "name", "services", "networks", "volumes", "configs", "secrets"}
OCI_STAGES = {"prestart", "createRuntime", "createContainer", "startContainer", "poststart",
              "poststop"}


def test_oci_hooks_d_file() -> None:
    hook = json.loads((CONTRIB / "oci/hooks.d/procfs.json").read_text())
    assert hook["version"] == "1.0.0"
    assert os.path.isabs(hook["hook"]["path"])
    assert hook["hook"]["args"][1:3] == ["oci-hook", "--mount"]
    assert isinstance(hook["hook"]["timeout"], int) and hook["hook"]["timeout"] > 0
    assert hook["when"] == {"always": True}
    assert set(hook["stages"]) <= OCI_STAGES
    assert set(hook["stages"]) & {"createRuntime", "createContainer", "prestart"}


def test_systemd_unit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment, method-assign]
    unit.read(CONTRIB / "systemd/procfs.service")
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert service["Restart"] == "on-failure"
    assert service["OOMScoreAdjust"] == "-1000"
    assert service["ExecStart"].split()[1:] == ["serve", "--workers", "auto",
                                                "--no-keeper-start", "/var/lib/procfs"]
    for sandboxing in ("PrivateTmp", "ProtectSystem", "PrivateMounts", "ProtectHome"):
        assert sandboxing not in service  # the mount must land in the host's namespace
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    # the keeper of the sysinfo listeners: a unit of its own, which the server's wants
    assert "procfs-keeper.service" in unit["Unit"]["Wants"]
    assert "procfs-keeper.service" in unit["Unit"]["After"]
    keeper = configparser.ConfigParser(strict=False, interpolation=None)
    keeper.optionxform = str  # type: ignore[assignment, method-assign]
    keeper.read(CONTRIB / "systemd/procfs-keeper.service")
    assert keeper["Service"]["ExecStart"].split()[1:] == ["keeper"]
    assert keeper["Service"]["Restart"] == "always"
    assert "procfs.service" in keeper["Unit"]["Before"]


def test_lxc_hook_and_snippet(tmp_path: Path) -> None:
    hook = CONTRIB / "lxc/lxc.mount.hook"
    assert os.access(hook, os.X_OK)
    subprocess.run(["sh", "-n", str(hook)], check=True)
    r = subprocess.run([str(hook)], env={"PATH": os.environ["PATH"]}, capture_output=True,
                       text=True)
    assert r.returncode == 1 and "LXC_ROOTFS_MOUNT" in r.stderr
    # LXC appends the container's name, "lxc" and "mount" to the options of the config line
    env = {"PATH": os.environ["PATH"], "LXC_ROOTFS_MOUNT": str(tmp_path)}
    r = subprocess.run([str(hook), "--mount", str(tmp_path / "none"), "c1", "lxc", "mount"],
                       env=env, capture_output=True, text=True)
    assert (r.returncode, r.stderr) == (0, "")  # no server mounted there: nothing to do
    r = subprocess.run([str(hook), "--state"], env=env, capture_output=True, text=True)
    assert r.returncode == 1 and "--state needs a value" in r.stderr
    text = hook.read_text()
    assert "PROCFS=${PROCFS:-/usr/local/bin/procfs}" in text  # not from PATH: make install's
    assert "PROCFS_MOUNT=${PROCFS_MOUNT:-/var/lib/procfs}" in text
    conf = (CONTRIB / "lxc/00-procfs.conf").read_text().splitlines()
    keys = dict(line.split(" = ", 1) for line in conf if line and not line.startswith("#"))
    assert keys == {"lxc.hook.mount": "/usr/local/share/procfs/lxc.mount.hook"}


def test_wrapper_runtime_snippets() -> None:
    crio = tomllib.loads((CONTRIB / "crio/10-procfs.conf").read_text())
    assert crio["crio"]["runtime"]["runtimes"]["procfs"]["runtime_path"] == \
        "/usr/local/bin/procfs-runc"
    containerd = tomllib.loads((CONTRIB / "containerd/procfs.toml").read_text())
    assert containerd["version"] == 2
    runtime = containerd["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]
    assert runtime["procfs"]["runtime_type"] == "io.containerd.runc.v2"
    assert runtime["procfs"]["options"]["BinaryName"] == "/usr/local/bin/procfs-runc"


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((CONTRIB / "kubernetes" / name).read_text()) if d]


def test_kubernetes_daemonset() -> None:
    (ds,) = [d for d in _docs("daemonset.yaml") if d["kind"] == "DaemonSet"]
    assert ds["apiVersion"] == "apps/v1"
    assert ds["spec"]["selector"]["matchLabels"].items() <= \
        ds["spec"]["template"]["metadata"]["labels"].items()
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["privileged"] is True
    volumes = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert set(mounts) <= set(volumes)
    assert volumes["cgroup"] == "/sys/fs/cgroup"
    assert volumes["procfs"] == "/var/lib/procfs"
    assert mounts["procfs"]["mountPath"] == "/var/lib/procfs"
    assert mounts["procfs"]["mountPropagation"] == "Bidirectional"
    assert container["command"][1:] == ["serve", "--workers", "auto", "/var/lib/procfs"]
    # the shards mount under the state directory: it must reach the host's hooks too
    assert volumes["state"] == "/run/procfs"
    assert mounts["state"]["mountPath"] == "/run/procfs"
    assert mounts["state"]["mountPropagation"] == "Bidirectional"
    # the image built from this repository (contrib/kubernetes/build-image.sh names it)
    version = tomllib.loads((CONTRIB.parent / "pyproject.toml").read_text())["project"]["version"]
    (init,) = pod["initContainers"]
    assert container["image"] == init["image"] == f"localhost/procfs:{version}"
    # probes: the control socket answers
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"] == ["procfs", "stats", "/var/lib/procfs"]
    # the init container puts the node's part where CRI-O and the hook find it
    assert init["command"] == ["/opt/procfs/current/share/node-install.sh"]
    init_mounts = {m["mountPath"]: volumes[m["name"]] for m in init["volumeMounts"]}
    assert init_mounts == {"/host/opt/procfs": "/opt/procfs",
                           "/host/hooks.d": "/usr/share/containers/oci/hooks.d"}
    script = (CONTRIB / "kubernetes/node-install.sh").read_text()
    assert "${NODE_PREFIX:-/host/opt/procfs}" in script
    assert "${NODE_HOOKS_DIR:-/host/hooks.d}" in script
    subprocess.run(["sh", "-n", str(CONTRIB / "kubernetes/node-install.sh")], check=True)


def test_kubernetes_pod_snippet_binds_every_file() -> None:
    (pod,) = _docs("pod-snippet.yaml")
    assert pod["apiVersion"] == "v1" and pod["kind"] == "Pod"
    spec = pod["spec"]
    volumes = {v["name"]: v["hostPath"] for v in spec["volumes"]}
    (container,) = spec["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert set(mounts) == set(volumes)
    for name, m in mounts.items():  # each file bound over its twin, from the node's mount
        assert volumes[name]["path"] == "/var/lib/procfs" + m["mountPath"]
        directory = m["mountPath"] == "/sys/devices/system/cpu"  # served whole
        assert volumes[name]["type"] == ("Directory" if directory else "File")
    # every file runc accepts as a bind (the others need the hook), and only those
    assert sorted(m["mountPath"][1:] for m in mounts.values()) == flag_files("/nonexistent")[0]
    text = (CONTRIB / "kubernetes/pod-snippet.yaml").read_text()
    assert "run by the daemon's recovery" not in text  # it repairs only what it recorded


def test_docker_compose_is_generated_from_the_code() -> None:
    generated = docker_flags("/nonexistent", compose=True, host_mount="/var/lib/procfs",
                             services=["app"]) + "\n"
    assert (CONTRIB / "docker/compose.yaml").read_text() == generated, \
        "regenerate: procfs docker-flags --compose app > contrib/docker/compose.yaml"
    compose = yaml.safe_load(generated)
    # the compose specification's top level: known keys and x- extensions
    assert {k for k in compose if not k.startswith("x-")} <= COMPOSE_TOP_LEVEL
    assert compose["services"] == {"app": {"volumes": compose["x-procfs-volumes"]}}
    served, _ = flag_files("/nonexistent")
    dests = []
    for v in compose["x-procfs-volumes"]:
        source, dest, mode = v.split(":")
        assert source == "/var/lib/procfs" + dest and mode == "rw"
        assert not dest.startswith("/proc/") or dest[1:] in RUNC_PROC_MOUNTS
        dests.append(dest[1:])
    assert dests == served  # all of them (12), not a few


@pytest.mark.parametrize("tool", [["docker-compose"], ["docker", "compose"]])
def test_compose_accepts_the_fragment(tool: list[str], tmp_path: Path) -> None:
    """The fragment merged over a project's file, as docs/install.md says, by compose itself."""
    probe = subprocess.run([*tool, "version"], capture_output=True, check=False) \
        if shutil.which(tool[0]) else None
    if probe is None or probe.returncode != 0:
        pytest.skip(f"{' '.join(tool)} is not installed")
    project = tmp_path / "compose.yaml"
    project.write_text("services:\n  app:\n    image: busybox\n    mem_limit: 256m\n"
                       "  db:\n    image: busybox\n")
    for fragment, has_binds in ((CONTRIB / "docker/compose.yaml", {"app"}),
                                (None, set())):
        if fragment is None:  # `procfs docker-flags --compose` without a service
            fragment = tmp_path / "procfs.yaml"
            fragment.write_text(docker_flags("/nonexistent", compose=True) + "\n")
        r = subprocess.run([*tool, "-f", str(project), "-f", str(fragment), "config"],
                           capture_output=True, text=True, cwd=tmp_path, check=False)
        assert r.returncode == 0, r.stderr
        merged = yaml.safe_load(r.stdout)["services"]
        for name in ("app", "db"):
            binds = [v if isinstance(v, str) else f"{v['source']}:{v['target']}"
                     for v in merged[name].get("volumes", [])]
            assert (len(binds) == len(flag_files("/nonexistent")[0])) == (name in has_binds)
