"""Repair the containers a dead server had attached, without restarting them.

When a server dies, every bind of its files inside every container answers ENOTCONN: the binds
hold the dead FUSE connection. A new server mounts afresh, then attaches again every container
the state file (`procfs.attach.state`, written by `procfs attach`) records for its mountpoint
and whose init still runs (same pid, same start time): `procfs.attach.attach` finds the stale
layers by their
device in the container's mountinfo (not by stat: the kernel answers stat from its attribute
cache for a while after the server died), unmounts them and moves a fresh `open_tree` clone of
each file in their place, inside the container's mount namespace. Containers that vanished are
skipped (and pruned from the state file).

A server also adopts the containers of shards it no longer runs (`serve --workers` lowered
across a restart): entries recorded for a mount under its shards' directory (`adopt`) that is
not one of its shards now (`keep`) are attached again. Those, and the containers recorded for
its own mount (attached while no shard served, or by a server run with `--workers 1`), are
spread over the shards that serve now, as `procfs attach` spreads new ones (the shards start
before the server mounts), and stay on its own mount only while none serves. And it repairs, in
the containers of its shards, the files it lends them (`dev/kmsg`: a shard serves none that
waits): a restarted server's shards start, and repair their own files, before it mounts.

The attach forks a child that does `open_tree` on our own mount, which the server must answer:
so the server runs the repair in a separate process (`python -m procfs.attach.reattach MOUNTPOINT`,
one JSON line per container) and goes on serving meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Collection, Sequence

import trio

from procfs.attach.attach import Attacher, served_files
from procfs.attach.errors import AttachError
from procfs.attach.state import Attachment, StateFile
from procfs.config import FSTYPE
from procfs.errors import ProcfsError
from procfs.fuse.tree import normal
from procfs.server.shards import serving
from procfs.sources.hostproc import HostProc
from procfs.sources.mountinfo import parse_mountinfo

log = logging.getLogger(__name__)


def to_repair(mountpoint: str, state: StateFile, adopt: str = "", keep: Sequence[str] = ()
              ) -> tuple[list[Attachment], list[Attachment]]:
    """From one read of the state file, the live entries (1) of `mountpoint` and of the mounts
    under `adopt` not in `keep` (attached again), and (2) of the shards in `keep` (whose files
    that wait come from the server). abspath, not realpath: the server calls this, and must not
    look up paths on its own mount from its only thread."""
    try:
        entries = state.load()
    except ProcfsError as e:
        log.error("cannot repair attached containers: %s", e)
        return [], []
    mine = os.path.abspath(mountpoint)
    kept = {os.path.abspath(m) for m in keep}
    own: list[Attachment] = []
    lent: list[Attachment] = []
    for entry in entries:
        path = os.path.abspath(entry.mountpoint)
        group = lent if path in kept else own if path == mine or (
            bool(adopt) and path.startswith(os.path.join(adopt, ""))) else None
        if group is not None and entry.alive(state.host):  # after the path: alive() reads /proc
            group.append(entry)
    return own, lent


def _again(attacher: Attacher, entry: Attachment, files: Sequence[str]) -> dict[str, object]:
    try:
        res = attacher.attach(entry.pid, rootfs=entry.rootfs, files=files,
                              container_id=entry.container_id)
        return {"pid": entry.pid, "replaced": res.replaced, "kept": res.kept,
                "bound": res.bound, "dropped": res.dropped}
    except (AttachError, ProcfsError, OSError) as e:
        return {"pid": entry.pid, "failed": str(e)}


def repair(mountpoint: str, state: StateFile | None = None, adopt: str = "",
           keep: Sequence[str] = ()) -> list[dict[str, object]]:
    """Attach again every live container recorded for `mountpoint` (and the orphans of shards
    under `adopt` not in `keep`), from a shard of its server where one serves, and the files
    lent to the containers of the shards in `keep`; what was done to each."""
    state = state or StateFile()
    # spread: off the server's own mount (its dev/kmsg readers, procfs.server.shards) when a
    # shard serves
    attacher = Attacher(mountpoint, state, spread=True)
    # Both read before any attach: one moved to a shard here is not lent to again below.
    own, lent_entries = to_repair(mountpoint, state, adopt, keep)
    out = [_again(attacher, entry, entry.files) for entry in own]
    # Per shard, once: its attacher and its files; None while it is down (its own repair, once
    # it serves again, binds the lent files too).
    lenders: dict[str, tuple[Attacher, set[str]] | None] = {}
    for entry in lent_entries:
        shard = entry.mountpoint
        if shard not in lenders:
            lenders[shard] = ((Attacher(shard, state), set(served_files(shard)))
                              if serving(shard) else None)
        lender = lenders[shard]
        if lender is None:
            continue
        lent = [f for f in entry.files if f not in lender[1]]
        if lent:  # bound through the shard's attacher: the entry stays the shard's
            out.append(_again(lender[0], entry, lent))
    try:
        state.prune()
    except ProcfsError as e:
        log.warning("cannot prune %s: %s", state.path, e)
    return out


def dead_binds(devices: Collection[str], proc_root: str = "/proc"
               ) -> dict[int, tuple[int, list[str]]]:
    """Every mount namespace that holds binds of the procfs mounts of `devices` (dead servers'
    connections), whoever made them (runc for `docker run -v`, the kubelet, `mount --bind`):
    {mount namespace inode: (a process in it, the files bound there)}. Read off every process's
    mountinfo, once per namespace: the mounts themselves say where they are."""
    host = HostProc(proc_root)
    host_pidns = host.pid_ns("self")
    # per mount namespace, a process of a container in it (the attach names its container by
    # one: `unshare`, `runc init`'s parent... share it from the host's pid namespace)
    members: dict[int, int] = {}
    for pid in host.pids():
        try:
            mnt, pidns = host.pid_ns(pid, "mnt"), host.pid_ns(pid)
        except (ProcfsError, OSError):
            continue
        if pidns != host_pidns:
            members.setdefault(mnt, pid)
    found: dict[int, tuple[int, list[str]]] = {}
    for ns, pid in members.items():
        try:
            with open(os.path.join(proc_root, str(pid), "mountinfo")) as f:
                entries = parse_mountinfo(f.read())
        except OSError:
            continue
        files = sorted({normal(e.root).lstrip("/") for e in entries
                        if e.fstype == FSTYPE and e.dev in devices and normal(e.root) != "/"
                        and e.mountpoint == normal(e.root)})
        if files:
            found[ns] = (pid, files)
    return found


def repair_unrecorded(mountpoint: str, devices: Collection[str], state: StateFile,
                      done: Collection[int] = ()) -> list[dict[str, object]]:
    """Attach again, from `mountpoint` (spread over its shards as a new attach is), the mount
    namespaces holding binds of `devices` that no record named (those of processes in `done`
    were just repaired from records). The attach records them: the next restart finds them."""
    attacher = Attacher(mountpoint, state, spread=True)
    repaired = set()
    for pid in done:
        with contextlib.suppress(ProcfsError, OSError):
            repaired.add(HostProc().pid_ns(pid, "mnt"))
    out = []
    for ns, (pid, files) in dead_binds(devices).items():
        if ns in repaired:
            continue
        try:
            res = attacher.attach(pid, files=files)
            out.append({"pid": pid, "unrecorded": True, "replaced": res.replaced,
                        "bound": res.bound, "missing": res.missing})
        except (AttachError, ProcfsError, OSError) as e:
            out.append({"pid": pid, "unrecorded": True, "failed": str(e)})
    return out


async def repair_attached(mountpoint: str, adopt: str = "", keep: Sequence[str] = (),
                          devices: Collection[str] = ()) -> None:
    """A trio task, started once the fresh mount serves: repair in a child process the
    containers recorded for this mount and those holding binds of its dead predecessors'
    `devices`. Logs what it did; never raises."""
    try:
        if not devices and not any(to_repair(mountpoint, StateFile(), adopt, keep)):
            return
        if devices:
            log.info("repairing the binds of dead mounts %s", ", ".join(devices))
        argv = [sys.executable, "-m", "procfs.attach.reattach", mountpoint,
                "--devices", ",".join(devices), "--adopt", adopt,
                *(f"--keep={m}" for m in keep)]
        done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True,
                                      check=False)
        for line in done.stdout.decode(errors="replace").splitlines():
            log.warning("reattach: %s", line)
        if done.returncode != 0:
            log.error("reattach failed (%d): %s", done.returncode,
                      done.stderr.decode(errors="replace")[-2000:])
    except Exception:
        log.exception("reattach failed")


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m procfs.attach.reattach")
    p.add_argument("mountpoint")
    p.add_argument("--devices", default="", help="dead servers' devices, comma-separated")
    p.add_argument("--adopt", default="")
    p.add_argument("--keep", action="append", default=[], help="a shard serving now")
    args = p.parse_args()
    state = StateFile()
    results = repair(args.mountpoint, state, adopt=args.adopt, keep=args.keep)
    devices = [d for d in args.devices.split(",") if d]
    if devices:
        done = [pid for r in results if "failed" not in r and isinstance(pid := r.get("pid"), int)]
        results += repair_unrecorded(args.mountpoint, devices, state, done)
    for result in results:
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
