"""The floor: the smallest pyfuse3 server, serving constant bytes with procfs's mount options.

It answers the same FUSE requests as procfs (lookup, getattr, open, read, release; flush with
ENOSYS once) with the same options (allow_other, default_permissions, direct_io, procfs's
entry/attr timeouts) and does no work at all: what a read of it costs is the cost of the FUSE
round trips, of pyfuse3 and of trio. Each path holds a snapshot of the host's file taken at start,
so a read moves as many bytes as a read of procfs or LXCFS.

    python -m benchmarks.floor [--workers K] MOUNTPOINT PATH...

With `--workers K`, K processes serve the one FUSE connection: the lever procfs would need for
throughput on many cores, measured here where it costs nothing (constant bytes need no state
shared between the processes). The server mounts and answers FUSE_INIT in one process (libfuse
answers everything else with EIO until it has seen FUSE_INIT, which the kernel sends once), then
forks; every process reads requests from the inherited descriptor, and the kernel hands each
request to exactly one of them (the descriptor stays blocking: a process that wakes for a
request another one took waits in read() for the next).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import stat
import sys
from typing import Any

import pyfuse3
import trio

from procfs.fuse.ops import ATTR_TIMEOUT, ENTRY_TIMEOUT


class Floor(pyfuse3.Operations):
    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__()
        self.children: dict[int, dict[bytes, int]] = {pyfuse3.ROOT_INODE: {}}
        self.data: dict[int, bytes] = {}
        next_inode = pyfuse3.ROOT_INODE + 1
        for path, data in files.items():
            *parents, name = path.strip("/").split("/")
            cur = pyfuse3.ROOT_INODE
            for part in parents:
                key = part.encode()
                if key not in self.children[cur]:
                    self.children[cur][key] = next_inode
                    self.children[next_inode] = {}
                    next_inode += 1
                cur = self.children[cur][key]
            self.children[cur][name.encode()] = next_inode
            self.data[next_inode] = data
            next_inode += 1

    def _attrs(self, inode: int) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        if inode in self.children:
            a.st_mode, a.st_nlink = stat.S_IFDIR | 0o555, 2
        elif inode in self.data:
            a.st_mode, a.st_nlink = stat.S_IFREG | 0o444, 1
        else:
            raise pyfuse3.FUSEError(errno.ENOENT)
        a.st_ino = inode
        a.st_blksize = 4096
        a.entry_timeout = ENTRY_TIMEOUT
        a.attr_timeout = ATTR_TIMEOUT
        return a

    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self._attrs(inode)

    async def lookup(self, parent: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        inode = self.children.get(parent, {}).get(name)
        if inode is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attrs(inode)

    async def opendir(self, inode: int, ctx: Any) -> int:
        return inode

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        entries = sorted(self.children[fh].items())
        for i, (name, inode) in enumerate(entries[start_id:], start_id + 1):
            if not pyfuse3.readdir_reply(token, name, self._attrs(inode), i):
                break

    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        if inode not in self.data:
            raise pyfuse3.FUSEError(errno.EISDIR)
        return pyfuse3.FileInfo(fh=inode, direct_io=True, keep_cache=False, nonseekable=False)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return self.data[fh][off : off + size]

    async def flush(self, fh: int) -> None:
        raise pyfuse3.FUSEError(errno.ENOSYS)

    async def release(self, fh: int) -> None:
        return None

    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_namemax = 255
        return s


def snapshot(path: str) -> bytes:
    """The host's file at `path` ("proc/meminfo"), or a line of text when it has none."""
    try:
        with open("/" + path, "rb") as f:
            return f.read()
    except OSError:
        return b"constant\n"


def _mount(mountpoint: str, paths: list[str]) -> None:
    options = set(pyfuse3.default_options) | {"fsname=floor", "subtype=floor", "allow_other"}
    pyfuse3.init(Floor({p: snapshot(p) for p in paths}), mountpoint, options)


async def _loop() -> None:
    """Serve until SIGTERM or SIGINT (or the end of the session)."""
    async with trio.open_nursery() as nursery:

        async def stop_on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(stop_on_signal)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


async def _handshake(mountpoint: str) -> None:
    """Serve until FUSE_INIT has been answered: a statfs from another thread comes back only
    after it (the kernel holds every request until then), and is served by this loop."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pyfuse3.main)
        await trio.to_thread.run_sync(os.statvfs, mountpoint)
        nursery.cancel_scope.cancel()


def _die_with_parent() -> None:
    """SIGTERM when the first process dies, however it dies: a worker left behind would keep
    the connection, and with it the mount, alive."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _serve(mountpoint: str, paths: list[str], workers: int) -> None:
    _mount(mountpoint, paths)
    children: list[int] = []
    try:
        if workers > 1:
            trio.run(_handshake, mountpoint)
            for _ in range(workers - 1):
                pid = os.fork()
                if pid == 0:  # a worker: serve, and leave the unmount to the first process
                    _die_with_parent()
                    code = 0
                    try:
                        trio.run(_loop)
                    except BaseException:
                        code = 1
                    os._exit(code)
                children.append(pid)
        trio.run(_loop)
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        pyfuse3.close(unmount=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    workers = 1
    if args[:1] == ["--workers"] and len(args) > 1 and args[1].isdigit():
        workers, args = max(int(args[1]), 1), args[2:]
    if len(args) < 2 or not os.path.isdir(args[0]):
        print("usage: python -m benchmarks.floor [--workers K] MOUNTPOINT PATH...",
              file=sys.stderr)
        return 2
    _serve(args[0], args[1:], workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
