"""Writing an answer into another process's memory, with the kernel's errors.

`process_vm_writev(2)` writes only where the process itself could (a read-only or unmapped
buffer fails with EFAULT, as the kernel's own copy_to_user would), in one syscall. Where it is
missing (ENOSYS) or refused (EPERM) the fallback is /proc/PID/mem, which writes through read-only
mappings too (the kernel's FOLL_FORCE), so it is only the fallback. Both take a thread id.
"""

from __future__ import annotations

import ctypes
import errno
import os


class _Iovec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


_libc = ctypes.CDLL(None, use_errno=True)
_process_vm_writev = _libc.process_vm_writev
_process_vm_writev.restype = ctypes.c_ssize_t
_process_vm_writev.argtypes = (ctypes.c_int, ctypes.POINTER(_Iovec), ctypes.c_ulong,
                               ctypes.POINTER(_Iovec), ctypes.c_ulong, ctypes.c_ulong)


class RemoteWriter:
    """Writes up to `capacity` bytes at an address of another process; `write` returns 0 or an
    errno (EFAULT: the address is not writable there, as a partial write also is; ESRCH: the
    process is gone)."""

    def __init__(self, capacity: int = 4096) -> None:
        self._buf = ctypes.create_string_buffer(capacity)
        self._local = _Iovec(ctypes.addressof(self._buf), 0)
        self._remote = _Iovec(0, 0)
        self._local_ref, self._remote_ref = ctypes.byref(self._local), ctypes.byref(self._remote)
        self.use_vm_writev = True  # turned off for good after ENOSYS

    def write(self, pid: int, addr: int, data: bytes) -> int:
        n = len(data)
        if n > len(self._buf):
            raise ValueError(f"{n} bytes > capacity {len(self._buf)}")
        if not 0 < addr < 1 << 63:  # NULL, or the kernel's half: no process writes there
            return errno.EFAULT
        if self.use_vm_writev:
            ctypes.memmove(self._buf, data, n)
            self._local.len = self._remote.len = n
            self._remote.base = addr
            done = _process_vm_writev(pid, self._local_ref, 1, self._remote_ref, 1, 0)
            if done == n:
                return 0
            if done >= 0:
                return errno.EFAULT
            err = ctypes.get_errno()
            if err == errno.ENOSYS:
                self.use_vm_writev = False
            elif err != errno.EPERM:
                return err
        return self._write_mem(pid, addr, data)

    @staticmethod
    def _write_mem(pid: int, addr: int, data: bytes) -> int:
        try:
            fd = os.open(f"/proc/{pid}/mem", os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return errno.ESRCH
        except OSError as e:
            return e.errno or errno.EPERM
        try:
            done = os.pwrite(fd, data, addr)
        except OSError as e:  # EIO: nothing mapped there
            return errno.EFAULT if e.errno in (errno.EIO, errno.EFAULT) else (e.errno or errno.EIO)
        finally:
            os.close(fd)
        return 0 if done == len(data) else errno.EFAULT
