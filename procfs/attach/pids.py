"""Which process a hook means: the container's init, as the host's /proc names it."""

from __future__ import annotations

from procfs.attach.errors import NoProcess
from procfs.errors import ProcfsError
from procfs.sources.hostproc import HostProc


def ns_ancestor(ns_pid: int, host: HostProc, depth: int = 8) -> int:
    """The pid, in /proc's namespace, of the process that is `ns_pid` in *our* pid namespace.

    A hook that runs inside a container (OCI createContainer, LXC mount hook) is in the
    container's pid namespace while /proc is still the host's: its init is one of its
    ancestors. Outside a child pid namespace `ns_pid` is already the answer."""
    try:
        me = host.status("self")  # type: ignore[arg-type]
        ours = host.pid_ns("self")
    except ProcfsError:
        return ns_pid
    if len(me.nspid) <= 1:
        return ns_pid
    pid = me.ppid
    for _ in range(depth):
        if pid <= 0:
            break
        try:
            st = host.status(pid)
            if st.nspid and st.nspid[-1] == ns_pid and host.pid_ns(pid) == ours:
                return pid
        except ProcfsError:
            break
        pid = st.ppid
    raise NoProcess(f"pid {ns_pid} of the hook's pid namespace is not among its ancestors")


def caller_init(host: HostProc) -> int:
    """`procfs attach init`: the init of the caller's pid namespace when the caller runs in a
    child pid namespace (an LXC mount hook), else the caller's parent (the hook's shell)."""
    try:
        me = host.status("self")  # type: ignore[arg-type]
    except ProcfsError as e:
        raise NoProcess("cannot read /proc/self/status") from e
    if len(me.nspid) <= 1:
        return me.ppid
    return ns_ancestor(1, host)
