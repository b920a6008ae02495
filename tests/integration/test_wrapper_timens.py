"""procfs.runtime.timens on the real kernel: a namespace whose clocks start at 0 (also when the
caller is in a time namespace of its own), execve moving the caller into it, and joining a
process's namespace only when its start time there is the recorded one. Each case runs in a
child interpreter: setns wants a single-threaded caller and changes the caller for good."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from procfs.runtime import timens

from .runtime_support import REPO, host_time_ns

DAY = 86400

# As the wrapper does: a new namespace, then execve (a shell, here). With an argument the shell
# also starts a `sleep` and prints its pid: a process started after the namespace's 0, as a
# runtime's init is (the exec'd process itself started before it: its start reads negative,
# wrapped, inside).
NEW_THEN_EXEC = """
import os, sys
from procfs.runtime import timens
timens.new_for_children()
script = "cut -d' ' -f1 /proc/uptime; readlink /proc/self/ns/time"
if len(sys.argv) > 1:
    script += "; sleep 1000 & echo $!; wait"
os.execv("/bin/sh", ["sh", "-c", script])
"""

JOIN = """
import os, sys
from procfs.runtime import timens
ok = timens.join_checked(int(sys.argv[1]), int(sys.argv[2]))
print(ok, os.readlink("/proc/self/ns/time"))
"""


def python(code: str, *args: str, prefix: tuple[str, ...] = ()) -> list[str]:
    r = subprocess.run([*prefix, sys.executable, "-c", code, *args], capture_output=True,
                       text=True, timeout=30, cwd=REPO)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_new_namespace_starts_at_zero() -> None:
    uptime, ns = python(NEW_THEN_EXEC)
    assert 0 <= float(uptime) < 5
    assert ns != host_time_ns()


def test_new_namespace_starts_at_zero_inside_another() -> None:
    """The wrapper run from inside a container that has a time namespace (a day ahead)."""
    uptime, _ = python(NEW_THEN_EXEC, prefix=("unshare", "--time", "--boottime", str(DAY),
                                              "--monotonic", str(DAY)))
    assert 0 <= float(uptime) < 5


@pytest.fixture
def in_new_namespace() -> Iterator[int]:
    """A `sleep` started by a process that made a new time namespace and exec'd a shell."""
    proc = subprocess.Popen([sys.executable, "-c", NEW_THEN_EXEC, "stay"], cwd=REPO,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    try:
        proc.stdout.readline()
        proc.stdout.readline()
        sleeper = int(proc.stdout.readline())
        yield sleeper
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the shell and its sleep: a session of our own
        proc.wait()
        proc.stdout.close()


def test_exec_moves_the_caller_in(in_new_namespace: int) -> None:
    pid = in_new_namespace
    with open(f"/proc/{pid}/stat") as f:
        shell = int(f.read().rsplit(")", 1)[1].split()[1])  # the exec'd shell, its parent
    assert os.readlink(f"/proc/{shell}/ns/time") == os.readlink(f"/proc/{pid}/ns/time") \
        != host_time_ns()
    with open(f"/proc/{pid}/timens_offsets") as f:
        mono, boot = timens.parse_offsets(f.read())
    assert abs(boot / 1e9 + time.clock_gettime(time.CLOCK_BOOTTIME)) < 30
    assert abs(mono / 1e9 + time.clock_gettime(time.CLOCK_MONOTONIC)) < 30


def test_join_checked(in_new_namespace: int) -> None:
    pid = in_new_namespace
    theirs = os.readlink(f"/proc/{pid}/ns/time")
    outside = timens.start_ticks(pid)
    # what a runtime in that namespace records: the start read from inside
    r = subprocess.run(["nsenter", "--target", str(pid), "--time", "cat", f"/proc/{pid}/stat"],
                       capture_output=True, text=True, check=True)
    inside = int(r.stdout.rsplit(")", 1)[1].split()[19])
    assert 0 <= inside < outside
    assert python(JOIN, str(pid), str(inside)) == ["True", theirs]
    for wrong in (inside - 1, inside + 1):
        assert python(JOIN, str(pid), str(wrong)) == ["False", host_time_ns()]
    # the start seen from outside (what a runtime there would have recorded) does not
    assert python(JOIN, str(pid), str(outside)) == ["False", host_time_ns()]
    # a process in our own namespace: no move, only the check
    assert python(JOIN, str(os.getpid()), str(timens.start_ticks(os.getpid()))) \
        == ["True", host_time_ns()]
