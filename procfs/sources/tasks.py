"""A container's tasks by state (running, blocked, total, newest pid, time waiting for a CPU),
listed from its cgroup and read from the host's /proc."""

from __future__ import annotations

import os
from collections.abc import Hashable, MutableMapping
from dataclasses import dataclass, replace

from procfs.errors import ProcfsError
from procfs.sources.cgroups import CgroupDirs, own_dir
from procfs.sources.hostproc import HostProc
from procfs.sources.text import parse_ints, read_optional

# Reading every task's state costs one /proc read per task: cap what one container can cost.
MAX_TASKS = 20_000
MAX_CGROUPS = 2_000


@dataclass(frozen=True)
class TaskCount:
    running: int  # state R
    blocked: int  # state D
    total: int  # threads
    newest_pid: int  # the largest pid, in the container's namespace, of its live tasks
    waited_ns: int = 0  # time its live tasks spent runnable but waiting for a CPU (schedstat)

    @property
    def active(self) -> int:
        """What the kernel's load average counts: running plus uninterruptible."""
        return self.running + self.blocked


def tasks_dir(dirs: CgroupDirs) -> tuple[str, str] | None:
    """(cgroup directory, file listing its threads) to count the container's tasks in."""
    for ctrl in ("cpuacct", "cpu", "pids", "memory", "cpuset"):
        where = own_dir(dirs.of(ctrl))
        if where is not None:
            return where[0], "tasks" if where[1] == 1 else "cgroup.threads"
    unified = dirs.unified()
    if unified is not None and dirs.layout.v2 is not None:
        where = own_dir((unified, 2, dirs.layout.v2.mountpoint))
        if where is not None:
            return where[0], "cgroup.threads"
    return None


def list_tasks(directory: str, listing: str) -> list[int]:
    """The thread ids in a cgroup and all its descendants (bounded)."""
    tids: list[int] = []
    pending = [directory]
    seen = 0
    while pending and seen < MAX_CGROUPS and len(tids) < MAX_TASKS:
        d = pending.pop()
        seen += 1
        tids.extend(parse_ints(read_optional(os.path.join(d, listing))))
        pending.extend(subdirectories(d))
    return [t for t in tids[:MAX_TASKS] if t > 0]


def subdirectories(directory: str) -> list[str]:
    """The directories in `directory`; [] when it cannot be read. cgroupfs (kernfs), tmpfs and
    ext4 count a directory's links as 2 + its subdirectories, so a leaf cgroup, the common case,
    costs one stat instead of a listing of its dozens of control files. Other counts (btrfs
    always says 1) are listed."""
    try:
        if os.stat(directory).st_nlink == 2:
            return []
        with os.scandir(directory) as it:
            return [e.path for e in it if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def count_tasks(host: HostProc, dirs: CgroupDirs, level: int, waits: bool = True,
                states: MutableMapping[Hashable, TaskCount] | None = None,
                key: Hashable = None, fresh_newest: bool = True,
                newest: MutableMapping[Hashable, tuple[int, int]] | None = None
                ) -> TaskCount | None:
    """Count the container's threads by state. `level` is the depth of its pid namespace (the
    length of its init's NSpid line): a task's pid in that namespace is its NSpid[level - 1].
    None when the container has no cgroup of its own to list its tasks from.

    With `states` (a short-lived cache) the counts by state may come from it under `key`. With
    `fresh_newest` the newest pid is looked up afresh all the same (a shell's
    `cat /proc/loadavg` expects its own); without, a cached count is used whole and the tasks
    are not even listed (/proc/stat's `processes` may lag as its counts do). `newest` keeps,
    under `key`, the last (host tid, pid in the container) found newest, so that an unchanged
    newest task costs no read of its status."""
    counted = states.get(key) if states is not None else None
    if counted is not None and not fresh_newest:
        return counted
    where = tasks_dir(dirs)
    if where is None:
        return None
    tids = list_tasks(*where)
    fresh = counted is None
    counted = replace(counted or task_states(host, tids, waits),
                      newest_pid=newest_pid(host, tids, level, newest, key))
    if fresh and states is not None:
        states[key] = counted
    return counted


def task_states(host: HostProc, tids: list[int], waits: bool) -> TaskCount:
    """`tids` counted by state (newest_pid left 0): one /proc/TID/stat (and with `waits` one
    schedstat) read per task, the expensive part of /proc/stat and /proc/loadavg."""
    running = blocked = total = waited = 0
    for tid in tids:
        try:
            state = host.stat(tid).state
        except (ProcfsError, OSError):  # exited since the listing
            continue
        total += 1
        running += state == "R"
        blocked += state == "D"
        if waits:  # /proc/stat's steal wants them; the load sampler does not
            waited += run_delay(host, tid)
    return TaskCount(running, blocked, total, 0, waited)


def run_delay(host: HostProc, tid: int) -> int:
    """ns the task spent on a runqueue waiting for a CPU (/proc/PID/schedstat, 2nd field)."""
    try:
        fields = parse_ints(host.pid_text(tid, "schedstat"))
    except (ProcfsError, OSError):  # exited, or a kernel without schedstats
        return 0
    return fields[1] if len(fields) > 1 else 0


def newest_pid(host: HostProc, tids: list[int], level: int,
               known: MutableMapping[Hashable, tuple[int, int]] | None = None,
               key: Hashable = None) -> int:
    """The container-namespace pid of its newest task: pids grow in both namespaces, so look at
    the largest host tids first and stop at the first one that lives in the container's
    namespace (tasks that joined the cgroup from outside it, like `unshare`, have no pid there).

    With `known`: when the largest tid is the one found last time (under `key`), its pid in the
    container is known (a task keeps its pids; a tid taken again by another task of the same
    cgroup would first need the host's pid space to wrap)."""
    if not tids:
        return 0
    if known is not None:
        last = known.get(key)
        if last is not None and last[0] == max(tids):
            return last[1]
    for tid in sorted(set(tids), reverse=True)[:64]:
        try:
            nspid = host.status(tid).nspid
        except (ProcfsError, OSError):
            continue
        if level > 0 and len(nspid) >= level:
            if known is not None:
                known[key] = (tid, nspid[level - 1])
            return nspid[level - 1]
    return 0
