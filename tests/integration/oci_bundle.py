"""A throwaway OCI bundle run with real runc: its rootfs holds read-only binds of the host's
/usr (and the merged-/usr links), its config.json a memory limit and a cpuset, and hooks."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from tests.support.sandbox import unique_name


def ensure_runc() -> str | None:
    """The runc binary, installed from Debian when missing; None when it cannot be had."""
    if shutil.which("runc") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "runc"], check=False,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    return shutil.which("runc")


def hook_command(mount: str, state: str, *extra: str) -> dict[str, Any]:
    argv = [sys.executable, "-m", "procfs", "oci-hook", "--mount", mount, "--state", state, *extra]
    return {"path": sys.executable, "args": argv, "timeout": 30}


class Bundle:
    def __init__(self, runtime: str = "runc", memory: int | None = None,
                 cpus: str | None = None, global_args: Sequence[str] = ()) -> None:
        self.runtime = runtime
        self.global_args = list(global_args)
        self.id = unique_name("procfs-oci")
        self.dir = tempfile.mkdtemp(prefix="procfs-bundle-")
        self.rootfs = os.path.join(self.dir, "rootfs")
        self.config = self._config(memory, cpus)
        self._made_rootfs()

    def _made_rootfs(self) -> None:
        os.mkdir(self.rootfs)
        for d in ("proc", "sys", "dev", "usr", "etc", "tmp"):
            os.mkdir(os.path.join(self.rootfs, d))
        for name in ("bin", "lib", "lib64", "sbin", "lib32", "libx32"):
            host = os.path.join("/", name)
            if os.path.islink(host):
                os.symlink(os.readlink(host), os.path.join(self.rootfs, name))
            elif os.path.isdir(host):
                os.mkdir(os.path.join(self.rootfs, name))
                self.bind(host, "/" + name)

    def _config(self, memory: int | None, cpus: str | None) -> dict[str, Any]:
        subprocess.run([self.runtime, "spec", "--bundle", self.dir], check=True)
        with open(os.path.join(self.dir, "config.json")) as f:
            config: dict[str, Any] = json.load(f)
        os.unlink(os.path.join(self.dir, "config.json"))
        config["process"]["terminal"] = False
        config["root"] = {"path": "rootfs", "readonly": False}
        config["hostname"] = self.id[:60]
        linux = config["linux"]
        linux["cgroupsPath"] = "/" + self.id
        resources = linux.setdefault("resources", {})
        if memory is not None:
            resources["memory"] = {"limit": memory}
        if cpus is not None:
            resources["cpu"] = {"cpus": cpus}
        self.bind("/usr", "/usr", config)
        return config

    def bind(self, source: str, dest: str, config: dict[str, Any] | None = None,
             readonly: bool = True) -> None:
        config = config if config is not None else self.config
        options = ["rbind", "nosuid", "nodev"] + (["ro"] if readonly else [])
        config["mounts"].append({"destination": dest, "type": "bind", "source": source,
                                 "options": options})

    def hook(self, stage: str, hook: dict[str, Any]) -> None:
        self.config.setdefault("hooks", {}).setdefault(stage, []).append(hook)

    def run(self, argv: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        self.config["process"]["args"] = list(argv)
        with open(os.path.join(self.dir, "config.json"), "w") as f:
            json.dump(self.config, f, indent=1)
        try:
            argv = [self.runtime, *self.global_args, "run", "--bundle", self.dir, self.id]
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        finally:
            self.delete()

    def delete(self) -> None:
        subprocess.run([self.runtime, *self.global_args, "delete", "-f", self.id],
                       capture_output=True, check=False)

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()
        with open("/proc/self/mountinfo") as f:  # never remove through a mount (the host's /usr)
            if any(line.split()[4].startswith(self.dir + "/") for line in f):
                return
        with contextlib.suppress(OSError):
            shutil.rmtree(self.dir)
