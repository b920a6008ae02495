"""Repair the containers a dead server had attached, without restarting them.

When a server dies, every bind mount of its files inside every container answers ENOTCONN: the
binds hold the dead FUSE connection. A new server mounts afresh, then for every container
recorded in the attachment state file (`attached.json` under the state directory, written by
`procfs attach`):

1. in the host's mount namespace, `open_tree(OPEN_TREE_CLONE)` each fresh file: a detached
   mount of it, held by a file descriptor;
2. `setns` into the container's mount namespace (through /proc/PID/ns/mnt of its init);
3. for each target bound to a dead connection: unmount the stale bind (MNT_DETACH, repeated
   while stale ones are stacked) and `move_mount` the fresh one onto it;
4. `setns` back to the host.

Stale binds are found in the container's mountinfo (procfs mounts of another connection than
the fresh one), not by stat: the kernel answers stat from its attribute cache for a while after
the server died.

`setns(CLONE_NEWNS)` needs a single-threaded process, and `open_tree` of a file of our own mount
needs the server to answer the lookup, so the work runs in a child process (`python -m
procfs.reattach MOUNTPOINT`, the jobs as JSON on stdin, one JSON result line per container)
while the server goes on serving. A container whose init exited (or whose pid now belongs to
another process: the start time is checked) is skipped; targets that are not stale are left
alone.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import platform
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import trio

from procfs.errors import ProcfsError
from procfs.hostproc import HostProc
from procfs.runtime import read_json, state_dir

log = logging.getLogger(__name__)

ATTACHED_FILE = "attached.json"

# asm-generic numbers, the same on x86-64 and aarch64 (Python 3.11 has no wrappers).
SYSCALLS = {"x86_64": (428, 429), "aarch64": (428, 429)}
AT_FDCWD = -100
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MNT_DETACH = 2
CLONE_NEWNS = 0x20000
MAX_STACKED = 16


@dataclass(frozen=True)
class Attachment:
    pid: int  # the container's init, in the host's pid namespace
    start: int | None  # its start time (clock ticks); None: not recorded, not checked
    files: tuple[tuple[str, str], ...]  # (path under the mount, target inside the container)


def _files(raw: Any) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    if isinstance(raw, dict):
        pairs = [(str(k), str(v)) for k, v in raw.items()]
    elif isinstance(raw, list):
        for item in raw:
            if isinstance(item, str):
                pairs.append((item, "/" + item.strip("/")))
            elif isinstance(item, dict):
                rel = item.get("path") or item.get("source") or item.get("file")
                if isinstance(rel, str):
                    pairs.append((rel, str(item.get("target") or "/" + rel.strip("/"))))
    return tuple((rel.strip("/"), target) for rel, target in pairs
                 if rel.strip("/") and ".." not in rel.split("/") and target.startswith("/"))


def parse_attachments(data: Any, mountpoint: str) -> list[Attachment]:
    """The containers attached from `mountpoint` in an attachment state file's JSON. Tolerant:
    {"containers": [...] or {id: ...}}, a bare list or dict; entries with "pid", optional
    "start", optional "mount"/"mountpoint" (others' entries are skipped), "files" as
    {rel: target}, [rel, ...] or [{"path", "target"}]. Garbled entries are skipped."""
    if isinstance(data, dict) and "containers" in data:
        data = data["containers"]
    entries = list(data.values()) if isinstance(data, dict) else data
    if not isinstance(entries, list):
        return []
    # abspath, not realpath: the server runs this, and must not look up its own mount.
    mine = os.path.abspath(mountpoint)
    out: list[Attachment] = []
    for e in entries:
        if not isinstance(e, dict):
            continue
        mount = e.get("mountpoint", e.get("mount"))
        if isinstance(mount, str) and os.path.abspath(mount) != mine:
            continue
        try:
            pid = int(e["pid"])
            start = int(e["start"]) if e.get("start") is not None else None
        except (KeyError, TypeError, ValueError):
            continue
        files = _files(e.get("files"))
        if pid > 0 and files:
            out.append(Attachment(pid, start, files))
    return out


def load_attachments(mountpoint: str, path: str | None = None) -> list[Attachment]:
    return parse_attachments(read_json(path or os.path.join(state_dir(), ATTACHED_FILE)),
                             mountpoint)


# The child process: plain syscalls.

def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def _numbers() -> tuple[int, int]:
    numbers = SYSCALLS.get(platform.machine())
    if numbers is None:
        raise OSError(errno.ENOSYS, f"no open_tree/move_mount numbers for {platform.machine()}")
    return numbers


def open_tree(libc: ctypes.CDLL, path: str) -> int:
    nr, _ = _numbers()
    ret = libc.syscall(ctypes.c_long(nr), ctypes.c_int(AT_FDCWD), ctypes.c_char_p(path.encode()),
                       ctypes.c_uint(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC))
    return _check(ret, f"open_tree {path}")


def move_mount(libc: ctypes.CDLL, fd: int, target: str) -> None:
    _, nr = _numbers()
    ret = libc.syscall(ctypes.c_long(nr), ctypes.c_int(fd), ctypes.c_char_p(b""),
                       ctypes.c_int(AT_FDCWD), ctypes.c_char_p(target.encode()),
                       ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH))
    _check(ret, f"move_mount onto {target}")


def stale_mounts(mountinfo: str, targets: Iterable[str], fresh_dev: str) -> dict[str, int]:
    """How many procfs mounts to take off each target: those stacked on top of it that belong
    to another (dead) connection than `fresh_dev` ("MAJOR:MINOR"). Not stat: the kernel answers
    stat from its attribute cache for a while after the server died."""
    wanted = set(targets)
    stacks: dict[str, list[str]] = {t: [] for t in wanted}
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, kind = left.split(), right.split()[:1]
        if len(fields) < 5 or not kind:
            continue
        target = fields[4].encode().decode("unicode_escape")
        if target in wanted:
            is_ours = kind[0].startswith("fuse") and "procfs" in kind[0]
            stacks[target].append(fields[2] if is_ours else "")
    out: dict[str, int] = {}
    for target, devs in stacks.items():
        n = 0
        for dev in reversed(devs):  # the last listed is on top
            if not dev or dev == fresh_dev:
                break
            n += 1
        out[target] = min(n, MAX_STACKED)
    return out


def repair(libc: ctypes.CDLL, mount: str, job: Attachment, host_ns: int,
           host: HostProc) -> dict[str, Any]:
    """Repair one container; a JSON-able account of what was done."""
    out: dict[str, Any] = {"pid": job.pid, "repaired": [], "fine": [], "failed": {}}
    try:
        if job.start is not None and host.stat(job.pid).start_ticks != job.start:
            return {**out, "skipped": "the container's init exited (pid reused)"}
        ns = os.open(f"/proc/{job.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    except (ProcfsError, OSError) as e:
        return {**out, "skipped": f"the container's init exited ({e})"}
    trees: dict[str, int] = {}
    try:
        for rel, target in job.files:
            try:
                trees[target] = open_tree(libc, os.path.join(mount, rel))
            except OSError as e:
                out["failed"][target] = str(e)
        if not trees:
            return out
        st = os.fstat(next(iter(trees.values())))
        fresh = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
        try:
            stale = stale_mounts(host.pid_text(job.pid, "mountinfo"), trees, fresh)
        except ProcfsError as e:
            return {**out, "skipped": f"the container's init exited ({e})"}
        _check(libc.setns(ns, CLONE_NEWNS), "setns")
        try:
            for target, fd in trees.items():
                try:
                    if stale[target] == 0:
                        out["fine"].append(target)
                        continue
                    for _ in range(stale[target]):
                        _check(libc.umount2(target.encode(), MNT_DETACH), f"umount {target}")
                    move_mount(libc, fd, target)
                    out["repaired"].append(target)
                except OSError as e:
                    out["failed"][target] = str(e)
        finally:
            _check(libc.setns(host_ns, CLONE_NEWNS), "setns back")
    finally:
        for fd in trees.values():
            os.close(fd)
        os.close(ns)
    return out


def main() -> int:
    mount = sys.argv[1]
    jobs = [Attachment(j["pid"], j["start"], tuple((rel, dst) for rel, dst in j["files"]))
            for j in json.load(sys.stdin)]
    libc = _libc()
    host = HostProc()
    host_ns = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    for job in jobs:
        print(json.dumps(repair(libc, mount, job, host_ns, host)), flush=True)
    return 0


# The server's side.

async def repair_attached(mountpoint: str, jobs: Iterable[Attachment] | None = None) -> None:
    """Repair every container recorded as attached to `mountpoint` (a trio task, started once
    the fresh mount serves). Logs what it did; never raises."""
    try:
        todo = list(jobs) if jobs is not None else load_attachments(mountpoint)
        if not todo:
            return
        done = await trio.run_process(
            [sys.executable, "-m", "procfs.reattach", mountpoint],
            stdin=json.dumps([asdict(j) for j in todo]).encode(),
            capture_stdout=True, capture_stderr=True, check=False,
        )
        for line in done.stdout.decode(errors="replace").splitlines():
            log.warning("reattach: %s", line)
        if done.returncode != 0:
            log.error("reattach failed (%d): %s", done.returncode,
                      done.stderr.decode(errors="replace")[-2000:])
    except Exception:
        log.exception("reattach failed")


if __name__ == "__main__":
    sys.exit(main())
