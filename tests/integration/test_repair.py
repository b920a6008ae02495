"""A restarted server repairs every container that holds binds of the server it replaces,
recorded or not (issue 22: binds made by `mount --bind`, `docker run -v`, a pod's volumes; issue
24: a state file that is empty, truncated or garbage): the mount tables say where they are."""

from __future__ import annotations

import os
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from procfs.attach.attach import Attacher
from procfs.attach.state import StateFile
from procfs.server.record import ServerRecord
from tests.support.sandbox import Limits, Sandbox, Server, container

MIB = 1 << 20


def mem_total(sb: Sandbox) -> int | None:
    out = sb.run(["head", "-1", "/proc/meminfo"], check=False)
    return int(out.stdout.split()[1]) if out.returncode == 0 else None


def restart_and_wait(first: Server, stack: ExitStack, state_dir: Path,
                     boxes: dict[int, Sandbox]) -> float:
    """kill -9 the server, start another on its mount at once; seconds until every box reads
    its own memory again (the test fails past 5)."""
    first.kill()
    for sb in boxes.values():  # dead until repaired
        assert mem_total(sb) is None
    t0 = time.monotonic()
    second = Server(mountpoint=first.mountpoint, args=["--control-dir", str(state_dir)])
    stack.callback(second.stop)
    second.start()
    pending = dict(boxes)
    while pending and time.monotonic() - t0 < 5.0:
        for mib, sb in list(pending.items()):
            if mem_total(sb) == mib * 1024:
                del pending[mib]
        time.sleep(0.05)
    elapsed = time.monotonic() - t0
    assert not pending, f"not repaired after {elapsed:.1f} s:\n{second.log()[-3000:]}"
    return elapsed


def test_binds_nobody_recorded_are_repaired(state_dir: Path) -> None:
    """Containers whose files were bound by `mount --bind` (as runc does for `docker run -v`)
    from the server's mount and from a shard's: no record names them."""
    with ExitStack() as stack:
        first = Server(args=["--control-dir", str(state_dir), "--workers", "2"])
        stack.callback(first.stop)
        first.start()
        record = ServerRecord.of(first.mountpoint)
        assert record is not None and record.dev and len(record.shards) == 2
        boxes = {64: stack.enter_context(container(first.mountpoint, Limits(memory=64 * MIB))),
                 96: stack.enter_context(container(record.shards[0],
                                                   Limits(memory=96 * MIB)))}
        assert all(mem_total(sb) == mib * 1024 for mib, sb in boxes.items())
        assert StateFile().load() == []  # nothing recorded
        elapsed = restart_and_wait(first, stack, state_dir, boxes)
        print(f"repaired in {elapsed:.2f} s")
        # the repair recorded them: a later restart finds them in the state file too
        assert {a.pid for a in StateFile().load()} >= {sb.pid for sb in boxes.values()}


@pytest.mark.parametrize("bad", ["", '{"attached": [{"pid": 1', "garbage \x00\x01"])
def test_a_bad_state_file_neither_blocks_attach_nor_repair(state_dir: Path, bad: str) -> None:
    with ExitStack() as stack:
        first = Server(args=["--control-dir", str(state_dir)])
        stack.callback(first.stop)
        first.start()
        path = state_dir / "attached.json"
        path.write_text(bad)
        box = stack.enter_context(container(None, Limits(memory=80 * MIB)))
        res = Attacher(first.mountpoint, StateFile()).attach(box.pid)  # as `procfs attach`
        assert "proc/meminfo" in res.attached and mem_total(box) == 80 * 1024
        assert list(state_dir.glob("attached.json.bad-*"))  # set aside, kept for a look
        path.write_text(bad)  # and broken again before the crash
        restart_and_wait(first, stack, state_dir, {80: box})


def test_a_live_server_is_left_alone(state_dir: Path) -> None:
    """A container bound from a server that still serves is not touched by another server's
    repair (its device is not a dead one)."""
    with ExitStack() as stack:
        other = stack.enter_context(Server(args=["--control-dir", str(state_dir)]))
        first = Server(args=["--control-dir", str(state_dir)])
        stack.callback(first.stop)
        first.start()
        theirs = stack.enter_context(container(other.mountpoint, Limits(memory=48 * MIB)))
        ours = stack.enter_context(container(first.mountpoint, Limits(memory=64 * MIB)))
        before = Path(f"/proc/{theirs.pid}/mountinfo").read_text()
        restart_and_wait(first, stack, state_dir, {64: ours})
        assert mem_total(theirs) == 48 * 1024
        assert Path(f"/proc/{theirs.pid}/mountinfo").read_text() == before
        assert os.path.ismount(other.mountpoint)
