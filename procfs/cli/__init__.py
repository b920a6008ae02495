"""The `procfs` command: one module per group of subcommands, each adding its parsers."""

from __future__ import annotations

import argparse

from procfs.cli import attach, kmsg, serve
from procfs.logs import setup_logging


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="procfs", description="per-container /proc and /sys views")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log lines")
    sub = p.add_subparsers(dest="command", required=True)
    serve.add_parsers(sub)  # serve, reload, stats
    kmsg.add_parsers(sub)
    attach.add_parsers(sub)  # attach, detach, oci-hook, docker-flags
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.verbose)
    result: int = args.func(args)
    return result
