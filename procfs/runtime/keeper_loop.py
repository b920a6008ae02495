"""The keeper's poll loop (`Keeper`): listeners in from runtimes, copies out to one consumer.

`procfs.runtime.keeper` is the process around it and says what it is for. Everything here runs
in one thread; each event's handling is guarded so that nothing a peer sends ends the loop.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import resource
import select
import signal
import socket
import stat
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from procfs.runtime import keeper_protocol as kp
from procfs.runtime.seccomp import Listener, Response, is_listener
from procfs.runtime.seccomp_agent import MAX_FDS, ProcessState, RuntimeMessage
from procfs.util.lock import try_lock

log = logging.getLogger("procfs.keeper")

RUNTIME_TIMEOUT = 5.0  # s a runtime has to send its whole message
RETIRE_TIMEOUT = 2.0  # s a replaced consumer has to close its copies
# s without a consumer before the kernel answers the waiting calls (with the host's numbers):
# never by default, a container must not get them; a host that prefers that to waiting sets it
FALLBACK_AFTER = math.inf
RETRY_SEND = 0.05  # s before retrying a send refused for too many fds in flight
ACCEPT_PAUSE = 1.0  # s without accepting after running out of fds (the peers wait in the backlog)
MAX_RUNTIME_CONNS = 256  # half-read runtime connections at once; more wait in the backlog
BASE_FDS = 16  # stdio, lock, sockets, wakeup pipe, and some to spare
HANGUP = select.POLLHUP | select.POLLERR | select.POLLNVAL


@dataclass
class Held:
    key: int
    fd: int
    state: dict[str, Any] | None


@dataclass
class RuntimeConn:
    sock: socket.socket
    deadline: float
    msg: RuntimeMessage = field(default_factory=RuntimeMessage)


@dataclass
class Consumer:
    sock: socket.socket
    pid: int
    out: deque[tuple[kp.Message, int | None]] = field(default_factory=deque)  # key, not fd
    state: str = "new"  # -> "donor", or "pending" -> "active" -> "retiring"
    deadline: float = 0.0  # retiring: when to give up waiting for its close
    retry_at: float = 0.0  # a send refused with ETOOMANYREFS: when to retry


class Keeper:
    def __init__(self, runtime_path: str, consumer_path: str, *,
                 runtime_timeout: float = RUNTIME_TIMEOUT, retire_timeout: float = RETIRE_TIMEOUT,
                 fallback_after: float = FALLBACK_AFTER,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.runtime_path = runtime_path
        self.consumer_path = consumer_path
        self.runtime_timeout = runtime_timeout
        self.retire_timeout = retire_timeout
        self.fallback_after = fallback_after
        self.clock = clock
        self.orphaned_since: float | None = clock()  # no consumer holds copies since then
        self.falling_back = False  # answering with CONTINUE ourselves
        self.fallback_answers = 0
        self.id = uuid.uuid4().hex
        self.held: dict[int, Held] = {}  # key -> held listener
        self.by_fd: dict[int, int] = {}  # listener fd -> key
        self.next_key = 1
        self.runtime_conns: dict[int, RuntimeConn] = {}
        self.consumers: dict[int, Consumer] = {}
        self.draining = False
        self.poll = select.poll()
        self.runtime_sock: socket.socket | None = None
        self.consumer_sock: socket.socket | None = None
        self._lock_fd = -1
        self._runtime_ino: tuple[int, int] | None = None
        self._wakeup_r = -1
        self._paused: dict[int, float] = {}  # listening socket fd -> when to accept again
        self.fd_limit = 1 << 20  # read again by bind()

    # -- setup ----------------------------------------------------------------------------

    def lock(self) -> bool:
        """Take the one-keeper lock; False if another keeper holds it."""
        fd = try_lock(self.consumer_path + ".lock")
        if fd is None:
            return False
        self._lock_fd = fd
        return True

    def bind(self) -> None:
        self.fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.consumer_sock = self._listen(self.consumer_path, socket.SOCK_SEQPACKET)
        self.runtime_sock = self._listen(self.runtime_path, socket.SOCK_STREAM)
        st = os.stat(self.runtime_path)
        self._runtime_ino = (st.st_dev, st.st_ino)
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wakeup_r = r
        signal.set_wakeup_fd(w)
        for s in (self.consumer_sock, self.runtime_sock):
            self.poll.register(s.fileno(), select.POLLIN)
        self.poll.register(r, select.POLLIN)

    @staticmethod
    def _listen(path: str, kind: int) -> socket.socket:
        os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)  # a dead keeper's (we hold the lock)
        sock = socket.socket(socket.AF_UNIX, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        old = os.umask(0o077)  # root's only: a peer can hand us fds and have us write memory
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        sock.listen(128)
        return sock

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        while not (self.draining and not self.held and not self.runtime_conns):
            self.step()
        log.info("drained: exiting")

    def step(self) -> None:
        timeout = self._next_deadline()
        try:
            events = self.poll.poll(None if timeout is None else max(timeout, 0) * 1000)
        except InterruptedError:
            events = []
        for fd, ev in events:
            try:
                self._dispatch(fd, ev)
            except Exception:  # a bug must not cost every container its listener
                log.exception("handling fd %d (events %#x)", fd, ev)
        self._timers()

    def _dispatch(self, fd: int, ev: int) -> None:
        if fd == self._wakeup_r:
            self._signals()
        elif self.runtime_sock is not None and fd == self.runtime_sock.fileno():
            self._accept_runtime()
        elif self.consumer_sock is not None and fd == self.consumer_sock.fileno():
            self._accept_consumer()
        elif fd in self.runtime_conns:
            self._read_runtime(self.runtime_conns[fd])
        elif fd in self.consumers:
            self._consumer_event(self.consumers[fd], ev)
        elif fd in self.by_fd:
            if ev & select.POLLIN and self.falling_back:
                self._continue(self.held[self.by_fd[fd]])
            elif ev & HANGUP:
                self._drop(self.by_fd[fd])
        else:  # closed earlier in this round
            with contextlib.suppress(KeyError):
                self.poll.unregister(fd)

    def _next_deadline(self) -> float | None:
        now = self.clock()
        times = [c.deadline for c in self.runtime_conns.values()]
        times += [c.deadline for c in self.consumers.values() if c.state == "retiring"]
        times += [c.retry_at for c in self.consumers.values() if c.retry_at]
        times += list(self._paused.values())
        if (self.orphaned_since is not None and not self.falling_back and self.held
                and math.isfinite(self.fallback_after)):
            times.append(self.orphaned_since + self.fallback_after)
        return min(times) - now if times else None

    def _timers(self) -> None:
        now = self.clock()
        for conn in [c for c in self.runtime_conns.values() if c.deadline <= now]:
            log.warning("runtime connection: incomplete message after %.1f s",
                        self.runtime_timeout)
            self._finish_runtime(conn)
        for c in [c for c in self.consumers.values() if c.state == "retiring"
                  and c.deadline <= now]:
            log.warning("replaced consumer (pid %d) did not close in time", c.pid)
            self._close_consumer(c)
        for c in [c for c in self.consumers.values() if c.retry_at and c.retry_at <= now]:
            c.retry_at = 0.0
            self._flush(c)
        holders = any(c.state in ("active", "retiring") for c in self.consumers.values())
        if holders:
            self.orphaned_since = None
        elif self.orphaned_since is None:
            self.orphaned_since = now
        if (self.orphaned_since is not None and not self.falling_back
                and now >= self.orphaned_since + self.fallback_after):
            self._fall_back(True)
        for fd in [fd for fd, t in self._paused.items() if t <= now]:
            del self._paused[fd]
            with contextlib.suppress(KeyError, ValueError):  # closed meanwhile (drain)
                self.poll.register(fd, select.POLLIN)
        self._activate()

    def _pause_accepting(self, sock: socket.socket, e: OSError) -> None:
        """Out of fds: stop polling the listening socket for a while (it would stay readable
        and spin the loop); connections wait in its backlog."""
        log.warning("accepting: %s; pausing %.0f s", e, ACCEPT_PAUSE)
        self.poll.unregister(sock.fileno())
        self._paused[sock.fileno()] = self.clock() + ACCEPT_PAUSE

    def _signals(self) -> None:
        with contextlib.suppress(BlockingIOError):
            signums = os.read(self._wakeup_r, 64)
            if any(s in (signal.SIGTERM, signal.SIGINT) for s in signums):
                self.drain()

    def drain(self) -> None:
        """Take no new listeners; exit once the held ones are gone."""
        if self.draining:
            return
        self.draining = True
        log.info("draining: %d listeners held", len(self.held))
        if self.runtime_sock is not None:
            fd = self.runtime_sock.fileno()
            if self._paused.pop(fd, None) is None:
                self.poll.unregister(fd)
            self.runtime_sock.close()
            self.runtime_sock = None
            with contextlib.suppress(OSError):
                st = os.stat(self.runtime_path)
                if (st.st_dev, st.st_ino) == self._runtime_ino:
                    os.unlink(self.runtime_path)

    # -- runtimes (runc, crun) -----------------------------------------------------------

    def _headroom(self) -> int:
        """Fds we may still open: a listener that arrives when there is no room for it is
        dropped by the kernel (and with it, maybe, the container's last copy)."""
        used = BASE_FDS + len(self.held) + len(self.consumers)
        used += sum(1 + MAX_FDS for _ in self.runtime_conns)
        return self.fd_limit - used

    def _accept_runtime(self) -> None:
        assert self.runtime_sock is not None
        while len(self.runtime_conns) < MAX_RUNTIME_CONNS:
            if self._headroom() < 2 * (1 + MAX_FDS):
                self._pause_accepting(self.runtime_sock, OSError(errno.EMFILE, "fds running low"))
                return
            try:
                sock, _ = self.runtime_sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE and the like
                self._pause_accepting(self.runtime_sock, e)
                return
            sock.setblocking(False)
            conn = RuntimeConn(sock, self.clock() + self.runtime_timeout)
            self.runtime_conns[sock.fileno()] = conn
            self.poll.register(sock.fileno(), select.POLLIN)

    def _read_runtime(self, conn: RuntimeConn) -> None:
        try:
            conn.msg.read(conn.sock)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            log.warning("runtime connection: %s", e)
            conn.msg.ended = True
        if conn.msg.complete():
            self._finish_runtime(conn)

    def _finish_runtime(self, conn: RuntimeConn) -> None:
        fd = conn.sock.fileno()
        self.poll.unregister(fd)
        del self.runtime_conns[fd]
        conn.sock.close()
        state = conn.msg.state()
        parsed = ProcessState.from_json(state)
        who = f"{parsed.container_id} pid {parsed.pid}" if parsed else "unparsable state"
        kept = 0
        for lfd in conn.msg.fds:
            if is_listener(lfd):
                self._hold(lfd, state)
                kept += 1
            else:
                os.close(lfd)
        if kept:
            log.info("listener from a runtime: %s", who)
        else:
            log.warning("runtime message without a listener fd: %s", who)

    # -- listeners ------------------------------------------------------------------------

    def _hold(self, fd: int, state: dict[str, Any] | None, source: Consumer | None = None) -> int:
        key = self.next_key
        self.next_key += 1
        self.held[key] = Held(key, fd, state)
        self.by_fd[fd] = key
        # POLLHUP only: POLLIN is the consumer's business (or ours, falling back)
        self.poll.register(fd, select.POLLIN if self.falling_back else 0)
        for c in self.consumers.values():
            if c.state == "active" and c is not source:
                self._queue(c, kp.ListenerFd(key, state), key)
        return key

    def _fall_back(self, on: bool) -> None:
        if on == self.falling_back:
            return
        self.falling_back = on
        for held in self.held.values():
            self.poll.modify(held.fd, select.POLLIN if on else 0)
        if on:
            log.warning("no server for %.0f s: the kernel answers waiting calls",
                        self.fallback_after)
        else:
            log.info("a server is back (%d calls answered by the kernel meanwhile)",
                     self.fallback_answers)
            self.fallback_answers = 0

    def _continue(self, held: Held) -> None:
        """Let the kernel answer one waiting call (POLLIN: one is there, and nobody else
        receives, so this does not block)."""
        try:
            listener = Listener(held.fd)
            n = listener.receive()
            if n is not None and listener.send(Response.continue_(n.id)):
                self.fallback_answers += 1
        except OSError as e:
            log.warning("listener %d: %s", held.key, e)

    def _drop(self, key: int) -> None:
        held = self.held.pop(key)
        del self.by_fd[held.fd]
        self.poll.unregister(held.fd)
        os.close(held.fd)
        log.debug("listener %d: no task left", key)

    # -- consumers (the server) -----------------------------------------------------------

    def _accept_consumer(self) -> None:
        assert self.consumer_sock is not None
        while True:
            try:
                sock, _ = self.consumer_sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self._pause_accepting(self.consumer_sock, e)
                break
            sock.setblocking(False)
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
            pid = int.from_bytes(creds[:4], sys.byteorder)
            c = Consumer(sock, pid)
            self.consumers[sock.fileno()] = c
            self.poll.register(sock.fileno(), select.POLLIN)
            self._queue(c, kp.Hello(self.id, os.getpid()), None)

    def _retire(self, c: Consumer) -> None:
        """Tell a consumer to close its copies; it is gone once it closes the connection (whatever
        it sends until then, adoptions included, is read first)."""
        if c.state not in ("pending", "active"):
            return
        log.info("retiring consumer pid %d", c.pid)
        c.state, c.deadline = "retiring", self.clock() + self.retire_timeout
        c.out.clear()
        with contextlib.suppress(OSError):
            kp.send(c.sock, kp.Retire())
            c.sock.shutdown(socket.SHUT_WR)

    def _activate(self) -> None:
        """Hand everything to the newest pending consumer once no other one holds copies."""
        if any(c.state in ("active", "retiring") for c in self.consumers.values()):
            return
        pending = [c for c in self.consumers.values() if c.state == "pending"]
        if not pending:
            return
        c = pending[-1]
        self._fall_back(False)  # one receiver at a time: the consumer from now on
        self.orphaned_since = None
        c.state = "active"
        for held in self.held.values():
            self._queue(c, kp.ListenerFd(held.key, held.state), held.key)
        self._queue(c, kp.Synced(len(self.held)), None)

    def _queue(self, c: Consumer, msg: kp.Message, key: int | None) -> None:
        c.out.append((msg, key))
        if len(c.out) == 1:
            self._flush(c)

    def _flush(self, c: Consumer) -> None:
        while c.out and not c.retry_at:
            msg, key = c.out[0]
            if key is not None and key not in self.held:  # dropped meanwhile
                c.out.popleft()
                continue
            try:
                kp.send(c.sock, msg, None if key is None else self.held[key].fd)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno == errno.ETOOMANYREFS:  # too many fds in flight: let it read some
                    c.retry_at = self.clock() + RETRY_SEND
                    break
                log.warning("consumer pid %d: %s", c.pid, e)
                self._close_consumer(c)
                return
            c.out.popleft()
        if c.sock.fileno() in self.consumers:
            self.poll.modify(c.sock.fileno(), select.POLLIN | (select.POLLOUT if c.out else 0))

    def _consumer_event(self, c: Consumer, ev: int) -> None:
        if ev & select.POLLOUT:
            self._flush(c)
        if not ev & (select.POLLIN | HANGUP):
            return
        for _ in range(64):  # then let the others have a turn
            try:
                msg, fds, eof = kp.receive(c.sock)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                eof, msg, fds = True, None, []
            if eof:
                self._close_consumer(c)
                return
            if isinstance(msg, kp.Consume) and c.state == "new" and not fds:
                for old in list(self.consumers.values()):  # the newest consumer wins
                    self._retire(old)
                c.state = "pending"
                log.info("consumer connected: pid %d", c.pid)
                self._activate()
                continue
            if isinstance(msg, kp.Adopt) and len(fds) == 1 and is_listener(fds[0]):
                if c.state == "new":
                    c.state = "donor"
                key = self._hold(fds[0], msg.state, source=c)
                if c.state in ("pending", "active"):  # before the batch that would hold it
                    self._queue(c, kp.Adopted(msg.ref, key), None)
                log.info("adopted a listener from consumer pid %d", c.pid)
                continue
            for fd in fds:  # never close a listener: it may be the last copy
                if is_listener(fd):
                    self._hold(fd, None)
                else:
                    os.close(fd)
            log.warning("consumer pid %d sent %r: closing it", c.pid, msg)
            self._close_consumer(c)
            return

    def _close_consumer(self, c: Consumer) -> None:
        fd = c.sock.fileno()
        if self.consumers.pop(fd, None) is not None:
            self.poll.unregister(fd)
        c.sock.close()
        log.info("consumer pid %d gone", c.pid)

    def close(self) -> None:
        for held in list(self.held.values()):
            os.close(held.fd)
        self.held.clear()
        for conn in self.runtime_conns.values():
            conn.sock.close()
        for c in self.consumers.values():
            c.sock.close()
        for s in (self.runtime_sock, self.consumer_sock):
            if s is not None:
                s.close()
