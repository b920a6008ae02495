"""contrib/: every file parses, and the fields sit where the runtimes look for them."""

from __future__ import annotations

import configparser
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from procfs.attach.docker import RUNC_PROC_MOUNTS, flag_files

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
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
    assert service["ExecStart"].split()[1:] == ["serve", "--workers", "auto", "/var/lib/procfs"]
    for sandboxing in ("PrivateTmp", "ProtectSystem", "PrivateMounts", "ProtectHome"):
        assert sandboxing not in service  # the mount must land in the host's namespace
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_lxc_hook_and_snippet() -> None:
    hook = CONTRIB / "lxc/lxc.mount.hook"
    assert os.access(hook, os.X_OK)
    subprocess.run(["sh", "-n", str(hook)], check=True)
    r = subprocess.run([str(hook)], env={"PATH": os.environ["PATH"]}, capture_output=True,
                       text=True)
    assert r.returncode == 1 and "LXC_ROOTFS_MOUNT" in r.stderr
    conf = (CONTRIB / "lxc/00-procfs.conf").read_text().splitlines()
    keys = dict(line.split(" = ", 1) for line in conf if line and not line.startswith("#"))
    assert keys == {"lxc.hook.mount": "/usr/share/procfs/lxc.mount.hook"}


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


def test_kubernetes_pod_snippet() -> None:
    (pod,) = _docs("pod-snippet.yaml")
    assert pod["apiVersion"] == "v1" and pod["kind"] == "Pod"
    spec = pod["spec"]
    volumes = {v["name"]: v["hostPath"] for v in spec["volumes"]}
    (container,) = spec["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert set(mounts) == set(volumes)
    assert volumes["procfs"]["path"] == "/var/lib/procfs"
    assert mounts["procfs"]["mountPropagation"] == "HostToContainer"
    served = set(flag_files("/nonexistent")[0])
    for name, m in mounts.items():
        if name != "procfs":  # each file bound over its twin, from a file procfs serves
            assert volumes[name]["path"] == "/var/lib/procfs" + m["mountPath"]
            assert volumes[name]["type"] == "File"
            assert m["mountPath"][1:] in served


def test_docker_compose_lists_served_files() -> None:
    compose = yaml.safe_load((CONTRIB / "docker/compose.yaml").read_text())
    volumes = compose["services"]["app"]["volumes"]
    assert volumes == compose["x-procfs-volumes"]
    served = set(flag_files("/nonexistent")[0])
    for v in volumes:
        source, dest, mode = v.split(":")
        assert source == "/var/lib/procfs" + dest and mode == "rw"
        assert dest[1:] in served, f"{dest}: regenerate with `procfs docker-flags --compose`"
        assert not dest.startswith("/proc/") or dest[1:] in RUNC_PROC_MOUNTS
