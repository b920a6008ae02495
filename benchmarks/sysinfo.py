"""What one sysinfo(2) costs when the server answers it, against the kernel's own.

    python -m benchmarks.sysinfo [--calls N] [--rounds R] [--out FILE]

Each round runs `sysinfo_probe lat N` (N calls, each timed alone) these ways, in turn:
- kernel: no filter;
- served: under a filter notifying sysinfo, its listener handed (as runc hands it) to a keeper
  and answered by `serve_sysinfo` in another process, with fixed numbers (the server's own
  `values` callback comes on top);
- continued: the same, the callback answering None (the kernel answers after the round trip:
  the cost for a process the server does not serve);
- floor, floor-continued: the same round trips answered by a small C program
  (`sysinfo_floor.c`): what the kernel's notification path costs by itself.
Prints p50/p99/mean per way, the median over rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

PROBE_SOURCE = Path(__file__).with_name("sysinfo_probe.c")
FLOOR_SOURCE = Path(__file__).with_name("sysinfo_floor.c")
WAYS = ("kernel", "served", "continued", "floor", "floor-continued")


def consume(keeper_socket: str, answer: bool) -> None:
    """The answering process: serve_sysinfo with fixed numbers (or None)."""
    import trio

    from procfs.runtime.sysinfo import SysinfoValues
    from procfs.runtime.sysinfo_service import serve_sysinfo

    values = SysinfoValues(uptime=100.0, avenrun=(2048, 1024, 512), totalram=256 << 20,
                           freeram=128 << 20, sharedram=0, bufferram=0, totalswap=0, freeswap=0,
                           procs=5)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            service = await nursery.start(functools.partial(
                serve_sysinfo, keeper_socket, lambda tid: values if answer else None))
            await service.synced.wait()
            print("synced", flush=True)

    trio.run(main)


def _sysinfo_nr() -> int:
    import platform

    return {"x86_64": 99, "aarch64": 179}[platform.machine()]


def _launch(runtime_socket: str, argv: Sequence[str]) -> None:
    from procfs.runtime.seccomp import install_notify_filter

    fd = install_notify_filter([_sysinfo_nr()])
    state = {"ociVersion": "1.0.2", "fds": ["seccompFd"], "pid": os.getpid(),
             "metadata": "benchmark", "state": {"id": "benchmark", "pid": os.getpid()}}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(runtime_socket)
        socket.send_fds(s, [json.dumps(state).encode()], [fd])
    os.close(fd)
    os.execv(argv[0], list(argv))


@contextlib.contextmanager
def _running(argv: list[str], wait_for: bytes) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith(wait_for):
            raise RuntimeError(f"{argv[:4]} said {line!r}")
        yield proc
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


def _lat(argv: list[str]) -> tuple[int, int, float]:
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=600).stdout
    p50, p99, mean, errors = out.split()
    if int(errors):
        raise RuntimeError(f"{errors} failed calls")
    return int(p50), int(p99), float(mean)


def run(calls: int, rounds: int) -> dict[str, dict[str, float]]:
    me = [sys.executable, "-m", "benchmarks.sysinfo"]
    with tempfile.TemporaryDirectory(prefix="procfs-si-bench-") as d:
        probe, floor = os.path.join(d, "sysinfo_probe"), os.path.join(d, "sysinfo_floor")
        for source, binary in ((PROBE_SOURCE, probe), (FLOOR_SOURCE, floor)):
            subprocess.run(["gcc", "-O2", "-Wall", "-o", binary, str(source)], check=True)
        runtime, keeper = os.path.join(d, "rt.sock"), os.path.join(d, "keeper.sock")
        samples: dict[str, list[tuple[int, int, float]]] = {w: [] for w in WAYS}
        keeper_argv = [sys.executable, "-m", "procfs.runtime.keeper", "--runtime-socket",
                       runtime, "--consumer-socket", keeper]
        with _running(keeper_argv, b"ready"):
            for _ in range(rounds):
                samples["kernel"].append(_lat([probe, "lat", str(calls)]))
                for way, flag in (("served", "answer"), ("continued", "continue")):
                    with _running([*me, "consume", keeper, flag], b"synced"):
                        samples[way].append(_lat([*me, "launch", runtime, "--", probe, "lat",
                                                  str(calls)]))
                for way, flag in (("floor", "answer"), ("floor-continued", "continue")):
                    samples[way].append(_lat([floor, flag, probe, "lat", str(calls)]))
    return {w: {"p50_ns": statistics.median(s[0] for s in samples[w]),
                "p99_ns": statistics.median(s[1] for s in samples[w]),
                "mean_ns": statistics.median(s[2] for s in samples[w])} for w in WAYS}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["consume"]:
        consume(args[1], args[2] == "answer")
        return 0
    if args[:1] == ["launch"]:
        _launch(args[1], args[3:])
        return 0
    p = argparse.ArgumentParser(prog="python -m benchmarks.sysinfo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", help="also write the numbers there (JSON)")
    a = p.parse_args(args)
    result = run(a.calls, a.rounds)
    print(f"sysinfo(2), {a.calls} calls x {a.rounds} rounds (medians over rounds)")
    print("| way | p50 us | p99 us | mean us |\n|---|---|---|---|")
    for way, r in result.items():
        print(f"| {way} | {r['p50_ns'] / 1000:.2f} | {r['p99_ns'] / 1000:.2f} "
              f"| {r['mean_ns'] / 1000:.2f} |")
    if a.out:
        Path(a.out).write_text(json.dumps({"calls": a.calls, "rounds": a.rounds, **result},
                                          indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
