"""`procfs serve --workers 2`: two shards, forked from the server, each on a mount of its own,
containers spread over them by `procfs attach`, each seeing its own numbers; a shard restarted
when it dies, reloaded and stopped with its server, and gone when the server is killed."""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from procfs.attach.docker import docker_flags
from procfs.attach.errors import ExitCode
from procfs.attach.state import StateFile
from procfs.fuse.ops import MANY_TASKS
from procfs.server.control import request, socket_path
from procfs.server.record import ServerRecord
from procfs.server.shards import choose
from procfs.sources.hostproc import HostProc
from procfs.sources.mountinfo import MountEntry, parse_mountinfo
from tests.integration.cli import free_total, procfs
from tests.support.sandbox import Cgroup, Limits, Sandbox, Server, have, is_mounted

MIB = 1 << 20


@pytest.fixture
def two_workers(state_dir: Path) -> Iterator[Server]:
    # Control sockets in the test's directory too: a killed server leaves its own behind.
    with Server(args=["--workers", "2", "--control-dir", str(state_dir)]) as srv:
        yield srv


def shards_of(srv: Server) -> list[ServerRecord]:
    """The records of a `--workers 2` server's two shards, both serving."""
    record = ServerRecord.of(srv.mountpoint)
    assert record is not None and len(record.shards) == 2
    shards = [ServerRecord.of(m) for m in record.shards]
    assert all(s is not None and s.alive() for s in shards)
    return shards  # type: ignore[return-value]


def shard_of(srv: Server) -> ServerRecord:
    return shards_of(srv)[0]


def fresh_mount(stack: ExitStack) -> str:
    """A mountpoint, removed when `stack` closes, after the servers on it stopped (they are
    entered later, so stopped first)."""
    mount = tempfile.mkdtemp(prefix="procfs-mnt-")
    stack.callback(os.rmdir, mount)
    return mount


def serve_on(stack: ExitStack, mount: str, state_dir: Path, *args: str) -> Server:
    """A server on `mount`, its control socket in the test's directory, stopped when `stack`
    closes."""
    srv = Server(mount, args=[*args, "--control-dir", str(state_dir)])
    stack.callback(srv.stop)
    return srv.start()


def smaps_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return sum(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def wait_for(what: Callable[[], bool], seconds: float, why: str) -> None:
    deadline = time.monotonic() + seconds
    while not what():
        assert time.monotonic() < deadline, why
        time.sleep(0.05)


def sees(sb: Sandbox, mib: int) -> bool:
    """`free` in `sb` works and says `mib` MiB (false while its files are dead)."""
    out = sb.run(["free", "-b"], check=False)
    return out.returncode == 0 and f" {mib * MIB} " in out.stdout


def one_on_each(srv: Server, stack: ExitStack, make_cgroup: Callable[..., Cgroup]
                ) -> dict[str, tuple[Sandbox, int]]:
    """Bare containers (each its own limit) until one would be attached from each mount; those
    two attached with `procfs attach`. {mount: (container, MiB)}."""
    boxes: dict[str, tuple[Sandbox, int]] = {}
    for i in range(16):
        mib = 64 + 32 * i
        sb = stack.enter_context(Sandbox(make_cgroup(Limits(memory=mib * MIB)), None))
        where = choose(srv.mountpoint, HostProc().pid_ns(sb.pid))
        if where in boxes:
            continue
        r = procfs("attach", str(sb.pid), "--mount", srv.mountpoint)
        assert r.returncode == ExitCode.OK, r.stderr
        boxes[where] = (sb, mib)
        if len(boxes) == 2:
            return boxes
    raise AssertionError(f"16 pid namespaces, all for {list(boxes)}")


def test_containers_spread_over_two_processes(two_workers: Server, state_dir: Path,
                                              make_cgroup: Callable[..., Cgroup]) -> None:
    srv = two_workers
    assert srv.proc is not None
    shards = shards_of(srv)
    shard = shards[0]
    for s in shards:
        assert s.pid != srv.proc.pid and s.shard_of == os.path.realpath(srv.mountpoint)
        # Forked before trio ran (procfs.server.prefork): it shares the server's pages.
        assert HostProc().stat(s.pid).ppid == srv.proc.pid
        assert Path(f"/proc/{s.pid}/comm").read_text().strip() == "procfs-shard"
        assert smaps_kib(s.pid, "Shared_Dirty") > 4096, "the shard shares no heap"
    with ExitStack() as stack:
        # Containers go to the two shards; the server's own process serves none of them.
        boxes = one_on_each(srv, stack, make_cgroup)
        assert set(boxes) == {s.mountpoint for s in shards}
        # The server serves dev/kmsg; the shards do not. Each runs pyfuse3's worker tasks
        # unbounded: requests wait for their turn in one of them (procfs.fuse.fair).
        assert not os.path.exists(os.path.join(shard.mountpoint, "dev/kmsg"))
        for where in (srv.mountpoint, *(s.mountpoint for s in shards)):
            stats = request(socket_path(where, str(state_dir)), "stats")
            assert stats["worker_tasks"] == MANY_TASKS
        kmsg_dev = os.stat(os.path.join(srv.mountpoint, "dev/kmsg")).st_dev
        for where, (sb, mib) in boxes.items():
            assert free_total(sb) == mib * MIB
            assert sb.sh("getconf _NPROCESSORS_ONLN").strip().isdigit()
            entry = StateFile().find(sb.pid)
            assert entry is not None and entry.mountpoint == os.path.realpath(where)
            assert "dev/kmsg" in entry.files
            # the container's files come from that mount: the same device; its dev/kmsg from
            # the server's, whichever mount serves the rest
            inside = os.stat(f"/proc/{sb.pid}/root/proc/meminfo").st_dev
            assert inside == os.stat(os.path.join(where, "proc/meminfo")).st_dev
            assert os.stat(f"/proc/{sb.pid}/root/dev/kmsg").st_dev == kmsg_dev

        # Each container's kernel log is its own, all in the server's process.
        if have("dmesg"):
            for sb, mib in boxes.values():
                r = procfs("kmsg", "--control-dir", str(state_dir), srv.mountpoint, "append",
                           str(sb.pid), f"hello {mib}")
                assert r.returncode == 0, r.stderr
            for sb, mib in boxes.values():
                out = sb.run(["dmesg"]).stdout
                others = [m for _, m in boxes.values() if m != mib]
                assert f"hello {mib}" in out and f"hello {others[0]}" not in out, out
            r = procfs("kmsg", "--control-dir", str(state_dir), srv.mountpoint, "show",
                       str(boxes[shard.mountpoint][0].pid))
            assert r.returncode == 0 and f"hello {boxes[shard.mountpoint][1]}" in r.stdout
            r = procfs("kmsg", "--control-dir", str(state_dir), shard.mountpoint, "list")
            assert r.returncode == 1 and "is a shard: its server at" in r.stderr, r.stderr

        # `procfs reload` reloads the server and both shards.
        r = procfs("reload", "--mount", srv.mountpoint)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.count("reloaded") == 3, r.stdout

        # The shard dies: the server starts it again, and it attaches its container again.
        os.kill(shard.pid, signal.SIGKILL)
        sb, mib = boxes[shard.mountpoint]
        if have("dmesg"):  # meanwhile its kernel log, lent by the server, stays readable
            out = sb.run(["dmesg"], check=False)
            assert out.returncode == 0 and f"hello {mib}" in out.stdout, out.stderr

        def repaired() -> bool:
            now = ServerRecord.of(shard.mountpoint)
            if now is None or now.pid == shard.pid or not now.alive():
                return False
            return sees(sb, mib)

        wait_for(repaired, 20, f"shard not back:\n{srv.log()}")
        other = boxes[shards[1].mountpoint]
        assert free_total(other[0]) == other[1] * MIB
        new_pid = ServerRecord.of(shard.mountpoint).pid  # type: ignore[union-attr]
        # A restart cannot fork a running trio: it is an exec of the shard's command line.
        argv = Path(f"/proc/{new_pid}/cmdline").read_bytes().split(b"\0")
        assert argv[1:3] == [b"-m", b"procfs.server.shard"], argv
        assert json.loads(argv[3])["mountpoint"] == shard.mountpoint, argv

    # Stopping the server stops its shards: no mount, process or directory is left.
    srv.stop()
    assert not any(is_mounted(m) for m in (srv.mountpoint, *(s.mountpoint for s in shards)))
    assert not os.path.exists(f"/proc/{new_pid}") and not os.path.exists(f"/proc/{shards[1].pid}")
    assert not os.path.exists(os.path.dirname(os.path.dirname(shard.mountpoint)))  # shards/
    assert ServerRecord.of(shard.mountpoint) is None


def test_without_kmsg(state_dir: Path, make_cgroup: Callable[..., Cgroup]) -> None:
    """`--no-kmsg`: neither mount has dev/kmsg. Containers attached from both see their own
    memory while several readers in each read at once, and get no /dev/kmsg made for them."""
    with ExitStack() as stack:
        srv = stack.enter_context(Server(args=["--workers", "2", "--no-kmsg",
                                               "--control-dir", str(state_dir)]))
        shard = shard_of(srv)
        for where in (srv.mountpoint, shard.mountpoint):
            assert os.path.exists(os.path.join(where, "proc/meminfo"))
            assert not os.path.exists(os.path.join(where, "dev/kmsg"))
        boxes = one_on_each(srv, stack, make_cgroup)
        for sb, mib in boxes.values():
            entry = StateFile().find(sb.pid)
            assert entry is not None and not entry.created and "dev/kmsg" not in entry.files
            # 4 readers at once, 200 reads each: every read sees the container's own limit
            out = sb.sh("{ for r in 1 2 3 4; do (for i in $(seq 200); do head -1 /proc/meminfo; "
                        "done) & done; wait; } | sort | uniq -c")
            assert out.split() == ["800", "MemTotal:", str(mib * 1024), "kB"], out
        r = procfs("kmsg", "--control-dir", str(state_dir), srv.mountpoint, "list")
        assert r.returncode == 1 and "serves no dev/kmsg (--no-kmsg)" in r.stderr, r.stderr
        assert "Traceback" not in srv.log()


def test_restarted_with_no_kmsg_unbinds_the_dead_dev_kmsg(state_dir: Path,
                                                         make_cgroup: Callable[..., Cgroup]
                                                         ) -> None:
    """A server restarted with `--no-kmsg` attaches its containers again, unbinds the dev/kmsg
    its predecessor bound (it would answer ENOTCONN for good) and removes the one it created."""
    with ExitStack() as stack:
        mount = fresh_mount(stack)
        first = serve_on(stack, mount, state_dir)
        sb = stack.enter_context(Sandbox(make_cgroup(Limits(memory=96 * MIB)), None))
        sb.sh("mount -t tmpfs procfs-test-dev /dev")  # its own mount namespace: no /dev/kmsg
        r = procfs("attach", str(sb.pid), "--mount", mount)
        assert r.returncode == ExitCode.OK, r.stderr
        entry = StateFile().find(sb.pid)
        assert entry is not None and "dev/kmsg" in entry.files and "dev/kmsg" in entry.created

        def kmsg_layers() -> list[MountEntry]:
            with open(f"/proc/{sb.pid}/mountinfo") as f:
                return [e for e in parse_mountinfo(f.read())
                        if e.mountpoint == "/dev/kmsg" and e.fstype == "fuse.procfs"]

        assert len(kmsg_layers()) == 1
        first.stop()
        out = sb.run(["head", "-c", "1", "/dev/kmsg"], check=False)
        assert out.returncode != 0 and "not connected" in out.stderr
        second = serve_on(stack, mount, state_dir, "--no-kmsg")

        def repaired() -> bool:  # its other files too: a shard's repair may come after
            now = StateFile().find(sb.pid)
            return (now is not None and "dev/kmsg" not in now.files and not kmsg_layers()
                    and sees(sb, 96))

        wait_for(repaired, 15, f"not repaired:\n{second.log()}")
        assert sb.sh("ls -A /dev") == ""  # the empty twin it created is gone
        entry = StateFile().find(sb.pid)
        assert entry is not None and not entry.created


def test_docker_flags_bind_from_a_shard(two_workers: Server) -> None:
    """`docker run $(procfs docker-flags)`: a container's files from one shard, picked afresh
    for each, and dev/kmsg (served by the server only) from the server's mount; a compose list,
    shared by many containers, from the server's mount."""
    mount = two_workers.mountpoint
    shards = [s.mountpoint for s in shards_of(two_workers)]
    picked = set()
    for key in range(16):
        binds = dict(reversed(flag[3:].rsplit(":", 1)[0].split(":"))
                     for flag in docker_flags(mount, key=key).splitlines())
        assert binds["/dev/kmsg"] == f"{mount}/dev/kmsg"
        others = {src[:-len(dest)] for dest, src in binds.items() if dest != "/dev/kmsg"}
        assert len(others) == 1 and others <= set(shards), binds  # all from one shard
        picked |= others
    assert picked == set(shards)
    compose = yaml.safe_load(docker_flags(mount, compose=True))["x-procfs-volumes"]
    assert compose and all(bind.startswith(f"{mount}/") for bind in compose)


def test_shards_stop_when_their_server_is_killed(two_workers: Server) -> None:
    shard = shard_of(two_workers)
    two_workers.kill()  # SIGKILL: no chance to stop the shard itself
    wait_for(lambda: not is_mounted(shard.mountpoint), 10,
             "the shard still serves a server that is gone")
    wait_for(lambda: not shard.alive(), 10, "the shard process lives on")


def test_fewer_workers_after_a_restart_adopt_the_orphans(state_dir: Path,
                                                        make_cgroup: Callable[..., Cgroup]
                                                        ) -> None:
    """Restarted with --workers 1, the server attaches again, from its own mount, the
    containers its shard served before."""
    with ExitStack() as stack:
        mount = fresh_mount(stack)
        first = serve_on(stack, mount, state_dir, "--workers", "2")
        shard = shard_of(first)
        sb, mib = one_on_each(first, stack, make_cgroup)[shard.mountpoint]
        first.stop()  # the shard stops with it: its container's files answer ENOTCONN
        out = sb.run(["cat", "/proc/meminfo"], check=False)
        assert out.returncode != 0 and "not connected" in out.stderr
        second = serve_on(stack, mount, state_dir, "--workers", "1")

        def adopted() -> bool:
            # the binds come first, then the record (written once the attach child is done)
            entry = StateFile().find(sb.pid)
            return sees(sb, mib) and entry is not None and \
                entry.mountpoint == os.path.realpath(second.mountpoint)

        wait_for(adopted, 15, f"not adopted:\n{second.log()}")


def test_more_workers_after_a_restart_spread_the_containers_of_its_own_mount(
        state_dir: Path, make_cgroup: Callable[..., Cgroup]) -> None:
    """Attached by a one-process server, a container is attached again, after a restart with
    --workers 2, from a shard (its other files) and the server (dev/kmsg), and its record names
    the shard."""
    with ExitStack() as stack:
        mount = fresh_mount(stack)
        first = serve_on(stack, mount, state_dir, "--workers", "1")
        sb = stack.enter_context(Sandbox(make_cgroup(Limits(memory=96 * MIB)), None))
        r = procfs("attach", str(sb.pid), "--mount", mount)
        assert r.returncode == ExitCode.OK, r.stderr
        entry = StateFile().find(sb.pid)
        assert entry is not None and entry.mountpoint == os.path.realpath(mount)
        first.stop()
        second = serve_on(stack, mount, state_dir, "--workers", "2")
        record = ServerRecord.of(mount)
        assert record is not None

        def moved() -> bool:
            e = StateFile().find(sb.pid)
            return e is not None and e.mountpoint in record.shards

        wait_for(moved, 15, f"not moved to a shard:\n{second.log()}")
        assert free_total(sb) == 96 * MIB
        shard = StateFile().find(sb.pid).mountpoint  # type: ignore[union-attr]
        root = f"/proc/{sb.pid}/root"
        assert os.stat(f"{root}/proc/meminfo").st_dev == os.stat(shard).st_dev
        assert os.stat(f"{root}/dev/kmsg").st_dev == os.stat(mount).st_dev
        layers = [e for e in parse_mountinfo(Path(f"/proc/{sb.pid}/mountinfo").read_text())
                  if e.mountpoint == "/proc/meminfo"]
        assert len(layers) == 1  # the dead server's layer replaced, not covered


def test_a_restart_repairs_the_dev_kmsg_lent_to_a_shards_container(
        state_dir: Path, make_cgroup: Callable[..., Cgroup]) -> None:
    """Restarted, the server's shard starts (and repairs its containers' files) before the
    server mounts again; the server then binds, in the shard's container, the dev/kmsg it lends:
    one live layer of each file, each from its process, and the record still the shard's."""
    with ExitStack() as stack:
        mount = fresh_mount(stack)
        first = serve_on(stack, mount, state_dir, "--workers", "2")
        shard = shard_of(first)
        sb, mib = one_on_each(first, stack, make_cgroup)[shard.mountpoint]
        first.stop()
        out = sb.run(["head", "-c", "1", "/dev/kmsg"], check=False)
        assert out.returncode != 0 and "not connected" in out.stderr
        second = serve_on(stack, mount, state_dir, "--workers", "2")

        def layers() -> dict[str, list[str]]:
            with open(f"/proc/{sb.pid}/mountinfo") as f:
                found: dict[str, list[str]] = {}
                for e in parse_mountinfo(f.read()):
                    if e.fstype == "fuse.procfs" and e.mountpoint in ("/dev/kmsg", "/proc/meminfo"):
                        found.setdefault(e.mountpoint, []).append(e.dev)
                return found

        def dev(path: str) -> str:
            st = os.stat(path)
            return f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"

        def repaired() -> bool:
            now = layers()
            return (now.get("/dev/kmsg") == [dev(os.path.join(mount, "dev/kmsg"))]
                    and now.get("/proc/meminfo") == [dev(os.path.join(shard.mountpoint,
                                                                      "proc/meminfo"))])

        wait_for(repaired, 20, f"not repaired: {layers()}\n{second.log()}")
        assert free_total(sb) == mib * MIB
        r = procfs("kmsg", "--control-dir", str(state_dir), mount, "append", str(sb.pid), "back")
        assert r.returncode == 0, r.stderr
        if have("dmesg"):
            assert "back" in sb.run(["dmesg"]).stdout
        entry = StateFile().find(sb.pid)
        assert entry is not None and entry.mountpoint == shard.mountpoint
        assert "dev/kmsg" in entry.files and "proc/meminfo" in entry.files
        assert "Traceback" not in second.log()


def test_the_server_repairs_the_dev_kmsg_it_lends(two_workers: Server,
                                                  make_cgroup: Callable[..., Cgroup]) -> None:
    """The server's repair binds, in a container its shard serves, the files it lends (the
    shard's own repair does so too when the server already serves; this is the pass for when it
    did not), leaving the shard's files and the record as they were."""
    from procfs.attach.reattach import repair

    shard = shard_of(two_workers)
    with ExitStack() as stack:
        sb, mib = one_on_each(two_workers, stack, make_cgroup)[shard.mountpoint]
        before = StateFile().find(sb.pid)
        sb.sh("umount /dev/kmsg")
        out = [r for r in repair(two_workers.mountpoint, keep=[shard.mountpoint])
               if r["pid"] == sb.pid]  # the other container: the server's own, all kept
        assert out == [{"pid": sb.pid, "replaced": [], "kept": [], "bound": ["dev/kmsg"],
                        "dropped": []}], out
        kmsg_dev = os.stat(os.path.join(two_workers.mountpoint, "dev/kmsg")).st_dev
        assert os.stat(f"/proc/{sb.pid}/root/dev/kmsg").st_dev == kmsg_dev
        after = StateFile().find(sb.pid)
        assert before is not None and after is not None
        assert (after.mountpoint, after.files) == (before.mountpoint, before.files)
        assert free_total(sb) == mib * MIB
