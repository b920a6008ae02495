"""Issue 21, sysinfo(2) half, with real runc: a container whose config notifies sysinfo to our
keeper sees the server's numbers in `busybox free`, sysinfo() and sysconf(_SC_PHYS_PAGES), in its
init and in `runc exec`; and no call ever fails while servers are killed with SIGKILL and
replaced, or the keeper is."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from .oci_bundle import ensure_runc
from .sysinfo_consumer import MIB, VALUES
from .sysinfo_support import (
    Consumer,
    NotifyBundle,
    Sockets,
    compile_probe,
    keeper,
    keeper_listeners,
    kill_and_reap,
    parse_probe,
    sockets,
)

PROBE = "/tmp/sysinfo_probe"
FREE = "busybox free | grep ^Mem:"


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> str:
    if ensure_runc() is None:
        pytest.skip("runc is not installed and apt-get could not install it")
    return compile_probe(str(tmp_path_factory.mktemp("sysinfo-probe")))


@pytest.fixture
def socks() -> Iterator[Sockets]:
    with sockets() as s:
        yield s


@pytest.fixture
def kept(socks: Sockets) -> Iterator[subprocess.Popen[bytes]]:
    with keeper(socks) as proc:
        yield proc


@pytest.fixture
def bundle(socks: Sockets, probe: str) -> Iterator[NotifyBundle]:
    with NotifyBundle(socks.runtime, probe, memory=512 * MIB) as b:
        yield b


@pytest.fixture
def consumers() -> Iterator[list[Consumer]]:
    made: list[Consumer] = []
    yield made
    for c in made:
        c.close()


def served(values: dict[str, int], totalram: int = VALUES.totalram) -> None:
    """`values` (a probe's output) are the stand-in server's numbers, not the host's."""
    assert values["totalram"] == totalram
    assert values["freeram"] == VALUES.freeram
    assert values["sharedram"] == VALUES.sharedram
    assert values["bufferram"] == VALUES.bufferram
    assert (values["totalswap"], values["freeswap"]) == (VALUES.totalswap, VALUES.freeswap)
    assert values["procs"] == VALUES.procs
    assert values["uptime"] == 43  # 42.2 s, rounded up as the kernel rounds
    assert (values["loads0"], values["loads1"], values["loads2"]) == (3 << 16, 3 << 15, 1 << 14)
    assert (values["totalhigh"], values["freehigh"], values["mem_unit"]) == (0, 0, 1)
    assert values["phys_pages"] * values["page_size"] == totalram


def test_container_sees_the_servers_sysinfo(bundle: NotifyBundle, kept: object, socks: Sockets,
                                            consumers: list[Consumer]) -> None:
    consumers.append(Consumer(socks))
    r = bundle.run(["sh", "-c", f"{PROBE} && {FREE}"])
    assert r.returncode == 0, r.stderr
    *probe_lines, free = r.stdout.splitlines()
    served(parse_probe("\n".join(probe_lines)))
    # KiB: total, used = total - free - buff/cache, free, shared, buff/cache, available
    # (buff/cache = bufferram + meminfo's Cached; available: meminfo's)
    assert free.split()[1:] == ["262144", "52224", "204800", "3072", "5120", "204800"]
    stats = consumers[0].wait_stats(lambda st: st.get("answered", 0) >= 3)
    assert stats["errors"] == stats["gone"] == 0


def test_runc_exec_sees_it_too_and_listeners_go_with_their_processes(
        bundle: NotifyBundle, kept: subprocess.Popen[bytes], socks: Sockets,
        consumers: list[Consumer]) -> None:
    consumers.append(Consumer(socks))
    bundle.start()
    for _ in range(2):
        r = bundle.exec([PROBE])
        assert r.returncode == 0, r.stderr
        served(parse_probe(r.stdout))
    r = bundle.exec(["sh", "-c", FREE])
    assert r.stdout.split()[1:4] == ["262144", "52224", "204800"]
    # The init's listener stays; each exec's went with its process (POLLHUP).
    _wait(lambda: keeper_listeners(kept.pid) == 1, "the keeper to drop the execs' listeners")
    bundle.delete()
    _wait(lambda: keeper_listeners(kept.pid) == 0, "the keeper to drop the init's listener")


def test_calls_wait_while_no_server_and_survive_kill9(bundle: NotifyBundle, kept: object,
                                                     socks: Sockets,
                                                     consumers: list[Consumer]) -> None:
    first = Consumer(socks, "--totalram", str(128 * MIB))
    consumers.append(first)
    bundle.start(["sh", "-c", f"sleep 1; {PROBE} > /tmp/init.out; sleep infinity"])
    served(parse_probe(bundle.exec([PROBE]).stdout), 128 * MIB)
    first.kill()
    pending = subprocess.Popen(bundle.exec_argv([PROBE]), stdout=subprocess.PIPE, text=True,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        time.sleep(2.0)  # the init's call (after its 1 s) and this exec's wait in the kernel
        assert pending.poll() is None, pending.communicate()
        assert bundle.exec(["cat", "/tmp/init.out"]).stdout == ""
        consumers.append(Consumer(socks))
        out, err = pending.communicate(timeout=15)
    finally:
        kill_and_reap(pending)
    assert pending.returncode == 0, err
    served(parse_probe(out))
    _wait(lambda: bundle.exec(["cat", "/tmp/init.out"]).stdout != "", "the init's answer")
    served(parse_probe(bundle.exec(["cat", "/tmp/init.out"]).stdout))
    served(parse_probe(bundle.exec([PROBE]).stdout))


def test_server_killed_between_receive_and_answer(bundle: NotifyBundle, kept: object,
                                                  socks: Sockets,
                                                  consumers: list[Consumer]) -> None:
    """The call the killed server had received stays 'sent' in the kernel; the next server
    finds its caller waiting and interrupts the wait, and the call is made and answered anew."""
    stalls = Consumer(socks, "--stall-first")
    consumers.append(stalls)
    bundle.start()
    caught = subprocess.Popen(bundle.exec_argv([PROBE]), stdout=subprocess.PIPE, text=True,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        stalls.wait_for("values")  # received, inside the callback: not answered
        stalls.kill()
        time.sleep(0.5)
        assert caught.poll() is None
        second = Consumer(socks)
        consumers.append(second)
        out, err = caught.communicate(timeout=15)
    finally:
        kill_and_reap(caught)
    assert caught.returncode == 0, err
    served(parse_probe(out))
    assert second.wait_stats(lambda st: st.get("kicked", 0) >= 1)["kicked"] == 1


def test_keeper_killed_then_server_killed(bundle: NotifyBundle, socks: Sockets,
                                          consumers: list[Consumer]) -> None:
    """The server's copies keep the container served when the keeper dies; it starts a new
    keeper and hands them over, so a later server (the first one killed too) still has them."""
    first = Consumer(socks, start_keeper=True)
    consumers.append(first)
    try:
        old = first.keeper_pid
        assert _keepers_of(socks) == [old]
        bundle.start()
        served(parse_probe(bundle.exec([PROBE]).stdout))
        os.kill(old, signal.SIGKILL)
        new = int(first.wait_for("synced").split()[1])
        assert new != old and _keepers_of(socks) == [new]
        _wait(lambda: keeper_listeners(new) == 1, "the init's listener to be handed over")
        served(parse_probe(bundle.exec([PROBE]).stdout))
        first.kill()
        consumers.append(Consumer(socks))
        served(parse_probe(bundle.exec([PROBE]).stdout))
    finally:
        bundle.delete()
        for pid in _keepers_of(socks):
            os.kill(pid, signal.SIGKILL)


def _keepers_of(s: Sockets) -> list[int]:
    """Keepers serving these sockets (started by a consumer: not our children)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"procfs.runtime.keeper" in argv and s.keeper.encode() in argv:
            found.append(int(pid))
    return found


def _wait(cond: object, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
