"""Callers a killed server left waiting, and how to wake them.

A notification the server has received (SECCOMP_IOCTL_NOTIF_RECV) but not answered when it is
killed stays "sent" for good: the listener file lives on in the keeper, so the kernel never
cancels it, and no later RECV returns it. Its caller would wait in sysinfo(2) until killed.
The kernel only drops such a notification when the caller is interrupted by a signal, and then
restarts the call, which makes a new notification. A signal would show (SIGSTOP/SIGCONT tell
the parent's wait(WUNTRACED), as job-control shells use); a ptrace interruption does not:

    PTRACE_SEIZE, PTRACE_INTERRUPT  -> the wait ends, the call is set to restart, the thread stops
    waitpid(__WALL), PTRACE_DETACH  -> it runs on and makes the call again

So after taking over, the new server looks for threads waiting in a seccomp notification inside
a sysinfo call (/proc/TID/wchan, /proc/TID/syscall) in its containers' pid namespaces and
interrupts them (`kick`). One that waited for a notification nobody had received yet loses
nothing: it is notified again and answered.
"""

from __future__ import annotations

import ctypes
import os
import platform
import signal
from collections.abc import AsyncIterator, Iterable

import trio

PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_EVENT_STOP = 128
WALL = 0x40000000  # __WALL: threads too
KICK_TIMEOUT = 5.0  # s for the interrupted thread to stop

# The numbers /proc/TID/syscall shows for sysinfo: native, then 32-bit (compat) callers.
SYSINFO_NRS = {"x86_64": frozenset({99, 116}), "aarch64": frozenset({179, 116})}.get(
    platform.machine(), frozenset())
WAIT_SYMBOL = "seccomp_do_user_notification"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.restype = ctypes.c_long
_libc.ptrace.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def pid_namespace(pid: int, proc: str = "/proc") -> int | None:
    try:
        return os.stat(f"{proc}/{pid}/ns/pid").st_ino
    except OSError:
        return None


def waiting_in_sysinfo(tid_dir: str) -> bool:
    """Whether the thread at /proc/PID/task/TID waits for a seccomp notification's answer in
    sysinfo(2)."""
    try:
        if not _read(f"{tid_dir}/wchan").startswith(WAIT_SYMBOL):
            return False
        nr = _read(f"{tid_dir}/syscall").split(maxsplit=1)[0]
    except (OSError, IndexError):
        return False
    return nr.isdigit() and int(nr) in SYSINFO_NRS


async def waiting_callers(namespaces: Iterable[int], proc: str = "/proc") -> AsyncIterator[int]:
    """The threads in these pid namespaces that wait in sysinfo for a seccomp answer."""
    wanted = set(namespaces)
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return
    for i, pid in enumerate(pids):
        if i % 64 == 0:
            await trio.lowlevel.checkpoint()
        if pid_namespace(int(pid), proc) not in wanted:
            continue
        try:
            tids = os.listdir(f"{proc}/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            if tid.isdigit() and waiting_in_sysinfo(f"{proc}/{pid}/task/{tid}"):
                yield int(tid)


def _ptrace(request: int, tid: int, data: int = 0) -> int:
    if _libc.ptrace(request, tid, None, data or None) == 0:
        return 0
    return ctypes.get_errno()


async def kick(tid: int, poll: float = 0.001) -> bool:
    """Interrupt thread `tid`'s wait so that its call restarts; False if it could not be
    (traced by someone else, gone). A signal that stops it meanwhile is passed on."""
    if _ptrace(PTRACE_SEIZE, tid) != 0:
        return False
    if _ptrace(PTRACE_INTERRUPT, tid) != 0:
        _ptrace(PTRACE_DETACH, tid)
        return False
    waited = 0.0
    while True:
        try:
            got, status = os.waitpid(tid, os.WNOHANG | WALL)
        except ChildProcessError:  # gone
            return False
        if got == tid:
            if not os.WIFSTOPPED(status):
                return False  # it died meanwhile
            sig = os.WSTOPSIG(status)
            passed_on = sig if status >> 16 == 0 and sig != signal.SIGTRAP else 0
            return _ptrace(PTRACE_DETACH, tid, passed_on) == 0
        # Still running on (an uninterruptible sleep, say): detaching needs it stopped, so wait
        # however long it takes rather than leave it stopped under a tracer; should someone
        # else have collected its stop, the detach alone succeeds.
        if waited > KICK_TIMEOUT and _ptrace(PTRACE_DETACH, tid) == 0:
            return True
        await trio.sleep(poll if waited < 0.1 else 0.01)
        waited += poll if waited < 0.1 else 0.01
