"""Just enough of runc's and crun's command line to find the command, its bundle and its
container id; the arguments themselves are handed to the real runtime unchanged.

Both accept `--flag value` and `--flag=value`; runc (Go's flag package) also accepts one dash
before a long name. A flag that takes a value must be known, or its value would be taken for the
command or the container id; an unknown flag is taken for a boolean. Flags of runc 1.1 and crun
1.8 (`runc --help`, `runc COMMAND --help`, crun's argp tables).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Sequence

# Global flags that take a value; the others (--debug, --systemd-cgroup, --help, --version,
# crun's --usage) are booleans.
GLOBAL_VALUE_FLAGS = frozenset({"root", "log", "log-format", "criu", "rootless", "cgroup-manager"})

_CREATE = frozenset({"bundle", "b", "console-socket", "pid-file", "preserve-fds", "config", "f"})
_UPDATE = frozenset({
    "resources", "r", "blkio-weight", "cpu-period", "cpu-quota", "cpu-share", "cpu-rt-period",
    "cpu-rt-runtime", "cpuset-cpus", "cpuset-mems", "kernel-memory", "kernel-memory-tcp",
    "memory", "memory-reservation", "memory-swap", "pids-limit", "l3-cache-schema",
    "mem-bw-schema", "cpu-idle",
})
_CHECKPOINT = frozenset({
    "image-path", "work-path", "parent-path", "page-server", "manage-cgroups-mode", "empty-ns",
    "status-fd", "lsm-profile", "lsm-mount-context", "console-socket", "pid-file", "bundle", "b",
})
# Per command, the flags that take a value.
COMMAND_VALUE_FLAGS: dict[str, frozenset[str]] = {
    "create": _CREATE,
    "run": _CREATE,
    "exec": frozenset({
        "console-socket", "cwd", "env", "e", "process", "p", "pid-file", "process-label",
        "apparmor", "user", "u", "additional-gids", "g", "cap", "c", "preserve-fds", "cgroup",
    }),
    "kill": frozenset({"regex"}),
    "delete": frozenset({"regex"}),
    "ps": frozenset({"format", "f"}),
    "list": frozenset({"format", "f"}),
    "spec": frozenset({"bundle", "b"}),
    "events": frozenset({"interval"}),
    "update": _UPDATE,
    "checkpoint": _CHECKPOINT,
    "restore": _CHECKPOINT,
}
# Commands that create a container from a bundle, and those that act on an existing one (their
# first operand is its id).
CREATING = frozenset({"create", "run"})
ON_CONTAINER = frozenset({"start", "state", "kill", "delete", "exec", "ps", "pause", "resume",
                          "update", "events", "checkpoint"})


def _name(arg: str) -> str:
    """`--root=/x` → `root`, `-b` → `b`."""
    return arg.lstrip("-").split("=", 1)[0]


def _is_flag(arg: str) -> bool:
    return arg.startswith("-") and arg not in ("-", "--")


class Invocation(NamedTuple):
    """What one runtime command line asks for."""

    global_args: tuple[str, ...]  # everything before the command, as given
    command: str | None  # None: no command (--version, --help)
    args: tuple[str, ...]  # everything after the command, as given
    flags: dict[str, str]  # the command's valued flags, by name
    operands: tuple[str, ...]  # the command's non-flag arguments

    def global_flag(self, name: str) -> str | None:
        args = self.global_args
        for i, arg in enumerate(args):
            if _is_flag(arg) and _name(arg) == name:
                if "=" in arg:
                    return arg.split("=", 1)[1]
                return args[i + 1] if i + 1 < len(args) else None
        return None

    @property
    def container_id(self) -> str | None:
        return self.operands[0] if self.operands else None

    def bundle(self) -> str:
        """The bundle directory (`--bundle`/`-b`, default the current directory), absolute."""
        return os.path.abspath(self.flags.get("bundle") or self.flags.get("b") or ".")

    def config_path(self) -> str:
        """config.json in the bundle, or crun's `--config`/`-f` (relative to the current
        directory, like crun)."""
        other = self.flags.get("config") or self.flags.get("f")
        if other and other != "config.json":
            return os.path.abspath(other)
        return os.path.join(self.bundle(), "config.json")


def parse(argv: Sequence[str]) -> Invocation:
    """`argv` without the program name."""
    args = list(argv)
    i = 0
    while i < len(args) and _is_flag(args[i]):
        if _name(args[i]) in GLOBAL_VALUE_FLAGS and "=" not in args[i]:
            i += 1
        i += 1
    if i >= len(args) or args[i] == "--":
        return Invocation(tuple(args[:i]), None, (), {}, ())
    command, rest = args[i], args[i + 1:]
    valued = COMMAND_VALUE_FLAGS.get(command, frozenset())
    flags: dict[str, str] = {}
    operands: list[str] = []
    j = 0
    while j < len(rest):
        arg = rest[j]
        if arg == "--":
            operands += rest[j + 1:]
            break
        if _is_flag(arg) and not operands:
            name = _name(arg)
            if "=" in arg:
                flags[name] = arg.split("=", 1)[1]
            elif name in valued and j + 1 < len(rest):
                flags[name] = rest[j + 1]
                j += 1
        else:  # flags after the id belong to the process (exec) or are reordered by runc
            operands.append(arg)
        j += 1
    return Invocation(tuple(args[:i]), command, tuple(rest), flags, tuple(operands))
