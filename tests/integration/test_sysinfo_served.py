"""Issue 21 end to end: `procfs serve` answers the sysinfo(2) of a container that `procfs-runc`
created (no hook, no rule in its bundle), with the numbers of its files, in `exec` too, and
again within seconds after `kill -9` of the server and a restart."""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from procfs.server.control import request, socket_path
from tests.support.sandbox import Server

from .oci_bundle import Bundle, ensure_runc
from .runtime_support import MIB, WRAPPER, Container, wrapper_env

# busybox free (sysinfo), glibc's physical pages (sysinfo), then busybox uptime (sysinfo)
PROBE = ("busybox free | busybox awk '/^Mem:/ {print $2}'; "
         "python3 -c \"import os; print(os.sysconf('SC_PHYS_PAGES') * "
         "os.sysconf('SC_PAGE_SIZE'))\"; busybox uptime")


@pytest.fixture
def ctl() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="procfs-ctl-") as d:
        yield Path(d)


def keeper_of(srv: Server, ctl: Path) -> int:
    pid: int = request(socket_path(srv.mountpoint, str(ctl)), "sysinfo")["keeper_pid"]
    return pid


def probe(c: Container) -> tuple[int, int, str]:
    """busybox free's total, glibc's physical memory, busybox uptime (ValueError when one of
    them failed: busybox free reads /proc/meminfo besides calling sysinfo)."""
    free_kib, phys, uptime = c.exec(PROBE, timeout=30).strip().splitlines()
    return int(free_kib), int(phys), uptime


def test_sysinfo_of_a_procfs_runc_container(ctl: Path) -> None:
    if ensure_runc() is None or not os.path.exists(WRAPPER):
        pytest.skip("needs runc and procfs-runc (make setup)")
    keepers: list[int] = []
    state = str(ctl / "attached.json")
    srv = Server(args=["--control-dir", str(ctl)], sysinfo=True,
                 env={**os.environ, "PROCFS_STATE": state})
    try:
        srv.start()
        keepers.append(keeper_of(srv, ctl))
        env = wrapper_env(srv.mountpoint, socket=str(ctl / "sysinfo.sock"), state=state)
        with Bundle(runtime=WRAPPER, memory=256 * MIB, cpus="0") as b, \
                Container(b, [WRAPPER], env) as c:
            c.create()
            free_kib, phys, uptime = probe(c)  # an exec'd process: its own listener
            assert free_kib == 256 * 1024 and phys == 256 * MIB
            assert " up 0 min," in uptime, uptime
            stats = request(socket_path(srv.mountpoint, str(ctl)), "sysinfo")
            assert stats["answered"] >= 3 and stats["listeners"] >= 1

            srv.kill()  # SIGKILL: the keeper keeps the listeners; calls wait for a server
            t0 = time.monotonic()
            srv.start()  # takes the dead mount over, and the listeners from the keeper
            while True:  # its files are repaired in the background (ENOTCONN until then)
                try:
                    assert probe(c)[:2] == (256 * 1024, 256 * MIB)
                    break
                except ValueError:
                    assert time.monotonic() - t0 < 5, "not repaired within 5 s"
                    time.sleep(0.1)
            assert keeper_of(srv, ctl) == keepers[0]  # the same keeper, never ENOSYS
    finally:
        srv.stop()
        for pid in keepers:  # started by our server, in a session of its own
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
