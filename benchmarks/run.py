"""The benchmark run: three servers, N containers, one reader program, one results file.

Every container is a real cgroup (memory and CPU limits) with an init in pid and mount namespaces
of its own, and reads each server's files through bind mounts, as a container does: procfs's
bound over /proc and /sys by `procfs attach` (from the shard it picks), LXCFS's and the floor's
under /mnt/<server>/ (a tmpfs of the container's). Readers join a container's cgroup and
namespaces (`nsenter --pid --mount`), so every server resolves them the same way: through the
init of the reader's pid namespace; and no server sees a path walked through its tree per open.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.daemons import Daemon, Floor, Lxcfs, Procfs, ensure_lxcfs
from procfs.attach.attach import Attacher
from procfs.server.shards import choose, served_by
from procfs.sources.hostproc import HostProc
from tests.support.sandbox import Cgroup, Limits, Sandbox, served_paths, unique_name

FILES = (
    "proc/meminfo",
    "proc/cpuinfo",
    "proc/stat",
    "proc/uptime",
    "proc/loadavg",
    "proc/diskstats",
    "sys/devices/system/cpu/online",
)
SERVERS = ("procfs", "lxcfs", "floor")
# The noisy-neighbour scenario: one container's tight readers against a neighbour's paced one.
NOISY_FILE = "proc/meminfo"
NOISY_READERS = 32
PACE_MS = 10.0
MIB = 1 << 20
READER_SOURCE = Path(__file__).with_name("reader.c")
RESULTS = Path(__file__).with_name("results")


@dataclass
class Options:
    ns: list[int] = field(default_factory=lambda: [1, 100, 1000])
    reads: int = 2000  # measured reads per file and server for the latency
    tput_seconds: float = 10.0
    concurrency: tuple[int, ...] = (8, 32)
    tput_at: str = "max"  # "max": throughput at the largest N only; "all": at every N
    out: Path = RESULTS
    quick: bool = False
    procfs_workers: str = "auto"  # `procfs serve --workers`
    procfs_args: list[str] = field(default_factory=list)  # extra `procfs serve` options
    floor_workers: int = 1  # processes serving the floor's one connection (a lever measured)
    noisy_seconds: float = 5.0  # each run of the noisy-neighbour scenario (0: none)


@dataclass
class Results:
    files: list[str]
    skipped: list[str]
    options: dict[str, Any]
    machine: dict[str, str] = field(default_factory=dict)
    # latency[n][file][server] = {"p50": ns, "p99": ns, "mean": ns, "errors": k}
    latency: dict[int, dict[str, dict[str, dict[str, float]]]] = field(default_factory=dict)
    # tput[n][readers][file][server] = {"rps": reads/s, "cpu_ms_per_1000": ms, "errors": k}
    tput: dict[int, dict[int, dict[str, dict[str, dict[str, float]]]]] = field(
        default_factory=dict)
    # rss[n][server] = resident bytes after the measurements at n, each page once
    # (Daemon.resident_bytes: one process's VmRSS, or with several, the first's + the others'
    # private pages); rss_sum: VmRSS summed over its processes; pss: PSS summed
    rss: dict[int, dict[str, int]] = field(default_factory=dict)
    rss_sum: dict[int, dict[str, int]] = field(default_factory=dict)
    pss: dict[int, dict[str, int]] = field(default_factory=dict)
    setup_seconds: dict[int, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # neighbours[placement][server] = {"quiet": {...}, "noisy": {...}} (p50, p99, mean, errors)
    # of a neighbour's paced reads, alone and while another container hammers; placement
    # "same process" or "other process" (procfs with shards; LXCFS is one process)
    neighbours: dict[str, dict[str, dict[str, dict[str, float]]]] = field(default_factory=dict)


def compile_reader(directory: str) -> str:
    binary = os.path.join(directory, "reader")
    subprocess.run(["gcc", "-O2", "-Wall", "-o", binary, str(READER_SOURCE)], check=True)
    return binary


class Container:
    """A cgroup with limits and an init in its own pid namespace; readers join both."""

    def __init__(self, index: int) -> None:
        self.cgroup = Cgroup(unique_name("procfs-bench"))
        # Limits differ per container, so that a server mixing two up would show it.
        self.limits = Limits(memory=(256 + index % 512) * MIB,
                             quota=(50_000 + 1_000 * (index % 100), 100_000),
                             cpus="0" if index % 2 == 0 else None)
        self.sandbox: Sandbox | None = None
        self.pidns = 0

    def start(self) -> Container:
        self.cgroup.create(self.limits)
        self.sandbox = Sandbox(self.cgroup, None).start()
        self.pidns = HostProc().pid_ns(self.sandbox.pid)
        return self

    def bind(self, procfs: str, binds: Sequence[str], others: dict[str, str],
             files: Sequence[str]) -> None:
        """Bind procfs's `binds` (mounted at `procfs`) over the container's own, as `procfs
        attach` does, and `files` of each of `others` (server → mountpoint) under /mnt/<server>."""
        assert self.sandbox is not None
        Attacher(procfs, spread=True).attach(self.sandbox.pid, files=list(binds))
        script = ["mount -t tmpfs -o size=1m bench /mnt"]
        for server, mount in others.items():
            for rel in files:
                dst = f"/mnt/{server}/{rel}"
                script.append(f"mkdir -p {os.path.dirname(dst)} && touch {dst} && "
                              f"mount --bind {os.path.join(mount, rel)} {dst}")
        subprocess.run(["nsenter", "--target", str(self.sandbox.pid), "--mount", "--",
                        "sh", "-ec", "\n".join(script)], check=True, capture_output=True,
                       timeout=60)

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[str]:
        assert self.sandbox is not None
        cg = self.cgroup
        return subprocess.Popen(
            ["nsenter", "--target", str(self.sandbox.pid), "--pid", "--mount", "--", *argv],
            text=True, preexec_fn=lambda: cg.add(os.getpid()), **kw)

    def stop(self) -> None:
        if self.sandbox is not None:
            self.sandbox.stop()
            self.sandbox = None
        if self.cgroup.dirs:
            self.cgroup.remove()


def _ready(procs: Sequence[subprocess.Popen[str]]) -> None:
    """Wait for each reader's "R" (started, waiting for its start signal)."""
    for p in procs:
        assert p.stdout is not None
        if p.stdout.readline().strip() != "R":
            raise RuntimeError(f"reader did not start: {p.communicate()[1]}")


def _go(procs: Sequence[subprocess.Popen[str]]) -> None:
    """Start readers waiting for their start signal."""
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("g")
        p.stdin.flush()


def _communicate(p: subprocess.Popen[str], timeout: float) -> str:
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    if p.returncode != 0:
        raise RuntimeError(f"reader failed ({p.returncode}): {err.strip()}")
    return out


class Bench:
    def __init__(self, options: Options) -> None:
        self.o = options
        self.daemons: dict[str, Daemon] = {}
        self.containers: list[Container] = []
        self.reader = ""
        self.files: list[str] = []
        self.binds: list[str] = []  # what procfs binds for them (a file, or its directory)

    def path(self, server: str, rel: str) -> str:
        """Where a container reads `rel` from `server` (Container.bind)."""
        return "/" + rel if server == "procfs" else f"/mnt/{server}/{rel}"

    # Set-up

    def start_daemons(self, stack: contextlib.ExitStack) -> list[str]:
        lxcfs = ensure_lxcfs()
        procfs = Procfs(["--workers", self.o.procfs_workers, *self.o.procfs_args])
        stack.callback(procfs.stop)
        procfs.start()
        self.daemons["procfs"] = procfs
        units = served_paths(procfs.mountpoint)  # files, and directories bound whole
        self.binds = sorted({u for f in FILES for u in units if f == u or f.startswith(u + "/")})
        self.files = [f for f in FILES if any(f == u or f.startswith(u + "/") for u in units)]
        skipped = [f for f in FILES if f not in self.files]
        lx = Lxcfs(lxcfs)
        stack.callback(lx.stop)
        lx.start()
        self.daemons["lxcfs"] = lx
        floor = Floor(self.files, self.o.floor_workers)
        stack.callback(floor.stop)
        floor.start()
        self.daemons["floor"] = floor
        return skipped

    def grow(self, n: int) -> float:
        """Start containers until there are n; each new one reads every file once from every
        server (so that all servers have seen all n containers). Returns the seconds it took."""
        t0 = time.monotonic()
        first = len(self.containers)
        while len(self.containers) < n:
            c = Container(len(self.containers))
            self.containers.append(c)  # before start: stopped on failure too
            c.start()
            c.bind(self.daemons["procfs"].mountpoint, self.binds,
                   {s: self.daemons[s].mountpoint for s in SERVERS if s != "procfs"},
                   self.files)
        batch: list[subprocess.Popen[str]] = []
        paths = [self.path(s, f) for s in SERVERS for f in self.files]
        for c in self.containers[first:]:
            batch.append(c.popen([self.reader, "once", *paths], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE))
            if len(batch) >= 16:
                for p in batch:
                    _communicate(p, 60)
                batch = []
        for p in batch:
            _communicate(p, 60)
        return time.monotonic() - t0

    def latency_note(self) -> str:
        """Which of procfs's processes serves the latency reader's container (with --workers,
        the server's own runs pyfuse3's many worker tasks, for dev/kmsg; its shards one)."""
        main = self.daemons["procfs"].mountpoint
        mount = choose(main, self.containers[0].pidns)
        where = "the server's own process" if mount == main else "a shard"
        return (f"procfs serves container 0 (the latency reader's) from {where}, of "
                f"{len(served_by(main))} processes.")

    # Measurements

    def latency(self, rel: str) -> dict[str, dict[str, float]]:
        """p50/p99 of open+read+close from container 0, the three servers interleaved."""
        c = self.containers[0]
        paths = [self.path(s, rel) for s in SERVERS]
        _communicate(c.popen([self.reader, "lat", "50", *paths], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE), 120)  # warm-up
        cpu0 = {s: self.daemons[s].cpu_seconds() for s in SERVERS}
        out = _communicate(c.popen([self.reader, "lat", str(self.o.reads), *paths],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE), 600)
        result: dict[str, dict[str, float]] = {}
        for server, line in zip(SERVERS, out.splitlines(), strict=True):
            p50, p99, mean, errors = (float(x) for x in line.split())
            cpu = self.daemons[server].cpu_seconds() - cpu0[server]
            result[server] = {"p50": p50, "p99": p99, "mean": mean, "errors": errors,
                              "cpu_ms_per_1000": cpu * 1e6 / self.o.reads}
        return result

    def throughput(self, server: str, rel: str, readers: int) -> dict[str, float]:
        """Total reads/s of `readers` concurrent readers, spread over the containers."""
        procs = []
        try:
            for i in range(readers):
                c = self.containers[i % len(self.containers)]
                procs.append(c.popen([self.reader, "tput", str(self.o.tput_seconds),
                                      self.path(server, rel)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE))
            _ready(procs)
            cpu0 = self.daemons[server].cpu_seconds()
            _go(procs)
            rps, reads, errors = 0.0, 0, 0
            for p in procs:
                n, elapsed_ns, errs = (int(x) for x in
                                       _communicate(p, self.o.tput_seconds + 60).split())
                rps += n / (elapsed_ns / 1e9)
                reads += n
                errors += errs
            cpu = self.daemons[server].cpu_seconds() - cpu0
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        return {"rps": rps, "cpu_ms_per_1000": cpu * 1e6 / max(reads, 1), "errors": errors}

    def paced(self, server: str, neighbour: Container, noisy: Container | None,
              count: int) -> dict[str, float]:
        """The neighbour's paced reads of NOISY_FILE from `server` (p50, p99, mean ns, errors),
        with NOISY_READERS tight readers in `noisy` all along (None: alone)."""
        path = self.path(server, NOISY_FILE)
        procs: list[subprocess.Popen[str]] = []
        try:
            me = neighbour.popen([self.reader, "paced", str(PACE_MS), str(count), path],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
            procs.append(me)
            seconds = count * PACE_MS / 1000 + 1.0
            for _ in range(NOISY_READERS if noisy is not None else 0):
                assert noisy is not None
                procs.append(noisy.popen([self.reader, "tput", str(seconds), path],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE))
            _ready(procs)
            _go(procs[1:])  # the noise first, at full speed before the neighbour starts
            if noisy is not None:
                time.sleep(0.2)
            _go(procs[:1])
            p50, p99, mean, errors = (float(x) for x in _communicate(me, seconds + 60).split())
            for p in procs[1:]:
                _communicate(p, seconds + 60)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        return {"p50": p50, "p99": p99, "mean": mean, "errors": errors}

    def neighbours(self, results: Results) -> None:
        """A neighbour's paced reads alone and beside a container hammering the same file: on
        the same serving process and, with procfs's shards, on another."""
        main = self.daemons["procfs"].mountpoint
        noisy = self.containers[0]
        where = {c: choose(main, c.pidns) for c in self.containers}
        placements = {"same process": next((c for c in self.containers[1:]
                                            if where[c] == where[noisy]), None),
                      "other process": next((c for c in self.containers[1:]
                                             if where[c] != where[noisy]), None)}
        count = max(50, int(self.o.noisy_seconds * 1000 / PACE_MS))
        for placement, neighbour in placements.items():
            if neighbour is None:
                results.notes.append(f"noisy neighbour, {placement}: no such pair of containers "
                                     f"among {len(self.containers)}")
                continue
            servers = ("procfs",) if placement == "other process" else ("procfs", "lxcfs")
            results.neighbours[placement] = {
                s: {"quiet": self.paced(s, neighbour, None, count),
                    "noisy": self.paced(s, neighbour, noisy, count)} for s in servers}

    def run(self, results: Results) -> None:
        with tempfile.TemporaryDirectory(prefix="procfs-bench-") as tmp, \
                contextlib.ExitStack() as stack:
            self.reader = compile_reader(tmp)
            # procfs's records and attachments: the run's own (the server inherits it)
            stack.enter_context(_environ("PROCFS_STATE", os.path.join(tmp, "attached.json")))
            stack.callback(self.stop_containers)
            results.skipped = self.start_daemons(stack)
            results.files = self.files
            largest = max(self.o.ns)
            for n in sorted(self.o.ns):
                results.setup_seconds[n] = self.grow(n)
                if not results.notes:
                    results.notes.append(self.latency_note())
                results.latency[n] = {f: self.latency(f) for f in self.files}
                if self.o.tput_at == "all" or n == largest:
                    by_readers: dict[int, dict[str, dict[str, dict[str, float]]]] = {}
                    for k, readers in enumerate(self.o.concurrency):
                        by_file: dict[str, dict[str, dict[str, float]]] = {}
                        for j, f in enumerate(self.files):
                            order = SERVERS[(j + k) % 3:] + SERVERS[:(j + k) % 3]
                            by_file[f] = {s: self.throughput(s, f, readers) for s in order}
                        by_readers[readers] = by_file
                    results.tput[n] = by_readers
                if n == largest and self.o.noisy_seconds > 0:
                    self.neighbours(results)
                results.rss[n] = {s: self.daemons[s].resident_bytes() for s in SERVERS}
                results.rss_sum[n] = {s: self.daemons[s].rss_bytes() for s in SERVERS}
                results.pss[n] = {s: self.daemons[s].pss_bytes() for s in SERVERS}
                for s, d in self.daemons.items():
                    if d.proc is not None and d.proc.poll() is not None:
                        raise RuntimeError(f"{s} exited:\n{d.log()}")

    def stop_containers(self) -> None:
        errors: list[BaseException] = []
        for c in reversed(self.containers):
            try:
                c.stop()
            except Exception as e:  # keep removing the others
                errors.append(e)
        self.containers.clear()
        if errors:
            raise errors[0]


@contextlib.contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so that every `finally` cleans up."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
