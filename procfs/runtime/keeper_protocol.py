"""Messages between the keeper and the server that answers (its *consumer*).

One unix SOCK_SEQPACKET connection; each message is one packet: a JSON object with a "type",
and at most one fd (SCM_RIGHTS).

consumer -> keeper, first:
- `Consume()`: make me the consumer. A newer consumer replaces an older one.
- or `Adopt(ref, state)` + fd, any number of them, without `Consume` (a *donor*: a server on its
  way out whose keeper died hands its copies to the new keeper).

keeper -> consumer:
- `Hello(keeper, pid)` first, to every connection (`keeper` names this keeper process's
  lifetime: listener keys are unique within it; copies tagged with another one are not held by
  this keeper and are to be handed over).
- once this consumer is the active one (no other holds copies): `ListenerFd(key, state)` + fd,
  one listener and the runtime's state JSON (None when it did not parse), for each listener
  held, then `Synced(count)`, then `ListenerFd` for each new one as it arrives.
- `Adopted(ref, key)`: the listener the consumer handed over as `ref` is now held as `key`
  (sent before the batch, so the consumer can tell the copy it has from the batch's).
- `Retire()`: a newer consumer connected. Stop receiving, close every listener fd, close the
  connection (the keeper waits for that before it hands the listeners on: one receiver at a time).

consumer -> keeper, later:
- `Adopt(ref, state)` + fd: keep this listener (the consumer got it from a keeper that died).

Listeners a keeper holds are dropped when their filter has no task left (POLLHUP); the consumer
sees the same POLLHUP, so no message says so.
"""

from __future__ import annotations

import array
import json
import socket
from dataclasses import asdict, dataclass
from typing import Any

from procfs.runtime.seccomp_agent import received_fds

VERSION = 1
MAX_PACKET = 1 << 17


@dataclass(frozen=True)
class Hello:
    keeper: str
    pid: int
    version: int = VERSION


@dataclass(frozen=True)
class ListenerFd:
    key: int
    state: dict[str, Any] | None


@dataclass(frozen=True)
class Synced:
    count: int


@dataclass(frozen=True)
class Adopted:
    ref: int
    key: int


@dataclass(frozen=True)
class Retire:
    pass


@dataclass(frozen=True)
class Consume:
    pass


@dataclass(frozen=True)
class Adopt:
    ref: int
    state: dict[str, Any] | None


Message = Hello | ListenerFd | Synced | Adopted | Retire | Consume | Adopt
_TYPES: dict[str, type[Message]] = {
    "hello": Hello, "listener": ListenerFd, "synced": Synced, "adopted": Adopted,
    "retire": Retire, "consume": Consume, "adopt": Adopt,
}
_NAMES = {v: k for k, v in _TYPES.items()}
_FIELDS: dict[type[Message], dict[str, type]] = {
    Hello: {"keeper": str, "pid": int, "version": int},
    ListenerFd: {"key": int, "state": dict},
    Synced: {"count": int},
    Adopted: {"ref": int, "key": int},
    Retire: {},
    Consume: {},
    Adopt: {"ref": int, "state": dict},
}


def encode(msg: Message) -> bytes:
    return json.dumps({"type": _NAMES[type(msg)], **asdict(msg)}, separators=(",", ":")).encode()


def decode(data: bytes) -> Message | None:
    """The message, or None for anything that is not one (never raises)."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    name = obj.get("type")
    kind = _TYPES.get(name) if isinstance(name, str) else None
    if kind is None:
        return None
    args: dict[str, Any] = {}
    for name, want in _FIELDS[kind].items():
        v = obj.get(name)
        if want is dict:  # a state: an object or null
            if v is not None and not isinstance(v, dict):
                return None
        elif not isinstance(v, want) or isinstance(v, bool):
            return None
        args[name] = v
    return kind(**args)


def fd_ancdata(fd: int | None) -> list[tuple[int, int, bytes]]:
    if fd is None:
        return []
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]).tobytes())]


def send(sock: socket.socket, msg: Message, fd: int | None = None) -> None:
    sock.sendmsg([encode(msg)], fd_ancdata(fd))


def parse_packet(data: bytes, ancdata: list[tuple[int, int, bytes]],
                 flags: int) -> tuple[Message | None, list[int]]:
    """A received packet: its message (None if truncated or malformed) and the fds it
    carried (the caller owns them, whatever the message)."""
    fds = received_fds(ancdata)
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        return None, fds
    return decode(data), fds


def receive(sock: socket.socket) -> tuple[Message | None, list[int], bool]:
    """One packet from a non-blocking socket: (message, fds, eof)."""
    data, ancdata, flags, _ = sock.recvmsg(MAX_PACKET, socket.CMSG_SPACE(4 * 4),
                                           socket.MSG_CMSG_CLOEXEC)
    if not data and not ancdata:
        return None, [], True
    msg, fds = parse_packet(data, ancdata, flags)
    return msg, fds, False
