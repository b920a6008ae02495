"""The `procfs` command."""

from __future__ import annotations

import argparse
import logging
import sys

import trio

from procfs.cgroup_cpu import CpuViewMode
from procfs.rendercache import DEFAULT_TTL


def _serve(args: argparse.Namespace) -> int:
    from procfs.server import UsageError, serve
    from procfs.services import Config

    config = Config(
        mountpoint=args.mountpoint,
        proc_root=args.proc_root,
        sys_root=args.sys_root,
        cgroup_root=args.cgroup_root,
        cpu_view=CpuViewMode(args.cpu_view),
        fuse_debug=args.fuse_debug,
        cache_ttl=args.cache_ttl,
    )
    try:
        trio.run(serve, config)
    except UsageError as e:
        print(f"procfs: {e}", file=sys.stderr)
        return 2
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
    s.add_argument("--fuse-debug", action="store_true", help="libfuse's request log")
    s.set_defaults(func=_serve)

    from procfs.attach_cli import add_parsers

    add_parsers(sub)  # attach, detach, oci-hook, docker-flags
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    level = logging.WARNING - 10 * args.verbose
    logging.basicConfig(level=max(level, logging.DEBUG), stream=sys.stderr,
                        format="procfs[%(process)d] %(levelname)s %(name)s: %(message)s")
    result: int = args.func(args)
    return result
