"""Wiring of the kmsg feature into a server: its service, background tasks and control commands."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from procfs.config import KmsgConfig
from procfs.kmsg.router import Router, follow_host_log
from procfs.kmsg.service import KmsgService
from procfs.server.control import Control
from procfs.sources.containers import Container, Resolver
from procfs.sources.hostproc import HostProc


def setup(config: KmsgConfig, host: HostProc, resolver: Resolver, control: Control,
          clock: Callable[[], float]) -> tuple[KmsgService, list[Callable[..., Awaitable[Any]]]]:
    """The rings' service, and the tasks that feed and sweep them."""
    service = KmsgService(config, host, resolver, clock=clock)

    def deliver(c: Container, pri: int, text: bytes) -> None:
        service.append(service.entry(c), pri, text)

    tasks: list[Callable[..., Awaitable[Any]]] = [service.sweeper, service.patrol]
    if config.host_log:
        router = Router(host, service.containers, deliver)
        tasks.append(functools.partial(follow_host_log, config.host_log, router))
    control.register("kmsg.list", service.cmd_list, "the kmsg rings")
    control.register("kmsg.show", service.cmd_show, "one ring's records (target: id or pid)")
    control.register("kmsg.append", service.cmd_append,
                     "append a line to a ring (target, text, level)")
    return service, tasks
