"""What blocked `dev/kmsg` readers cost the server and the other containers (issue 24).

`python -m benchmarks.kmsg_readers [--readers 1000] [--spread 1,10] [--seconds 5] [--no-dump]`
(root, gcc).

For each spread S, `--readers` blocked readers in S containers (threads of one small C process
per container, `kmsg_readers.c`, each with an open file of its own, as many `cat /dev/kmsg`
would be), beside a neighbour container; measured against the same server before they came:
- the server's RSS and mappings per waiting reader, and what each blocked thread costs its own
  container (its memory cgroup's memory.current);
- the server's CPU while the readers wait (signal patrol);
- the neighbour's /proc/meminfo reads (every 10 ms: p50, p99, worst) while they wait, and
  while every crowd container writes at its rate limit (100 records a second), which wakes all
  of its readers for each record; how many records reached every reader meanwhile;
- how long after SIGKILL the reader processes are gone (each blocked thread answered EINTR).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from procfs.server.control import request, socket_path
from tests.support.sandbox import Sandbox, Server, container

SOURCE = Path(__file__).with_name("kmsg_readers.c")
BINARY = os.path.join(tempfile.gettempdir(), f"procfs-kmsg-readers-{os.getpid()}")


WRITER = r"""
import os, sys, time
fd, n = os.open("/dev/kmsg", os.O_WRONLY), int(sys.argv[1])
for i in range(n):
    os.write(fd, b"record %d" % i)
    time.sleep(0.01)
"""

PROBE = r"""
import sys, time
end, samples = time.monotonic() + float(sys.argv[1]), []
while time.monotonic() < end:
    t = time.monotonic()
    with open("/proc/meminfo", "rb") as f:
        f.read()
    samples.append(time.monotonic() - t)
    time.sleep(0.01)
samples.sort()
q = lambda p: samples[min(len(samples) - 1, int(p * len(samples)))] * 1000
print(f"{q(0.5):.2f} {q(0.99):.2f} {samples[-1] * 1000:.2f} {len(samples)}")
"""


def server_usage(srv: Server) -> dict[str, float]:
    assert srv.proc is not None
    pid = srv.proc.pid
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    with open(f"/proc/{pid}/maps") as f:
        maps = sum(1 for _ in f)
    return {"cpu_s": (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"),
            "rss_kib": rss, "maps": maps}


def cpu_share(srv: Server, seconds: float) -> float:
    before, t0 = server_usage(srv)["cpu_s"], time.monotonic()
    time.sleep(seconds)
    return (server_usage(srv)["cpu_s"] - before) / (time.monotonic() - t0)


def probe(sb: Sandbox, seconds: float) -> subprocess.Popen[str]:
    return sb.popen([sys.executable, "-c", PROBE, str(seconds)], stdout=subprocess.PIPE)


def probed(p: subprocess.Popen[str]) -> dict[str, float]:
    out, _ = p.communicate(timeout=120)
    p50, p99, worst, n = out.split()
    return {"p50_ms": float(p50), "p99_ms": float(p99), "worst_ms": float(worst),
            "reads": int(n)}


def memory_current(sb: Sandbox) -> int:
    assert sb.cgroup is not None
    with open(sb.cgroup.file("memory", "memory.current" if sb.cgroup.v2
                             else "memory.usage_in_bytes")) as f:
        return int(f.read())


def waiting(srv: Server) -> int:
    rings = request(socket_path(srv.mountpoint), "kmsg.list")["rings"]
    return sum(r["readers_waiting"] + r["readers_in_line"] for r in rings)


def wait_until(what: Any, timeout: float, why: str) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise TimeoutError(why)
        time.sleep(0.05)


def start_readers(sb: Sandbox, n: int) -> subprocess.Popen[str]:
    p = sb.popen([BINARY, str(n)], stdout=subprocess.PIPE)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


restart = start_readers


def sigkill_all(procs: list[subprocess.Popen[str]]) -> float:
    """SIGKILL each readers' process; seconds until all are gone (a process ends once each of
    its blocked threads has been answered)."""
    start = time.monotonic()
    for p in procs:
        os.kill(Sandbox._child_of(p.pid, 1), signal.SIGKILL)
    for p in procs:
        p.wait(timeout=120)
    return time.monotonic() - start


@contextlib.contextmanager
def crowd(srv: Server, boxes: list[Sandbox], per_box: int) -> Iterator[list[subprocess.Popen[str]]]:
    procs = []
    try:
        for sb in boxes:
            procs.append(start_readers(sb, per_box))
        wait_until(lambda: waiting(srv) == per_box * len(boxes), 60, "readers not waiting")
        yield procs
    finally:
        for p in procs:
            with contextlib.suppress(RuntimeError, ProcessLookupError):
                os.kill(Sandbox._child_of(p.pid, 0.5), signal.SIGKILL)
            p.kill()
            p.wait(timeout=60)


def scenario(readers: int, spread: int, seconds: float) -> dict[str, Any]:
    per_box = readers // spread
    result: dict[str, Any] = {"readers": per_box * spread, "containers": spread}
    with Server() as srv, contextlib.ExitStack() as stack:
        neighbour = stack.enter_context(container(srv.mountpoint, prefix="procfs-bench"))
        boxes = [stack.enter_context(container(srv.mountpoint, prefix="procfs-bench"))
                 for _ in range(spread)]
        for sb in [neighbour, *boxes]:
            sb.sh("echo hello > /dev/kmsg")  # every ring made before the baseline
        time.sleep(1)
        base = server_usage(srv)
        result["idle_cpu_without"] = cpu_share(srv, seconds)
        result["neighbour_without"] = probed(probe(neighbour, seconds))
        mem0 = [memory_current(sb) for sb in boxes]
        with crowd(srv, boxes, per_box) as procs:
            time.sleep(1)
            now = server_usage(srv)
            n = result["readers"]
            result["server_kib_per_reader"] = (now["rss_kib"] - base["rss_kib"]) / n
            result["server_maps_per_reader"] = (now["maps"] - base["maps"]) / n
            result["container_kib_per_reader"] = sum(
                memory_current(sb) - m for sb, m in zip(boxes, mem0, strict=True)) / n / 1024
            result["idle_cpu_with"] = cpu_share(srv, seconds)
            result["neighbour_waiting"] = probed(probe(neighbour, seconds))
            result["all_gone_after_sigkill_s"] = sigkill_all(procs)
            procs[:] = [restart(sb, per_box) for sb in boxes]
            wait_until(lambda: waiting(srv) == per_box * len(boxes), 60, "readers not waiting")
            # Every crowd container writes at its rate; each record wakes all its readers.
            records = int(seconds * 100)
            p = probe(neighbour, seconds)
            sent = time.monotonic()
            writers = [sb.popen([sys.executable, "-c", WRITER, str(records)]) for sb in boxes]
            rounds = rounds_by(procs, sent + seconds)
            for w in writers:
                w.wait(timeout=120)
            result["neighbour_flowing"] = probed(p)
            result["records_written_per_container"] = records
            result["records_to_every_reader_while_writing"] = min(rounds)
            result["deliveries_per_s"] = sum(rounds) * per_box / seconds
    return result


def rounds_by(procs: list[subprocess.Popen[str]], deadline: float) -> list[int]:
    """For each readers' process, how many records each of its readers had by `deadline`."""
    rounds = [0] * len(procs)
    fds = {p.stdout.fileno(): i for i, p in enumerate(procs) if p.stdout is not None}
    pending = dict.fromkeys(fds, b"")
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select(list(fds), [], [], left)
        for fd in ready:
            pending[fd] += os.read(fd, 65536)
            *lines, pending[fd] = pending[fd].split(b"\n")
            for line in lines:
                rounds[fds[fd]] = int(line.split()[0])
    return rounds


def dump_seconds() -> float:
    """How long util-linux `dmesg` takes to print a full ring (once the ring is full and the
    container's budget has recovered from filling it)."""
    with Server() as srv, container(srv.mountpoint, prefix="procfs-bench") as sb:
        sb.run([sys.executable, "-c", FILL])
        time.sleep(3)
        start = time.monotonic()
        out = sb.run(["dmesg"]).stdout
        elapsed = time.monotonic() - start
        assert out.count("\n") > 1000, out[-300:]
        return elapsed


FILL = r"""
import os, time
fd = os.open("/dev/kmsg", os.O_WRONLY)
for i in range(3000):  # at the write rate: 100 a second after a burst of 200
    os.write(fd, b"a line of the kind a container's kernel log holds, number %d" % i)
    if i >= 200:
        time.sleep(0.0095)
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readers", type=int, default=1000)
    ap.add_argument("--spread", default="1,10", help="numbers of containers, comma-separated")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--no-dump", action="store_true", help="skip the timing of `dmesg` of a "
                    "full ring (filling it takes 30 s)")
    args = ap.parse_args(argv)
    subprocess.run(["gcc", "-O2", "-Wall", "-pthread", "-o", BINARY, str(SOURCE)], check=True)
    try:
        run(args)
    finally:
        os.unlink(BINARY)
    return 0


def run(args: argparse.Namespace) -> None:
    if not args.no_dump:
        print(f"dmesg of a full ring: {dump_seconds():.3f} s")
    for spread in (int(s) for s in args.spread.split(",")):
        r = scenario(args.readers, spread, args.seconds)
        print(f"\n{r['readers']} readers in {spread} container(s)")
        for k, v in r.items():
            print(f"  {k}: {v:.3f}" if isinstance(v, float) else f"  {k}: {v}")


if __name__ == "__main__":
    sys.exit(main())
