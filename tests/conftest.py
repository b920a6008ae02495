"""Shared fixtures: a served mount and throwaway containers (integration), fixture trees (unit)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.sandbox import Cgroup, Limits, Sandbox, Server, unique_name


def can_integrate() -> str | None:
    """Why the integration tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    if not os.path.exists("/dev/fuse"):
        return "needs /dev/fuse"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = can_integrate()
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    """One `procfs serve` for the whole session (tests that restart it make their own)."""
    with Server() as srv:
        yield srv


ContainerFactory = Callable[..., Sandbox]


@pytest.fixture
def make_container(server: Server) -> Iterator[ContainerFactory]:
    """make_container(Limits(...), boottime_offset=None, parent=None, mount=server mount):
    a cgroup of its own with those limits and a started sandbox in it; all removed afterwards."""
    with ExitStack() as stack:

        def make(limits: Limits | None = None, **kw: Any) -> Sandbox:
            return stack.enter_context(_container(server.mountpoint, limits, **kw))

        yield make


@contextmanager
def _container(mount: str | None, limits: Limits | None, *, boottime_offset: int | None = None,
               parent: Cgroup | None = None, mount_override: str | None = None,
               files: list[str] | None = None) -> Iterator[Sandbox]:
    cg = Cgroup(unique_name(), parent=parent)
    try:
        cg.create(limits)
        sb = Sandbox(cg, mount_override or mount, boottime_offset=boottime_offset, files=files)
        with sb:
            yield sb
    finally:
        cg.remove()


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own attachment state file (PROCFS_STATE) and, beside it, the records and
    shard mountpoints of the servers and commands it starts."""
    d = tmp_path / "state"
    d.mkdir()
    monkeypatch.setenv("PROCFS_STATE", str(d / "attached.json"))
    return d


@pytest.fixture
def state_path() -> Iterator[str]:
    """A path for an attachments file (`--state`, PROCFS_STATE) in a directory of its own,
    removed afterwards; unlike `state_dir`, not put in the environment."""
    with tempfile.TemporaryDirectory(prefix="procfs-state-") as d:
        yield os.path.join(d, "attached.json")


@pytest.fixture
def make_cgroup() -> Iterator[Callable[..., Cgroup]]:
    """Bare cgroups (children removed before parents)."""
    made: list[Cgroup] = []

    def make(limits: Limits | None = None, parent: Cgroup | None = None) -> Cgroup:
        cg = Cgroup(unique_name(), parent=parent)
        made.append(cg)
        return cg.create(limits)

    yield make
    for cg in reversed(made):
        cg.remove()
