"""The keeper: holds every seccomp listener fd so that no server restart closes one.

When every copy of a listener fd is closed, the kernel fails the filtered call (sysinfo) with
ENOSYS in that container for good. The server that answers may be restarted, reloaded or killed;
this process, which does nothing else, keeps a copy of each listener meanwhile:

- it owns the runtime socket (`linux.seccomp.listenerPath`, default /run/procfs/sysinfo.sock)
  and keeps every listener fd that runc or crun sends there, with the state JSON beside it;
- it owns the consumer socket (default /run/procfs/sysinfo-keeper.sock, SOCK_SEQPACKET): the one
  server connected there (the *consumer*) gets a copy of every listener, then each new one
  (`keeper_protocol`). While no consumer is connected the callers wait in the kernel and are
  answered by the next consumer (systemd restarts a server that died). Only with
  `--fallback-after SECONDS` does the keeper answer them itself when none has come for that
  long, with CONTINUE: the kernel's numbers, the host's, which is why it is off by default;
  a host that would rather have `free` show the host's memory than wait for a server gone for
  good sets it. It stops before it hands the listeners to a consumer;
- it drops a listener when the kernel says no task uses its filter any more (POLLHUP);
- a newer consumer replaces the older one, which is told to close its copies first (one
  receiver at a time: a second one could take a notification the first one has polled and leave
  it blocked in the kernel);
- a consumer whose keeper died hands its copies to the next keeper (`Adopt`), as does a server
  on its way out (a *donor* connection, which claims nothing).

Lifetime: started by the server when no keeper answers (`start_keeper`), in a session of its
own, so the server's death does not take it along (under systemd give it a unit of its own, or
the server unit's KillMode would end it with the server). It then lives until SIGTERM or SIGINT,
after which it *drains*: it removes the runtime socket (new containers start without the
notification rule, see the runtime wrapper) and exits once the last listener it holds is
dropped. SIGKILL ends it at once; the consumer's copies then keep the containers working, and
the consumer starts a new keeper and hands its copies over. One keeper per consumer socket (an
flock on `<consumer socket>.lock`); a second one exits at once with status 0.

It is stdlib only and single-threaded (one poll loop), and never exits on what a peer sends:
a malformed message closes that connection, a fd that is not a seccomp listener is closed.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import resource
import select
import signal
import subprocess
import sys
from collections.abc import Sequence

from procfs.runtime.keeper_loop import (
    FALLBACK_AFTER,
    RETIRE_TIMEOUT,
    RUNTIME_TIMEOUT,
    Keeper,
)

log = logging.getLogger("procfs.keeper")

DEFAULT_RUNTIME_SOCKET = "/run/procfs/sysinfo.sock"
DEFAULT_CONSUMER_SOCKET = "/run/procfs/sysinfo-keeper.sock"


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _protect() -> None:
    """Keep the OOM killer away (best effort; root only)."""
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
        f.write("-1000")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m procfs.runtime.keeper", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runtime-socket", default=DEFAULT_RUNTIME_SOCKET,
                   help="linux.seccomp.listenerPath (default %(default)s)")
    p.add_argument("--consumer-socket", default=DEFAULT_CONSUMER_SOCKET,
                   help="where the server connects (default %(default)s)")
    p.add_argument("--runtime-timeout", type=float, default=RUNTIME_TIMEOUT,
                   help="seconds a runtime has to send its message (default %(default)s)")
    p.add_argument("--retire-timeout", type=float, default=RETIRE_TIMEOUT,
                   help="seconds a replaced consumer has to close (default %(default)s)")
    p.add_argument("--fallback-after", type=float, default=FALLBACK_AFTER,
                   help="seconds without a server before the kernel answers waiting calls "
                        "with the host's numbers (default: never)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s procfs-keeper[%(process)d] %(levelname)s %(message)s")
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: None)  # woken through the wakeup fd
    signal.signal(signal.SIGINT, lambda *_: None)
    keeper = Keeper(args.runtime_socket, args.consumer_socket,
                    runtime_timeout=args.runtime_timeout, retire_timeout=args.retire_timeout,
                    fallback_after=args.fallback_after)
    if not keeper.lock():
        print("running", flush=True)  # another keeper serves these sockets
        return 0
    raise_fd_limit()
    _protect()
    keeper.bind()
    log.info("keeping listeners: runtime socket %s, consumer socket %s", args.runtime_socket,
             args.consumer_socket)
    print("ready", flush=True)
    with contextlib.suppress(OSError):  # nobody reads on after "ready"
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    keeper.run()
    return 0


def start_keeper(runtime_socket: str, consumer_socket: str, *, log_path: str | None = None,
                 python: str = sys.executable, timeout: float = 10.0,
                 options: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """Start a keeper in a session of its own and wait until it listens (or another keeper
    already does). Blocking (about 0.1 s); `sysinfo_service` has the trio version."""
    proc = spawn_keeper(runtime_socket, consumer_socket, log_path=log_path, python=python,
                        options=options)
    assert proc.stdout is not None
    ready = select.select([proc.stdout], [], [], timeout)[0]
    line = proc.stdout.readline() if ready else b""
    proc.stdout.close()
    if line.strip() not in (b"ready", b"running"):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"keeper did not start (said {line!r})")
    return proc


def spawn_keeper(runtime_socket: str, consumer_socket: str, *, log_path: str | None = None,
                 python: str = sys.executable, options: Sequence[str] = ()
                 ) -> subprocess.Popen[bytes]:
    """The keeper process, started; it prints "ready" (or "running": another keeper has
    these sockets) on its stdout, a pipe."""
    log_fd = os.open(log_path or os.devnull, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                     0o640)
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [here, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])}
    try:
        return subprocess.Popen(  # this very code, whatever the caller's directory
            [python, "-m", "procfs.runtime.keeper", "--runtime-socket", runtime_socket,
             "--consumer-socket", consumer_socket, *options],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log_fd,
            start_new_session=True, cwd="/", env=env,
        )
    finally:
        os.close(log_fd)


if __name__ == "__main__":
    sys.exit(main())
