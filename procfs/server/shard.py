"""`python -m procfs.server.shard CONFIG_JSON --lifeline FD`: a shard started again by exec.

A server forks its shards with their `Config` (procfs.server.prefork); one that dies is started
again by exec, since a running trio cannot be forked: this is that command. Its configuration
is the JSON of `Config.to_json`, so that a forked shard and an exec'd one are set up alike.
"""

from __future__ import annotations

import json
import sys

from procfs.config import Config
from procfs.logs import setup_logging


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] != "--lifeline":
        print("usage: python -m procfs.server.shard CONFIG_JSON --lifeline FD", file=sys.stderr)
        return 2
    config = Config.from_json(json.loads(argv[0]))
    config.lifeline = int(argv[2])
    setup_logging(config.verbose)
    from procfs.server.serve import run

    return run(config)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
