"""`procfs kmsg`: the containers' kernel logs, asked of a running server."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from procfs.config import Config
from procfs.server.record import ServerRecord


def _kmsg(args: argparse.Namespace) -> int:
    # Every ring lives in the server itself: its shards serve no dev/kmsg (procfs.server.serve).
    from procfs.server.control import ControlError, request, socket_path

    sock = socket_path(args.mountpoint, args.control_dir)
    try:
        if args.action == "list":
            print(f"{'RING':<28} {'INIT':>8} {'STATE':<5} {'RECORDS':>7} {'BYTES':>8} MEMCG")
            for r in request(sock, "kmsg.list")["rings"]:
                print(f"{r['id']:<28} {r['init']:>8} {'alive' if r['alive'] else 'gone':<5} "
                      f"{r['records']:>7} {r['bytes']:>8} {r['memory_cgroup'] or '-'}")
        elif args.action == "show":
            result: Any = request(sock, "kmsg.show", target=args.target)
            for rec in result["records"]:
                if args.raw:
                    print(f"{rec['pri']},{rec['seq']},{rec['ts_usec']},-;{rec['text']}")
                else:
                    sec, usec = divmod(rec["ts_usec"], 1_000_000)
                    print(f"[{sec:5d}.{usec:06d}] {rec['text']}")
        else:
            result = request(sock, "kmsg.append", target=args.target, text=" ".join(args.text),
                             level=args.level)
            print(f"{result['ring']} seq {result['seq']}")
    except ControlError as e:
        if "unknown command 'kmsg." in str(e):
            record = ServerRecord.of(args.mountpoint)
            e = ControlError(f"{args.mountpoint} is a shard: its server at {record.shard_of} "
                             "holds the rings" if record is not None and record.shard_of else
                             f"the server at {args.mountpoint} serves no dev/kmsg (--no-kmsg)")
        print(f"procfs kmsg: {e}", file=sys.stderr)
        return 1
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    k = sub.add_parser("kmsg", help="the containers' kernel logs of a running server")
    k.add_argument("mountpoint", help="the server's mountpoint")
    k.add_argument("--control-dir", default=Config().control_dir)
    ksub = k.add_subparsers(dest="action", required=True)
    ksub.add_parser("list", help="the rings")
    show = ksub.add_parser("show", help="print one ring, as dmesg would")
    show.add_argument("target", help="a ring id (from list) or the pid of a process in it")
    show.add_argument("--raw", action="store_true", help="the /dev/kmsg record format")
    add = ksub.add_parser("append", help="append a line to a ring")
    add.add_argument("target", help="a ring id (from list) or the pid of a process in it")
    add.add_argument("text", nargs="+")
    add.add_argument("--level", type=int, default=6, help="syslog level (default 6, info)")
    k.set_defaults(func=_kmsg)
