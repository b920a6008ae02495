"""The keeper process: it holds what runtimes send, hands copies to one consumer at a time,
lets go of listeners whose tasks are gone, drains on SIGTERM, and shrugs off anything a peer
sends it."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from procfs.runtime import keeper_protocol as kp
from procfs.runtime.keeper import start_keeper
from procfs.runtime.keeper_loop import BASE_FDS
from procfs.runtime.seccomp import Listener, is_listener
from procfs.runtime.seccomp_agent import MAX_FDS
from procfs.runtime.sysinfo import Outcome, SysinfoAnswerer
from tests.notify_child import NotifyChild

from .sysinfo_consumer import VALUES
from .sysinfo_support import Sockets, keeper_listeners, kill_and_reap, sockets

STATE = {"ociVersion": "1.0.2-dev", "fds": ["seccompFd"], "pid": 1,
         "state": {"id": "keeper-test", "pid": 1, "status": "creating"}}
FAST = ["--runtime-timeout", "0.5", "--retire-timeout", "1"]


@pytest.fixture
def socks() -> Iterator[Sockets]:
    with sockets() as s:
        yield s


@pytest.fixture
def keeper(socks: Sockets) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_keeper(socks.runtime, socks.keeper, log_path=socks.log, options=FAST)
    try:
        yield proc
    finally:
        kill_and_reap(proc)


@pytest.fixture
def children() -> Iterator[list[NotifyChild]]:
    made: list[NotifyChild] = []
    yield made
    for c in made:
        c.close()


class Client:
    """A raw connection to the consumer socket."""

    def __init__(self, path: str, consume: bool = True) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.connect(path)
        self.fds: list[int] = []
        if consume:
            kp.send(self.sock, kp.Consume())

    def receive(self, timeout: float = 5.0) -> kp.Message | None:
        """The next message (its fd, if any, kept in self.fds); None at EOF."""
        if not select.select([self.sock], [], [], timeout)[0]:
            raise TimeoutError("no message from the keeper")
        data, ancdata, flags, _ = self.sock.recvmsg(kp.MAX_PACKET, socket.CMSG_SPACE(16))
        if not data:
            return None
        msg, fds = kp.parse_packet(data, ancdata, flags)
        self.fds += fds
        return msg

    def until_synced(self) -> list[kp.Message]:
        got = []
        while not isinstance(got[-1:] and got[-1], kp.Synced):
            msg = self.receive()
            assert msg is not None
            got.append(msg)
        return got

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.sock.close()


def runtime_send(path: str, data: bytes, fds: list[int] = ()) -> None:  # type: ignore[assignment]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        socket.send_fds(s, [data], fds) if fds else s.sendall(data)


def wait(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_hands_every_listener_to_the_consumer_and_lets_go_when_tasks_are_gone(
        socks: Sockets, keeper: subprocess.Popen[bytes], children: list[NotifyChild]) -> None:
    children.append(NotifyChild.start(listener_path=socks.runtime, state=STATE))
    wait(lambda: keeper_listeners(keeper.pid) == 1, "the first listener")
    client = Client(socks.keeper)
    try:
        hello, first, synced = client.until_synced()
        assert isinstance(hello, kp.Hello) and hello.pid == keeper.pid
        assert isinstance(first, kp.ListenerFd) and first.state == STATE
        assert synced == kp.Synced(1) and is_listener(client.fds[0])
        children.append(NotifyChild.start(listener_path=socks.runtime, state=STATE))
        second = client.receive()  # streamed as it arrives
        assert isinstance(second, kp.ListenerFd) and second.key != first.key
        assert keeper_listeners(keeper.pid) == 2
        for c in children:
            c.close()
        children.clear()
        wait(lambda: keeper_listeners(keeper.pid) == 0, "POLLHUP to drop them")
    finally:
        client.close()


def test_calls_wait_for_a_consumer(socks: Sockets, keeper: subprocess.Popen[bytes],
                                   children: list[NotifyChild]) -> None:
    """With no consumer nobody receives: the caller waits, and the next consumer's copy has
    the notification."""
    child = NotifyChild.start(listener_path=socks.runtime, state=STATE)
    children.append(child)
    child.send("phys-pages")
    time.sleep(0.5)
    assert not select.select([child.control], [], [], 0)[0]
    client = Client(socks.keeper)
    try:
        client.until_synced()
        listener = Listener(client.fds[0])
        assert select.select([client.fds[0]], [], [], 5)[0]
        n = listener.receive()
        assert n is not None and n.pid == child.proc.pid
        assert SysinfoAnswerer(lambda tid: VALUES).answer(listener, n) is Outcome.ANSWERED
        assert child.reply_now() == {"value": VALUES.totalram // os.sysconf("SC_PAGE_SIZE")}
    finally:
        client.close()


def test_with_no_server_for_long_the_kernel_answers(socks: Sockets,
                                                    children: list[NotifyChild]) -> None:
    """--fallback-after 1: a call waits a second, then gets the kernel's numbers; once a
    consumer is there, the keeper no longer receives and the consumer answers."""
    proc = start_keeper(socks.runtime, socks.keeper, options=[*FAST, "--fallback-after", "1"])
    try:
        child = NotifyChild.start(listener_path=socks.runtime, state=STATE)
        children.append(child)
        time.sleep(1.2)  # orphaned for longer than that already: answered at once
        t0 = time.monotonic()
        assert child.request("phys-pages")["value"] == os.sysconf("SC_PHYS_PAGES")
        assert time.monotonic() - t0 < 0.5
        client = Client(socks.keeper)
        try:
            client.until_synced()
            child.send("phys-pages")
            listener = Listener(client.fds[0])
            assert select.select([client.fds[0]], [], [], 5)[0]  # ours to receive, not its
            time.sleep(1.5)
            n = listener.receive()
            assert n is not None
            assert SysinfoAnswerer(lambda tid: VALUES).answer(listener, n) is Outcome.ANSWERED
            assert child.reply_now()["value"] == VALUES.totalram // os.sysconf("SC_PAGE_SIZE")
        finally:
            client.close()
        t0 = time.monotonic()  # the consumer gone: a wait of about a second again
        assert child.request("phys-pages")["value"] == os.sysconf("SC_PHYS_PAGES")
        assert 0.8 < time.monotonic() - t0 < 5
    finally:
        kill_and_reap(proc)


def test_the_newest_consumer_wins_after_the_old_one_closed(
        socks: Sockets, keeper: subprocess.Popen[bytes], children: list[NotifyChild]) -> None:
    children.append(NotifyChild.start(listener_path=socks.runtime, state=STATE))
    wait(lambda: keeper_listeners(keeper.pid) == 1, "the listener")
    old, new = Client(socks.keeper), None
    try:
        old.until_synced()
        new = Client(socks.keeper)
        assert isinstance(new.receive(), kp.Hello)
        assert old.receive() == kp.Retire()
        assert old.receive() is None  # and the keeper shut its side
        with pytest.raises(TimeoutError):
            new.receive(timeout=0.3)  # nothing while the old one holds copies
        old.close()
        listener, synced = new.receive(), new.receive()
        assert isinstance(listener, kp.ListenerFd) and synced == kp.Synced(1)
    finally:
        old.close() if old.sock.fileno() >= 0 else None
        if new is not None:
            new.close()


def test_a_replaced_consumer_that_does_not_close_is_dropped(
        socks: Sockets, keeper: subprocess.Popen[bytes], children: list[NotifyChild]) -> None:
    children.append(NotifyChild.start(listener_path=socks.runtime, state=STATE))
    wait(lambda: keeper_listeners(keeper.pid) == 1, "the listener")
    old = Client(socks.keeper)
    new = Client(socks.keeper)
    try:
        old.until_synced()
        t0 = time.monotonic()
        assert len(new.until_synced()) == 3  # hello, listener, synced: after --retire-timeout 1
        assert time.monotonic() - t0 >= 0.8
    finally:
        old.close()
        new.close()


def test_a_donor_hands_listeners_over_without_replacing_the_consumer(
        socks: Sockets, keeper: subprocess.Popen[bytes], children: list[NotifyChild]) -> None:
    child = NotifyChild.start()  # its listener comes to us, not to the keeper
    children.append(child)
    consumer, donor = Client(socks.keeper), Client(socks.keeper, consume=False)
    try:
        assert consumer.until_synced()[-1] == kp.Synced(0)
        assert isinstance(donor.receive(), kp.Hello)
        assert child.listener is not None
        kp.send(donor.sock, kp.Adopt(1, STATE), child.listener)
        donor.close()
        got = consumer.receive()
        assert isinstance(got, kp.ListenerFd) and got.state == STATE
        assert keeper_listeners(keeper.pid) == 1
    finally:
        consumer.close()


def test_bad_input_never_takes_it_down(socks: Sockets, keeper: subprocess.Popen[bytes],
                                       children: list[NotifyChild]) -> None:
    r, w = os.pipe()
    try:
        runtime_send(socks.runtime, b"\x00\xffnot json at all")
        runtime_send(socks.runtime, b'{"pid": 5}')  # no fd
        runtime_send(socks.runtime, json.dumps(STATE).encode(), [w])  # not a listener
        os.close(w)
        assert select.select([r], [], [], 5)[0] and os.read(r, 1) == b""  # it closed its copy
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:  # half a message
            s.connect(socks.runtime)
            s.sendall(b'{"pid": ')
            time.sleep(0.8)  # past --runtime-timeout
        for junk in (b"", b"{}", b"[1]", b'{"type": "retire"}', b"\xff" * 70000):
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
                s.connect(socks.keeper)
                s.send(junk)
        bad = Client(socks.keeper, consume=False)
        kp.send(bad.sock, kp.Adopt(1, None), r)  # a pipe, not a listener
        bad.close()
        # Listeners with unparsable or oversized state are kept: dropping them would break
        # their containers.
        children.append(NotifyChild.start(listener_path=socks.runtime, state="{not json"))
        children.append(NotifyChild.start(listener_path=socks.runtime,
                                          state={"pid": 1, "x": "y" * 70000}))
        wait(lambda: keeper_listeners(keeper.pid) == 2, "both listeners")
        assert keeper.poll() is None
        client = Client(socks.keeper)
        try:
            msgs = client.until_synced()
            assert msgs[1:] == [kp.ListenerFd(1, None), kp.ListenerFd(2, None), kp.Synced(2)]
        finally:
            client.close()
    finally:
        os.close(r)
    assert keeper.poll() is None


def test_one_keeper_per_socket(socks: Sockets, keeper: subprocess.Popen[bytes]) -> None:
    second = start_keeper(socks.runtime, socks.keeper, options=FAST)
    assert second.wait(timeout=10) == 0
    assert keeper.poll() is None
    client = Client(socks.keeper)
    try:
        hello = client.receive()
        assert isinstance(hello, kp.Hello) and hello.pid == keeper.pid
    finally:
        client.close()


def test_sigterm_drains(socks: Sockets, keeper: subprocess.Popen[bytes],
                        children: list[NotifyChild]) -> None:
    """No new listeners (the runtime socket goes), the held ones kept until their tasks end."""
    child = NotifyChild.start(listener_path=socks.runtime, state=STATE)
    children.append(child)
    wait(lambda: keeper_listeners(keeper.pid) == 1, "the listener")
    keeper.send_signal(signal.SIGTERM)
    wait(lambda: not os.path.exists(socks.runtime), "the runtime socket to go")
    time.sleep(0.3)
    assert keeper.poll() is None
    child.close()
    children.clear()
    assert keeper.wait(timeout=10) == 0


def test_out_of_fds_it_waits_instead_of_losing_listeners(
        socks: Sockets, children: list[NotifyChild]) -> None:
    """With few fds it takes listeners while it has room for them, leaves the other runtimes
    in the backlog (without spinning), and takes them once listeners go."""
    proc = subprocess.Popen(
        ["prlimit", "--nofile=60:60", sys.executable, "-m", "procfs.runtime.keeper",
         "--runtime-socket", socks.runtime, "--consumer-socket", socks.keeper],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        for _ in range(12):
            children.append(NotifyChild.start(listener_path=socks.runtime, state=STATE))
        # It accepts a runtime while two connections' worth of fds are left beyond its own.
        room = 60 - BASE_FDS - 2 * (1 + MAX_FDS) + 1
        assert room < 12
        wait(lambda: keeper_listeners(proc.pid) == room, "the listeners it has room for")
        before = _cpu_seconds(proc.pid)
        time.sleep(1.0)
        assert _cpu_seconds(proc.pid) - before < 0.2  # not spinning on a readable socket
        assert keeper_listeners(proc.pid) == room
        for c in children[:5]:
            c.close()
        del children[:5]
        wait(lambda: keeper_listeners(proc.pid) == 7, "the waiting runtimes to be taken")
        assert proc.poll() is None
    finally:
        kill_and_reap(proc)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
