"""Issue 22: `kill -9` of the server then an immediate `procfs serve` takes the dead mount over,
while the killed server is still a zombie (not yet reaped by its parent: here, this test), and
when its record names a process that runs but the connection is dead."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from procfs.server.record import ServerRecord
from procfs.sources.hostproc import HostProc
from tests.support.sandbox import Limits, Server, container

MIB = 1 << 20


def proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]


def wait_for(check: object, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.02)


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


@pytest.mark.parametrize("workers", ["1", "auto"])
def test_restart_while_the_killed_server_is_a_zombie(workers: str, state_dir: Path,
                                                     stack: ExitStack) -> None:
    args = ["--control-dir", str(state_dir), "--workers", workers]
    first = Server(args=args)
    stack.callback(first.stop)
    first.start()
    mount = first.mountpoint
    box = stack.enter_context(container(mount, Limits(memory=96 * MIB)))
    assert box.sh("head -1 /proc/meminfo").split()[1] == str(96 * 1024)
    assert first.proc is not None
    pid = first.proc.pid
    os.kill(pid, signal.SIGKILL)  # and not reaped: Popen.wait() is not called until the end
    wait_for(lambda: proc_state(pid) == "Z", 10, "the killed server did not become a zombie")
    record = ServerRecord.of(mount)
    assert record is not None and record.pid == pid and not record.alive()

    second = Server(mountpoint=mount, args=args)
    stack.callback(second.stop)
    second.start()  # refused before: "mountpoint ... is served by pid N"
    assert proc_state(pid) == "Z", "the zombie was reaped: the test proves nothing"
    assert "its server died; taking it over" in second.log()
    now = ServerRecord.of(mount)
    assert now is not None and second.proc is not None and now.pid == second.proc.pid
    # The container's binds were made by plain `mount --bind` (no record): repaired all the
    # same (the mount tables say where they are), and a new container reads the new server's.
    wait_for(lambda: box.run(["head", "-1", "/proc/meminfo"], check=False).stdout.split()[1:2]
             == [str(96 * 1024)], 5, f"not repaired:\n{second.log()[-2000:]}")
    fresh = stack.enter_context(container(mount, Limits(memory=80 * MIB)))
    assert fresh.sh("head -1 /proc/meminfo").split()[1] == str(80 * 1024)
    first.proc.wait(timeout=10)


def test_dead_connection_is_taken_over_while_the_recorded_pid_runs(state_dir: Path,
                                                                   stack: ExitStack) -> None:
    args = ["--control-dir", str(state_dir), "--workers", "1"]
    first = Server(args=args)
    stack.callback(first.stop)
    first.start()
    mount = first.mountpoint
    first.kill()  # killed and reaped: the mount is dead (ENOTCONN)
    # The record names a process that runs (pid and start time right), as when a server hangs
    # on its way out: only the connection tells that nobody serves the mount.
    sleeper = subprocess.Popen(["sleep", "60"])
    stack.callback(lambda: (sleeper.kill(), sleeper.wait()))
    fake = ServerRecord(sleeper.pid, HostProc().stat(sleeper.pid).start_ticks,
                        os.path.realpath(mount))
    fake.save()
    assert fake.alive()

    second = Server(mountpoint=mount, args=args)
    stack.callback(second.stop)
    second.start()
    assert sleeper.poll() is None
    with container(mount, Limits(memory=72 * MIB)) as box:
        assert box.sh("head -1 /proc/meminfo").split()[1] == str(72 * 1024)


def test_serves_on_a_bound_directory(state_dir: Path, tmp_path: Path, stack: ExitStack) -> None:
    """Inside the DaemonSet's pod the mountpoint is the hostPath volume: a directory bound there.
    The server mounts on it (a filesystem mounted there is still refused)."""
    source, mount = tmp_path / "node-dir", tmp_path / "pod-dir"
    source.mkdir()
    mount.mkdir()
    subprocess.run(["mount", "--bind", str(source), str(mount)], check=True)
    stack.callback(lambda: subprocess.run(["umount", "-l", str(mount)], check=False))
    srv = Server(mountpoint=str(mount), args=["--control-dir", str(state_dir), "--workers", "1"])
    stack.callback(srv.stop)
    srv.start()
    with container(str(mount), Limits(memory=88 * MIB)) as box:
        assert box.sh("head -1 /proc/meminfo").split()[1] == str(88 * 1024)
