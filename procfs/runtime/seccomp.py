"""Seccomp user notification (seccomp_unotify(2)) in ctypes.

A filter rule returning SECCOMP_RET_USER_NOTIF makes the calling thread wait in the kernel until
a supervisor holding the filter's *listener fd* answers. The supervisor:

    n = listener.receive()               # SECCOMP_IOCTL_NOTIF_RECV: {id, pid, data{nr, arch, args}}
    ... act for n.pid (in the receiver's pid namespace) ...
    listener.id_valid(n.id)              # SECCOMP_IOCTL_NOTIF_ID_VALID: still waiting?
    listener.send(Response.success(n.id, 0))   # SECCOMP_IOCTL_NOTIF_SEND

or `Response.continue_(n.id)` (SECCOMP_USER_NOTIF_FLAG_CONTINUE) to let the kernel run the call.
The listener fd is pollable: readable (POLLIN) while a notification waits to be received, POLLHUP
once no task uses the filter any more. RECV blocks (it ignores O_NONBLOCK) when nothing waits, so
receive only after a poll said POLLIN, and let one process receive from a listener at a time.

Numbers and layouts are include/uapi/linux/seccomp.h's; `notif_sizes()` asks the running kernel
(SECCOMP_GET_NOTIF_SIZES) and `Listener` allocates the larger of its and ours, as the man page
asks.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_GET_NOTIF_SIZES = 3
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1

# AUDIT_ARCH_* (include/uapi/linux/audit.h): seccomp_data.arch
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
AUDIT_ARCH_AARCH64 = 0xC00000B7
AUDIT_ARCH_ARM = 0x40000028
X32_SYSCALL_BIT = 0x40000000

SYS_SECCOMP = {"x86_64": 317, "aarch64": 277}
NATIVE_ARCH = {"x86_64": AUDIT_ARCH_X86_64, "aarch64": AUDIT_ARCH_AARCH64}
SYS_KCMP = {"x86_64": 312, "aarch64": 272}
KCMP_FILE = 0


class SeccompData(ctypes.Structure):
    _fields_ = (
        ("nr", ctypes.c_int32),
        ("arch", ctypes.c_uint32),
        ("instruction_pointer", ctypes.c_uint64),
        ("args", ctypes.c_uint64 * 6),
    )


class SeccompNotif(ctypes.Structure):
    _fields_ = (
        ("id", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("data", SeccompData),
    )


class SeccompNotifResp(ctypes.Structure):
    _fields_ = (
        ("id", ctypes.c_uint64),
        ("val", ctypes.c_int64),
        ("error", ctypes.c_int32),
        ("flags", ctypes.c_uint32),
    )


class SeccompNotifSizes(ctypes.Structure):
    _fields_ = (
        ("seccomp_notif", ctypes.c_uint16),
        ("seccomp_notif_resp", ctypes.c_uint16),
        ("seccomp_data", ctypes.c_uint16),
    )


def _ioc(direction: int, nr: int, size: int) -> int:
    """_IOC(dir, '!', nr, size) from include/uapi/asm-generic/ioctl.h (x86 and arm64 alike)."""
    return (direction << 30) | (size << 16) | (ord("!") << 8) | nr


_IOC_WRITE, _IOC_READ = 1, 2
SECCOMP_IOCTL_NOTIF_RECV = _ioc(_IOC_READ | _IOC_WRITE, 0, ctypes.sizeof(SeccompNotif))
SECCOMP_IOCTL_NOTIF_SEND = _ioc(_IOC_READ | _IOC_WRITE, 1, ctypes.sizeof(SeccompNotifResp))
SECCOMP_IOCTL_NOTIF_ID_VALID = _ioc(_IOC_WRITE, 2, ctypes.sizeof(ctypes.c_uint64))

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class Unsupported(OSError):
    """The kernel has no seccomp user notification we can use."""


@cache
def notif_sizes() -> SeccompNotifSizes:
    """The kernel's sizes of struct seccomp_notif, seccomp_notif_resp and seccomp_data."""
    nr = SYS_SECCOMP.get(platform.machine())
    if nr is None:
        raise Unsupported(errno.ENOSYS, f"no seccomp syscall number for {platform.machine()}")
    sizes = SeccompNotifSizes()
    if _libc.syscall(nr, SECCOMP_GET_NOTIF_SIZES, 0, ctypes.byref(sizes)) != 0:
        e = ctypes.get_errno()
        raise Unsupported(e, f"SECCOMP_GET_NOTIF_SIZES: {os.strerror(e)}")
    if sizes.seccomp_data < ctypes.sizeof(SeccompData):
        raise Unsupported(errno.EINVAL, f"seccomp_data is {sizes.seccomp_data} bytes")
    return sizes


# The same layouts as struct formats: decoding with them is what the answer path does (a
# NamedTuple from one unpack costs a third of reading the ctypes fields into a dataclass).
NOTIF = struct.Struct("=QIIiIQ6Q")
RESP = struct.Struct("=QqiI")
ID = struct.Struct("=Q")


class Notification(NamedTuple):
    id: int
    pid: int  # the calling thread (a TID), in the receiver's pid namespace; 0 if not visible
    flags: int
    nr: int
    arch: int
    instruction_pointer: int
    arg0: int
    arg1: int
    arg2: int
    arg3: int
    arg4: int
    arg5: int


@dataclass(frozen=True)
class Response:
    id: int
    val: int = 0
    error: int = 0  # a negative errno, as the kernel returns it: the call fails with -error
    flags: int = 0

    @classmethod
    def success(cls, id: int, val: int = 0) -> Response:
        return cls(id, val=val)

    @classmethod
    def failure(cls, id: int, err: int) -> Response:
        return cls(id, val=-1, error=-abs(err))

    @classmethod
    def continue_(cls, id: int) -> Response:
        return cls(id, flags=SECCOMP_USER_NOTIF_FLAG_CONTINUE)


class Listener:
    """One listener fd (not owned: the caller closes it) with its ioctl buffers."""

    def __init__(self, fd: int) -> None:
        sizes = notif_sizes()
        self.fd = fd
        self._recv = bytearray(max(sizes.seccomp_notif, NOTIF.size))
        self._zero = bytes(len(self._recv))
        self._send = bytearray(max(sizes.seccomp_notif_resp, RESP.size))
        self._id = bytearray(ID.size)

    def receive(self) -> Notification | None:
        """The next notification; None when it went away first (its caller got a signal).
        Blocks while none waits: poll for POLLIN first."""
        self._recv[:] = self._zero  # the kernel insists
        try:
            fcntl.ioctl(self.fd, SECCOMP_IOCTL_NOTIF_RECV, self._recv)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.EINTR):
                return None
            raise
        return Notification._make(NOTIF.unpack_from(self._recv))

    def send(self, resp: Response) -> bool:
        """Answer; False when the caller no longer waits (killed, or the id was answered)."""
        RESP.pack_into(self._send, 0, resp.id, resp.val, resp.error, resp.flags)
        try:
            fcntl.ioctl(self.fd, SECCOMP_IOCTL_NOTIF_SEND, self._send)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return False
            raise
        return True

    def id_valid(self, id: int) -> bool:
        """Whether notification `id` still waits: its caller is alive, so a pid read since it
        was received still names that caller."""
        ID.pack_into(self._id, 0, id)
        try:
            fcntl.ioctl(self.fd, SECCOMP_IOCTL_NOTIF_ID_VALID, self._id)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return False
            raise
        return True


def is_listener(fd: int) -> bool:
    """Whether `fd` is a seccomp listener (what runc sends should be; anything else is not ours
    to keep)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:seccomp notify"
    except OSError:
        return False


def same_file(a: int, b: int) -> bool:
    """Whether fds `a` and `b` of this process are one open file (kcmp KCMP_FILE): two copies
    of one listener. False where kcmp is missing."""
    nr = SYS_KCMP.get(platform.machine())
    if nr is None:
        return False
    pid = os.getpid()
    return bool(_libc.syscall(nr, pid, pid, KCMP_FILE, a, b) == 0)


def install_notify_filter(nrs: Iterable[int]) -> int:
    """Make the calling thread (and what it forks and executes) notify the native syscalls
    `nrs`; return the new listener fd. What runc does for a container, for the tests and the
    benchmark. Sets no_new_privs."""
    machine = platform.machine()
    if machine not in SYS_SECCOMP:
        raise Unsupported(errno.ENOSYS, f"no seccomp syscall number for {machine}")
    nrs = list(nrs)
    n = len(nrs)
    ld_abs, jeq, ret = 0x20, 0x15, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET
    prog = [(ld_abs, 0, 0, 4), (jeq, 0, n + 1, NATIVE_ARCH[machine]), (ld_abs, 0, 0, 0)]
    prog += [(jeq, n - k, 0, nr) for k, nr in enumerate(nrs)]  # -> the last instruction
    prog += [(ret, 0, 0, SECCOMP_RET_ALLOW), (ret, 0, 0, SECCOMP_RET_USER_NOTIF)]
    code = b"".join(struct.pack("=HBBI", *insn) for insn in prog)
    insns = ctypes.create_string_buffer(code, len(code))
    fprog = ctypes.create_string_buffer(struct.pack("=H6xQ", len(prog), ctypes.addressof(insns)))
    if _libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    fd = int(_libc.syscall(SYS_SECCOMP[machine], SECCOMP_SET_MODE_FILTER,
                           SECCOMP_FILTER_FLAG_NEW_LISTENER, fprog))
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"seccomp(SECCOMP_SET_MODE_FILTER): {os.strerror(e)}")
    return fd
