"""What several integration tests do alike: run the `procfs` command, read `free` inside."""

from __future__ import annotations

import subprocess
import sys

from tests.support.sandbox import Sandbox


def procfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "procfs", *args], capture_output=True, text=True,
                          timeout=30)


def free_total(sb: Sandbox) -> int:
    line = next(x for x in sb.sh("free -b").splitlines() if x.startswith("Mem:"))
    return int(line.split()[1])
