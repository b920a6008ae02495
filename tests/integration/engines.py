"""Container engines of our own for the wrapper's tests: a dockerd (with the containerd it
starts), a containerd, and podman, each with every directory, socket and cgroup under a name of
its own, stopped by pid and removed afterwards. Each runs `procfs-runc` through a small script
that sets the wrapper's environment (podman's conmon passes its runtime no environment of the
caller's)."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

import pytest

from .hostview import remove_cgroup
from .runtime_support import WRAPPER, wrapper_env

DOCKER = "/usr/bin/docker"  # Debian's client (another on PATH may be newer than the daemon)
DOCKER_KEY = "/etc/docker/key.json"  # dockerd 20.10 writes its trust key there, always


class EngineMissing(Exception):
    """What this host lacks to run the engine; the tests skip with it."""


def runtime_script(directory: str, env: dict[str, str]) -> str:
    """An executable that runs procfs-runc with `env`'s PROCFS_* settings."""
    path = os.path.join(directory, "procfs-runc-test")
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()
                      if k.startswith("PROCFS_"))
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\n{exports}exec {shlex.quote(WRAPPER)} \"$@\"\n")
    os.chmod(path, 0o755)
    return path


class Engine(Protocol):
    def stop(self) -> None: ...


E = TypeVar("E", bound=Engine)


@contextlib.contextmanager
def engine_for_test(make: Callable[[dict[str, str]], E], mount: str,
                    socket: str | None = None) -> Iterator[E]:
    """An engine made by `make` (started, where it has a daemon) running procfs-runc against
    `mount` and the sysinfo socket `socket`, with an attachments file of its own; stopped
    afterwards. The test skips where procfs-runc or the engine is missing."""
    if not os.path.exists(WRAPPER):
        pytest.skip("procfs-runc is not installed (make setup)")
    with tempfile.TemporaryDirectory(prefix="procfs-state-") as d:
        try:
            engine = make(wrapper_env(mount, socket, os.path.join(d, "attached.json")))
        except EngineMissing as e:
            pytest.skip(str(e))
        try:
            yield engine
        finally:
            engine.stop()


def _cli(argv: list[str], what: str, timeout: float, check: bool,
         cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """An engine's command line; AssertionError with its stderr when `check` and it failed."""
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, cwd=cwd)
    if check and r.returncode != 0:
        raise AssertionError(f"{what} failed: {r.stderr}")
    return r


def _wait(check: Sequence[str], proc: subprocess.Popen[bytes], log: str, what: str,
          timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while subprocess.run(list(check), capture_output=True).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            with open(log, errors="replace") as f:
                raise EngineMissing(f"{what} did not start: {f.read()[-1500:]}")
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _remove_tree(directory: str) -> None:
    """Unmount what is left under `directory` (deepest first), then remove it."""
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f]
    for target in sorted((m for m in mounts if m.startswith(directory + "/")), key=len,
                         reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)
    shutil.rmtree(directory, ignore_errors=True)


class Dockerd:
    """dockerd with the runtime `procfs` = `runtime`, and the containerd it starts itself."""

    def __init__(self, runtime_env: dict[str, str]) -> None:
        for program in ("dockerd", "containerd", "containerd-shim-runc-v2"):
            if shutil.which(program) is None:
                raise EngineMissing(f"{program} is not installed")
        if not os.path.exists(DOCKER):
            raise EngineMissing(f"{DOCKER} is not installed")
        self.dir = tempfile.mkdtemp(prefix="procfs-dockerd-")
        self.name = os.path.basename(self.dir)
        self.sock = os.path.join(self.dir, "docker.sock")
        self.log = os.path.join(self.dir, "dockerd.log")
        self.runtime = runtime_script(self.dir, runtime_env)
        self.proc: subprocess.Popen[bytes] | None = None
        self._made_key = not os.path.exists(DOCKER_KEY)

    def start(self) -> Dockerd:
        d = self.dir
        with open(os.path.join(d, "daemon.json"), "w") as f:
            f.write("{}")
        argv = ["dockerd", "--config-file", f"{d}/daemon.json", "--data-root", f"{d}/data",
                "--exec-root", f"{d}/exec", "-H", f"unix://{self.sock}", "--pidfile",
                f"{d}/docker.pid", "--bridge", "none", "--iptables=false", "--ip6tables=false",
                "--ip-masq=false", "--userland-proxy=false", "--storage-driver", "vfs",
                "--cgroup-parent", f"/{self.name}", "--add-runtime", f"procfs={self.runtime}"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         cwd="/")
        try:
            _wait([DOCKER, "-H", f"unix://{self.sock}", "version"], self.proc, self.log,
                  "dockerd")
        except BaseException:
            self.stop()
            raise
        return self

    def docker(self, *args: str, timeout: float = 120,
               check: bool = True) -> subprocess.CompletedProcess[str]:
        return _cli([DOCKER, "-H", f"unix://{self.sock}", *args], f"docker {args[0]}", timeout,
                    check)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            ids = self.docker("ps", "-aq", check=False).stdout.split()
            if ids:
                self.docker("rm", "-f", *ids, check=False)
        _stop(self.proc)
        _remove_tree(self.dir)
        remove_cgroup(self.name)
        if self._made_key:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(DOCKER_KEY)


CONTAINERD_CONFIG = """version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"""


class Containerd:
    """containerd on sockets and directories of its own; `ctr` in namespace `procfs-test`."""

    namespace = "procfs-test"

    def __init__(self, runtime_env: dict[str, str]) -> None:
        for program in ("containerd", "ctr", "containerd-shim-runc-v2"):
            if shutil.which(program) is None:
                raise EngineMissing(f"{program} is not installed")
        self.dir = tempfile.mkdtemp(prefix="procfs-ctrd-")
        self.sock = os.path.join(self.dir, "containerd.sock")
        self.log = os.path.join(self.dir, "containerd.log")
        self.runtime = runtime_script(self.dir, runtime_env)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Containerd:
        config = os.path.join(self.dir, "config.toml")
        with open(config, "w") as f:
            f.write(CONTAINERD_CONFIG.format(d=self.dir))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(["containerd", "--config", config], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, cwd="/")
        try:
            _wait(["ctr", "--address", self.sock, "version"], self.proc, self.log, "containerd")
        except BaseException:
            self.stop()
            raise
        return self

    def ctr(self, *args: str, timeout: float = 120,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        return _cli(["ctr", "--address", self.sock, "-n", self.namespace, *args],
                    f"ctr {' '.join(args[:2])}", timeout, check)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            for task in self.ctr("tasks", "ls", "-q", check=False).stdout.split():
                self.ctr("tasks", "kill", "-s", "KILL", task, check=False)
                self.ctr("tasks", "rm", "-f", task, check=False)
            for c in self.ctr("containers", "ls", "-q", check=False).stdout.split():
                self.ctr("containers", "rm", c, check=False)
        _stop(self.proc)
        _remove_tree(self.dir)


class Podman:
    """podman with storage, run and temporary directories of its own, cgroupfs, and the
    runtime `runtime`."""

    def __init__(self, runtime_env: dict[str, str]) -> None:
        for program in ("podman", "conmon"):
            if shutil.which(program) is None:
                raise EngineMissing(f"{program} is not installed")
        self.dir = tempfile.mkdtemp(prefix="procfs-podman-")
        self.name = os.path.basename(self.dir)
        self.runtime = runtime_script(self.dir, runtime_env)

    def podman(self, *args: str, timeout: float = 120,
               check: bool = True) -> subprocess.CompletedProcess[str]:
        d = self.dir
        argv = ["podman", "--root", f"{d}/storage", "--runroot", f"{d}/run", "--tmpdir",
                f"{d}/tmp", "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs",
                "--events-backend", "file", "--runtime", self.runtime, *args]
        return _cli(argv, f"podman {args[0]}", timeout, check, cwd="/")

    def stop(self) -> None:
        self.podman("rm", "-a", "-f", "-t", "0", check=False)
        _remove_tree(self.dir)
        remove_cgroup(self.name)
