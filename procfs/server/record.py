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
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from procfs.config import state_dir
from procfs.sources.hostproc import HostProc
from procfs.sources.identity import ProcessIdentity, host_start_ticks
from procfs.util.atomic import read_json, write_json


def mount_key(mountpoint: str, real: bool = False) -> str:
    """A short name for a mountpoint, for the files about its server (record, control socket,
    shards' directory). `real`: `mountpoint` is already resolved; the server itself must not
    resolve it once mounted (a lookup on its own mount from its only thread hangs)."""
    path = mountpoint if real else os.path.realpath(mountpoint)
    return hashlib.sha256(path.encode()).hexdigest()[:16]


@dataclass
class ServerRecord:
    pid: int
    start: int
    mountpoint: str
    generation: int = 0
    reload: dict[str, Any] = field(default_factory=dict)
    shards: list[str] = field(default_factory=list)
    shard_of: str = ""
    dev: str = ""  # its mount's device ("major:minor"): binds of it in containers say whose

    @staticmethod
    def path_for(mountpoint: str, real: bool = False) -> str:
        """The record's file (see `mount_key` for `real`)."""
        return os.path.join(state_dir(), "servers", f"{mount_key(mountpoint, real)}.json")

    @classmethod
    def mine(cls, mountpoint: str, host: HostProc | None = None) -> ServerRecord:
        pid = os.getpid()
        start = host_start_ticks(host or HostProc(), pid)
        return cls(pid, start, os.path.realpath(mountpoint))

    @classmethod
    def load(cls, path: str) -> ServerRecord | None:
        data = read_json(path)
        try:
            return cls(int(data["pid"]), int(data["start"]), str(data["mountpoint"]),
                       int(data.get("generation", 0)), dict(data.get("reload") or {}),
                       [str(m) for m in data.get("shards") or []],
                       str(data.get("shard_of") or ""), str(data.get("dev") or ""))
        except (TypeError, KeyError, ValueError, AttributeError):
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
        """Whether the recorded process still runs (the same one: its start time matches)."""
        return ProcessIdentity(self.pid, self.start).alive(host)

    def save(self) -> None:
        write_json(self.path_for(self.mountpoint, real=True), asdict(self))

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path_for(self.mountpoint, real=True))
