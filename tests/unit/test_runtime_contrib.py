"""contrib/runtime/: every file parses, names the wrapper where it is installed (beside
`procfs`, as contrib/oci/hooks.d has it) and the one runtime handler name, `procfs`."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import yaml

from procfs.runtime.settings import DEFAULTS

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
RUNTIME = CONTRIB / "runtime"
HANDLER = "procfs"


def installed_wrapper() -> str:
    """Where the contrib files install `procfs` (the OCI hooks.d file), with procfs-runc
    beside it."""
    hook = json.loads((CONTRIB / "oci/hooks.d/procfs.json").read_text())
    return os.path.join(os.path.dirname(hook["hook"]["path"]), "procfs-runc")


def test_runtime_class() -> None:
    (doc,) = [d for d in yaml.safe_load_all((RUNTIME / "runtimeclass.yaml").read_text()) if d]
    assert doc["apiVersion"] == "node.k8s.io/v1"
    assert doc["kind"] == "RuntimeClass"
    assert doc["metadata"]["name"] == HANDLER
    assert doc["handler"] == HANDLER


def test_containerd_cri_runtime() -> None:
    conf = tomllib.loads((RUNTIME.parent / "containerd/procfs.toml").read_text())
    runtimes = conf["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]
    assert list(runtimes) == [HANDLER]
    runtime = runtimes[HANDLER]
    assert runtime["runtime_type"] == "io.containerd.runc.v2"
    assert runtime["options"]["BinaryName"] == installed_wrapper()
    assert "io.procfs.*" in runtime["pod_annotations"]
    assert "io.procfs.*" in runtime["container_annotations"]


def test_crio_runtime() -> None:
    conf = tomllib.loads((RUNTIME.parent / "crio/10-procfs.conf").read_text())
    runtime = conf["crio"]["runtime"]["runtimes"][HANDLER]
    assert runtime["runtime_path"] == installed_wrapper()
    assert runtime["runtime_type"] == "oci"
    assert runtime["runtime_root"] == "/run/runc"  # runc's, where the wrapper finds inits


def test_docker_daemon_json() -> None:
    conf = json.loads((RUNTIME / "docker-daemon.json").read_text())
    assert conf["runtimes"] == {HANDLER: {"path": installed_wrapper()}}
    assert conf["default-runtime"] == HANDLER


def test_podman_containers_conf() -> None:
    conf = tomllib.loads((RUNTIME / "containers.conf.d-procfs.conf").read_text())
    assert conf["engine"]["runtime"] == HANDLER
    assert conf["engine"]["runtimes"][HANDLER] == [installed_wrapper()]


def test_runtime_json_holds_the_defaults() -> None:
    conf = json.loads((RUNTIME / "runtime.json").read_text())
    assert conf == {k: v for k, v in DEFAULTS.items() if v is not None}


def test_readme_names_every_file() -> None:
    readme = (RUNTIME / "README.md").read_text()
    for f in RUNTIME.iterdir():
        if f.name != "README.md":
            assert f"`{f.name}`" in readme, f.name
    assert installed_wrapper() in readme
