"""`procfs serve`: mount the tree and serve it until SIGTERM or SIGINT."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket

import pyfuse3
import trio

from procfs.fs import ProcFS
from procfs.registry import all_nodes
from procfs.services import Config, Services

log = logging.getLogger(__name__)


class UsageError(Exception):
    """A one-line refusal for the command line."""


def check_mountpoint(path: str) -> None:
    if not os.path.exists(path):
        raise UsageError(f"mountpoint {path} does not exist")
    if not os.path.isdir(path):
        raise UsageError(f"mountpoint {path} is not a directory")
    if os.path.ismount(path):
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


async def _watch_signals(cancel: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("%s: unmounting", signal.Signals(signum).name)
            sd_notify("STOPPING=1")
            cancel.cancel()
            return


async def serve(config: Config) -> None:
    check_mountpoint(config.mountpoint)
    services = Services.build(config)
    ops = ProcFS(all_nodes(services), services.resolver, services.render_cache)
    try:
        async with trio.open_nursery() as nursery:
            for task in services.background:
                await nursery.start(task)
            pyfuse3.init(ops, config.mountpoint, mount_options(config))
            log.info("serving %d files at %s", len(ops.files), config.mountpoint)
            try:
                nursery.start_soon(_watch_signals, nursery.cancel_scope)
                sd_notify("READY=1")
                await pyfuse3.main()
                log.info("the FUSE session ended")
                nursery.cancel_scope.cancel()
            finally:
                pyfuse3.close(unmount=True)
                log.info("unmounted %s", config.mountpoint)
    finally:
        services.close()
