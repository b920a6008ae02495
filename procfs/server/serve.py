"""`procfs serve`: mount the tree and serve it until SIGTERM or SIGINT."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import resource
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import pyfuse3
import trio

from procfs.attach.reattach import repair_attached
from procfs.config import FSTYPE, Config
from procfs.files.table import all_nodes, sysinfo_numbers
from procfs.fuse.fair import fuse_fds, queued
from procfs.fuse.ops import ProcFS
from procfs.runtime.sysinfo_service import serve_sysinfo
from procfs.server.fusectl import tune_connection
from procfs.server.mount import check_mountpoint, mount_options
from procfs.server.notify import sd_notify
from procfs.server.prefork import Forked, fork_shards
from procfs.server.record import ServerRecord
from procfs.server.reload import ReloadError, reload_code, remember
from procfs.server.services import Services
from procfs.server.shards import shard_mountpoints, shard_root
from procfs.server.supervise import Shard, start_shards, watch_lifeline
from procfs.sources.mountinfo import parse_mountinfo

log = logging.getLogger(__name__)


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


def shard_argv(config: Config) -> list[str]:
    """The command that starts a shard again by exec (procfs.server.shard), with `config`, the
    shard's own (`Config.for_shard`)."""
    return [sys.executable, "-m", "procfs.server.shard", json.dumps(config.to_json())]


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


def run(config: Config) -> int:
    """`procfs serve`: check the mountpoint, fork the shards (procfs.server.prefork: before trio
    runs, so that they share this process's pages), then serve. A forked shard runs this too,
    with its own Config; raises UsageError for a mountpoint it cannot take."""
    dead = dead_devices(config.mountpoint)
    raise_fd_limit()  # before the resolver sizes its pidfd budget from it (shards inherit it)
    # A shard runs none of its own, whatever --workers says.
    mounts = [] if config.shard_of else shard_mountpoints(config.mountpoint, config.workers)
    trio.run(serve, config, fork_shards([config.for_shard(m) for m in mounts], run), dead)
    return 0


def dead_devices(mountpoint: str) -> list[str]:
    """Check the mountpoint; the devices of the dead servers whose binds containers may still
    hold: the dead mount taken over there, and the one the last server's record names (its
    mount may be gone already)."""
    old = ServerRecord.of(mountpoint)
    dead = {check_mountpoint(mountpoint)}
    if old is not None and not old.alive():
        dead.add(old.dev)
        # its shards unmounted when it died, leaving their records (watch_lifeline)
        for shard in old.shards:
            r = ServerRecord.of(shard)
            if r is not None and not r.alive():
                dead.add(r.dev)
    return sorted(d for d in dead if d)


def mount_device(mountpoint: str) -> str:
    """Our own mount's device, from mountinfo (a stat of our own mount would wait for an
    answer only this thread can give)."""
    with open("/proc/self/mountinfo") as f:
        entries = parse_mountinfo(f.read())
    found = [e.dev for e in entries if e.mountpoint == mountpoint and e.fstype == FSTYPE]
    return found[-1] if found else ""


async def serve(config: Config, forked: dict[str, tuple[Forked, int]],
                dead: Sequence[str] = ()) -> None:
    """Serve `config.mountpoint`, supervising its shards: one per mountpoint in `forked`, each
    forked by run() and running already; then repair the containers that hold binds of the dead
    servers' devices `dead` (and those recorded for this mount)."""
    services = Services.build(config)
    ops = ProcFS(all_nodes(services), services.resolver, services.render_cache)
    remember()  # the sources in service: a reload re-executes those changed since
    services.control.register("stats", ops.stats, "open files and requests in progress")
    record = ServerRecord.mine(config.mountpoint, services.host)
    record.shard_of = config.shard_of
    record.shards = list(forked)
    # Where shards of this mount live, ours now or a previous run's (adopted when orphaned).
    orphans_under = "" if config.shard_of else shard_root(config.mountpoint)
    shards = [Shard(shard_argv(config.for_shard(m)), m, forked=f) for m, f in forked.items()]
    orphaned = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            for task in services.background:
                await nursery.start(task)
            if config.sysinfo:
                runtime_socket, keeper_socket = config.sysinfo_sockets()
                sysinfo = await nursery.start(functools.partial(
                    serve_sysinfo, keeper_socket, sysinfo_numbers(services),
                    runtime_socket=runtime_socket if config.start_keeper else None))

                async def sysinfo_stats(args: dict[str, Any]) -> dict[str, Any]:
                    return {"keeper_pid": sysinfo.keeper_pid, "listeners": sysinfo.listeners,
                            **dataclasses.asdict(sysinfo.stats)}

                services.control.register("sysinfo", sysinfo_stats,
                                          "the containers' sysinfo(2): listeners, answers")
            # Before our own mount: a container attached once we serve finds its shard serving.
            await start_shards(nursery, shards)
            before = fuse_fds()
            pyfuse3.init(ops, config.mountpoint, mount_options(config))
            session = fuse_fds() - before
            if len(session) == 1:  # the turns look at the kernel's queue (procfs.fuse.fair)
                ops.gate.pending = queued(session.pop())
            await nursery.start(ops.gate.run)
            log.info("serving %d files at %s", len(ops.files), config.mountpoint)
            try:
                record.dev = mount_device(record.mountpoint)
                record.save()
                nursery.start_soon(_watch_signals, nursery.cancel_scope, ops, services, record,
                                   shards)
                nursery.start_soon(repair_attached, record.mountpoint, orphans_under,
                                   record.shards, dead)
                if config.lifeline >= 0:
                    nursery.start_soon(watch_lifeline, config.lifeline, nursery.cancel_scope,
                                       orphaned)
                nursery.start_soon(tune_connection, config.mountpoint, config.max_background)
                nursery.start_soon(ops.held.settle)
                sd_notify("READY=1")
                await pyfuse3.main(max_tasks=ops.worker_tasks)
                log.info("the FUSE session ended")
                nursery.cancel_scope.cancel()
            finally:
                if not orphaned.is_set():  # an orphaned shard's record names its device
                    record.remove()
                pyfuse3.close(unmount=True)
                log.info("unmounted %s", config.mountpoint)
    finally:
        services.close()
