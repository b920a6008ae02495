"""`procfs serve`: mount the tree and serve it until SIGTERM or SIGINT."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

import pyfuse3
import trio

from procfs.fs import ProcFS
from procfs.fusectl import tune_connection
from procfs.prefork import Forked, fork_shards
from procfs.reattach import repair_attached
from procfs.record import ServerRecord
from procfs.registry import all_nodes
from procfs.reload import ReloadError, reload_code
from procfs.services import Config, Services
from procfs.shards import shard_mountpoints, shard_root
from procfs.supervise import Shard, start_shards, watch_lifeline

log = logging.getLogger(__name__)

LIVE_PROBE_SECONDS = 2.0  # how long a recorded live server's mount may take to answer statfs


class UsageError(Exception):
    """A one-line refusal for the command line."""


def topmost_mount(path: str) -> tuple[str, str] | None:
    """(filesystem type, root within its filesystem) of the topmost mount at `path`, or None
    when none is there. Read from mountinfo: unlike stat, it neither fails nor hangs on a dead
    FUSE mount."""
    target = os.path.realpath(path)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if len(fields) > 4 and fields[4].encode().decode("unicode_escape") == target:
                found = (right.split()[0] if right else "?",
                         fields[3].encode().decode("unicode_escape"))
    return found


def mount_type(path: str) -> str | None:
    """The filesystem type of the mount at `path` (the topmost), or None when none is there."""
    top = topmost_mount(path)
    return top[0] if top is not None else None


def detach(path: str) -> None:
    """Lazily unmount `path` (MNT_DETACH): processes that still use it keep it, nobody new."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(os.fsencode(path), 2) != 0:  # MNT_DETACH
        err = ctypes.get_errno()
        done = subprocess.run(["fusermount3", "-u", "-z", path], capture_output=True, check=False)
        if done.returncode != 0:
            raise OSError(err, f"cannot unmount {path}: {os.strerror(err)}")


def connection_dead(path: str, timeout: float | None = None) -> bool:
    """Whether the FUSE mount at `path` lost its server: statfs answers ENOTCONN (not stat: the
    kernel answers stat from its attribute cache for a while after the server died). With
    `timeout`, a mount that does not answer in time (a stopped server) counts as live."""
    if timeout is None:
        try:
            os.statvfs(path)
        except OSError as e:
            if e.errno != errno.ENOTCONN:
                raise
            return True
        return False
    # A thread: a statfs stuck on a stopped server must not hold `procfs serve` up.
    answer: list[bool] = []

    def probe_once() -> None:
        with contextlib.suppress(OSError):  # other errors say nothing of liveness
            answer.append(connection_dead(path))

    probe = threading.Thread(target=probe_once, daemon=True)
    probe.start()
    probe.join(timeout)
    return answer == [True]


def take_over_dead_mount(path: str) -> bool:
    """If `path` is a procfs mount whose server died, unmount it and say True. Refuses a mount
    whose server still runs; leaves every other kind of mount alone (check_mountpoint refuses).
    Dead: the connection answers ENOTCONN, also while the recorded process still shows (a
    killed server not yet reaped is a zombie, and its connection closed with its files)."""
    kind = mount_type(path)
    if kind is None or not kind.startswith("fuse") or "procfs" not in kind:
        return False
    record = ServerRecord.of(path)
    if record is not None and record.alive():
        if not connection_dead(path, timeout=LIVE_PROBE_SECONDS):
            raise UsageError(f"mountpoint {path} is served by pid {record.pid}")
    elif not connection_dead(path):
        raise UsageError(f"mountpoint {path} is served by another process")
    log.warning("%s: its server died; taking it over", path)
    detach(path)
    return True


def check_mountpoint(path: str) -> None:
    take_over_dead_mount(path)
    if not os.path.exists(path):
        raise UsageError(f"mountpoint {path} does not exist")
    if not os.path.isdir(path):
        raise UsageError(f"mountpoint {path} is not a directory")
    # A directory bound there is no obstacle: a container's volume (the DaemonSet's hostPath
    # /var/lib/procfs) is always such a mount. A filesystem mounted there is.
    top = topmost_mount(path)
    if top is not None and (top[1] == "/" or top[0].startswith("fuse")):
        raise UsageError(f"mountpoint {path} is already a mount")
    if os.listdir(path):
        raise UsageError(f"mountpoint {path} is not empty")


def mount_options(config: Config) -> set[str]:
    options = set(pyfuse3.default_options)  # default_permissions: the kernel checks modes
    options |= {"fsname=procfs", "subtype=procfs", "allow_other"}
    if config.fuse_debug:
        options.add("debug")
    return options


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) how we are; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(message.encode(), address)


def reload_server(ops: ProcFS, services: Services, record: ServerRecord) -> bool:
    """SIGHUP (and `procfs reload`): new code into service; the outcome goes to the record."""
    sd_notify("RELOADING=1")
    t0 = time.monotonic()
    outcome: dict[str, object]
    try:
        result = reload_code(ops, services)
        outcome = {"ok": True, "modules": len(result.modules), "files": result.files,
                   "seconds": round(result.seconds, 4)}
    except ReloadError as e:
        outcome = {"ok": False, "error": str(e), "seconds": round(time.monotonic() - t0, 4)}
    record.generation += 1
    record.reload = outcome
    with contextlib.suppress(OSError):
        record.save()
    sd_notify("READY=1")
    return bool(outcome["ok"])


async def _watch_signals(cancel: trio.CancelScope, ops: ProcFS, services: Services,
                         record: ServerRecord, shards: list[Shard]) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                for shard in shards:
                    shard.signal(signal.SIGHUP)
                reload_server(ops, services, record)
                continue
            log.info("%s: unmounting", signal.Signals(signum).name)
            sd_notify("STOPPING=1")
            cancel.cancel()
            return


def shard_argv(config: Config, mountpoint: str) -> list[str]:
    """The command that runs one shard of the server `config` describes (an exec: a restart)."""
    return [sys.executable, "-m", "procfs", *shard_args(config, mountpoint)]


def shard_args(config: Config, mountpoint: str) -> list[str]:
    """`procfs serve` for one shard of the server `config` describes: the same options (each
    one of cli.serve_config's; test_shards checks that they all come back), but no dev/kmsg.
    The server lends its own to the shards' containers (procfs.attach): all rings live in one
    process, and a shard, where no request waits, runs one pyfuse3 worker task."""
    c = config
    argv = [*["-v"] * c.verbose, "serve", mountpoint,
            "--shard-of", os.path.realpath(c.mountpoint), "--proc-root", c.proc_root,
            "--sys-root", c.sys_root, "--cpu-view", c.cpu_view.value,
            "--cache-ttl", repr(c.cache_ttl), "--max-background", str(c.max_background),
            "--control-dir", c.control_dir, "--kmsg-ring-size", str(c.kmsg.ring_bytes),
            "--kmsg-host-log", c.kmsg.host_log or "", "--no-kmsg", "--workers", "1"]
    if c.cgroup_root:
        argv += ["--cgroup-root", c.cgroup_root]
    if c.fuse_debug:
        argv.append("--fuse-debug")
    return argv


def raise_fd_limit() -> None:
    """Lift the soft descriptor limit to the hard one, as a server of thousands of containers
    needs (systemd's default soft limit is 1024, its hard one 524288)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= want:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (OSError, ValueError) as e:
        log.warning("could not raise the descriptor limit from %d to %d: %s", soft, want, e)
        return
    log.debug("descriptor limit raised from %d to %d", soft, want)


def run(config: Config) -> None:
    """`procfs serve`: check the mountpoint, fork the shards (procfs.prefork: before trio runs,
    so that they share this process's pages), then serve."""
    check_mountpoint(config.mountpoint)
    raise_fd_limit()  # before the resolver sizes its pidfd budget from it (shards inherit it)
    # A shard runs none of its own, whatever --workers says.
    mounts = [] if config.shard_of else shard_mountpoints(config.mountpoint, config.workers)
    trio.run(serve, config, fork_shards([(shard_args(config, m), m) for m in mounts]))


async def serve(config: Config, forked: dict[str, tuple[Forked, int]]) -> None:
    """Serve `config.mountpoint`, supervising its shards: one per mountpoint in `forked`, each
    forked by run() and running already."""
    services = Services.build(config)
    ops = ProcFS(all_nodes(services), services.resolver, services.render_cache)
    services.control.register("stats", ops.stats, "open files and requests in progress")
    record = ServerRecord.mine(config.mountpoint, services.host)
    record.shard_of = config.shard_of
    record.shards = list(forked)
    # Where shards of this mount live, ours now or a previous run's (adopted when orphaned).
    orphans_under = "" if config.shard_of else shard_root(config.mountpoint)
    shards = [Shard(shard_argv(config, m), m, forked=f) for m, f in forked.items()]
    try:
        async with trio.open_nursery() as nursery:
            for task in services.background:
                await nursery.start(task)
            # Before our own mount: a container attached once we serve finds its shard serving.
            await start_shards(nursery, shards)
            pyfuse3.init(ops, config.mountpoint, mount_options(config))
            log.info("serving %d files at %s", len(ops.files), config.mountpoint)
            try:
                record.save()
                nursery.start_soon(_watch_signals, nursery.cancel_scope, ops, services, record,
                                   shards)
                nursery.start_soon(repair_attached, record.mountpoint, orphans_under,
                                   record.shards)
                if config.lifeline >= 0:
                    nursery.start_soon(watch_lifeline, config.lifeline, nursery.cancel_scope)
                nursery.start_soon(tune_connection, config.mountpoint, config.max_background)
                sd_notify("READY=1")
                await pyfuse3.main(max_tasks=ops.worker_tasks)
                log.info("the FUSE session ended")
                nursery.cancel_scope.cancel()
            finally:
                record.remove()
                pyfuse3.close(unmount=True)
                log.info("unmounted %s", config.mountpoint)
    finally:
        services.close()
