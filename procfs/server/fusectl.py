"""Tuning of our FUSE connection through fusectl (/sys/fs/fuse/connections/ID).

Why: the kernel sends FUSE_RELEASE as a background request, and lets at most `max_background`
(12 by default) of those be outstanding; the others wait in a queue that the kernel feeds into
the request queue only as earlier ones are answered, each behind every synchronous request then
pending. With about 40 or more containers opening and closing at full speed the releases come
faster than that trickle lets through: the queue of unsent releases, and with it the server's
table of open handles (each holding its rendering), grows without bound (measured: 100 readers,
+1.7 MB/s of RSS, 12 000 handles held after 20 s, all released at once when the readers stop).
Raising the limit lets a release travel with the requests around it.

fusectl is a singleton filesystem that systemd mounts at /sys/fs/fuse/connections. Where it is
not mounted, a child process mounts it in a private mount namespace of its own, writes, and
exits: the host's mount table is left as it was.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile

import trio

from procfs.sources.mountinfo import parse_mountinfo
from procfs.util.nsmount import CLONE_NEWNS, MS_PRIVATE, MS_REC, mount, umount, unshare

log = logging.getLogger(__name__)

DEFAULT_MAX_BACKGROUND = 1024


def connection_id(mountpoint: str) -> str:
    """fusectl's name for the connection mounted at `mountpoint`: the kernel's dev_t of it.
    Never from the server's own thread: the stat is a request that it would have to answer."""
    dev = os.stat(mountpoint).st_dev
    return str((os.major(dev) << 20) | os.minor(dev))


def fusectl_mount(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """Where fusectl is mounted in our mount namespace, or None."""
    with open(mountinfo) as f:
        entries = parse_mountinfo(f.read())
    return next((e.mountpoint for e in entries if e.fstype == "fusectl"), None)


def write_limits(conn_dir: str, max_background: int) -> tuple[int, int]:
    """Set max_background (and congestion_threshold to 3/4 of it, the kernel's own ratio);
    returns (old, new) max_background."""
    path = os.path.join(conn_dir, "max_background")
    with open(path) as f:
        old = int(f.read())
    with open(path, "w") as f:
        f.write(str(max_background))
    with open(os.path.join(conn_dir, "congestion_threshold"), "w") as f:
        f.write(str(max_background * 3 // 4))
    return old, max_background


def tune(mountpoint: str, max_background: int) -> tuple[int, int]:
    """Set the limits of the connection at `mountpoint` through a fusectl mount of our own if
    need be (to be run in a process of its own: it may leave our mount namespace)."""
    conn = connection_id(mountpoint)
    where = fusectl_mount()
    if where is not None:
        return write_limits(os.path.join(where, conn), max_background)
    unshare(CLONE_NEWNS)
    # our new namespace's mounts would still propagate to the host's: stop that first
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    with tempfile.TemporaryDirectory(prefix="procfs-fusectl-") as d:
        mount("fusectl", d, "fusectl", 0)
        try:
            return write_limits(os.path.join(d, conn), max_background)
        finally:
            with contextlib.suppress(OSError):
                umount(d)


async def tune_connection(mountpoint: str, max_background: int) -> None:
    """A trio task: tune the connection at `mountpoint` in a child process. Logs; never raises
    (a kernel without fusectl leaves the default, which only slows releases under load)."""
    if max_background <= 0:
        return
    try:
        argv = [sys.executable, "-m", "procfs.server.fusectl", mountpoint, str(max_background)]
        done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True,
                                      check=False)
        out = (done.stdout or done.stderr).decode(errors="replace").strip()
        if done.returncode == 0:
            log.info("fuse connection: %s", out)
        else:
            log.warning("could not raise the fuse connection's max_background: %s", out[-500:])
    except Exception:
        log.exception("could not raise the fuse connection's max_background")


def main(argv: list[str]) -> int:
    mountpoint, value = argv[0], int(argv[1])
    try:
        old, new = tune(mountpoint, value)
    except OSError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"{mountpoint}: max_background {old} -> {new}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
