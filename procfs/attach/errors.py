"""Why `procfs attach` / `detach` did nothing, and the exit code the command line gives for it."""

from __future__ import annotations

import enum

from procfs.errors import ProcfsError


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    NO_PROCESS = 3
    NO_SERVER = 4
    NO_PERMISSION = 5
    HALF_ATTACHED = 6


class AttachError(ProcfsError):
    """A one-line reason `attach`/`detach` did nothing (or undid what it did)."""

    code = ExitCode.FAILED


class NoProcess(AttachError):
    code = ExitCode.NO_PROCESS


class ServerDown(AttachError):
    code = ExitCode.NO_SERVER


class NoPermission(AttachError):
    code = ExitCode.NO_PERMISSION


class Refusal(AttachError):
    code = ExitCode.USAGE


class HalfAttached(AttachError):
    """A bind failed and undoing the others failed too: the container has some of the files."""

    code = ExitCode.HALF_ATTACHED
