"""`procfs-runc`: runc's command line, passed unchanged to the real runtime, which replaces
this process (execv: its signals, exit status, inherited descriptors, console socket and pid
file are the runtime's own).

Before that:
- `create`, `run`: config.json gets the procfs hook and, when the sysinfo listener accepts a
  connection now, the `sysinfo` notify rule (procfs.runtime.oci_config); then the runtime is
  executed in a new time namespace whose clocks start at 0 (procfs.runtime.timens);
- commands on an existing container (`exec`, `start`, `state`, `kill`, `delete`, ...): join its
  init's time namespace, so that the runtime recognises its init and an exec'd process shares
  the container's clock.
Whatever fails on the way is reported on stderr and skipped: procfs never stops a container.
Settings: procfs.runtime.settings.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from procfs.runtime.cmdline import CREATING, ON_CONTAINER, Invocation, parse
from procfs.runtime.settings import Settings, load, resolve_runtime, same_file

# The modules for one command are imported by that command only: this runs on every call.

PROG = "procfs-runc"
PROBE_TIMEOUT = 0.5  # seconds a connect to the sysinfo socket may take


def warn(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


def procfs_command(self_path: str) -> tuple[str, list[str]]:
    """(executable, argv) of `procfs`: the one installed beside this wrapper (or beside the file
    a symlink to it points at), else this interpreter's `-m procfs`."""
    for d in dict.fromkeys((os.path.dirname(self_path),
                            os.path.dirname(os.path.realpath(self_path)))):
        candidate = os.path.join(d, "procfs")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate, ["procfs"]
    return sys.executable, [sys.executable, "-m", "procfs"]


def listener_answers(path: str) -> bool:
    """Whether a unix stream socket at `path` accepts a connection now (runc connects the same
    way after creating the filter, and fails the container if it cannot)."""
    if not os.path.exists(path):
        return False
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(PROBE_TIMEOUT)
        try:
            s.connect(path)
        except OSError:
            return False
    return True


def prepare_create(inv: Invocation, settings: Settings, self_path: str) -> None:
    from procfs.runtime import oci_config, timens

    path = inv.config_path()
    try:
        config = oci_config.load(path)
    except (OSError, ValueError) as e:
        warn(f"{path}: {e}; the container runs without procfs")
        return
    want = oci_config.wanted(config)
    changed = False
    if want.hook:
        exe, argv = procfs_command(self_path)
        entry = oci_config.hook_entry(exe, argv, settings.mount, settings.state)
        changed |= oci_config.add_hook(config, entry)
    if want.sysinfo and listener_answers(settings.sysinfo_socket):
        changed |= oci_config.add_sysinfo_notify(config, settings.sysinfo_socket,
                                                 os.uname().machine)
    if changed:
        try:
            oci_config.save(path, config)
        except OSError as e:
            warn(f"cannot rewrite {path}: {e}; the container runs without procfs")
            return
    plan = oci_config.time_plan(config) if want.timens else None
    try:
        if plan is not None and plan.action == "new":
            timens.new_for_children()
        elif plan is not None and plan.path is not None:
            timens.join(plan.path)
    except OSError as e:
        warn(f"no time namespace of its own for the container: {e}")


def join_container(inv: Invocation, runtime: str) -> None:
    from procfs.runtime import container_init, timens

    cid = inv.container_id
    if cid is None:
        return
    kind = container_init.kind(runtime)
    root = inv.global_flag("root") or container_init.default_root(kind, os.environ, os.geteuid())
    record = container_init.recorded(root, cid)
    if record is None or record.start is None:
        return
    with contextlib.suppress(OSError):  # the init is gone: the runtime says so itself
        timens.join_checked(record.pid, record.start)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    self_path = os.path.abspath(sys.argv[0])
    settings = load(os.environ, warn)
    runtime = resolve_runtime(settings.runtime, os.environ.get("PATH"), avoid=self_path)
    if runtime is None or same_file(runtime, self_path):
        warn(f"no runtime {settings.runtime!r} to run (PROCFS_RUNTIME, /etc/procfs/runtime.json)")
        return 127
    inv = parse(args)
    if inv.command in CREATING:
        prepare_create(inv, settings, self_path)
    elif inv.command in ON_CONTAINER:
        join_container(inv, runtime)
    # Python ignores these two at start-up, and ignored signals stay ignored across execve.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    try:
        os.execv(runtime, [runtime, *args])
    except OSError as e:
        warn(f"cannot execute {runtime}: {e}")
    return 127


if __name__ == "__main__":
    sys.exit(main())
