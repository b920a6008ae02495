"""`procfs serve`, `procfs reload` and `procfs stats`: running a server and asking it."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from procfs.config import SERVE_WORKERS, Config, CpuViewMode, KmsgConfig, Staleness
from procfs.server.record import ServerRecord


def serve_config(args: argparse.Namespace) -> Config:
    """The server's configuration from `procfs serve`'s options."""
    return Config(
        mountpoint=args.mountpoint,
        proc_root=args.proc_root,
        sys_root=args.sys_root,
        cgroup_root=args.cgroup_root,
        cpu_view=CpuViewMode(args.cpu_view),
        fuse_debug=args.fuse_debug,
        cache_ttl=args.cache_ttl,
        max_background=args.max_background,
        control_dir=args.control_dir,
        kmsg=KmsgConfig(ring_bytes=args.kmsg_ring_size, host_log=args.kmsg_host_log,
                        enabled=not args.no_kmsg),
        sysinfo=not args.no_sysinfo,
        start_keeper=not args.no_keeper_start,
        workers=args.workers,
        verbose=args.verbose,
    )


def _keeper(args: argparse.Namespace) -> int:
    from procfs.runtime import keeper  # the keeper's own process: nothing of the server's

    runtime_socket, consumer_socket = Config(control_dir=args.control_dir).sysinfo_sockets()
    os.makedirs(args.control_dir, exist_ok=True)
    argv = ["--runtime-socket", runtime_socket, "--consumer-socket", consumer_socket]
    if args.fallback_after is not None:
        argv += ["--fallback-after", str(args.fallback_after)]
    return keeper.main(argv + ["-v"] * (args.verbose > 1))


def _serve(args: argparse.Namespace) -> int:
    from procfs.server.mount import UsageError
    from procfs.server.serve import run

    try:
        return run(serve_config(args))
    except UsageError as e:
        print(f"procfs: {e}", file=sys.stderr)
        return 2


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


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    default = Config()
    s = sub.add_parser("serve", help="mount the per-container tree and serve it (foreground)")
    s.add_argument("mountpoint")
    s.add_argument("--proc-root", default=default.proc_root,
                   help="the host's /proc (default %(default)s)")
    s.add_argument("--sys-root", default=default.sys_root,
                   help="the host's /sys (default %(default)s)")
    s.add_argument("--cgroup-root", default=default.cgroup_root,
                   help="read cgroup hierarchies under this directory instead of mountinfo's")
    s.add_argument("--cpu-view", choices=[m.value for m in CpuViewMode],
                   default=default.cpu_view.value,
                   help="CPU count: cpuset capped by quota (default), or the cpuset alone")
    s.add_argument("--cache-ttl", type=float, default=Staleness.render, metavar="SECONDS",
                   help="reuse a file rendered for a container for this long "
                        "(default %(default)s; 0: render every open)")
    s.add_argument("--max-background", type=int, default=default.max_background, metavar="N",
                   help="FUSE requests (releases) the kernel may have outstanding in the "
                        "background (default %(default)s; the kernel's 12 lets releases pile "
                        "up under load; 0: leave it)")
    s.add_argument("--workers", type=_workers, default=SERVE_WORKERS, metavar="K",
                   help="processes serving the containers' files, each on a mount of its own "
                        "(K > 1: K shards beside the server's own process, which keeps "
                        "dev/kmsg and the host); containers are spread over them by `procfs "
                        "attach` (default `auto`: one per CPU, at most 4; 1: the server's "
                        "own process serves everything)")
    s.add_argument("--fuse-debug", action="store_true", help="libfuse's request log")
    s.add_argument("--kmsg-ring-size", type=int, default=default.kmsg.ring_bytes,
                   metavar="BYTES", help="each container's kernel log ring (default %(default)s)")
    s.add_argument("--no-kmsg", action="store_true",
                   help="serve no dev/kmsg (the files LXCFS serves): then no request ever waits, "
                        "and each process serves with one pyfuse3 worker task, which costs less "
                        "CPU per read")
    s.add_argument("--kmsg-host-log", default=default.kmsg.host_log, metavar="PATH",
                   help="the host log whose container lines (OOM kills) are routed "
                        "(default %(default)s; '' for none)")
    s.add_argument("--control-dir", default=default.control_dir,
                   help="where the control socket goes, and the sysinfo sockets (default "
                        "%(default)s)")
    s.add_argument("--no-sysinfo", action="store_true",
                   help="answer no container's sysinfo(2): do not take the seccomp listeners "
                        "procfs-runc hands the keeper at CONTROL_DIR/sysinfo.sock")
    s.add_argument("--no-keeper-start", action="store_true",
                   help="never start the keeper of the sysinfo listeners: wait for the one "
                        "`procfs keeper` runs (systemd's procfs-keeper.service), which then "
                        "outlives this server's unit")
    s.set_defaults(func=_serve)

    k = sub.add_parser("keeper", help="hold the containers' sysinfo(2) seccomp listeners for "
                       "the server, across its restarts (foreground; procfs-keeper.service)")
    k.add_argument("--control-dir", default=default.control_dir,
                   help="where its sockets go, as the server's (default %(default)s)")
    k.add_argument("--fallback-after", type=float, default=None, metavar="SECONDS",
                   help="seconds without a server before the kernel answers waiting calls "
                        "with the host's numbers (default: never)")
    k.set_defaults(func=_keeper)

    r = sub.add_parser("reload", help="put the code now installed into service (SIGHUP), "
                       "without unmounting")
    r.add_argument("--mount", default=None, help="the server of this mountpoint (default: all)")
    r.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each")
    r.set_defaults(func=_reload)
    st = sub.add_parser("stats", help="what a running server holds: open files, requests")
    st.add_argument("mountpoint", help="the server's mountpoint")
    st.add_argument("--control-dir", default=default.control_dir)
    st.set_defaults(func=_stats)
