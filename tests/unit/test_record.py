"""ServerRecord.alive: the recorded process, the same one (start time), and not a zombie."""

from __future__ import annotations

import os
import time

from procfs.server.record import ServerRecord
from procfs.sources.hostproc import HostProc


def test_a_zombie_is_not_alive() -> None:
    child = os.fork()
    if child == 0:  # pragma: no cover - exits at once
        os._exit(0)
    try:
        record = ServerRecord(child, HostProc().stat(child).start_ticks, "/x")
        deadline = time.monotonic() + 10
        while HostProc().stat(child).state != "Z":  # exited, not reaped
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not record.alive()
    finally:
        os.waitpid(child, 0)
    assert not record.alive()  # gone


def test_alive_needs_the_same_process() -> None:
    me = ServerRecord.mine("/x")
    assert me.alive()
    assert not ServerRecord(me.pid, me.start + 1, "/x").alive()  # a reused pid
