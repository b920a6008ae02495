"""Shared fixtures: a served mount and throwaway containers (integration), fixture trees (unit)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
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
