"""`serve --workers`: where shards mount, which one a container gets, and how the server keeps
them running (a fake process under trio's MockClock: restarts, back-off, stop)."""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from procfs.server import supervise
from procfs.server.record import ServerRecord
from procfs.server.shards import MAX_AUTO, choose, parse_workers, shard_mountpoints, spread
from procfs.server.supervise import Shard, watch_lifeline
from procfs.sources.hostproc import HostProc


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PROCFS_STATE", str(tmp_path / "attached.json"))
    return tmp_path


def test_workers_count() -> None:
    assert parse_workers("3") == 3
    auto = parse_workers("auto")
    assert 1 <= auto <= min(MAX_AUTO, len(os.sched_getaffinity(0)))
    for bad in ("0", "-2", "many"):
        with pytest.raises(ValueError):
            parse_workers(bad)


def test_shard_mountpoints_live_under_the_state_dir(state: Path) -> None:
    assert shard_mountpoints("/mnt/a", 1) == []
    three = shard_mountpoints("/mnt/a", 3)  # three shards; the server keeps dev/kmsg and host
    assert len(three) == 3 and three == shard_mountpoints("/mnt/a", 3)
    assert all(m.startswith(str(state / "shards") + "/") for m in three)
    assert [os.path.basename(m) for m in three] == ["1", "2", "3"]
    assert set(three).isdisjoint(shard_mountpoints("/mnt/b", 3))  # per server


def _record(mountpoint: str, alive: bool, shards: list[str] | None = None) -> None:
    me = os.getpid()
    start = HostProc().stat(me).start_ticks
    ServerRecord(me, start if alive else start + 1, mountpoint, shards=shards or []).save()


def _longest_run(picks: list[int]) -> int:
    longest = run = 1
    for a, b in itertools.pairwise(picks):
        run = run + 1 if a == b else 1
        longest = max(longest, run)
    return longest


@pytest.mark.parametrize("count", [2, 3, 4, 8])
@pytest.mark.parametrize("stride", [1, 2, 3, 4, 5, 8, 16])
def test_consecutive_containers_spread_evenly(count: int, stride: int) -> None:
    """Containers made one after another (pid namespace inodes a stride apart: one per
    namespace each makes) land on the shards evenly and without long runs on one (before:
    runs of 40-90 on one shard)."""
    first = 4026532000 + 123
    picks = [spread(first + stride * i, count) for i in range(2000)]
    expected = 2000 / count
    assert all(abs(picks.count(k) - expected) < 0.15 * expected for k in range(count)), \
        [picks.count(k) for k in range(count)]
    assert _longest_run(picks) <= 16, _longest_run(picks)  # a fair coin's, for 2000 tosses


def test_choose_spreads_by_key_and_passes_over_a_shard_down(state: Path) -> None:
    main, up, other, down = (str(state / n) for n in ("main", "s1", "s2", "s3"))
    assert choose(main, 7) == main  # no record: the mount itself
    _record(main, True, [up, other])
    _record(up, True)
    _record(other, True)
    # Namespace inodes of containers come in strides (4 namespaces each, here): spread evenly
    # over the shards; the server's own process (many worker tasks, for dev/kmsg) gets none.
    picks = [choose(main, 4026531840 + 4 * i) for i in range(1000)]
    assert 400 < picks.count(up) < 600 and picks.count(other) == 1000 - picks.count(up)
    assert picks == [choose(main, 4026531840 + 4 * i) for i in range(1000)]  # stable
    _record(main, True, [up, other, down])
    _record(down, False)  # its process is not the one recorded: down
    picks = [choose(main, 4026531840 + 4 * i) for i in range(300)]
    assert set(picks) == {up, other}  # every key lands on a live shard, both get some
    _record(main, True, [down])
    assert choose(main, 7) == main  # no shard serves: the server itself


def test_record_keeps_shards_and_reads_older_records(state: Path) -> None:
    r = ServerRecord(1, 2, "/m", shards=["/s/1"], shard_of="")
    r.save()
    again = ServerRecord.of("/m")
    assert again is not None and again.shards == ["/s/1"] and again.shard_of == ""
    path = ServerRecord.path_for("/old")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Path(path).write_text('{"pid": 5, "start": 6, "mountpoint": "/old"}')
    old = ServerRecord.of("/old")
    assert old is not None and old.shards == [] and old.shard_of == ""


class FakeProcess:
    """Ends by itself `lifetime` seconds after it started (exit 3), or on a signal it heeds."""

    def __init__(self, pid: int, lifetime: float, heeds_term: bool = True) -> None:
        self.pid = pid
        self.born = trio.current_time()
        self.lifetime = lifetime
        self.heeds_term = heeds_term
        self.signals: list[int] = []
        self._code: int | None = None
        self._ended = trio.Event()

    @property
    def returncode(self) -> int | None:
        return self.poll()

    def poll(self) -> int | None:
        if self._code is None and trio.current_time() >= self.born + self.lifetime:
            self._code = 3
        return self._code

    async def wait(self) -> int:
        with trio.move_on_at(self.born + self.lifetime):
            await self._ended.wait()
        code = self.poll()
        assert code is not None
        return code

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)
        if sig == signal.SIGKILL or (sig == signal.SIGTERM and self.heeds_term):
            self._code = -sig
            self._ended.set()

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Spawner:
    def __init__(self, lifetimes: list[float], heeds_term: bool = True) -> None:
        self.lifetimes = lifetimes
        self.heeds_term = heeds_term
        self.started: list[float] = []
        self.procs: list[FakeProcess] = []
        self.calls: list[tuple[list[str], dict[str, Any]]] = []

    async def __call__(self, argv: list[str], **kw: Any) -> FakeProcess:
        self.calls.append((argv, kw))
        life = self.lifetimes[min(len(self.started), len(self.lifetimes) - 1)]
        self.started.append(trio.current_time())
        p = FakeProcess(1000 + len(self.procs), life, self.heeds_term)
        self.procs.append(p)
        return p


def _gaps(times: list[float]) -> list[float]:
    return [round(b - a, 3) for a, b in itertools.pairwise(times)]


async def _supervise(shard: Shard, seconds: float) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(shard.run)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()


def test_a_dying_shard_restarts_with_a_doubling_pause(tmp_path: Path) -> None:
    spawn = Spawner([0.0])  # dies at once, every time
    shard = Shard(["procfs", "serve"], str(tmp_path / "1"), lambda pid: False, spawn)
    trio.run(_supervise, shard, 100.0, clock=trio.testing.MockClock(autojump_threshold=0))
    assert _gaps(spawn.started) == [1, 2, 4, 8, 16, 30, 30]
    assert shard.starts == 8 and shard.proc is None
    argv, kw = spawn.calls[0]
    assert argv[:2] == ["procfs", "serve"] and argv[2] == "--lifeline"
    assert kw["pass_fds"] == (int(argv[3]),)
    assert "NOTIFY_SOCKET" not in kw["env"]  # systemd hears from the server only
    assert not (tmp_path / "1").exists()  # its mountpoint removed when it stopped


def test_a_shard_that_ran_long_restarts_after_the_shortest_pause(tmp_path: Path) -> None:
    spawn = Spawner([0.0, 0.0, 0.0, supervise.STEADY + 5, 0.0])
    shard = Shard(["procfs"], str(tmp_path / "1"), lambda pid: False, spawn)
    trio.run(_supervise, shard, 80.0, clock=trio.testing.MockClock(autojump_threshold=0))
    # 0, 1, 3, 7 (runs 65 s), then 1 s again, not 8
    assert _gaps(spawn.started)[:4] == [1, 2, 4, supervise.STEADY + 5 + 1]


def test_started_once_the_shard_serves_or_after_the_start_timeout(tmp_path: Path) -> None:
    async def main() -> None:
        serving_at = 0.5
        spawn = Spawner([1000.0])
        shard = Shard(["procfs"], str(tmp_path / "1"),
                      lambda pid: trio.current_time() >= serving_at, spawn)
        async with trio.open_nursery() as nursery:
            await nursery.start(shard.run)
            assert serving_at <= trio.current_time() < serving_at + 2 * supervise.POLL
            nursery.cancel_scope.cancel()
        never = Shard(["procfs"], str(tmp_path / "2"), lambda pid: False, Spawner([1000.0]))
        async with trio.open_nursery() as nursery:
            t0 = trio.current_time()
            await nursery.start(never.run)  # the server goes on without it
            assert trio.current_time() - t0 == pytest.approx(supervise.START_TIMEOUT, abs=0.05)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.parametrize("heeds", [True, False])
def test_stopping_sends_sigterm_then_sigkill(tmp_path: Path, heeds: bool) -> None:
    spawn = Spawner([1000.0], heeds_term=heeds)
    shard = Shard(["procfs"], str(tmp_path / "1"), lambda pid: True, spawn)

    async def main() -> None:
        await _supervise(shard, 5.0)
        stopped_at = trio.current_time()
        assert stopped_at == pytest.approx(5.0 if heeds else 5.0 + supervise.STOP_TIMEOUT,
                                           abs=0.05)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(spawn.procs) == 1  # stopped, not restarted
    want = [signal.SIGTERM] if heeds else [signal.SIGTERM, signal.SIGKILL]
    assert spawn.procs[0].signals == want


def test_sighup_reaches_a_running_shard_only(tmp_path: Path) -> None:
    spawn = Spawner([1000.0])
    shard = Shard(["procfs"], str(tmp_path / "1"), lambda pid: True, spawn)
    shard.signal(signal.SIGHUP)  # not started: nothing to signal, no error

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(shard.run)
            shard.signal(signal.SIGHUP)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert spawn.procs[0].signals == [signal.SIGHUP, signal.SIGTERM]


def test_a_shard_stops_when_its_lifeline_breaks() -> None:
    async def main() -> None:
        r, w = os.pipe()
        orphaned = trio.Event()
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_lifeline, r, scope, orphaned)
                await trio.testing.wait_all_tasks_blocked()
                assert not scope.cancel_called  # the server lives: nothing happens
                assert not orphaned.is_set()
                os.close(w)  # the server is gone
                await trio.sleep_forever()
        assert scope.cancel_called and orphaned.is_set()  # its record is kept
        with pytest.raises(OSError):
            os.fstat(r)  # closed by the watcher

    trio.run(main)


def test_a_shard_gets_every_option_of_its_server() -> None:
    """A shard runs with its server's Config (forked), or the same as JSON (exec'd): every
    option of `procfs serve`, set away from its default, reaches the shard (one forgotten would
    leave the shards serving with its default)."""
    import json

    from procfs.cli import parser
    from procfs.cli.serve import serve_config
    from procfs.config import Config
    from procfs.server.serve import shard_argv

    argv = ["-vv", "serve", "/mnt/p", "--proc-root", "/p", "--sys-root", "/s",
            "--cgroup-root", "/c", "--cpu-view", "cpuset", "--cache-ttl", "0.25",
            "--max-background", "77", "--workers", "3", "--fuse-debug",
            "--kmsg-ring-size", "4096", "--kmsg-host-log", "", "--no-kmsg", "--control-dir", "/ctl",
            "--no-sysinfo", "--no-keeper-start"]
    server = serve_config(parser().parse_args(argv))
    default = serve_config(parser().parse_args(["serve", "/mnt/p"]))
    shard = server.for_shard("/run/s/1")
    command = shard_argv(shard)
    assert command[1:3] == ["-m", "procfs.server.shard"]
    assert Config.from_json(json.loads(command[3])) == shard  # exec'd: the same Config
    assert shard.mountpoint == "/run/s/1" and shard.shard_of == os.path.realpath("/mnt/p")
    assert shard.workers == 1  # a shard runs no shards of its own
    # and serves no dev/kmsg, even for a server that does: the server lends its own
    assert default.kmsg.enabled and not default.for_shard("/run/s/1").kmsg.enabled
    assert default.sysinfo and not default.for_shard("/run/s/1").sysinfo
    own = ("mountpoint", "shard_of", "workers", "lifeline", "staleness")  # per shard, or fixed
    for name in vars(server):
        if name not in own:
            assert getattr(server, name) != getattr(default, name), f"argv leaves {name} as is"
            if name not in ("kmsg", "sysinfo"):  # a shard serves neither
                assert getattr(shard, name) == getattr(server, name), name
    assert shard.kmsg.ring_bytes == 4096 and shard.kmsg.host_log == ""


def test_a_forked_shard_runs_first_then_restarts_by_exec(tmp_path: Path) -> None:
    """procfs.server.prefork's process is the first run; when it ends, the shard is spawned."""
    first = Spawner([2.0])
    spawn = Spawner([1000.0])

    async def main() -> None:
        r, w = os.pipe()
        os.close(r)
        forked = await first(["forked"])
        shard = Shard(["procfs"], str(tmp_path / "1"), lambda pid: True, spawn, forked=(forked, w))
        await _supervise(shard, 5.0)
        with pytest.raises(OSError):
            os.fstat(w)  # its lifeline's end closed once it ended

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(first.procs) == 1 and first.procs[0].poll() == 3  # ran and ended by itself
    assert len(spawn.procs) == 1 and spawn.started == [pytest.approx(2.0 + supervise.MIN_BACKOFF)]


def test_forked_waits_signals_and_reaps_through_a_pidfd() -> None:
    from procfs.server.prefork import Forked

    def child(code: int, sleep: float) -> Forked:
        pid = os.fork()
        if pid == 0:
            time.sleep(sleep)
            os._exit(code)
        return Forked(pid)

    async def main() -> None:
        quick = child(7, 0.0)
        assert await quick.wait() == 7 and quick.returncode == 7 and quick.pidfd is None
        slow = child(0, 60.0)
        try:
            assert slow.poll() is None and slow.returncode is None
            slow.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                assert await slow.wait() == -signal.SIGTERM
            slow.kill()  # ended: nothing to signal, no error
        finally:
            if slow.returncode is None:
                os.kill(slow.pid, signal.SIGKILL)
                os.waitpid(slow.pid, 0)

    trio.run(main)
