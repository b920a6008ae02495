"""A seccomp notify listener for the tests: `python -m tests.integration.notify_listener SOCKET`.

It accepts what runc and crun send to `linux.seccomp.listenerPath` (the container state as JSON
with the notify fd in SCM_RIGHTS), prints one line per fd received (`fd PID`, the process the
runtime names) and per notification (`call NR ARCH PID`), and lets every call through to the
kernel (SECCOMP_USER_NOTIF_FLAG_CONTINUE): the container behaves as without the rule, and the
test learns which calls reached a listener. Not procfs's own listener (which answers sysinfo).
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import selectors
import socket
import struct
import sys

# seccomp_unotify(2): _IOWR('!', 0, struct seccomp_notif), _IOWR('!', 1, struct
# seccomp_notif_resp)
NOTIF_RECV = 0xC0502100
NOTIF_SEND = 0xC0182101
NOTIF_SIZE = 80  # id u64, pid u32, flags u32, data {nr i32, arch u32, ip u64, args u64[6]}
FLAG_CONTINUE = 1


def receive_fd(conn: socket.socket) -> tuple[int | None, dict[str, object]]:
    fds = array.array("i")
    msg, ancdata, _, _ = conn.recvmsg(1 << 16, socket.CMSG_LEN(16 * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    try:
        state = json.loads(msg) if msg else {}
    except ValueError:
        state = {}
    return (fds[0] if fds else None), state if isinstance(state, dict) else {}


def answer(fd: int) -> str | None:
    import fcntl

    buf = bytearray(NOTIF_SIZE)
    try:
        fcntl.ioctl(fd, NOTIF_RECV, buf, True)
    except OSError:  # the caller died meanwhile
        return None
    notif_id, pid, _flags, nr, arch = struct.unpack_from("=QIIiI", buf)
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, NOTIF_SEND, bytearray(struct.pack("=QqiI", notif_id, 0, 0,
                                                          FLAG_CONTINUE)), True)
    return f"call {nr} {arch:#x} {pid}"


def serve(path: str) -> None:
    sel = selectors.DefaultSelector()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    sel.register(listener, selectors.EVENT_READ, "listener")
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            if key.data == "listener":
                conn, _ = listener.accept()
                with conn:
                    fd, state = receive_fd(conn)
                if fd is not None:
                    print(f"fd {state.get('pid', 0)}", flush=True)
                    sel.register(fd, selectors.EVENT_READ, "notify")
                continue
            fd = key.fd
            line = answer(fd)
            if line is not None:
                print(line, flush=True)
            elif not _alive(fd):
                sel.unregister(fd)
                os.close(fd)


def _alive(fd: int) -> bool:
    """A notify fd whose filter has no process left polls as hung up."""
    import select

    p = select.poll()
    p.register(fd, select.POLLIN)
    return not any(ev & select.POLLHUP for _, ev in p.poll(0))


if __name__ == "__main__":
    serve(sys.argv[1])
