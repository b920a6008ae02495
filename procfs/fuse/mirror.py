"""A directory of the host's served as it is, except for what a container must not see.

`sys/devices/system/cpu` is one: htop, sysstat, `nproc --all`, lscpu and psutil count its `cpuN`
directories, so a container must find there only its own CPUs; everything else (cpufreq,
cpuidle, vulnerabilities, each CPU's topology and caches, kernel_max...) is the host's, read
through. Files of the served table inside the directory (its `online`, `possible`...) take the
place of the host's.

The host's entries are looked up by path when asked for: nothing is copied or cached beyond the
kernel's own entry and attribute timeouts. Read-only: the files open for reading only.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass

from procfs.errors import Refused
from procfs.fuse.nodes import MAX_RENDERED, BytesFile, Caller, OpenFile
from procfs.sources.containers import Container

# Whether a container (None: the host) may see `name` in the directory `rel` of the mirror
# ("" its top).
Hidden = Callable[[Container | None, str, str], bool]


def never(c: Container | None, rel: str, name: str) -> bool:
    return False


@dataclass
class MirrorNode:
    path: str  # where the directory is in the tree: "sys/devices/system/cpu"
    host_dir: str  # the host's directory it mirrors
    hidden: Hidden = never

    def host_path(self, rel: str) -> str:
        return os.path.join(self.host_dir, rel) if rel else self.host_dir

    def lstat(self, rel: str) -> os.stat_result:
        """The host entry at `rel` (OSError as the host's: ENOENT, EACCES...)."""
        return os.lstat(self.host_path(rel))

    def visible(self, c: Container | None, rel: str) -> bool:
        parent, _, name = rel.rpartition("/")
        return not self.hidden(c, parent, name)

    def names(self, c: Container | None, rel: str) -> list[str]:
        """What a listing of the directory `rel` shows `c`."""
        try:
            with os.scandir(self.host_path(rel)) as it:
                names = [e.name for e in it]
        except OSError as e:
            raise Refused(f"{self.path}/{rel}: {e.strerror}", e.errno or errno.EIO) from e
        return sorted(n for n in names if not self.hidden(c, rel, n))

    def readlink(self, rel: str) -> bytes:
        return os.fsencode(os.readlink(self.host_path(rel)))

    async def open(self, rel: str, caller: Caller, flags: int) -> OpenFile:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise Refused(f"{self.path}/{rel} is read-only here", errno.EACCES)
        path = self.host_path(rel)
        if not stat.S_ISREG(self.lstat(rel).st_mode):
            raise Refused(f"{self.path}/{rel} is not a file", errno.EISDIR)

        def read() -> bytes:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                chunks, total = [], 0
                while total < MAX_RENDERED and (chunk := os.read(fd, 65536)):
                    chunks.append(chunk)
                    total += len(chunk)
                return b"".join(chunks)
            finally:
                os.close(fd)

        return BytesFile(read)
