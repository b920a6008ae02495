"""The benchmark's memory figure: each physical page once over a server's processes."""

from __future__ import annotations

import os
import signal
import time

from benchmarks.daemons import PAGE, resident_frames, rss_bytes


def test_pages_shared_with_a_forked_child_count_once() -> None:
    heap = bytearray(os.urandom(8 << 20))  # 8 MiB of our own, resident
    mine = resident_frames(os.getpid())
    assert abs(len(mine) * PAGE - rss_bytes(os.getpid())) < 0.1 * rss_bytes(os.getpid())
    pid = os.fork()
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    try:  # forked: the child maps our pages until one of us writes to one
        child = resident_frames(pid)
        both = len(mine | child) * PAGE
        assert both < rss_bytes(os.getpid()) + rss_bytes(pid) - (8 << 20)  # the heap once
        heap[::PAGE] = b"x" * len(heap[::PAGE])  # now ours alone (copy on write)
        again = len(resident_frames(os.getpid()) | resident_frames(pid)) * PAGE
        assert again >= both + (7 << 20)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
