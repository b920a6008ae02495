"""`serve_sysinfo`: the server's trio task that answers sysinfo(2) for every container.

    from procfs.runtime.sysinfo_service import (DEFAULT_CONSUMER_SOCKET,
        DEFAULT_RUNTIME_SOCKET, SysinfoValues, serve_sysinfo)

    def values(tid: int) -> SysinfoValues | None: ...   # None: the host's numbers

    # starting a keeper when none answers (the server's usual call):
    service = await nursery.start(functools.partial(
        serve_sysinfo, DEFAULT_CONSUMER_SOCKET, values, runtime_socket=DEFAULT_RUNTIME_SOCKET))
    # or only ever connecting to one:
    service = await nursery.start(serve_sysinfo, keeper_socket, values)

`values(tid) -> SysinfoValues | None` gives the numbers for the calling thread (`tid` in the
server's pid namespace), None to let the kernel answer (`procfs.runtime.sysinfo`). It is called
synchronously from the trio thread, once per call, and should be as cheap as a cached /proc read.

The task connects to the keeper (`procfs.runtime.keeper`) as its consumer, takes a copy of every
listener fd, and answers each notification in turn (receive, values, write into the caller,
check the notification is still valid, send: no checkpoint in between, so cancelling the task
never leaves a call half answered). It runs until cancelled, across a `procfs reload` too: all
of its state lives in the task, and its modules are not among those a reload re-executes (the
task keeps the code its objects were made by; a server restart, which the keeper makes safe,
brings new code).
`nursery.start` returns a `SysinfoService` (counters, `synced`) once the first keeper handed
everything over, or once the first attempt failed (it retries).

- No server (between a kill and the next start): the calls wait in the kernel and are answered
  by the next server, which also answers the ones the killed one had received (its takeover
  wakes their callers: `stuck_callers`). Only with the keeper's --fallback-after does the
  kernel answer them (the host's numbers) when no server has come for that long.
- Keeper gone (killed): the task keeps its copies and answers on; it reconnects (starting a new
  keeper when `runtime_socket` is given) and hands its copies to the new keeper (`Adopt`).
- Replaced by a newer server (`Retire`): it closes its copies and returns.
- Cancelled while its copies are the only ones (keeper dead): it hands them to a keeper first,
  starting one if it may (at most 5 s).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from procfs.runtime import keeper_protocol as kp
from procfs.runtime.keeper import DEFAULT_CONSUMER_SOCKET, DEFAULT_RUNTIME_SOCKET
from procfs.runtime.keeper_client import KeeperClient
from procfs.runtime.seccomp import Listener, Response, is_listener, same_file
from procfs.runtime.seccomp_agent import ProcessState
from procfs.runtime.stuck_callers import kick, pid_namespace, waiting_callers
from procfs.runtime.sysinfo import Outcome, SysinfoAnswerer, SysinfoValues, ValuesFn

__all__ = ["DEFAULT_CONSUMER_SOCKET", "DEFAULT_RUNTIME_SOCKET", "SysinfoService", "SysinfoStats",
           "SysinfoValues", "serve_sysinfo"]
log = logging.getLogger(__name__)

RECONNECT_MIN, RECONNECT_MAX = 0.1, 2.0  # s between attempts to reach a keeper
HANDOFF_TIMEOUT = 5.0
BATCH = 64  # notifications answered per wakeup before other tasks get a turn


@dataclass
class SysinfoStats:
    answered: int = 0
    efault: int = 0
    continued: int = 0
    gone: int = 0
    errors: int = 0  # ioctl failures
    kicked: int = 0  # stuck callers woken after a takeover
    takeovers: int = 0  # keepers that handed everything over

    def count(self, outcome: Outcome) -> None:
        name = outcome.value
        setattr(self, name, getattr(self, name) + 1)


@dataclass
class SysinfoService:
    """What `nursery.start(serve_sysinfo, ...)` returns."""

    stats: SysinfoStats = field(default_factory=SysinfoStats)
    synced: trio.Event = field(default_factory=trio.Event)  # the first handover is complete
    keeper_pid: int = 0
    listeners: int = 0  # held now


@dataclass
class _Held:
    fd: int
    listener: Listener
    state: dict[str, Any] | None
    keeper: str  # the keeper lifetime whose key this is ("" for none)
    key: int


class _Listeners:
    """The listener fds this task holds, and one epoll over them."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.by_fd: dict[int, _Held] = {}
        self.by_key: dict[tuple[str, int], _Held] = {}

    def add(self, fd: int, state: dict[str, Any] | None, keeper: str, key: int) -> None:
        if (keeper, key) in self.by_key or any(
                h.keeper != keeper and same_file(fd, h.fd) for h in self.by_fd.values()):
            os.close(fd)  # one we hold already: two copies would mean two receivers
            return
        held = _Held(fd, Listener(fd), state, keeper, key)
        self.epoll.register(fd, select.EPOLLIN)
        self.by_fd[fd] = held
        self.by_key[keeper, key] = held

    def rekey(self, held: _Held, keeper: str, key: int) -> None:
        self.by_key.pop((held.keeper, held.key), None)
        held.keeper, held.key = keeper, key
        self.by_key[keeper, key] = held

    def drop(self, fd: int) -> None:
        held = self.by_fd.pop(fd, None)
        if held is None:
            return
        self.by_key.pop((held.keeper, held.key), None)
        self.epoll.unregister(fd)
        os.close(fd)

    def foreign(self, keeper: str) -> list[_Held]:
        return [h for h in self.by_fd.values() if h.keeper != keeper]

    def close(self) -> None:
        for fd in list(self.by_fd):
            self.drop(fd)
        self.epoll.close()


async def serve_sysinfo(keeper_socket: str, values: ValuesFn, *,
                        runtime_socket: str | None = None, keeper_log: str | None = None,
                        task_status: trio.TaskStatus[SysinfoService] = trio.TASK_STATUS_IGNORED,
                        ) -> None:
    """Answer sysinfo(2) for every listener the keeper at `keeper_socket` holds, until
    cancelled or replaced. With `runtime_socket`, start a keeper listening there for runtimes
    whenever none answers at `keeper_socket`."""
    service = SysinfoService()
    held = _Listeners()
    keepers = KeeperClient(keeper_socket, runtime_socket, keeper_log)
    started = retired = False

    def ready() -> None:
        nonlocal started
        if not started:
            started = True
            task_status.started(service)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_answer, held, SysinfoAnswerer(values), service)
            delay = RECONNECT_MIN
            while True:
                try:
                    sock = await keepers.connect()
                except (OSError, RuntimeError, trio.TooSlowError) as e:
                    log.warning("sysinfo: no keeper at %s (%s); retrying", keeper_socket, e)
                    ready()
                    await trio.sleep(delay)
                    delay = min(delay * 2, RECONNECT_MAX)
                    continue
                delay = RECONNECT_MIN
                try:
                    retired = await _consume(sock, held, service, keepers, nursery, ready)
                except OSError as e:
                    log.warning("sysinfo: keeper connection: %s", e)
                except Exception:  # a bug: keep the listeners and answering
                    log.exception("sysinfo: keeper connection")
                    await trio.sleep(delay)
                keepers.disconnect()
                ready()
                if retired:
                    log.warning("sysinfo: a newer server took the listeners over")
                    nursery.cancel_scope.cancel()
                    return
                log.warning("sysinfo: keeper connection lost; reconnecting")
    finally:
        if not retired:  # the keeper that retired us holds every copy
            with trio.CancelScope(shield=True):
                await _hand_off(held, keepers)
        keepers.disconnect()
        held.close()
        keepers.reap()


async def _consume(sock: trio.socket.SocketType, held: _Listeners, service: SysinfoService,
                   keepers: KeeperClient, nursery: trio.Nursery, ready: Callable[[], None]) -> bool:
    """One keeper connection; True when retired, False when the connection ended."""
    await sock.sendmsg([kp.encode(kp.Consume())])
    keeper = ""
    adopting: dict[int, _Held] = {}
    while True:
        msg, fds = await _receive(sock)
        if msg is None and not fds:
            return False
        if isinstance(msg, kp.ListenerFd) and len(fds) == 1 and is_listener(fds[0]):
            held.add(fds[0], msg.state, keeper, msg.key)
            service.listeners = len(held.by_fd)
            continue
        for fd in fds:  # anything else carries no fd of ours
            os.close(fd)
        if isinstance(msg, kp.Hello):
            keeper, service.keeper_pid = msg.keeper, msg.pid
            keepers.live = keeper
            for h in held.foreign(keeper):  # copies from a keeper that died: hand them over
                adopting[h.fd] = h
                await _send_adopt(sock, h)
        elif isinstance(msg, kp.Synced):
            service.stats.takeovers += 1
            service.synced.set()
            ready()
            nursery.start_soon(_wake_stuck_callers, held, service)
        elif isinstance(msg, kp.Adopted):
            mine = adopting.pop(msg.ref, None)
            if mine is not None and held.by_fd.get(mine.fd) is mine:
                held.rekey(mine, keeper, msg.key)
        elif isinstance(msg, kp.Retire):
            return True
        else:
            log.warning("sysinfo: unexpected message from the keeper: %r", msg)


async def _receive(sock: trio.socket.SocketType) -> tuple[kp.Message | None, list[int]]:
    """One packet: (None, []) at the end of the connection."""
    try:
        data, ancdata, flags, _ = await sock.recvmsg(kp.MAX_PACKET, socket.CMSG_SPACE(16),
                                                     socket.MSG_CMSG_CLOEXEC)
    except OSError as e:
        log.warning("sysinfo: keeper connection: %s", e)
        return None, []
    if not data and not ancdata:
        return None, []
    msg, fds = kp.parse_packet(data, ancdata, flags)
    if flags & socket.MSG_CTRUNC:  # out of fds: that listener's callers wait unanswered
        log.error("sysinfo: a listener from the keeper was lost (out of fds? RLIMIT_NOFILE)")
    elif msg is None:
        log.warning("sysinfo: malformed packet from the keeper")
    return msg, fds


async def _send_adopt(sock: trio.socket.SocketType, h: _Held) -> None:
    await sock.sendmsg([kp.encode(kp.Adopt(h.fd, h.state))], kp.fd_ancdata(h.fd))


async def _answer(held: _Listeners, answerer: SysinfoAnswerer, service: SysinfoService) -> None:
    stats = service.stats
    while True:
        await trio.lowlevel.wait_readable(held.epoll.fileno())
        for fd, ev in held.epoll.poll(0, BATCH):
            h = held.by_fd.get(fd)
            if h is None:
                continue
            if ev & select.EPOLLIN:
                n = None
                try:
                    n = h.listener.receive()
                    if n is not None:
                        stats.count(answerer.answer(h.listener, n))
                except OSError as e:
                    stats.errors += 1
                    log.warning("sysinfo: listener %d: %s", fd, e)
                except Exception:  # a bug: the caller must not wait for good
                    stats.errors += 1
                    log.exception("sysinfo: answering %r", n)
                    if n is not None:
                        with contextlib.suppress(OSError):
                            h.listener.send(Response.continue_(n.id))
            elif ev & (select.EPOLLHUP | select.EPOLLERR):
                held.drop(fd)  # no task uses its filter any more
                service.listeners = len(held.by_fd)


async def _wake_stuck_callers(held: _Listeners, service: SysinfoService) -> None:
    try:
        await _wake(held, service)
    except Exception:  # a bug here must not end the answering
        log.exception("sysinfo: waking stuck callers")


async def _wake(held: _Listeners, service: SysinfoService) -> None:
    namespaces = set()
    for h in list(held.by_fd.values()):
        state = ProcessState.from_json(h.state)
        for pid in (state.init_pid, state.pid) if state else ():
            ns = pid_namespace(pid) if pid else None
            if ns is not None:
                namespaces.add(ns)
    async for tid in waiting_callers(namespaces):
        if await kick(tid):
            service.stats.kicked += 1
            log.info("sysinfo: woke thread %d, left waiting by a previous server", tid)


async def _hand_off(held: _Listeners, keepers: KeeperClient) -> None:
    """Before closing copies that no live keeper holds (ours came from a keeper that died),
    give them to a keeper, as a donor."""
    if not held.by_fd or keepers.holds_ours():
        return
    keepers.disconnect()
    with trio.move_on_after(HANDOFF_TIMEOUT):
        try:
            sock = await keepers.connect()
        except (OSError, RuntimeError, trio.TooSlowError) as e:
            log.error("sysinfo: %d listeners and no keeper to keep them: %s", len(held.by_fd), e)
            return
        msg, fds = await _receive(sock)
        for fd in fds:
            os.close(fd)
        if not isinstance(msg, kp.Hello):
            return
        foreign = held.foreign(msg.keeper)
        for h in foreign:
            await _send_adopt(sock, h)
        log.warning("sysinfo: handed %d listeners to a new keeper", len(foreign))
