"""`make demo`: a throwaway container beside the host, the same programs run in both.

Starts procfs on a temporary mountpoint, a container with 256 MiB and CPU 0 (its own cgroup, pid
and mount namespaces, procfs's files bound over their twins), runs free, top, uptime, nproc,
getconf, cpuinfo and dmesg in it and on the host, prints them side by side and removes it all,
on Ctrl-C too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from tests.support.sandbox import Limits, Server, container

COMMANDS = [
    "free -m",
    "top -bn1 | head -n 5",
    "uptime",
    "nproc",
    "getconf _NPROCESSORS_ONLN",
    "grep -c ^processor /proc/cpuinfo",
    "cat /sys/devices/system/cpu/online",
    "dmesg 2>&1 | tail -n 3",
]


def _host(cmd: str) -> str:
    r = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=30)
    return (r.stdout + r.stderr).rstrip()


def side_by_side(left: str, right: str, col: int) -> str:
    ls, rs = left.splitlines() or [""], right.splitlines() or [""]
    rows = []
    for i in range(max(len(ls), len(rs))):
        a = ls[i] if i < len(ls) else ""
        b = rs[i] if i < len(rs) else ""
        rows.append(f"{a[:col]:<{col}} │ {b[:col]}")
    return "\n".join(rows)


def main() -> int:
    if os.geteuid() != 0:
        print("procfs demo: needs root (cgroups, namespaces, FUSE)", file=sys.stderr)
        return 2
    col = max(40, (shutil.get_terminal_size((170, 40)).columns - 3) // 2)
    with Server() as srv, container(srv.mountpoint, Limits(memory=256 << 20, cpus="0"),
                                    prefix="procfs-demo") as box:
        print(f"procfs serving at {srv.mountpoint}; container init pid {box.pid}, "
              "limits: 256 MiB memory, cpuset 0\n")
        # a line of the container's own, into its own kernel log (the host's is untouched)
        box.run(["sh", "-c", "echo 'demo: hello from inside the container' > /dev/kmsg"],
                check=False)
        print(f"{'HOST':<{col}} │ CONTAINER")
        print("─" * col + "─┼─" + "─" * col)
        for cmd in COMMANDS:
            inside = box.run(["sh", "-c", cmd], check=False)
            print(f"$ {cmd}")
            print(side_by_side(_host(cmd), (inside.stdout + inside.stderr).rstrip(), col))
            print()
    print("container, cgroup and mount removed")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        raise SystemExit(130) from None
