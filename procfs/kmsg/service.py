"""Every container's ring: creation, bounds, write rate limits, expiry, and the host's view.

Rings are keyed by `Container.key`. Memory is bounded twice: each ring by `ring_bytes`, all
rings together by `total_bytes` (at most total // ring rings; past that the ring of a container
gone longest, else the least recently used one, is dropped). A ring whose container is gone stays
`gone_ttl` seconds, so that the host can still read why it died, then goes.

Requests that wait (a blocked reader, a throttled writer) each hold one of pyfuse3's worker
tasks. What they may cost is bounded per container, never in all (one container could use up a
bound of all for the others): a container's blocked readers beyond its `places_per_container`
wait in line for a place (`procfs.kmsg.places`), never refused, as on the kernel's /dev/kmsg;
the records its readers are handed go out in turn with the other containers' and within a
budget of its own (`procfs.kmsg.delivery`), so that a crowd of readers woken by every record
it writes does not take the server from the others; a throttled writer waits for a token
only while one of its container's writer places is free, and is otherwise dropped at once (as
the kernel drops a writer over its rate).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from procfs.config import KmsgConfig
from procfs.errors import NotFound
from procfs.kmsg.delivery import Budget, Deliveries
from procfs.kmsg.places import Places
from procfs.kmsg.ratelimit import TokenBucket
from procfs.kmsg.record import LOG_KERN, escape
from procfs.kmsg.ring import Ring
from procfs.sources.containers import Container, Resolver
from procfs.sources.hostproc import HostProc
from procfs.sources.identity import ProcessIdentity

log = logging.getLogger(__name__)

Key = tuple[int, int, int]
GREETING = b"procfs: kernel log of this container"
GREETING_PRI = LOG_KERN * 8 + 6  # kern.info


def monotonic_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


CLK_TCK = os.sysconf("SC_CLK_TCK")


# Signal checks the patrol makes in one scheduler pass. pyfuse3 takes one request in per pass,
# so a long pass delays every request, and a read of a file is several (docs/kmsg.md: a
# container's whole budget in one pass multiplied a neighbour's p99).
PATROL_STEP = 4


def ring_id(key: Key) -> str:
    return ":".join(str(k) for k in key)


@dataclass
class Entry:
    container: Container
    ring: Ring
    bucket: TokenBucket
    used_at: float
    readers: Places  # blocked readers: a place each, the rest in line
    writers: Places  # throttled writers waiting for a token
    delivery: Budget  # records handed to the readers (`procfs.kmsg.delivery`)
    suppressed: int = 0
    gone_since: float | None = None

    @property
    def id(self) -> str:
        return ring_id(self.container.key)


@dataclass
class KmsgService:
    config: KmsgConfig
    host: HostProc
    resolver: Resolver | None = None
    clock: Callable[[], float] = time.monotonic
    monotonic_ns: Callable[[], int] = monotonic_ns
    entries: dict[Key, Entry] = field(default_factory=dict)
    patrolled: set[Places] = field(default_factory=set)  # places that had readers waiting
    deliveries: Deliveries = field(init=False)

    def __post_init__(self) -> None:
        self.deliveries = Deliveries(self.clock)

    @property
    def max_rings(self) -> int:
        return max(1, self.config.total_bytes // max(1, self.config.ring_bytes))

    def container_ts_usec(self, c: Container) -> int:
        """Now, on the clock the kernel stamps records with, as `c` reads it: CLOCK_MONOTONIC
        in its time namespace (the host's plus the namespace's monotonic offset, 0 outside
        one of its own). `dmesg -T` turns a stamp into a time of day as boot time + (boottime −
        monotonic: time suspended) + stamp, all read in the container, so that is the clock
        that gives its records the right time of day."""
        return max(0, self.monotonic_ns() + c.monotonic_offset_ns) // 1000

    def entry(self, c: Container) -> Entry:
        """`c`'s ring, made (with a first record, so that a reader never finds it empty and
        falls back to the host's syslog(2)) on first use."""
        now = self.clock()
        e = self.entries.get(c.key)
        if e is None:
            self._make_room()
            cfg = self.config
            e = Entry(c, Ring(cfg.ring_bytes), TokenBucket(cfg.rate, cfg.burst, now), now,
                      Places(cfg.places_per_container), Places(cfg.places_per_container),
                      Budget(cfg.delivery_rate, cfg.delivery_burst, now))
            e.ring.append(GREETING_PRI, self.container_ts_usec(c), GREETING)
            self.entries[c.key] = e
            log.info("kmsg ring %s for container with init %d", e.id, c.reaper)
        else:
            e.container = c  # newer cgroup paths
        e.used_at = now
        return e

    def _make_room(self) -> None:
        while len(self.entries) >= self.max_rings:
            gone = [e for e in self.entries.values() if e.gone_since is not None]
            victim = (min(gone, key=lambda e: e.gone_since or 0.0) if gone
                      else min(self.entries.values(), key=lambda e: e.used_at))
            if victim.gone_since is None:
                log.warning("kmsg: %d rings (the bound); dropping %s, least recently used",
                            len(self.entries), victim.id)
            del self.entries[victim.container.key]

    def append(self, e: Entry, pri: int, text: bytes, dict_lines: tuple[bytes, ...] = ()) -> None:
        e.ring.append(pri, self.container_ts_usec(e.container), text, dict_lines)

    async def write(self, e: Entry, pri: int, text: bytes) -> bool:
        """Append a container's own message unless it is over its rate (then it is dropped and
        counted, as the kernel's devkmsg ratelimit does). True when it was kept."""
        if not e.bucket.take(self.clock()):
            if e.writers.try_take():  # slow the writer down a little instead of spinning on drops
                try:
                    await trio.sleep(min(self.config.throttle, e.bucket.wait_time()))
                finally:
                    e.writers.give_back()
            if not e.bucket.take(self.clock()):
                e.suppressed += 1
                return False
        if e.suppressed:
            self.append(e, LOG_KERN * 8 + 4,
                        b"kmsg: %d output lines suppressed due to ratelimiting" % e.suppressed)
            e.suppressed = 0
        self.append(e, pri, text)
        return True

    # Containers and their lifetime.

    def alive(self, c: Container) -> bool:
        return ProcessIdentity(c.reaper, c.reaper_start).alive(self.host)

    def containers(self) -> list[Container]:
        """Containers lines may be routed to: those with a ring, and those seen lately."""
        seen = {e.container.key: e.container for e in self.entries.values()
                if e.gone_since is None}
        if self.resolver is not None:
            for c in self.resolver.containers():
                seen.setdefault(c.key, c)
        return list(seen.values())

    def sweep(self) -> None:
        now = self.clock()
        for key, e in list(self.entries.items()):
            if e.gone_since is None:
                if not self.alive(e.container):
                    e.gone_since = now
            elif now - e.gone_since >= self.config.gone_ttl:
                log.info("kmsg: dropping ring %s (container gone %.0f s)", e.id,
                         now - e.gone_since)
                del self.entries[key]

    async def sweeper(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self.config.sweep_interval)
            self.sweep()

    async def patrol(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Every `wake_interval`, each container's waiting readers looked at for a signal, up to
        its places' worth (`procfs.kmsg.places`). Places are found through `patrolled`, not
        the rings, so that readers of a ring dropped meanwhile are still let go."""
        task_status.started()
        budget = self.config.places_per_container
        while True:
            await trio.sleep(self.config.wake_interval)
            for places in list(self.patrolled):
                if not places.waiting:
                    self.patrolled.discard(places)
                    continue
                left = min(budget, places.waiting)
                while left > 0:
                    asked = places.patrol(min(left, PATROL_STEP))
                    left = left - asked if asked else 0
                    await trio.lowlevel.checkpoint()

    # The host's view (the control commands).

    def find(self, target: str, create: bool = False) -> Entry:
        """A ring by its id, or by the pid (on the host) of any process of its container."""
        for e in self.entries.values():
            if e.id == target:
                return e
        if not target.isdigit():
            raise NotFound(f"no kmsg ring {target}")
        pid = int(target)
        for e in self.entries.values():
            if e.container.reaper == pid:
                return e
        c = self.resolver.resolve(pid) if self.resolver is not None else None
        if c is None:
            raise NotFound(f"pid {pid} is not in a container")
        if c.key not in self.entries and not create:
            raise NotFound(f"the container of pid {pid} has no kmsg ring yet")
        return self.entry(c)

    def describe(self, e: Entry) -> dict[str, Any]:
        mem = e.container.cgroups.of("memory")
        return {
            "id": e.id, "init": e.container.reaper, "alive": e.gone_since is None,
            "records": len(e.ring.records), "bytes": e.ring.bytes, "max_bytes": e.ring.max_bytes,
            "first_seq": e.ring.first_seq, "next_seq": e.ring.next_seq,
            "suppressed": e.suppressed, "memory_cgroup": mem[0] if mem else None,
            "readers_waiting": e.readers.taken, "readers_in_line": e.readers.in_line,
        }

    async def cmd_list(self, args: dict[str, Any]) -> Any:
        return {"rings": [self.describe(e) for e in self.entries.values()],
                "total_bytes": sum(e.ring.bytes for e in self.entries.values()),
                "max_total_bytes": self.config.total_bytes}

    async def cmd_show(self, args: dict[str, Any]) -> Any:
        e = self.find(str(args.get("target", "")))
        return {"ring": self.describe(e), "records": [
            {"seq": r.seq, "pri": r.pri, "ts_usec": r.ts_usec,
             "text": escape(r.text).decode("ascii")}
            for r in e.ring.records
        ]}

    async def cmd_append(self, args: dict[str, Any]) -> Any:
        e = self.find(str(args.get("target", "")), create=bool(args.get("create", True)))
        text = str(args.get("text", "")).encode()
        level = int(args.get("level", 6)) & 7
        self.append(e, LOG_KERN * 8 + level, text)  # the host may write as "the kernel"
        return {"ring": e.id, "seq": e.ring.next_seq - 1}
