"""Serving from several processes (`procfs serve MOUNT --workers K`): one mount per process.

One Python process renders one file at a time. When a host's containers read faster than one core
renders, the server runs K servers more ("shards"), each a whole `procfs serve` on a mount of its
own (`<state dir>/shards/<hash of MOUNT>/<i>`), and `procfs attach` binds each container's files
from one of the shards, chosen by the container's pid namespace.

Why one mount per process, not K processes reading one FUSE connection: the kernel hands any
request to any reader of a connection, so the READ of an open file may reach a process that did
not render it, and a container's /dev/kmsg readers and load average would have to be shared
between processes. With a mount each, nothing is shared: a container's files are served by one
process, except `dev/kmsg`, which shards do not serve: the server lends its own to every
container (`procfs.attach.attach`), so all rings live in one process, whose many blocked
dev/kmsg readers and kmsg delivery take nothing from the containers' other files. The server's
own process serves the host, dev/kmsg, and the other files of a container only while no shard
serves. Every shard answers every caller rightly (each resolves its caller itself): the choice
only spreads the load, and a container whose shard is down gets another.

The server forks its shards before trio runs (procfs.server.prefork: they share its pages) and
supervises them (procfs.server.supervise); a restarted shard attaches its containers again, as a
restarted server does.
"""

from __future__ import annotations

import os

from procfs.config import state_dir
from procfs.server.record import ServerRecord, mount_key

MAX_AUTO = 4  # `--workers auto`: one per CPU, at most this many (each forked shard ~10 MiB)
MASK64 = (1 << 64) - 1


def parse_workers(text: str) -> int:
    """`--workers`: a count, or `auto` (the CPUs this process may run on, at most MAX_AUTO)."""
    if text == "auto":
        return max(1, min(len(os.sched_getaffinity(0)), MAX_AUTO))
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"not a worker count: {text!r}") from None
    if n < 1:
        raise ValueError(f"workers must be at least 1, not {n}")
    return n


def shard_root(mountpoint: str) -> str:
    """The directory of the shards' mountpoints of the server of `mountpoint`."""
    return os.path.join(os.path.realpath(state_dir()), "shards", mount_key(mountpoint))


def shard_mountpoints(mountpoint: str, workers: int) -> list[str]:
    """Where the shards of the server of `mountpoint` mount: one per worker, none for one (the
    server's own process serves everything then)."""
    directory = shard_root(mountpoint)
    return [os.path.join(directory, str(i)) for i in range(1, workers + 1)] if workers > 1 else []


def serving(mountpoint: str) -> bool:
    record = ServerRecord.of(mountpoint)
    return record is not None and record.alive()


def served_by(mountpoint: str, record: ServerRecord | None = None) -> list[str]:
    """`mountpoint` and the shards of its server that serve now, `mountpoint` first."""
    record = record or ServerRecord.of(mountpoint)
    return [mountpoint, *(m for m in (record.shards if record else []) if serving(m))]


def choose(mountpoint: str, key: int) -> str:
    """The mount to bind a container's files from: one of its server's shards, picked by `key`
    (the container's pid namespace inode: the same for all its processes). A shard not serving is
    passed over; with none serving (or none at all), `mountpoint` itself."""
    record = ServerRecord.of(mountpoint)
    if record is None or not record.shards:
        return mountpoint
    pick = record.shards[spread(key, len(record.shards))]
    if serving(pick):
        return pick
    live = served_by(mountpoint, record)[1:] or [mountpoint]
    return live[spread(key, len(live))]


def spread(key: int, count: int) -> int:
    """`key`'s place among `count`, evenly for any keys: namespace inodes come in strides (one
    per namespace a container makes, allocated one after another), so `key % count` would
    send a host's containers all to one process, and a multiplicative hash's middle bits
    still cluster them in runs. splitmix64's finalizer mixes every bit of the key into every
    bit of the result; the top bits pick (multiply and shift, not a modulo)."""
    z = (key + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    z ^= z >> 31
    return (z * count) >> 64
