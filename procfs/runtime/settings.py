"""Which runtime the wrapper executes, where the server is mounted, where its sysinfo listener
waits.

Each setting comes from, in this order: its environment variable, the JSON file
`/etc/procfs/runtime.json` (another file with `PROCFS_RUNTIME_CONFIG`), the default:

    setting          variable                JSON key          default
    runtime          PROCFS_RUNTIME          "runtime"         runc (searched in PATH)
    mount            PROCFS_MOUNT            "mount"           /var/lib/procfs
    sysinfo socket   PROCFS_SYSINFO_SOCKET   "sysinfo_socket"  /run/procfs/sysinfo.sock
    hook's state     PROCFS_STATE            "state"           (the hook's own default)

An empty variable counts as unset. A file that cannot be read or parsed is reported on stderr
and ignored: a container must not fail to start because of procfs.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

CONFIG_FILE = "/etc/procfs/runtime.json"
CONFIG_ENV = "PROCFS_RUNTIME_CONFIG"
DEFAULTS: dict[str, str | None] = {
    "runtime": "runc",
    "mount": "/var/lib/procfs",
    "sysinfo_socket": "/run/procfs/sysinfo.sock",
    "state": None,
}
ENV = {
    "runtime": "PROCFS_RUNTIME",
    "mount": "PROCFS_MOUNT",
    "sysinfo_socket": "PROCFS_SYSINFO_SOCKET",
    "state": "PROCFS_STATE",
}
# Where shims look when their PATH is bare.
FALLBACK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Settings(NamedTuple):
    runtime: str  # a name (searched in PATH) or a path
    mount: str
    sysinfo_socket: str
    state: str | None  # passed to the hook as PROCFS_STATE when set


def _file_values(path: str, warn: Callable[[str], None]) -> dict[str, str]:
    try:
        f = open(path)  # noqa: SIM115 (json is imported only when there is a file)
    except FileNotFoundError:
        return {}
    except OSError as e:
        warn(f"ignoring {path}: {e}")
        return {}
    import json

    try:
        with f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        warn(f"ignoring {path}: {e}")
        return {}
    if not isinstance(data, dict):
        warn(f"ignoring {path}: not a JSON object")
        return {}
    values = {}
    for key, value in data.items():
        if key not in DEFAULTS:
            warn(f"{path}: unknown key {key!r}")
        elif isinstance(value, str) and value:
            values[key] = value
        else:
            warn(f"{path}: {key!r} is not a non-empty string")
    return values


def load(environ: Mapping[str, str], warn: Callable[[str], None]) -> Settings:
    values = dict(DEFAULTS)
    values.update(_file_values(environ.get(CONFIG_ENV) or CONFIG_FILE, warn))
    for key, var in ENV.items():
        if environ.get(var):
            values[key] = environ[var]
    runtime, mount, socket = values["runtime"], values["mount"], values["sysinfo_socket"]
    assert runtime is not None and mount is not None and socket is not None
    return Settings(runtime, mount, socket, values["state"])


def same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def resolve_runtime(name: str, path_env: str | None, avoid: str) -> str | None:
    """The executable `name` names: itself when it holds a slash, else the first match in
    `path_env` that is not the file `avoid` (this wrapper, installed under the runtime's name,
    must not execute itself)."""
    if "/" in name:
        return name
    for d in (path_env or FALLBACK_PATH).split(os.pathsep):
        candidate = os.path.join(d or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK) \
                and not same_file(candidate, avoid):
            return candidate
    return None
