"""A container's CPU time and tasks, read from its cgroup (v1 cpuacct, v2 cpu.stat) and from
the host's /proc.

Each reader takes the container's `CgroupDirs` (so a fixture tree works as well as the host's
hierarchies). A container whose cgroup is the hierarchy's root has no CPU time of its own: the
readers say None and the caller falls back to the host's counters.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, MutableMapping
from dataclasses import dataclass, replace

from procfs.errors import ProcfsError
from procfs.sources.cgroups import CgroupDirs
from procfs.sources.hostproc import HostProc
from procfs.sources.text import parse_flat_keyed, read_optional

NS = 1_000_000_000

# Reading every task's state costs one /proc read per task: cap what one container can cost.
MAX_TASKS = 20_000
MAX_CGROUPS = 2_000


@dataclass(frozen=True)
class CpuUsage:
    """CPU time in ns: per host CPU where the cgroup says (v1), else only the totals (v2)."""

    user_ns: int
    system_ns: int
    per_cpu: tuple[tuple[int, int, int], ...] = ()  # (host cpu, user ns, system ns)

    @property
    def total_ns(self) -> int:
        return self.user_ns + self.system_ns

    @classmethod
    def per_cpu_rows(cls, rows: tuple[tuple[int, int, int], ...]) -> CpuUsage:
        return cls(sum(r[1] for r in rows), sum(r[2] for r in rows), rows)


def _own_dir(where: tuple[str, int, str] | None) -> tuple[str, int] | None:
    """(directory, version) of a controller's cgroup, None when absent or the hierarchy's root
    (the root's numbers are the whole host's, not a container's)."""
    if where is None:
        return None
    directory, version, top = where
    if os.path.normpath(directory) == os.path.normpath(top) or not os.path.isdir(directory):
        return None
    return directory, version


def parse_usage_all(text: str | None) -> tuple[tuple[int, int, int], ...]:
    """cpuacct.usage_all: a `cpu user system` header, then one row per CPU in ns."""
    rows = []
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) != 3 or not parts[0].isdigit():
            continue
        try:
            rows.append((int(parts[0]), max(int(parts[1]), 0), max(int(parts[2]), 0)))
        except ValueError:
            continue
    return tuple(rows)


def parse_ints(text: str | None) -> tuple[int, ...]:
    out = []
    for word in (text or "").split():
        try:
            out.append(max(int(word), 0))
        except ValueError:
            out.append(0)
    return tuple(out)


def _split(total: int, user_weight: int, system_weight: int) -> tuple[int, int]:
    """Split `total` ns in the ratio cpuacct.stat gives (both in ticks); all user without one."""
    weight = user_weight + system_weight
    if weight <= 0:
        return total, 0
    user = total * user_weight // weight
    return user, total - user


def read_v1_usage(directory: str, hz: int) -> CpuUsage | None:
    # 4.7+: user and system time per CPU in one file (cpuacct.stat is then not needed)
    rows = parse_usage_all(read_optional(os.path.join(directory, "cpuacct.usage_all")))
    if rows:
        return CpuUsage.per_cpu_rows(rows)
    stat = parse_flat_keyed(read_optional(os.path.join(directory, "cpuacct.stat")) or "")
    user_t, system_t = stat.get("user", 0), stat.get("system", 0)
    # kernels before 4.7: usage_percpu (total ns per CPU), split by cpuacct.stat
    percpu = parse_ints(read_optional(os.path.join(directory, "cpuacct.usage_percpu")))
    rows = tuple((cpu, *_split(ns, user_t, system_t)) for cpu, ns in enumerate(percpu))
    if rows:
        return CpuUsage.per_cpu_rows(rows)
    total = parse_ints(read_optional(os.path.join(directory, "cpuacct.usage")))
    if total:
        return CpuUsage(*_split(total[0], user_t, system_t))
    if "user" in stat or "system" in stat:
        return CpuUsage(user_t * NS // hz, system_t * NS // hz)
    return None


def read_v2_usage(directory: str) -> CpuUsage | None:
    text = read_optional(os.path.join(directory, "cpu.stat"))
    if text is None:
        return None
    stat = parse_flat_keyed(text)
    user, system = stat.get("user_usec", 0), stat.get("system_usec", 0)
    if "user_usec" not in stat and "system_usec" not in stat:
        user = stat.get("usage_usec", 0)
    return CpuUsage(user * 1000, system * 1000)


def read_cpu_usage(dirs: CgroupDirs, hz: int) -> CpuUsage | None:
    """The container's CPU time; None when it has no cgroup of its own for it."""
    where = _own_dir(dirs.of("cpuacct"))
    if where is not None:
        directory, version = where
        return read_v1_usage(directory, hz) if version == 1 else read_v2_usage(directory)
    # cpu.stat exists in every v2 cgroup, with or without the cpu controller enabled.
    unified = dirs.unified()
    if unified is not None and dirs.layout.v2 is not None:
        where = _own_dir((unified, 2, dirs.layout.v2.mountpoint))
        if where is not None:
            return read_v2_usage(where[0])
    return None


def spread(usage: CpuUsage, cpus: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """(user ns, system ns) for each CPU of the view, numbered from 0.

    A view CPU keeps the time its host CPU ran the container; time on CPUs outside the view (the
    quota view shows fewer CPUs than the cpuset lets the tasks run on; v2 has no per-CPU split)
    is shared evenly among the view's CPUs, so the lines add up to the container's CPU time.
    Every term only grows when the cgroup's counters grow."""
    n = max(len(cpus), 1)
    by_cpu = {cpu: (u, s) for cpu, u, s in usage.per_cpu}
    own = [by_cpu.get(cpu, (0, 0)) for cpu in cpus] or [(0, 0)]
    rest_u = max(usage.user_ns - sum(u for u, _ in own), 0)
    rest_s = max(usage.system_ns - sum(s for _, s in own), 0)

    def share(rest: int, i: int) -> int:
        return rest // n + (1 if i < rest % n else 0)

    return tuple((u + share(rest_u, i), s + share(rest_s, i)) for i, (u, s) in enumerate(own))


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
        where = _own_dir(dirs.of(ctrl))
        if where is not None:
            return where[0], "tasks" if where[1] == 1 else "cgroup.threads"
    unified = dirs.unified()
    if unified is not None and dirs.layout.v2 is not None:
        where = _own_dir((unified, 2, dirs.layout.v2.mountpoint))
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
