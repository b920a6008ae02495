"""What a running server leaves under the state directory (/run/procfs): one record per served
mountpoint, so that `procfs reload` finds its server and a restarted `procfs serve` can tell a
dead server's mount from a live one.

`servers/<hash of the mountpoint>.json`: {"pid", "start" (the pid's start time in clock ticks:
a reused pid never matches), "mountpoint", "generation" (reloads done), "reload" (the last
reload's outcome), "shards" (the mountpoints of the other processes it runs, `--workers`),
"shard_of" (a shard's: the mountpoint of the server that runs it)}. Written atomically
(temporary file + rename); removed on a clean exit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

from procfs.errors import ProcfsError
from procfs.hostproc import HostProc
from procfs.state import default_path

DEAD_STATES = frozenset({"Z", "X"})  # /proc/PID/stat: zombie, dead


def state_dir() -> str:
    """The directory of the attachment state file (/run/procfs; $PROCFS_STATE moves both)."""
    return os.path.dirname(os.path.abspath(default_path()))


def write_json(path: str, data: Any) -> None:
    """Replace `path` atomically: readers see the old or the new file, never a torn one."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path: str) -> Any:
    """The file's JSON, or None when it is missing or garbled."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


@dataclass
class ServerRecord:
    pid: int
    start: int
    mountpoint: str
    generation: int = 0
    reload: dict[str, Any] = field(default_factory=dict)
    shards: list[str] = field(default_factory=list)
    shard_of: str = ""

    @staticmethod
    def path_for(mountpoint: str, real: bool = False) -> str:
        """The record's file. `real`: `mountpoint` is already resolved; the server itself must
        not resolve it once mounted (a lookup on its own mount from its only thread hangs)."""
        path = mountpoint if real else os.path.realpath(mountpoint)
        key = hashlib.sha1(path.encode()).hexdigest()[:16]
        return os.path.join(state_dir(), "servers", f"{key}.json")

    @classmethod
    def mine(cls, mountpoint: str, host: HostProc | None = None) -> ServerRecord:
        pid = os.getpid()
        start = (host or HostProc()).stat(pid).start_ticks
        return cls(pid, start, os.path.realpath(mountpoint))

    @classmethod
    def load(cls, path: str) -> ServerRecord | None:
        data = read_json(path)
        try:
            return cls(int(data["pid"]), int(data["start"]), str(data["mountpoint"]),
                       int(data.get("generation", 0)), dict(data.get("reload") or {}),
                       [str(m) for m in data.get("shards") or []],
                       str(data.get("shard_of") or ""))
        except (TypeError, KeyError, ValueError):
            return None

    @classmethod
    def of(cls, mountpoint: str) -> ServerRecord | None:
        return cls.load(cls.path_for(mountpoint))

    @classmethod
    def all(cls) -> list[ServerRecord]:
        directory = os.path.join(state_dir(), "servers")
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            return []
        found = (cls.load(os.path.join(directory, n)) for n in names if n.endswith(".json"))
        return [r for r in found if r is not None]

    def alive(self, host: HostProc | None = None) -> bool:
        """Whether the recorded process still runs (the same one: its start time matches). A
        zombie does not: killed and not yet reaped, it serves nothing (its files are closed)."""
        try:
            stat = (host or HostProc()).stat(self.pid)
        except (ProcfsError, OSError):
            return False
        return stat.start_ticks == self.start and stat.state not in DEAD_STATES

    def save(self) -> None:
        write_json(self.path_for(self.mountpoint, real=True), asdict(self))

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path_for(self.mountpoint, real=True))
