"""The subcommands that put the files into containers: attach, detach, oci-hook, docker-flags."""

from __future__ import annotations

import argparse
import sys

from procfs.attach.attach import Attacher
from procfs.attach.errors import AttachError, ExitCode
from procfs.attach.pids import caller_init
from procfs.attach.state import StateError, StateFile
from procfs.config import DEFAULT_MOUNT, state_path


def _pid(text: str) -> int | str:
    if text == "init":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a pid: {text!r}") from None


def _target(args: argparse.Namespace, attacher: Attacher) -> int:
    return caller_init(attacher.host) if args.pid == "init" else int(args.pid)


def _attacher(args: argparse.Namespace) -> Attacher:
    state = None if args.no_state else StateFile(args.state)
    return Attacher(args.mount, state, spread=True)


def _attach_or_detach(args: argparse.Namespace, verb: str) -> int:
    try:
        attacher = _attacher(args)
        act = attacher.attach if verb == "attach" else attacher.detach
        res = act(_target(args, attacher), rootfs=args.rootfs)
    except (AttachError, StateError) as e:
        print(f"procfs {verb}: {e}", file=sys.stderr)
        return int(getattr(e, "code", ExitCode.FAILED))
    if not args.quiet:
        print(res.summary() if verb == "attach" else res.summary("detached"))
    return ExitCode.OK


def _attach(args: argparse.Namespace) -> int:
    return _attach_or_detach(args, "attach")


def _detach(args: argparse.Namespace) -> int:
    return _attach_or_detach(args, "detach")


def _oci_hook(args: argparse.Namespace) -> int:
    from procfs.attach.oci import run_hook

    return run_hook(sys.stdin.buffer.read(), _attacher(args), strict=args.strict,
                    stream=sys.stderr)


def _docker_flags(args: argparse.Namespace) -> int:
    from procfs.attach.docker import docker_flags

    try:
        print(docker_flags(args.mount, compose=args.compose or bool(args.services),
                           host_mount=args.host_mount, stream=sys.stderr,
                           services=args.services))
    except AttachError as e:
        print(f"procfs docker-flags: {e}", file=sys.stderr)
        return int(e.code)
    return ExitCode.OK


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mount", default=DEFAULT_MOUNT,
                   help="where `procfs serve` mounted its tree (default %(default)s)")
    p.add_argument("--state", default=state_path(),
                   help="the attachments file (default %(default)s; env PROCFS_STATE)")
    p.add_argument("--no-state", action="store_true", help="do not record the attachment")


EPILOG = ("exit codes: 0 done, 1 failed (binds rolled back), 2 usage, 3 no such process, "
          "4 server not mounted, 5 permission denied, 6 failed and could not roll back")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, func, text in (
        ("attach", _attach, "bind the served files over their twins in PID's mount namespace"),
        ("detach", _detach, "remove procfs's binds from PID's mount namespace"),
    ):
        p = sub.add_parser(name, help=text, description=text, epilog=EPILOG)
        p.add_argument("pid", type=_pid, help="a pid, or `init`: the init of the caller's pid "
                       "namespace (for hooks run inside the container, e.g. LXC's mount hook)")
        p.add_argument("--rootfs", default=None,
                       help="the container's root as PID sees it before pivot_root (hooks)")
        p.add_argument("-q", "--quiet", action="store_true", help="no summary line")
        _common(p)
        p.set_defaults(func=func)

    text = "OCI hook (createRuntime, createContainer or prestart): reads the state JSON on stdin"
    p = sub.add_parser("oci-hook", help=text, description=text,
                       epilog="exit 0 unless the container would start with wrong files "
                       "(a bind failed and could not be undone: 6), or --strict and not attached")
    p.add_argument("--strict", action="store_true",
                   help="fail the container when it cannot be attached (server down, ...)")
    _common(p)
    p.set_defaults(func=_oci_hook)

    text = "print the docker run -v flags (or a compose file) for the served files"
    p = sub.add_parser("docker-flags", help=text, description=text,
                       epilog="with shards (serve --workers), the -v flags name one of them, "
                       "picked at random per call; a compose file names the main mount")
    p.add_argument("--mount", default=DEFAULT_MOUNT,
                   help="the server's mount (default %(default)s)")
    p.add_argument("--host-mount", default=None,
                   help="the mount's path on the Docker host, if it differs (e.g. a remote host)")
    p.add_argument("--compose", action="store_true",
                   help="a compose file instead, to merge over yours (docker compose -f "
                   "compose.yaml -f THIS up): the binds as `x-procfs-volumes`, given to SERVICE")
    p.add_argument("services", nargs="*", metavar="SERVICE",
                   help="with --compose: the services that get the binds")
    p.set_defaults(func=_docker_flags)
