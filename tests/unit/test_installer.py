"""contrib/install.py's bookkeeping, with the virtual environment step replaced by a directory
(the real one is built by tests/integration/test_install_destdir.py and test_install.py): what
goes where for a PREFIX, the rewritten paths, the manifest, refusing foreign files, upgrades
that drop what is gone, and uninstall leaving nothing."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("procfs_install", REPO / "contrib/install.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


inst = _load()


def fake_venv(scripts: list[str]):  # type: ignore[no-untyped-def]
    def make(installer, python: str) -> list[str]:  # type: ignore[no-untyped-def]
        layout = installer.layout
        venv = layout.staged(layout.libdir)
        installer.claim(layout.libdir)
        installer.mkdirs(os.path.dirname(layout.libdir))
        (venv / "bin").mkdir(parents=True, exist_ok=True)
        for name in scripts:
            (venv / "bin" / name).write_text("#!/bin/sh\n")
        installer.note("t", layout.libdir)
        return scripts
    return make


def tree(root: Path) -> set[str]:
    return {"/" + str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def destdir(tmp_path: Path) -> Path:
    d = tmp_path / "stage"
    d.mkdir()
    return d


def test_default_layout_puts_runtime_files_where_runtimes_read_them() -> None:
    layout = inst.Layout()
    dests = {i.source: i.dest for i in inst.items(layout, ["procfs"])}
    assert dests["contrib/oci/hooks.d/procfs.json"] == \
        "/usr/share/containers/oci/hooks.d/procfs.json"  # podman's and CRI-O's default
    assert dests["contrib/lxc/00-procfs.conf"] == \
        "/usr/share/lxc/config/common.conf.d/00-procfs.conf"
    assert dests["contrib/systemd/procfs.service"] == \
        "/usr/local/lib/systemd/system/procfs.service"  # in systemd's search path
    assert dests["contrib/lxc/lxc.mount.hook"] == "/usr/local/share/procfs/lxc.mount.hook"
    assert "contrib/crio/10-procfs.conf" not in dests  # no procfs-runc: CRI-O would not start
    with_wrapper = {i.source: i.dest for i in inst.items(layout, ["procfs", "procfs-runc"])}
    assert with_wrapper["contrib/crio/10-procfs.conf"] == "/etc/crio/crio.conf.d/10-procfs.conf"
    assert inst.Layout(prefix="/opt/procfs").systemd_dir == "/etc/systemd/system"
    assert inst.Layout(prefix="/usr").systemd_dir == "/usr/lib/systemd/system"
    for item in inst.items(layout, ["procfs-runc"]):  # every source exists
        assert (REPO / item.source).is_file(), item.source


def test_every_contrib_path_is_rewritten(monkeypatch: pytest.MonkeyPatch,
                                         destdir: Path) -> None:
    monkeypatch.setattr(inst, "make_venv", fake_venv(["procfs", "procfs-runc"]))
    layout = inst.Layout(prefix="/opt/pf", destdir=str(destdir), mountpoint="/srv/pf")
    made = inst.install(layout, sys.executable)
    files = [p for k, p in made if k == "f" and not p.endswith(inst.MANIFEST)]
    assert len(files) == len(inst.items(layout, ["procfs-runc"]))
    for path in files:
        text = layout.staged(path).read_text()
        if path.endswith((".md",)):
            continue
        assert "/usr/local" not in text and "/var/lib/procfs" not in text, path
    hook = json.loads(layout.staged(f"{inst.HOOKS_DIR}/procfs.json").read_text())
    assert hook["hook"]["path"] == "/opt/pf/bin/procfs"
    assert hook["hook"]["args"] == ["procfs", "oci-hook", "--mount", "/srv/pf"]
    unit = layout.staged("/etc/systemd/system/procfs.service").read_text()
    assert "ExecStart=/opt/pf/bin/procfs serve --workers auto --no-keeper-start /srv/pf" in unit
    assert "Documentation=file:///opt/pf/share/doc/procfs/install.md" in unit
    keeper = layout.staged("/etc/systemd/system/procfs-keeper.service").read_text()
    assert "ExecStart=/opt/pf/bin/procfs keeper" in keeper
    lxc = layout.staged(f"{inst.LXC_CONF_DIR}/00-procfs.conf").read_text()
    assert "lxc.hook.mount = /opt/pf/share/procfs/lxc.mount.hook" in lxc
    hook_sh = layout.staged("/opt/pf/share/procfs/lxc.mount.hook")
    assert os.access(hook_sh, os.X_OK)
    assert "PROCFS=${PROCFS:-/opt/pf/bin/procfs}" in hook_sh.read_text()
    assert 'runtime_path = "/opt/pf/bin/procfs-runc"' in \
        layout.staged(f"{inst.CRIO_CONF_DIR}/10-procfs.conf").read_text()
    for name in ("procfs", "procfs-runc"):
        assert os.readlink(layout.staged(f"/opt/pf/bin/{name}")) == f"/opt/pf/lib/procfs/bin/{name}"


def test_manifest_and_uninstall_leave_nothing(monkeypatch: pytest.MonkeyPatch,
                                              destdir: Path) -> None:
    monkeypatch.setattr(inst, "make_venv", fake_venv(["procfs"]))
    layout = inst.Layout(destdir=str(destdir))
    inst.install(layout, sys.executable)
    manifest = inst.read_manifest(layout.staged(layout.manifest))
    listed = {p for _, p in manifest}
    venv = layout.libdir
    # everything in the tree is listed, or inside the environment (listed as one tree)
    assert {p for p in tree(destdir) if not p.startswith(venv + "/")} == listed
    assert ("d", "/usr/share/containers/oci/hooks.d") in manifest
    assert inst.uninstall(layout) == []
    assert list(destdir.iterdir()) == []


def test_refuses_foreign_files_and_keeps_them(monkeypatch: pytest.MonkeyPatch,
                                              destdir: Path) -> None:
    monkeypatch.setattr(inst, "make_venv", fake_venv(["procfs"]))
    layout = inst.Layout(destdir=str(destdir))
    theirs = layout.staged(f"{inst.HOOKS_DIR}/procfs.json")
    theirs.parent.mkdir(parents=True)
    theirs.write_text("someone's")
    with pytest.raises(inst.InstallError, match="not installed by procfs"):
        inst.install(layout, sys.executable)
    assert tree(destdir) == {"/usr", "/usr/share", "/usr/share/containers",
                             "/usr/share/containers/oci", "/usr/share/containers/oci/hooks.d",
                             "/usr/share/containers/oci/hooks.d/procfs.json"}
    inst.install(layout, sys.executable, force=True)  # FORCE=1: taken over, then removed
    assert json.loads(theirs.read_text())["hook"]["path"] == "/usr/local/bin/procfs"
    inst.uninstall(layout)
    assert tree(destdir) == {"/usr", "/usr/share", "/usr/share/containers",
                             "/usr/share/containers/oci", "/usr/share/containers/oci/hooks.d"}


def test_upgrade_removes_what_is_gone_and_keeps_others_files(monkeypatch: pytest.MonkeyPatch,
                                                              destdir: Path) -> None:
    layout = inst.Layout(destdir=str(destdir))
    monkeypatch.setattr(inst, "make_venv", fake_venv(["procfs", "procfs-runc"]))
    inst.install(layout, sys.executable)
    crio = layout.staged(f"{inst.CRIO_CONF_DIR}/10-procfs.conf")
    assert crio.exists()
    other = layout.staged(f"{inst.CRIO_CONF_DIR}/00-theirs.conf")
    other.write_text("kept")
    monkeypatch.setattr(inst, "make_venv", fake_venv(["procfs"]))  # a version without it
    inst.install(layout, sys.executable)  # again over itself: no refusal
    assert not crio.exists() and not layout.staged("/usr/local/bin/procfs-runc").is_symlink()
    assert other.read_text() == "kept"
    left = inst.uninstall(layout)
    # made by install, kept: theirs is in them
    assert left == [str(layout.staged(d)) for d in (inst.CRIO_CONF_DIR, "/etc/crio", "/etc")]
    assert tree(destdir) == {"/etc", "/etc/crio", "/etc/crio/crio.conf.d",
                             "/etc/crio/crio.conf.d/00-theirs.conf"}


def test_uninstall_without_a_manifest(destdir: Path) -> None:
    with pytest.raises(inst.InstallError, match="nothing to uninstall"):
        inst.uninstall(inst.Layout(destdir=str(destdir)))
