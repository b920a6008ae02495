"""Wiring of the kmsg feature into a server: its service, tasks and control commands."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from procfs.kmsg.router import Router, follow_host_log
from procfs.kmsg.service import KmsgService
from procfs.sources.containers import Container

if TYPE_CHECKING:
    from procfs.server.services import Services


def setup(s: Services) -> KmsgService:
    cfg = s.config.kmsg
    service = KmsgService(cfg, s.host, s.resolver, clock=s.clock)

    def deliver(c: Container, pri: int, text: bytes) -> None:
        service.append(service.entry(c), pri, text)

    s.background.append(service.sweeper)
    if cfg.host_log:
        router = Router(s.host, service.containers, deliver)
        s.background.append(functools.partial(follow_host_log, cfg.host_log, router))
    s.control.register("kmsg.list", service.cmd_list, "the kmsg rings")
    s.control.register("kmsg.show", service.cmd_show, "one ring's records (target: id or pid)")
    s.control.register("kmsg.append", service.cmd_append,
                       "append a line to a ring (target, text, level)")
    return service

