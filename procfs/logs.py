"""Logging as every procfs process does it: to stderr, with the process id (shards log too)."""

from __future__ import annotations

import logging
import sys


def setup_logging(verbose: int) -> None:
    """WARNING and above; each -v one level more."""
    level = max(logging.WARNING - 10 * verbose, logging.DEBUG)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="procfs[%(process)d] %(levelname)s %(name)s: %(message)s")
