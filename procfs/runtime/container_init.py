"""A container's init as its runtime recorded it: pid, and start time in the time namespace the
runtime ran in at `create`.

Read from the runtime's state directory, not from `<runtime> state ID`: a runtime outside the
container's time namespace reads another start time for the init and answers `stopped`, pid 0
(see procfs.runtime.timens). A runtime whose layout is not known here gets no help: if its
container has a time namespace, the runtime made it (from the config) and joins it itself.
Layouts (runc 1.1 libcontainer, crun 1.8 status.c):
- runc: ROOT/ID/state.json `init_process_pid`, `init_process_start`; ROOT defaults to
  /run/runc, or $XDG_RUNTIME_DIR/runc when not root;
- crun: ROOT/ID/status `pid`, `process-start-time`; ROOT defaults to $XDG_RUNTIME_DIR/crun when
  that is set, else /run/crun.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Mapping

# (file in the container's directory, its pid key, its start-time key)
LAYOUTS = {
    "runc": ("state.json", "init_process_pid", "init_process_start"),
    "crun": ("status", "pid", "process-start-time"),
}


class InitRecord(NamedTuple):
    pid: int
    start: int | None  # clock ticks since boot in the runtime's time namespace; None: unknown


def kind(runtime: str) -> str:
    return "crun" if "crun" in os.path.basename(runtime) else "runc"


def default_root(kind_: str, environ: Mapping[str, str], euid: int) -> str:
    xdg = environ.get("XDG_RUNTIME_DIR")
    if kind_ == "crun":
        return os.path.join(xdg, "crun") if xdg else "/run/crun"
    return os.path.join(xdg, "runc") if xdg and euid != 0 else "/run/runc"


def _valid_id(container_id: str) -> bool:
    return bool(container_id) and "/" not in container_id and container_id not in (".", "..")


def recorded(root: str, container_id: str) -> InitRecord | None:
    """What the runtime recorded under `root` for `container_id` (either layout), or None."""
    if not _valid_id(container_id):
        return None
    for name, pid_key, start_key in LAYOUTS.values():
        try:
            with open(os.path.join(root, container_id, name), "rb") as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        pid, start = data.get(pid_key), data.get(start_key)
        if isinstance(pid, int) and pid > 0:
            return InitRecord(pid, start if isinstance(start, int) and start >= 0 else None)
    return None

