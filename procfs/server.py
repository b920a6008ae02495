"""`procfs serve`: mount the tree and serve it until SIGTERM or SIGINT."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
from dataclasses import dataclass

import pyfuse3
import trio

from procfs.cgroup_cpu import CpuViewMode
from procfs.cgroup_layout import CgroupLayout
from procfs.fs import ProcFS
from procfs.hostproc import HostProc
from procfs.registry import overlay_nodes
from procfs.resolve import Resolver
from procfs.views import Views

log = logging.getLogger(__name__)


class UsageError(Exception):
    """A one-line refusal for the command line."""


@dataclass
class ServeConfig:
    mountpoint: str
    proc_root: str = "/proc"
    sys_root: str = "/sys"
    cgroup_root: str | None = None  # None: find the hierarchies in mountinfo
    cpu_view: CpuViewMode = CpuViewMode.QUOTA
    fuse_debug: bool = False


def check_mountpoint(path: str) -> None:
    if not os.path.exists(path):
        raise UsageError(f"mountpoint {path} does not exist")
    if not os.path.isdir(path):
        raise UsageError(f"mountpoint {path} is not a directory")
    if os.path.ismount(path):
        raise UsageError(f"mountpoint {path} is already a mount")
    if os.listdir(path):
        raise UsageError(f"mountpoint {path} is not empty")


def build_ops(config: ServeConfig) -> ProcFS:
    host = HostProc(config.proc_root, config.sys_root)
    if config.cgroup_root:
        layout = CgroupLayout.from_directory(config.cgroup_root)
    else:
        layout = CgroupLayout.from_mountinfo(config.proc_root)
    views = Views(host, config.cpu_view)
    return ProcFS(overlay_nodes(views), Resolver(host, layout))


def mount_options(config: ServeConfig) -> set[str]:
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


async def serve(config: ServeConfig) -> None:
    check_mountpoint(config.mountpoint)
    ops = build_ops(config)
    pyfuse3.init(ops, config.mountpoint, mount_options(config))
    log.info("serving %d files at %s", len(ops.files), config.mountpoint)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, nursery.cancel_scope)
            nursery.start_soon(pyfuse3.main)
            sd_notify("READY=1")
    finally:
        pyfuse3.close(unmount=True)
        ops.resolver.close()
        log.info("unmounted %s", config.mountpoint)
