"""The benchmark's smoke run: tiny N, few reads; the table comes out with every column and
nothing it created is left behind. (Speed itself is measured by `make bench`, not by tests.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.daemons import NO_LXCFS, Floor, cpu_seconds

pytestmark = pytest.mark.slow


def _bench_leftovers() -> list[str]:
    found = [d for d in os.listdir("/sys/fs/cgroup/memory") if d.startswith("procfs-bench-")] \
        if os.path.isdir("/sys/fs/cgroup/memory") else []
    with open("/proc/self/mountinfo") as f:
        found += [line.split()[4] for line in f if "/bench-" in line.split()[4]]
    return found


def test_quick_benchmark_writes_the_table(tmp_path: Path) -> None:
    before = set(_bench_leftovers())
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--n", "1,2", "--reads", "50",
         "--seconds", "0.1", "--readers", "2,4", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2],
    )
    if out.returncode != 0 and NO_LXCFS in out.stderr:  # an offline machine without it
        pytest.skip(NO_LXCFS)
    assert out.returncode == 0, out.stderr[-3000:]
    table = (tmp_path / "results.md").read_text()
    for header in ("| file | procfs p50 | procfs p99 | LXCFS p50 | LXCFS p99 | floor p50 "
                   "| floor p99 | procfs/LXCFS p50 | procfs/floor p50 |",
                   "| file | readers | procfs | LXCFS | floor | procfs/LXCFS | procfs CPU "
                   "| LXCFS CPU | floor CPU |",
                   "| file | procfs | LXCFS | floor |",
                   "| N | procfs | LXCFS | floor | setup s |",
                   "| target | met | measured |"):
        assert header in table
    assert "meminfo" in table
    assert "Failed reads in the whole run: 0." in table
    assert (tmp_path / "results.png").stat().st_size > 0
    assert (tmp_path / "results.json").exists()
    assert set(_bench_leftovers()) <= before


def test_floor_with_two_processes_on_one_connection() -> None:
    """The throughput lever the README measures: fork after FUSE_INIT, every process serving
    the same connection; each request is answered once, by one of them, correctly."""
    paths = ["proc/meminfo", "proc/loadavg"]
    floor = Floor(paths, workers=2).start()
    try:
        served = floor.pids()
        assert floor.proc is not None and len(served) == 2 and served[0] == floor.proc.pid
        workers = served[1:]
        before = [cpu_seconds(pid) for pid in served]
        want = {}  # the host's files as the floor snapshotted them at its start
        for p in paths:
            with open(os.path.join(floor.mountpoint, p), "rb") as f:
                want[p] = f.read()
        assert want["proc/meminfo"].startswith(b"MemTotal:")
        assert len(want["proc/loadavg"].split()) == 5
        script = "for i in $(seq 300); do cat {m}/proc/meminfo; cat {m}/proc/loadavg; done"
        readers = [subprocess.Popen(["sh", "-c", script.format(m=floor.mountpoint)],
                                    stdout=subprocess.PIPE) for _ in range(6)]
        outs = [r.communicate(timeout=120)[0] for r in readers]
        assert all(r.returncode == 0 for r in readers)
        assert all(out == (want["proc/meminfo"] + want["proc/loadavg"]) * 300 for out in outs)
        used = [cpu_seconds(pid) - b for pid, b in zip(served, before, strict=True)]
        assert all(u > 0 for u in used), used  # both processes answered requests
    finally:
        floor.stop()
    assert not os.path.ismount(floor.mountpoint)
    for pid in workers:
        assert not os.path.exists(f"/proc/{pid}") or _is_zombie_or_gone(pid)


def _is_zombie_or_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True
