"""Issue 22: `make install DESTDIR=... PREFIX=...` builds the real tree (a virtual environment
with procfs in it) under the staging root, with every path inside naming where it will be once
copied to /, and `make uninstall` with the same variables leaves the staging root empty."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from .hostview import REPO

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def make(target: str, *variables: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-C", REPO, target, *variables], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PATH": PATH}, check=False)


def test_destdir_install_and_uninstall(tmp_path: Path) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    stage = tmp_path / "stage"
    stage.mkdir()
    name = f"procfs-test-{uuid.uuid4().hex[:8]}"
    prefix, mount = f"/opt/{name}", f"/srv/{name}"
    variables = (f"DESTDIR={stage}", f"PREFIX={prefix}", f"MOUNTPOINT={mount}")
    r = make("install", *variables)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not os.path.exists(prefix)  # nothing outside DESTDIR

    def staged(path: str) -> Path:
        return Path(str(stage) + path)

    manifest = [line.split(" ", 1) for line in
                staged(f"{prefix}/share/procfs/install-manifest.txt").read_text().splitlines()]
    venv = f"{prefix}/lib/procfs"
    assert ["t", venv] in manifest
    listed = {p for _, p in manifest}
    found = {"/" + str(p.relative_to(stage)) for p in stage.rglob("*")}
    assert {p for p in found if not p.startswith(venv + "/")} == listed
    # the commands: every console script the package declares, linked to the environment's
    declared = subprocess.run(
        [str(staged(f"{venv}/bin/python")), "-c", "import importlib.metadata as m; print(*sorted("
         "e.name for e in m.distribution('procfs').entry_points "
         "if e.group == 'console_scripts'))"],
        capture_output=True, text=True, check=True).stdout.split()
    assert "procfs" in declared
    for script in declared:
        link = staged(f"{prefix}/bin/{script}")
        assert os.readlink(link) == f"{venv}/bin/{script}"
        assert staged(f"{venv}/bin/{script}").read_text().startswith(f"#!{venv}/bin/python\n")
    # exactly the checkout's modules (no stale one from an earlier build)
    site = next(staged(venv).glob("lib/python3*/site-packages"))
    for package in ("procfs", "overlays"):
        installed = {str(p.relative_to(site)) for p in (site / package).rglob("*.py")}
        source = {str(p.relative_to(REPO)) for p in (Path(REPO) / package).rglob("*.py")}
        assert installed == source
    # the environment works (from its staging place: Python finds its prefix by its own path)
    r = subprocess.run([str(staged(f"{venv}/bin/python")), "-m", "procfs", "docker-flags",
                        "--mount", str(tmp_path / "none")], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0 and "/proc/meminfo:/proc/meminfo:rw" in r.stdout, r.stderr
    # no file, bytecode included, names the staging root
    for p in stage.rglob("*"):
        if p.is_file() and not p.is_symlink():
            assert str(stage).encode() not in p.read_bytes(), p
    # the runtimes' files name the installed paths
    hook = json.loads(staged("/usr/share/containers/oci/hooks.d/procfs.json").read_text())
    assert hook["hook"]["path"] == f"{prefix}/bin/procfs"
    assert hook["hook"]["args"][-1] == mount
    unit = staged("/etc/systemd/system/procfs.service").read_text()  # PREFIX outside /usr
    assert f"ExecStart={prefix}/bin/procfs serve --workers auto --no-keeper-start {mount}" in unit
    for line in unit.splitlines():
        if line.startswith("Documentation=file://"):
            assert staged(line.removeprefix("Documentation=file://")).is_file()
    assert f"lxc.hook.mount = {prefix}/share/procfs/lxc.mount.hook" in \
        staged("/usr/share/lxc/config/common.conf.d/00-procfs.conf").read_text()

    r = make("uninstall", *variables)
    assert r.returncode == 0, r.stdout + r.stderr
    assert list(stage.iterdir()) == []
