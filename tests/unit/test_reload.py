"""Reload in place, without a mount: modules re-executed in dependency order, the tree rebuilt
with the same inode numbers, and the state kept in Services (load history) kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from procfs.config import Config
from procfs.files.table import all_nodes
from procfs.fuse.ops import ProcFS
from procfs.server import reload
from procfs.server.reload import RELOADABLE, reload_code, reloadable, remember
from procfs.server.services import Services
from tests.trees import FakeHost, write


def build(tmp_path: Path) -> tuple[ProcFS, Services]:
    host = FakeHost(tmp_path)
    cg = tmp_path / "cg"
    write(cg / "cgroup.controllers", "cpuset cpu memory\n")
    services = Services.build(Config(cache_ttl=0, proc_root=str(host.proc), sys_root=str(host.sys),
                                     cgroup_root=str(cg)))
    return ProcFS(all_nodes(services), services.resolver), services


def in_child(test: str, tmp_path: Path) -> None:
    """Run `test` in a fresh interpreter: a reload re-makes classes, and the other tests of this
    process must keep theirs."""
    code = f"import pathlib, tests.unit.test_reload as t; t.{test}(pathlib.Path({str(tmp_path)!r}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2], check=False)
    assert done.returncode == 0, done.stderr[-3000:]


def test_order_puts_dependencies_first() -> None:
    order = reloadable()
    assert all(n.split('.')[0] == 'overlays' or n.startswith(RELOADABLE[1:]) for n in order)
    assert 'procfs.sources.containers' not in order and 'procfs.fuse.ops' not in order
    for dep, user in [("overlays.meminfo", "procfs.sources.memory"),
                      ("procfs.sources.memory", "procfs.files.memory"),
                      ("procfs.files.memory", "procfs.files.table"),
                      ("procfs.sources.text", "procfs.sources.hostproc")]:
        assert order.index(dep) < order.index(user)


def test_reload_keeps_inodes_and_state(tmp_path: Path) -> None:
    in_child("reload_keeps_inodes_and_state", tmp_path)


def reload_keeps_inodes_and_state(tmp_path: Path) -> None:
    ops, services = build(tmp_path)
    try:
        before = {node.path: inode for inode, node in ops.files.items()}
        tracker = services.kept["loadavg"]
        old_meminfo = sys.modules["overlays.meminfo"].render

        def loadavg_files() -> object:
            node = next(n for n in ops.files.values() if n.path == "proc/loadavg")
            return node.render.__self__  # type: ignore[attr-defined]

        old_files = loadavg_files()
        remember()
        reload._loaded["overlays.meminfo"] = None  # as if its source changed since it was loaded
        result = reload_code(ops, services)
        after = {node.path: inode for inode, node in ops.files.items()}
        assert after == before and result.files == len(before)
        assert services.kept["loadavg"] is tracker
        # the new tree renders with the new code's classes, and reads the kept history
        new_files = loadavg_files()
        assert new_files is not old_files
        assert type(new_files) is sys.modules["procfs.files.time"].TimeFiles
        assert new_files.loads is tracker  # type: ignore[attr-defined]
        assert sum(task == tracker.run for task in services.background) == 1  # one sampler
        assert sys.modules["overlays.meminfo"].render is not old_meminfo  # new code
        # what changed and what imports it, not the rest
        assert {"overlays.meminfo", "procfs.sources.memory", "procfs.files.memory",
                "procfs.files.table"} <= set(result.modules)
        assert "overlays.cpuinfo" not in result.modules
        assert reload_code(ops, services).modules == ()  # nothing changed since
    finally:
        services.close()
