"""`python -m benchmarks [--quick] [--n 1,100,1000] [--reads 2000] [--seconds 10] [--out DIR]`."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from benchmarks.report import machine, write
from benchmarks.run import Bench, Options, Results, sigterm_as_interrupt
from procfs.server.shards import parse_workers


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: N = 1,2, 200 reads, 0.2 s of throughput")
    p.add_argument("--n", type=_ints, default=None, help="container counts (default 1,100,1000)")
    p.add_argument("--reads", type=int, default=None, help="latency reads per file (2000)")
    p.add_argument("--seconds", type=float, default=None,
                   help="duration of each throughput measurement (10)")
    p.add_argument("--readers", type=_ints, default=None, help="concurrent readers (8,32)")
    p.add_argument("--tput-at", choices=["max", "all"], default="max",
                   help="measure throughput at the largest N only (default) or at every N")
    p.add_argument("--procfs-workers", type=parse_workers, default="auto", metavar="K",
                   help="`procfs serve --workers` (default auto: one per CPU, at most 4)")
    p.add_argument("--procfs-args", default="",
                   help="extra options for `procfs serve`, e.g. '--cache-ttl 0'")
    p.add_argument("--floor-workers", type=int, default=1, metavar="K",
                   help="processes serving the floor's connection (1): what more would buy")
    p.add_argument("--noisy-seconds", type=float, default=None,
                   help="each run of the noisy-neighbour scenario (5; --quick 0.5; 0: none)")
    p.add_argument("--out", type=Path, default=None,
                   help="results directory (benchmarks/results; --quick: benchmarks/results/quick)")
    a = p.parse_args(argv)
    o = Options(tput_at=a.tput_at, procfs_args=shlex.split(a.procfs_args),
                procfs_workers=str(a.procfs_workers),
                floor_workers=max(a.floor_workers, 1))
    if a.quick:
        o.ns, o.reads, o.tput_seconds, o.quick = [1, 2], 200, 0.2, True
        o.noisy_seconds = 0.5
        o.out = o.out / "quick"
    o.ns = a.n or o.ns
    o.reads = a.reads or o.reads
    o.tput_seconds = a.seconds or o.tput_seconds
    o.concurrency = tuple(a.readers or o.concurrency)
    o.out = a.out or o.out
    if a.noisy_seconds is not None:
        o.noisy_seconds = a.noisy_seconds
    return o


def main(argv: list[str] | None = None) -> int:
    o = parse(argv)
    if os.geteuid() != 0:
        print("benchmarks: needs root (cgroups, namespaces, FUSE mounts)", file=sys.stderr)
        return 2
    options = {"ns": o.ns, "reads": o.reads, "tput_seconds": o.tput_seconds,
               "readers": list(o.concurrency), "tput_at": o.tput_at,
               "procfs_workers": int(o.procfs_workers), "procfs_args": o.procfs_args,
               "floor_workers": o.floor_workers, "noisy_seconds": o.noisy_seconds}
    results = Results(files=[], skipped=[], options=options, machine=machine())
    try:
        with sigterm_as_interrupt():
            Bench(o).run(results)
    except RuntimeError as e:  # a daemon that cannot be had or started: one line, not a trace
        print(f"benchmarks: {e}", file=sys.stderr)
        return 2
    table = write(results, o.out)
    print(table.read_text())
    print(f"written: {table}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
