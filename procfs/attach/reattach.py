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

import json
import logging
import os
import sys
from collections.abc import Sequence

import trio

from procfs.attach.attach import Attacher, served_files
from procfs.attach.errors import AttachError
from procfs.attach.state import Attachment, StateFile
from procfs.errors import ProcfsError
from procfs.server.shards import serving

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
    # spread: off the server's own mount (its 99 tasks, procfs.server.shards) when a shard serves
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


async def repair_attached(mountpoint: str, adopt: str = "", keep: Sequence[str] = ()) -> None:
    """A trio task, started once the fresh mount serves: repair in a child process. Logs what
    it did; never raises."""
    try:
        if not any(to_repair(mountpoint, StateFile(), adopt, keep)):
            return
        done = await trio.run_process(
            [sys.executable, "-m", "procfs.attach.reattach", mountpoint, adopt, *keep],
            capture_stdout=True, capture_stderr=True, check=False,
        )
        for line in done.stdout.decode(errors="replace").splitlines():
            log.warning("reattach: %s", line)
        if done.returncode != 0:
            log.error("reattach failed (%d): %s", done.returncode,
                      done.stderr.decode(errors="replace")[-2000:])
    except Exception:
        log.exception("reattach failed")


def main() -> int:
    args = sys.argv[1:]  # MOUNTPOINT [ADOPT [KEEP...]]
    adopt = args[1] if len(args) > 1 else ""
    for result in repair(args[0], adopt=adopt, keep=args[2:]):
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
