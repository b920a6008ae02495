"""The `procfs` command."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

from procfs.fuse.rendercache import DEFAULT_TTL
from procfs.server.control import DEFAULT_DIR as DEFAULT_CONTROL_DIR
from procfs.server.fusectl import DEFAULT_MAX_BACKGROUND
from procfs.server.record import ServerRecord
from procfs.sources.cpuset import CpuViewMode

if TYPE_CHECKING:
    from procfs.server.services import Config


def serve_config(args: argparse.Namespace) -> Config:
    """The server's configuration from `procfs serve`'s options (server.shard_argv: back)."""
    from procfs.kmsg.service import KmsgConfig
    from procfs.server.services import Config

    kmsg = KmsgConfig(ring_bytes=args.kmsg_ring_size, host_log=args.kmsg_host_log,
                      enabled=not args.no_kmsg)
    config = Config(
        mountpoint=args.mountpoint,
        proc_root=args.proc_root,
        sys_root=args.sys_root,
        cgroup_root=args.cgroup_root,
        cpu_view=CpuViewMode(args.cpu_view),
        fuse_debug=args.fuse_debug,
        cache_ttl=args.cache_ttl,
        max_background=args.max_background,
        control_dir=args.control_dir,
        kmsg=kmsg,
        workers=args.workers,
        shard_of=args.shard_of,
        lifeline=args.lifeline,
        verbose=args.verbose,
    )
    return config


def _serve(args: argparse.Namespace) -> int:
    from procfs.server.serve import UsageError, run

    try:
        run(serve_config(args))
    except UsageError as e:
        print(f"procfs: {e}", file=sys.stderr)
        return 2
    return 0


def _workers(text: str) -> int:
    from procfs.server.shards import parse_workers

    try:
        return parse_workers(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _reload(args: argparse.Namespace) -> int:
    if args.mount:
        record = ServerRecord.of(args.mount)
        records = [record] if record is not None else []
    else:
        records = ServerRecord.all()
    # A shard reloads with its server, which passes the SIGHUP on.
    live = [r for r in records if r.alive() and not r.shard_of]
    if not live:
        where = args.mount or "any mountpoint"
        print(f"procfs: no running server for {where}", file=sys.stderr)
        return 1
    failed = 0
    for record in live:
        for mountpoint, outcome in _signal_reload(record, args.timeout):
            print(f"{mountpoint}: {outcome}")
            failed += not outcome.startswith("reloaded")
    return 1 if failed else 0


def _signal_reload(record: ServerRecord, timeout: float) -> list[tuple[str, str]]:
    """SIGHUP the server; the outcome of its reload and of each of its shards'."""
    servers = [record, *(r for r in map(ServerRecord.of, record.shards)
                         if r is not None and r.alive())]
    os.kill(record.pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    return [(r.mountpoint, _outcome(r, deadline)) for r in servers]


def _outcome(record: ServerRecord, deadline: float) -> str:
    while time.monotonic() < deadline:
        now = ServerRecord.of(record.mountpoint)
        if now is None or now.pid != record.pid:
            return "the server went away"
        if now.generation > record.generation:
            r = now.reload
            if r.get("ok"):
                return (f"reloaded {r.get('modules')} modules, {r.get('files')} files "
                        f"in {1000 * float(r.get('seconds', 0)):.0f} ms")
            return f"reload failed, the old code still serves: {r.get('error')}"
        time.sleep(0.02)
    return "no answer in time"


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


def _stats(args: argparse.Namespace) -> int:
    import json

    from procfs.server.control import ControlError, request, socket_path
    from procfs.server.shards import served_by

    servers = served_by(args.mountpoint)
    try:
        result = request(socket_path(args.mountpoint, args.control_dir), "stats")
        if len(servers) > 1:
            result["shards"] = {m: request(socket_path(m, args.control_dir), "stats")
                                for m in servers[1:]}
    except ControlError as e:
        print(f"procfs stats: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=1))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="procfs", description=__doc__)
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log lines")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="mount the per-container tree and serve it (foreground)")
    s.add_argument("mountpoint")
    s.add_argument("--proc-root", default="/proc", help="the host's /proc (default %(default)s)")
    s.add_argument("--sys-root", default="/sys", help="the host's /sys (default %(default)s)")
    s.add_argument("--cgroup-root", default=None,
                   help="read cgroup hierarchies under this directory instead of mountinfo's")
    s.add_argument("--cpu-view", choices=[m.value for m in CpuViewMode], default="quota",
                   help="CPU count: cpuset capped by quota (default), or the cpuset alone")
    s.add_argument("--cache-ttl", type=float, default=DEFAULT_TTL, metavar="SECONDS",
                   help="reuse a file rendered for a container for this long "
                        "(default %(default)s; 0: render every open)")
    s.add_argument("--max-background", type=int, default=DEFAULT_MAX_BACKGROUND, metavar="N",
                   help="FUSE requests (releases) the kernel may have outstanding in the "
                        "background (default %(default)s; the kernel's 12 lets releases pile "
                        "up under load; 0: leave it)")
    s.add_argument("--workers", type=_workers, default="auto", metavar="K",
                   help="processes serving the containers' files, each on a mount of its own "
                        "(K > 1: K shards beside the server's own process, which keeps "
                        "dev/kmsg and the host); containers are spread over them by `procfs "
                        "attach` (default `auto`: one per CPU, at most 4; 1: the server's "
                        "own process serves everything)")
    # Set by a server for its shards (procfs.server.supervise).
    s.add_argument("--shard-of", default="", help=argparse.SUPPRESS)
    s.add_argument("--lifeline", type=int, default=-1, help=argparse.SUPPRESS)
    s.add_argument("--fuse-debug", action="store_true", help="libfuse's request log")
    s.add_argument("--kmsg-ring-size", type=int, default=256 << 10, metavar="BYTES",
                   help="each container's kernel log ring (default %(default)s)")
    s.add_argument("--no-kmsg", action="store_true",
                   help="serve no dev/kmsg (the files LXCFS serves): then no request ever waits, "
                        "and each process serves with one pyfuse3 worker task, which costs less "
                        "CPU per read")
    s.add_argument("--kmsg-host-log", default="/dev/kmsg", metavar="PATH",
                   help="the host log whose container lines (OOM kills) are routed "
                        "(default %(default)s; '' for none)")
    s.add_argument("--control-dir", default=DEFAULT_CONTROL_DIR,
                   help="where the control socket goes (default %(default)s)")
    s.set_defaults(func=_serve)

    r = sub.add_parser("reload", help="put the code now installed into service (SIGHUP), "
                       "without unmounting")
    r.add_argument("--mount", default=None, help="the server of this mountpoint (default: all)")
    r.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each")
    r.set_defaults(func=_reload)
    st = sub.add_parser("stats", help="what a running server holds: open files, requests")
    st.add_argument("mountpoint", help="the server's mountpoint")
    st.add_argument("--control-dir", default=DEFAULT_CONTROL_DIR)
    st.set_defaults(func=_stats)
    k = sub.add_parser("kmsg", help="the containers' kernel logs of a running server")
    k.add_argument("mountpoint", help="the server's mountpoint")
    k.add_argument("--control-dir", default=DEFAULT_CONTROL_DIR)
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

    from procfs.cli.attach import add_parsers

    add_parsers(sub)  # attach, detach, oci-hook, docker-flags
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    level = logging.WARNING - 10 * args.verbose
    logging.basicConfig(level=max(level, logging.DEBUG), stream=sys.stderr,
                        format="procfs[%(process)d] %(levelname)s %(name)s: %(message)s")
    result: int = args.func(args)
    return result
