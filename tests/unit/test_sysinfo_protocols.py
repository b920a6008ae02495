"""The two wire protocols, on bytes and socketpairs: what runc sends to listenerPath (as
captured from runc 1.1.5 here), and the keeper's messages; nothing a peer sends raises."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from procfs.runtime import keeper_protocol as kp
from procfs.runtime.seccomp_agent import (
    MAX_MESSAGE,
    ProcessState,
    RuntimeMessage,
    decode_state,
)

# `runc run` (init) and `runc exec`, byte for byte as runc 1.1.5 sent them to our socket.
RUNC_INIT = (b'{"ociVersion":"1.0.2-dev","fds":["seccompFd"],"pid":7102,"metadata":"meta-xyz",'
             b'"state":{"ociVersion":"1.0.2-dev","id":"procfs-oci-11ee99c417","status":'
             b'"creating","pid":7102,"bundle":"/tmp/procfs-bundle-p6bz3po6","annotations":'
             b'{"a.b":"c"}}}')
RUNC_EXEC = (b'{"ociVersion":"1.0.2-dev","fds":["seccompFd"],"pid":8085,"metadata":"meta-xyz",'
             b'"state":{"ociVersion":"1.0.2-dev","id":"procfs-oci-d8de5da8ca","status":'
             b'"running","pid":8056,"bundle":"/tmp/procfs-bundle-2uraq3it","annotations":'
             b'{"a.b":"c"}}}')

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                    | st.text(), lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
                    max_leaves=20)


def test_runc_init_message() -> None:
    s = ProcessState.from_json(decode_state(RUNC_INIT))
    assert s == ProcessState(pid=7102, fds=("seccompFd",), metadata="meta-xyz",
                             container_id="procfs-oci-11ee99c417", status="creating",
                             init_pid=7102, bundle="/tmp/procfs-bundle-p6bz3po6",
                             annotations={"a.b": "c"}, oci_version="1.0.2-dev")


def test_runc_exec_message_names_the_exec_and_the_init() -> None:
    s = ProcessState.from_json(decode_state(RUNC_EXEC))
    assert s is not None and (s.pid, s.init_pid, s.status) == (8085, 8056, "running")


@pytest.mark.parametrize("data", [b"", b"{", b"[1,2]", b"null", b'"x"', b"\xff\xfe{}",
                                  b'{"pid": "7"}' + b"]" * 10, b"[" * 100000])
def test_what_is_not_a_state_object(data: bytes) -> None:
    obj = decode_state(data)
    assert obj is None or ProcessState.from_json(obj) == ProcessState(pid=0)


def test_wrong_types_become_empty_fields() -> None:
    s = ProcessState.from_json({"pid": True, "fds": "seccompFd", "metadata": 5,
                                "state": {"id": ["x"], "pid": -4, "annotations": {"k": 1}}})
    assert s == ProcessState(pid=0)
    assert ProcessState.from_json({"pid": 2**40}) == ProcessState(pid=0)


def test_trailing_bytes_after_the_object_are_ignored() -> None:
    assert decode_state(RUNC_INIT + b"\n\0garbage") == json.loads(RUNC_INIT)


@given(st.binary(max_size=300))
def test_any_bytes(data: bytes) -> None:
    ProcessState.from_json(decode_state(data))


@given(JSON)
def test_any_json(obj: object) -> None:
    ProcessState.from_json(obj)
    ProcessState.from_json({"state": obj, "pid": 1, "fds": obj})
    kp.decode(json.dumps(obj).encode())
    if isinstance(obj, dict):
        for kind in ("hello", "listener", "synced", "adopted", "retire", "consume", "adopt"):
            kp.decode(json.dumps({**obj, "type": kind}).encode())


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        b.setblocking(False)
        yield a, b


def test_a_message_in_pieces_with_its_fd(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    r, w = os.pipe()
    try:
        socket.send_fds(a, [RUNC_INIT[:50]], [r])
        msg = RuntimeMessage()
        msg.read(b)
        assert not msg.complete() and len(msg.fds) == 1
        a.sendall(RUNC_INIT[50:])
        msg.read(b)
        assert msg.complete() and not msg.ended and msg.state() == json.loads(RUNC_INIT)
        assert os.readlink(f"/proc/self/fd/{msg.fds[0]}") == os.readlink(f"/proc/self/fd/{r}")
        os.close(msg.fds[0])
    finally:
        os.close(r)
        os.close(w)


def test_an_oversized_message_ends(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.sendall(b'{"pid": ' + b" " * (MAX_MESSAGE + 10))
    msg = RuntimeMessage()
    while not msg.ended:
        msg.read(b)
    assert msg.complete() and msg.state() is None and len(msg.data) <= MAX_MESSAGE


def test_eof_ends_a_message(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    msg = RuntimeMessage()
    with pytest.raises(BlockingIOError):
        msg.read(b)
    a.sendall(b'{"pid"')
    a.shutdown(socket.SHUT_WR)
    msg.read(b)
    assert not msg.complete()
    msg.read(b)
    assert msg.ended and msg.complete() and msg.state() is None and msg.fds == []


@pytest.mark.parametrize("msg", [
    kp.Hello("abc", 12), kp.ListenerFd(3, {"pid": 1}), kp.ListenerFd(4, None), kp.Synced(2),
    kp.Adopted(5, 6), kp.Retire(), kp.Consume(), kp.Adopt(7, None), kp.Adopt(8, {"x": [1]}),
])
def test_keeper_messages_round_trip(msg: kp.Message) -> None:
    assert kp.decode(kp.encode(msg)) == msg


@pytest.mark.parametrize("data", [
    b"", b"{}", b"[]", b'{"type": "hello"}', b'{"type": "hello", "keeper": 1, "pid": 2}',
    b'{"type": "synced", "count": true}', b'{"type": "listener", "key": 1, "state": [1]}',
    b'{"type": "nope"}', b'{"type": ["hello"]}', b"\xff",
])
def test_what_is_not_a_keeper_message(data: bytes) -> None:
    assert kp.decode(data) is None


def test_packets_with_their_fds() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    with a, b:
        kp.send(a, kp.ListenerFd(1, None), r)
        b.setblocking(False)
        msg, fds, eof = kp.receive(b)
        assert msg == kp.ListenerFd(1, None) and len(fds) == 1 and not eof
        os.close(fds[0])
        a.send(b"x" * (kp.MAX_PACKET + 1))  # truncated: no message, and no exception
        assert kp.receive(b)[0] is None
        a.shutdown(socket.SHUT_WR)
        assert kp.receive(b)[2]
    os.close(r)
    os.close(w)
