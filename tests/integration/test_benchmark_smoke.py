"""The benchmark's smoke run: tiny N, few reads; the table comes out with every column and
nothing it created is left behind. (Speed itself is measured by `make bench`, not by tests.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.daemons import NO_LXCFS

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
