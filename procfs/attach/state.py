"""Which containers `procfs attach` has attached: a small JSON file the recovery code reads.

One entry per container init. An entry is identified by the init's pid *and* its start time
(a pid alone may be reused); entries whose process is gone, or is another process now, are
pruned on every write. Writes are atomic (write a temporary file, fsync, rename) and serialised
by an exclusive `flock` on a lock file beside it, so concurrent hooks do not lose entries.

The default path is `/run/procfs/attached.json`; `PROCFS_STATE` or an explicit path overrides it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from procfs.config import state_path
from procfs.errors import ProcfsError
from procfs.sources.hostproc import HostProc
from procfs.sources.identity import ProcessIdentity
from procfs.util.atomic import write_json
from procfs.util.lock import locked

VERSION = 1

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attachment:
    """One attached container, as `procfs attach` left it."""

    pid: int  # the container's init (or the process attached), in the host's pid namespace
    start_ticks: int  # its start time on the host's clock (sources.identity): pid + this is unique
    pidns: int  # inode of its pid namespace
    mntns: int  # inode of its mount namespace
    mountpoint: str  # the procfs mount the binds come from
    rootfs: str | None = None  # the rootfs prefix given (before pivot_root), if any
    files: tuple[str, ...] = ()  # paths under the mount that are bound, e.g. "proc/meminfo"
    created: tuple[str, ...] = ()  # targets procfs created (an empty dev/kmsg), removed on detach
    container_id: str | None = None  # the runtime's id (OCI hook), for messages only
    attached_at: float = 0.0  # time.time() of the attach

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["files"], d["created"] = list(self.files), list(self.created)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Attachment:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["files"] = tuple(kw.get("files", ()))
        kw["created"] = tuple(kw.get("created", ()))
        return cls(**kw)

    def alive(self, host: HostProc | None = None) -> bool:
        """Is the process this entry was made for still running (same pid, same start)?"""
        return ProcessIdentity(self.pid, self.start_ticks).alive(host)


class StateError(ProcfsError):
    """The state file exists but cannot be read or written."""


@dataclass
class StateFile:
    """The attachments, read and written as a whole under a lock."""

    path: str = field(default_factory=state_path)
    host: HostProc = field(default_factory=HostProc)

    def load(self) -> list[Attachment]:
        """All entries, the dead included (the recovery code decides what to do with them).
        A file that cannot be read or is not a state file (empty, truncated, garbage) is set
        aside with a log line and counts as empty: it must not stop attaching, and recovery
        does not depend on it (a restarted server finds the binds in the mount tables)."""
        try:
            with open(self.path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            return self._set_aside(f"cannot read it: {e}")
        if not isinstance(data, dict) or not isinstance(data.get("attached"), list):
            return self._set_aside("not a procfs state file")
        try:
            return [Attachment.from_json(d) for d in data["attached"]
                    if isinstance(d, dict)]
        except (TypeError, ValueError) as e:
            return self._set_aside(f"a bad entry: {e}")

    def _set_aside(self, why: str) -> list[Attachment]:
        aside = f"{self.path}.bad-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:  # another process set it aside first
            return []
        except OSError as e:
            raise StateError(f"{self.path}: {why}, and cannot move it aside: {e}") from e
        log.warning("%s: %s; moved aside to %s, starting afresh", self.path, why, aside)
        return []

    def live(self) -> list[Attachment]:
        return [a for a in self.load() if a.alive(self.host)]

    def find(self, pid: int) -> Attachment | None:
        return next((a for a in self.live() if a.pid == pid), None)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(locked(self.path + ".lock"))
            except OSError as e:
                raise StateError(f"cannot lock {self.path}: {e.strerror}") from e
            yield

    def _write(self, entries: list[Attachment]) -> None:
        data = {"version": VERSION, "attached": [a.to_json() for a in entries]}
        try:
            write_json(self.path, data, fsync=True)
        except OSError as e:
            raise StateError(f"cannot write {self.path}: {e.strerror}") from e

    def update(self, change: Callable[[list[Attachment]], list[Attachment]]) -> list[Attachment]:
        """Apply `change` to the live entries (dead ones pruned) and write the result."""
        with self._locked():
            entries = change(self.live())
            self._write(entries)
            return entries

    def merge(self, entry: Attachment, handled: Collection[str],
              uncreated: Collection[str] = ()) -> None:
        """Record `entry` as what one attach did to the files it `handled` (bound, kept or
        unbound): what an earlier attach of the same process recorded for the other files stays
        (a server repairs only the files it serves in a container whose others a shard serves).
        `uncreated`: created twins that attach removed."""

        def change(entries: list[Attachment]) -> list[Attachment]:
            files, created = set(entry.files), set(entry.created)
            for e in entries:
                if e.pid == entry.pid and e.start_ticks == entry.start_ticks:
                    files |= set(e.files) - set(handled)
                    created |= set(e.created) - set(uncreated)
            merged = replace(entry, files=tuple(sorted(files)), created=tuple(sorted(created)))
            return [*(e for e in entries if e.pid != entry.pid), merged]

        self.update(change)

    def forget(self, pid: int) -> None:
        self.update(lambda es: [e for e in es if e.pid != pid])

    def prune(self) -> list[Attachment]:
        """Drop the entries of processes that are gone; the live ones."""
        return self.update(lambda es: es)
