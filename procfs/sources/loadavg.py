"""Per-container load averages: the kernel's fixed-point decay, fed by a sampler.

The arithmetic is `kernel/sched/loadavg.c`'s: every LOAD_FREQ (5 s, `Staleness.load_period`)
each average decays by EXP_n/FIXED_1 towards the number of active tasks (state R or D); missed
periods are caught up with `calc_load_n`, as the kernel does after a tickless idle stretch.

The sampler samples only the containers whose /proc/loadavg was read in the last `keep` seconds,
at most `maxsize` of them (least recently read dropped first): its cost follows the containers
that use the file, not the number of cgroups on the host.

The averages start from 0 when the container starts, as the kernel's do at boot. A container is
tracked from its first read of the file; the periods since its start that nobody sampled are
caught up at the sampler's next tick as the kernel catches up a tickless stretch: with the number
of tasks active then. So a container read six seconds after it started shows a load still
decaying in (one busy task: 0.15 0.03 0.01 after two periods), and one first read after an hour
of steady work shows about that work. The count is the sampler's own, never the read's: a reader
waits for its answer in state D, and would count itself.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import trio

from overlays.loadavg import FIXED_1, FSHIFT, LoadavgSnapshot
from procfs.config import Staleness
from procfs.errors import ProcfsError
from procfs.sources.containers import Container
from procfs.sources.tasks import TaskCount

log = logging.getLogger(__name__)

EXP = (1884, 2014, 2037)  # FIXED_1 / exp(5 s / (1, 5, 15 min))
MAX_ACTIVE = 1 << 20  # tasks; keeps the fixed-point numbers in range whatever a reader says


def calc_load(load: int, exp: int, active: int) -> int:
    """One period of decay; `active` is fixed-point (tasks * FIXED_1)."""
    newload = load * exp + active * (FIXED_1 - exp)
    if active >= load:
        newload += FIXED_1 - 1
    return newload // FIXED_1


def fixed_power_int(x: int, frac_bits: int, n: int) -> int:
    """x**n in fixed point with `frac_bits` fraction bits, rounded as the kernel rounds."""
    result = 1 << frac_bits
    while n:
        if n & 1:
            result = (result * x + (1 << (frac_bits - 1))) >> frac_bits
        n >>= 1
        if n:
            x = (x * x + (1 << (frac_bits - 1))) >> frac_bits
    return result


def calc_load_n(load: int, exp: int, active: int, n: int) -> int:
    """`n` periods of decay at once."""
    return calc_load(load, fixed_power_int(exp, FSHIFT, n), active)


def decay(avenrun: tuple[int, int, int], active_tasks: int, n: int = 1) -> tuple[int, int, int]:
    active = min(max(active_tasks, 0), MAX_ACTIVE) * FIXED_1
    if n <= 0:
        return avenrun
    a, b, c = (calc_load_n(load, exp, active, n) for load, exp in zip(avenrun, EXP, strict=True))
    return a, b, c


@dataclass
class _Entry:
    container: Container
    avenrun: tuple[int, int, int]
    updated: float  # when the averages were last up to date (the container's start at first)
    read_at: float
    newest_pid: int


Counter = Callable[[Container], TaskCount | None]


class LoadTracker:
    """Load averages of the containers that read /proc/loadavg. Not thread-safe: used from the
    trio thread only (FUSE handlers and the sampler)."""

    def __init__(self, count: Counter, *, clock: Callable[[], float] = trio.current_time,
                 period: float = Staleness.load_period, keep: float = 300.0,
                 maxsize: int = 1024) -> None:
        # The sampler's: counted afresh, never a count a reader took of itself (see above).
        self.count = count
        self.clock = clock
        self.period = period
        self.keep = keep
        self.maxsize = maxsize
        self._entries: OrderedDict[tuple[int, int, int], _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def tracked(self) -> list[Container]:
        return [e.container for e in self._entries.values()]

    def read(self, c: Container, counted: TaskCount, age: float = 0.0) -> LoadavgSnapshot:
        """The container's /proc/loadavg, with its tasks as a read counted them (its running and
        total tasks, newest pid); starts tracking it, `age` seconds after it started."""
        now = self.clock()
        entry = self._entries.get(c.key)
        if entry is None:
            entry = _Entry(c, (0, 0, 0), now - max(age, 0.0), now, 0)
            self._entries[c.key] = entry
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
        self._entries.move_to_end(c.key)
        entry.container, entry.read_at = c, now
        entry.newest_pid = max(entry.newest_pid, counted.newest_pid)
        return LoadavgSnapshot(entry.avenrun, counted.running, counted.total, entry.newest_pid)

    def sample(self, key: tuple[int, int, int]) -> None:
        """Bring one container's averages up to now (whole periods since the last update)."""
        entry = self._entries.get(key)
        if entry is None:
            return
        now = self.clock()
        if now - entry.read_at > self.keep:
            del self._entries[key]  # nobody looked for a while: stop paying for it
            return
        n = math.floor((now - entry.updated) / self.period)
        if n <= 0:
            return
        try:
            counted = self.count(entry.container)
        except ProcfsError as e:  # the container is gone, or its cgroup is
            log.debug("loadavg: dropping container %s: %s", key, e)
            del self._entries[key]
            return
        if counted is None:
            del self._entries[key]
            return
        entry.avenrun = decay(entry.avenrun, counted.active, n)
        entry.updated += n * self.period
        entry.newest_pid = max(entry.newest_pid, counted.newest_pid)

    async def sample_all(self) -> None:
        for key in list(self._entries):
            self.sample(key)
            await trio.lowlevel.checkpoint()  # let FUSE requests in between containers

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The sampler: every `period` seconds, sample the tracked containers."""
        task_status.started()
        next_tick = trio.current_time() + self.period
        while True:
            await trio.sleep_until(next_tick)
            try:
                await self.sample_all()
            except Exception:  # a bug must not end the server's nursery; log it and go on
                log.exception("loadavg sampler")
            now = trio.current_time()
            next_tick += self.period * max(1, math.ceil((now - next_tick) / self.period))
