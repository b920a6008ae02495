"""The host's kernel lines that belong to a container, copied into its ring.

The OOM killer names its victim's memory cgroup (`oom-kill:...,oom_memcg=/P,task_memcg=/P,
task=NAME,pid=N,uid=U`, kernels ≥ 4.19, v1 and v2 alike), then `Memory cgroup out of memory:
Killed process N (NAME) ...` (older kernels: `Kill process N (NAME) score S or sacrifice child`
and `Killed process N ...`), and later `oom_reaper: reaped process N (NAME), ...`. The memcg path
is matched against each container's memory cgroup (the longest one that holds it); a pid against
the victims just named, else the pid namespace of the live process. In what is copied, cgroup
paths are made relative to the container's own (as a cgroup namespace would show them) and host
pids become the container's pids where they are known.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import stat
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from procfs.errors import ProcfsError
from procfs.kmsg.record import HostRecord, parse_kmsg
from procfs.sources.containers import Container
from procfs.sources.hostproc import HostProc

log = logging.getLogger(__name__)

OOM_KILL = re.compile(rb"\boom-kill:")
MEMCG = re.compile(rb"\b(?:task_memcg|oom_memcg)=([^,\s]+)")
CGROUP_FIELDS = re.compile(rb"\b(task_memcg|oom_memcg|cpuset)=([^,\s]+)")
OOM_PID = re.compile(rb",pid=(\d+)")
KILLED = re.compile(rb"\b(Killed process|Kill process|reaped process) (\d+)\b")
STATS = re.compile(rb"^Memory cgroup stats for (/\S*?):?$")
# Victims remembered from an oom-kill line for the lines that follow it (by pid only).
RECENT_VICTIMS = 64


@dataclass(frozen=True)
class Victim:
    key: tuple[int, int, int]
    inner_pid: int | None  # the pid inside the container, when it could be read


def memory_path(c: Container) -> str | None:
    """The container's memory cgroup path, as the kernel prints it (None: unknown or root)."""
    version = c.cgroups.layout.version_of("memory")
    path = c.cgroups.paths.v1.get("memory") if version == 1 else c.cgroups.paths.v2
    return None if path in (None, "", "/") else path


def cpuset_path(c: Container) -> str | None:
    version = c.cgroups.layout.version_of("cpuset")
    path = c.cgroups.paths.v1.get("cpuset") if version == 1 else c.cgroups.paths.v2
    return None if path in (None, "", "/") else path


def relative(path: str, top: str | None) -> str | None:
    """`path` seen from inside `top` ("/" for top itself); None when outside it."""
    if top is None:
        return None
    if path == top:
        return "/"
    if path.startswith(top.rstrip("/") + "/"):
        return path[len(top.rstrip("/")):]
    return None


class Router:
    def __init__(self, host: HostProc, containers: Callable[[], list[Container]],
                 deliver: Callable[[Container, int, bytes], None]) -> None:
        self.host = host
        self.containers = containers
        self.deliver = deliver  # (container, pri, text) → appended to its ring
        self.victims: OrderedDict[int, Victim] = OrderedDict()  # host pid → victim
        self.held: HostRecord | None = None  # a line whose pr_cont pieces may follow

    def by_memcg(self, path: str) -> Container | None:
        best: tuple[int, Container] | None = None
        for c in self.containers():
            top = memory_path(c)
            if top is not None and relative(path, top) is not None and (
                    best is None or len(top) > best[0]):
                best = (len(top), c)
        return best[1] if best else None

    def by_pid(self, pid: int) -> tuple[Container | None, int | None]:
        v = self.victims.get(pid)
        if v is not None:
            return next((c for c in self.containers() if c.key == v.key), None), v.inner_pid
        try:
            ns = self.host.pid_ns(pid)
            inner = self.host.status(pid).nspid
        except (ProcfsError, OSError):
            return None, None
        c = next((c for c in self.containers() if c.pidns == ns), None)
        return c, (inner[-1] if inner else None)

    def route(self, rec: HostRecord) -> tuple[Container, bytes] | None:
        """Where `rec` belongs and the text the container is shown; None: the host's alone."""
        text = rec.text
        if OOM_KILL.search(text):
            m = MEMCG.search(text)
            c = self.by_memcg(m.group(1).decode(errors="replace")) if m else None
            if c is None:
                return None
            pid_m = OOM_PID.search(text)
            inner = None
            if pid_m:
                host_pid = int(pid_m.group(1))
                inner = self._inner_pid(host_pid, c)
                self.victims[host_pid] = Victim(c.key, inner)
                while len(self.victims) > RECENT_VICTIMS:
                    self.victims.popitem(last=False)
            return c, self._rewrite(text, c, pid_m, inner)
        m = STATS.search(text)
        if m:
            path = m.group(1).decode(errors="replace")
            c = self.by_memcg(path)
            if c is None:
                return None
            inside = relative(path, memory_path(c)) or "/"
            return c, b"Memory cgroup stats for %s:" % inside.encode()
        k = KILLED.search(text)
        if k:
            c, inner = self.by_pid(int(k.group(2)))
            if c is None:
                return None
            if inner is not None:
                text = text[:k.start(2)] + b"%d" % inner + text[k.end(2):]
            return c, text
        return None

    def _inner_pid(self, host_pid: int, c: Container) -> int | None:
        try:
            if self.host.pid_ns(host_pid) != c.pidns:
                return None
            nspid = self.host.status(host_pid).nspid
        except (ProcfsError, OSError):
            return None
        return nspid[-1] if nspid else None

    def _rewrite(self, text: bytes, c: Container, pid_m: re.Match[bytes] | None,
                 inner: int | None) -> bytes:
        if pid_m is not None and inner is not None:
            text = text[:pid_m.start(1)] + b"%d" % inner + text[pid_m.end(1):]

        def local(m: re.Match[bytes]) -> bytes:
            value = m.group(2).decode(errors="replace")
            if m.group(1) == b"cpuset":  # v1 prints the cpuset cgroup's name, not its path
                top = cpuset_path(c)
                inside = "/" if top is not None and value == os.path.basename(top) else None
            else:
                inside = relative(value, memory_path(c))
            return m.group(0) if inside is None else m.group(1) + b"=" + inside.encode()

        return CGROUP_FIELDS.sub(local, text)

    def dispatch(self, rec: HostRecord) -> None:
        """Route `rec`, first joining the pieces of a line the kernel printed with pr_cont: when
        another CPU prints in between, `oom-kill:...` and its `,oom_memcg=/P,task_memcg=/P,...`
        (or `Memory cgroup stats for ` and its path) arrive as separate records."""
        held, self.held = self.held, None
        if held is not None:
            if rec.text.startswith((b",", b"/")):
                rec = dataclasses.replace(held, text=held.text + rec.text)
            else:
                self._dispatch(held)
        if _unfinished(rec.text):
            self.held = rec
            return
        self._dispatch(rec)

    def _dispatch(self, rec: HostRecord) -> None:
        try:
            routed = self.route(rec)
        except Exception:  # a bad line must not end the router
            log.exception("kmsg router: cannot route %r", rec.text[:120])
            return
        if routed is not None:
            self.deliver(routed[0], rec.pri, routed[1])


def _unfinished(text: bytes) -> bool:
    """A line whose continuation is still to come: an oom-kill line without its task fields, or
    a stats header without its path."""
    if OOM_KILL.search(text):
        return b",uid=" not in text
    return text.rstrip() == b"Memory cgroup stats for"


async def follow_host_log(path: str, router: Router,
                          task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Read the host's kernel log at `path` from now on and dispatch every record.

    Starts at the end: older lines predate the rings, and a cgroup path reused since would send
    them to the wrong container. A FIFO (tests) is opened read-write so that it never ends; a
    regular file is read to its end."""
    try:
        st = os.stat(path)
        mode = os.O_RDWR if stat.S_ISFIFO(st.st_mode) else os.O_RDONLY
        fd = os.open(path, mode | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        log.warning("kmsg router: cannot read %s (%s); no host lines will be routed", path, e)
        task_status.started()
        return
    try:
        if stat.S_ISCHR(st.st_mode):
            os.lseek(fd, 0, os.SEEK_END)
        task_status.started()
        pending = b""
        while True:
            try:
                chunk = os.read(fd, 16384)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(fd)
                continue
            except BrokenPipeError:  # overtaken: go on from the oldest record
                log.warning("kmsg router: host records were overwritten before routing")
                continue
            if not chunk:
                if stat.S_ISREG(st.st_mode):
                    return
                await trio.sleep(0.1)
                continue
            await trio.lowlevel.checkpoint()
            data = pending + chunk
            # /dev/kmsg gives whole records; a pipe may cut one: keep an unfinished tail.
            cut = data.rfind(b"\n") + 1
            pending = data[cut:]
            for rec in parse_kmsg(data[:cut]):
                router.dispatch(rec)
    finally:
        os.close(fd)
