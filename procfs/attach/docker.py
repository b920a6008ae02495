"""`procfs docker-flags`: the `-v` flags (or a compose volumes list) that bind the served files
into a container Docker starts, for hosts whose runtime cannot be changed."""

from __future__ import annotations

import random
from typing import IO

from procfs.attach.attach import served_files, server_dev
from procfs.attach.errors import AttachError
from procfs.server.shards import choose

# runc (and so Docker) refuses bind mounts under /proc except on these files, the ones LXCFS
# emulates (runc libcontainer/rootfs_linux.go checkProcMount).
RUNC_PROC_MOUNTS = frozenset({
    "proc/cpuinfo", "proc/diskstats", "proc/meminfo", "proc/stat", "proc/swaps", "proc/uptime",
    "proc/loadavg", "proc/slabinfo", "proc/net/dev", "proc/sys/kernel/ns_last_pid",
})


def flag_files(mount: str) -> tuple[list[str], list[str]]:
    """(files Docker can bind, files runc refuses), from the running server's tree, or from the
    table when no server is mounted at `mount`."""
    try:
        server_dev(mount)
        files = served_files(mount)
    except AttachError:
        from procfs.config import Config
        from procfs.files.table import all_nodes
        from procfs.server.services import Services

        services = Services.build(Config(mountpoint=mount))
        try:
            files = sorted(n.path for n in all_nodes(services))
        finally:
            services.close()
    ok = [f for f in files if not f.startswith("proc/") or f in RUNC_PROC_MOUNTS]
    return ok, [f for f in files if f not in ok]


def docker_flags(mount: str, *, compose: bool = False, host_mount: str | None = None,
                 stream: IO[str] | None = None, key: int | None = None) -> str:
    """`-v SRC:DST:rw` per file (one a line, for `docker run $(procfs docker-flags) ...`), or a
    compose `volumes:` list. Files runc refuses are named on `stream` (stderr), not printed.
    For one container (`docker run`, on this host) the files come from one of the server's
    shards, as `procfs attach` would bind them, picked by `key` (default: at random, so that
    successive containers spread), and those only the server serves from `mount`; a compose
    list, reused by every container of a file, names `mount` alone."""
    ok, refused = flag_files(mount)
    src = (host_mount or mount).rstrip("/")
    if refused and stream is not None:
        print("procfs docker-flags: runc refuses binds on " + ", ".join("/" + f for f in refused)
              + "; attach them with the OCI hook or `procfs attach`", file=stream)
    sources = dict.fromkeys(ok, src)
    if not compose and host_mount is None:
        shard = choose(mount, random.getrandbits(64) if key is None else key)
        if shard != mount:
            sources.update(dict.fromkeys(set(ok) & set(served_files(shard)), shard))
    binds = [f"{sources[f]}/{f}:/{f}:rw" for f in ok]
    if compose:
        return "\n".join(["volumes:", *(f"  - {b}" for b in binds)])
    return "\n".join(f"-v {b}" for b in binds)
