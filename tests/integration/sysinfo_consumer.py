"""A stand-in server for the sysinfo tests: `serve_sysinfo` in a process of its own (so that a
test can kill it with SIGKILL), answering every caller outside our pid namespace with fixed
numbers (`VALUES`, or --totalram).

    python -m tests.integration.sysinfo_consumer KEEPER_SOCKET [--runtime-socket P]
        [--totalram BYTES] [--stall-first]

Prints "synced KEEPER_PID" each time a keeper handed everything over, "values TID" when it is
asked for numbers, and each change of its counters as "stats k=v ...". --stall-first: the
first call for numbers never returns (a server that hangs, or is killed, between receiving a
notification and answering it).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import time
from dataclasses import asdict, replace

import trio

from procfs.runtime.sysinfo import SysinfoValues
from procfs.runtime.sysinfo_service import SysinfoService, serve_sysinfo

MIB = 1 << 20
VALUES = SysinfoValues(uptime=42.2, avenrun=(3 * 2048, 2048 + 1024, 512), totalram=256 * MIB,
                       freeram=200 * MIB, sharedram=3 * MIB, bufferram=1 * MIB,
                       totalswap=64 * MIB, freeswap=60 * MIB, procs=7)


def _pidns(pid: int | str) -> int:
    return os.stat(f"/proc/{pid}/ns/pid").st_ino


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("keeper_socket")
    p.add_argument("--runtime-socket")
    p.add_argument("--totalram", type=int, default=VALUES.totalram)
    p.add_argument("--stall-first", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    values = replace(VALUES, totalram=args.totalram)
    ours = _pidns("self")
    stall = [args.stall_first]

    def answer(tid: int) -> SysinfoValues | None:
        try:
            if _pidns(tid) == ours:
                return None
        except OSError:
            return None
        print(f"values {tid}", flush=True)
        if stall[0]:
            stall[0] = False
            time.sleep(3600)  # stuck: the test kills us here
        return values

    async with trio.open_nursery() as nursery:
        service: SysinfoService = await nursery.start(functools.partial(
            serve_sysinfo, args.keeper_socket, answer, runtime_socket=args.runtime_socket))
        last: dict[str, int] = {}
        takeovers = 0
        while True:
            if service.stats.takeovers != takeovers:
                takeovers = service.stats.takeovers
                print(f"synced {service.keeper_pid}", flush=True)
            now = {**asdict(service.stats), "listeners": service.listeners}
            if now != last:
                print("stats " + " ".join(f"{k}={v}" for k, v in now.items()), flush=True)
                last = now
            await trio.sleep(0.05)


if __name__ == "__main__":
    trio.run(main)
