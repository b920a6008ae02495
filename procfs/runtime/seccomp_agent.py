"""The OCI seccomp agent protocol: what runc (>= 1.1) and crun send to `listenerPath`.

With `linux.seccomp.listenerPath` set and a rule whose action is SCMP_ACT_NOTIFY, the runtime,
once the process's filter exists, connects to that unix stream socket and sends one message: the
JSON of a runtime-spec `ContainerProcessState`, with the listener fd attached (SCM_RIGHTS), in
one sendmsg. Measured with runc 1.1.5 (and in its libcontainer/process_linux.go):

    {"ociVersion": "1.0.2-dev", "fds": ["seccompFd"], "pid": 7102, "metadata": "<listenerMetadata>",
     "state": {"ociVersion": "1.0.2-dev", "id": "<container>", "status": "creating", "pid": 7102,
               "bundle": "/path/to/bundle", "annotations": {...}}}

- `runc run`/`create`: pid = state.pid = the container's init (host pid), status "creating".
- `runc exec`: a connection of its own, with a listener of its own (the exec'd process gets a
  filter of its own): pid = the exec'd process, state.pid = the init, status "running".
- Children share their parent's filter, hence its listener.
- runc does not close the connection after the message (its socket lives until the runtime
  exits or collects it): read until the JSON is complete, not until EOF.
- The runtime waits for the send only, not for an answer; a socket nobody listens on fails the
  container's creation.

Nothing here trusts the peer: anything that does not parse is None, never an exception.
"""

from __future__ import annotations

import array
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SECCOMP_FD_NAME = "seccompFd"
MAX_MESSAGE = 1 << 16  # bytes of state JSON kept from one connection
MAX_FDS = 16  # fds accepted with it (runc sends one)

_decoder = json.JSONDecoder()


@dataclass(frozen=True)
class ProcessState:
    """A parsed ContainerProcessState; fields the peer left out are empty."""

    pid: int
    fds: tuple[str, ...] = ()
    metadata: str = ""
    container_id: str = ""
    status: str = ""
    init_pid: int = 0
    bundle: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)
    oci_version: str = ""

    @classmethod
    def from_json(cls, obj: object) -> ProcessState | None:
        if not isinstance(obj, dict):
            return None
        state = obj.get("state")
        state = state if isinstance(state, dict) else {}
        annotations = state.get("annotations")
        fds = obj.get("fds")
        return cls(
            pid=_int(obj.get("pid")),
            fds=tuple(x for x in fds if isinstance(x, str)) if isinstance(fds, list) else (),
            metadata=_str(obj.get("metadata")),
            container_id=_str(state.get("id")),
            status=_str(state.get("status")),
            init_pid=_int(state.get("pid")),
            bundle=_str(state.get("bundle")),
            annotations={k: v for k, v in annotations.items()
                         if isinstance(k, str) and isinstance(v, str)}
            if isinstance(annotations, dict) else {},
            oci_version=_str(obj.get("ociVersion")),
        )


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 31 else 0


def _str(v: Any) -> str:
    return v if isinstance(v, str) else ""


def decode_state(data: bytes) -> dict[str, Any] | None:
    """The JSON object at the start of `data` (trailing bytes ignored), or None."""
    try:
        obj, _ = _decoder.raw_decode(data.decode("utf-8").lstrip())
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


@dataclass
class RuntimeMessage:
    """What one runtime connection has sent so far (the keeper reads it without blocking)."""

    data: bytearray = field(default_factory=bytearray)
    fds: list[int] = field(default_factory=list)
    ended: bool = False  # EOF, or more than we keep

    def complete(self) -> bool:
        return self.ended or decode_state(bytes(self.data)) is not None

    def read(self, sock: socket.socket) -> None:
        """One recvmsg; BlockingIOError when nothing is there yet."""
        room = MAX_MESSAGE - len(self.data)
        data, ancdata, _, _ = sock.recvmsg(max(room, 1), socket.CMSG_SPACE(MAX_FDS * 4),
                                           socket.MSG_CMSG_CLOEXEC)
        self.fds += received_fds(ancdata)
        if not data or len(self.data) + len(data) > MAX_MESSAGE:
            self.ended = True
        else:
            self.data += data

    def state(self) -> dict[str, Any] | None:
        return decode_state(bytes(self.data))


def received_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(payload[: len(payload) - len(payload) % a.itemsize])
            fds += a
    return fds
