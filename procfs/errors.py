"""The exceptions readers raise, and the one place that maps exceptions to errno."""

from __future__ import annotations

import errno


class ProcfsError(Exception):
    """Base of the errors procfs raises on purpose."""


class ProcessGone(ProcfsError):
    """The process (or its /proc entry) vanished while we were reading it."""


class CgroupGone(ProcfsError):
    """The cgroup directory vanished while we were reading it."""


class NotFound(ProcfsError):
    """A file we need does not exist on this host (missing controller, old kernel)."""


class Malformed(ProcfsError):
    """A kernel file did not have the shape we expect."""


class Refused(ProcfsError):
    """A request a caller is not allowed to make."""

    def __init__(self, message: str, code: int = errno.EACCES) -> None:
        super().__init__(message)
        self.code = code


def to_errno(exc: BaseException) -> int:
    """The errno a FUSE request answers with when `exc` ends it."""
    if isinstance(exc, Refused):
        return exc.code
    if isinstance(exc, ProcessGone):
        return errno.ESRCH
    if isinstance(exc, CgroupGone | NotFound):
        return errno.ENOENT
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    return errno.EIO


# What a FUSE mount whose server is gone answers: ENOTCONN, or ECONNABORTED for a request that
# raced the connection's end (now and then the first statfs after a kill -9).
DEAD_CONNECTION = (errno.ENOTCONN, errno.ECONNABORTED)
