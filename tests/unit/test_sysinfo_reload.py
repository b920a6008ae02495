"""`procfs reload` leaves the sysinfo task's modules alone: the task outlives the reload with
its objects (listeners, buffers, counters), so it keeps the code they were made by."""

from __future__ import annotations

import importlib

from procfs.server.reload import reloadable

TASK_MODULES = ("seccomp", "remote_memory", "sysinfo", "sysinfo_service", "keeper_protocol",
                "keeper_client", "seccomp_agent", "stuck_callers", "keeper", "keeper_loop")


def test_the_sysinfo_task_modules_are_not_reloaded() -> None:
    names = [f"procfs.runtime.{m}" for m in TASK_MODULES]
    for name in names:
        importlib.import_module(name)
    assert set(names).isdisjoint(reloadable())
    assert "procfs.files.memory" in reloadable()  # the served files' code is
