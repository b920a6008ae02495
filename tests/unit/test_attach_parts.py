"""Issue 6, without a mount: the state file, the OCI state, mountinfo, the docker flags."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
import yaml

from procfs.attach.docker import RUNC_PROC_MOUNTS, docker_flags
from procfs.attach.errors import ExitCode
from procfs.attach.oci import BadState, HookState
from procfs.attach.state import Attachment, StateFile
from procfs.cli import parser
from procfs.cli.attach import EPILOG
from procfs.sources.hostproc import HostProc
from procfs.sources.mountinfo import parse_mountinfo


def me() -> Attachment:
    with open("/proc/self/stat") as f:
        start = int(f.read().rpartition(")")[2].split()[19])
    ns = os.stat("/proc/self/ns/pid").st_ino
    return Attachment(os.getpid(), start, ns, os.stat("/proc/self/ns/mnt").st_ino,
                      "/var/lib/procfs", files=("proc/meminfo",))


def test_state_records_forgets_and_prunes(tmp_path) -> None:
    state = StateFile(str(tmp_path / "run" / "attached.json"))
    assert state.load() == []
    live = me()
    dead = Attachment(live.pid, live.start_ticks + 1, 1, 2, "/m")  # same pid, other start
    state.merge(live, handled=live.files)
    state.merge(live, handled=live.files)  # one entry per process
    assert state.load() == [live]
    # a stale entry (the pid reused by another process) is pruned on the next write
    with open(state.path, "w") as f:
        json.dump({"version": 1, "attached": [dead.to_json(), live.to_json()]}, f)
    assert state.live() == [live]
    assert state.prune() == [live]
    assert state.load() == [live]
    state.forget(live.pid)
    assert state.load() == []
    assert sorted(os.listdir(tmp_path / "run")) == ["attached.json", "attached.json.lock"]


def test_state_merges_what_one_attach_handled_into_the_entry(tmp_path) -> None:
    """A server repairing the file it lends (dev/kmsg) in a shard's container records that file
    and keeps what the shard's attach recorded for the others; an unbound file leaves."""
    from dataclasses import replace

    state = StateFile(str(tmp_path / "attached.json"))
    shard = replace(me(), mountpoint="/run/procfs/shards/x/1",
                    files=("dev/kmsg", "proc/meminfo", "proc/stat"), created=("dev/kmsg",))
    state.merge(shard, handled=shard.files)
    lent = replace(shard, files=("dev/kmsg",), created=(), attached_at=1.0)
    state.merge(lent, handled=["dev/kmsg"])
    assert state.load() == [replace(shard, attached_at=1.0)]
    # restarted with --no-kmsg: dev/kmsg unbound and its created twin removed
    state.merge(replace(shard, files=("proc/meminfo",), created=()),
                handled=["proc/meminfo", "dev/kmsg"], uncreated=["dev/kmsg"])
    assert state.load() == [replace(shard, files=("proc/meminfo", "proc/stat"), created=())]
    # nothing recorded before: the entry holds what this attach did
    state.forget(shard.pid)
    state.merge(lent, handled=["dev/kmsg", "proc/meminfo"])
    assert state.load() == [lent]


@pytest.mark.parametrize("text", ["{not json", "", '{"attached": 3}', '{"attached": [{"pid": 1',
                                  '[1, 2]', '{"attached": [{"bogus": 1}]}', "\x00\x01garbage"])
def test_a_bad_state_file_is_set_aside(tmp_path, caplog: pytest.LogCaptureFixture,
                                       text: str) -> None:
    """Empty, truncated or garbage: moved aside with a log line, and attaching goes on (it
    used to make every attach fail until someone deleted the file)."""
    path = tmp_path / "attached.json"
    path.write_text(text)
    state = StateFile(str(path))
    with caplog.at_level(logging.WARNING):
        assert state.load() == []
    assert not path.exists() and "moved aside" in caplog.text
    (aside,) = tmp_path.glob("attached.json.bad-*")
    assert aside.read_text() == text  # kept for a look
    state.merge(me(), handled=me().files)  # and the next attach records afresh
    assert state.find(os.getpid()) is not None


def test_attachment_round_trips_and_ignores_unknown_keys() -> None:
    a = me()
    assert Attachment.from_json({**a.to_json(), "future": 1}) == a


def test_mountinfo_parser_unescapes_and_skips_optional_fields() -> None:
    text = ("36 35 0:41 / /var/lib/procfs rw,nosuid shared:7 master:1 - fuse.procfs procfs rw\n"
            "90 36 0:41 /proc/meminfo /tmp/my\\040root/proc/meminfo rw - fuse.procfs procfs rw\n"
            "garbage line\n")
    a, b = parse_mountinfo(text)
    assert (a.mount_id, a.dev, a.root, a.mountpoint, a.fstype) == (
        36, "0:41", "/", "/var/lib/procfs", "fuse.procfs")
    assert b.mountpoint == "/tmp/my root/proc/meminfo" and b.root == "/proc/meminfo"


def test_oci_state_parsing(tmp_path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(
        {"root": {"path": "rootfs"}, "annotations": {"io.procfs.disable": "no"}}))
    state = HookState.parse(json.dumps({"ociVersion": "1.0.2", "id": "c1", "pid": 42,
                                        "bundle": str(bundle), "status": "creating"}).encode())
    config = state.config()
    assert state.rootfs(config) == str(bundle / "rootfs")
    assert not state.disabled(config)
    config["root"]["path"] = "/abs/root"
    assert state.rootfs(config) == "/abs/root"
    opted_out = HookState.parse(json.dumps({"pid": 42, "bundle": str(bundle), "annotations":
                                            {"io.procfs.disable": "TRUE"}}).encode())
    assert opted_out.disabled(config)
    for bad, why in ((b"[", "not JSON"), (b"[]", "not a JSON object"),
                     (b'{"bundle": "/x"}', "no pid"), (b'{"pid": 3}', "no bundle")):
        with pytest.raises(BadState, match=why):
            HookState.parse(bad)
    with pytest.raises(BadState, match="cannot read"):
        HookState.parse(b'{"pid": 3, "bundle": "/nonexistent"}').config()
    for bad in (b'{"pid": -1, "bundle": "/x"}', b'{"pid": true, "bundle": "/x"}'):
        with pytest.raises(BadState, match="no pid"):
            HookState.parse(bad)


def test_oci_state_with_pid_0_is_the_hooks_own_init() -> None:
    """crun's createContainer state: pid 0, the hook inside the container. Outside a child pid
    namespace (here) there is no container to attach."""
    state = HookState.parse(b'{"pid": 0, "bundle": "/b"}')
    assert state.pid == 0
    if len(HostProc().status("self").nspid) <= 1:  # type: ignore[arg-type]
        with pytest.raises(BadState, match="pid 0"):
            state.target(HostProc())


def test_docker_flags_from_the_registry_match_runcs_rules(tmp_path) -> None:
    """No server at the mount: the list comes from the registry; every bind is one runc takes."""
    flags = docker_flags(str(tmp_path / "nomount")).splitlines()
    binds = [f.removeprefix("-v ").split(":") for f in flags]
    assert ["proc/meminfo" in s for s, _, _ in binds].count(True) == 1
    for source, dest, mode in binds:
        assert source == str(tmp_path / "nomount") + dest and mode == "rw"
        assert not dest.startswith("/proc/") or dest[1:] in RUNC_PROC_MOUNTS
    compose = yaml.safe_load(docker_flags(str(tmp_path / "nomount"), compose=True,
                                          host_mount="/var/lib/procfs", services=["a", "b"]))
    volumes = compose["x-procfs-volumes"]
    assert len(volumes) == len(flags) and all(v.startswith("/var/lib/procfs/") for v in volumes)
    assert compose["services"] == {"a": {"volumes": volumes}, "b": {"volumes": volumes}}
    alone = yaml.safe_load(docker_flags(str(tmp_path / "nomount"), compose=True))
    assert alone["services"] == {} and alone["version"]  # compose refuses {} without a version


def test_cli_documents_exit_codes_and_parses() -> None:
    for code in ExitCode:
        assert f"{code.value} " in EPILOG
    args = parser().parse_args(["attach", "init", "--rootfs", "/r", "--mount", "/m"])
    assert (args.pid, args.rootfs, args.mount) == ("init", "/r", "/m")
    assert parser().parse_args(["detach", "12"]).pid == 12
    r = subprocess.run([sys.executable, "-m", "procfs", "attach", "x"], capture_output=True,
                       text=True)
    assert r.returncode == ExitCode.USAGE and "not a pid" in r.stderr


def test_oci_hook_with_bad_input_lets_the_container_start(tmp_path) -> None:
    r = subprocess.run([sys.executable, "-m", "procfs", "oci-hook", "--state",
                        str(tmp_path / "s.json")], input="nope", capture_output=True, text=True)
    assert r.returncode == 0 and "not JSON" in r.stderr
    r = subprocess.run([sys.executable, "-m", "procfs", "oci-hook", "--strict"], input="nope",
                       capture_output=True, text=True)
    assert r.returncode == ExitCode.USAGE


def test_attaches_of_one_pid_take_turns(tmp_path) -> None:
    """A server and its shard repairing one container at once: the second waits for the first
    (an flock on the pid's lock file beside the state file); other pids do not wait."""
    import fcntl

    from procfs.attach.attach import LOCKS, Attacher

    attacher = Attacher("/nowhere", StateFile(str(tmp_path / "attached.json")))

    def locked(pid: int) -> bool:
        fd = os.open(tmp_path / "locks" / f"attach-{pid % LOCKS}", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    with attacher._one_at_a_time(4242):
        assert locked(4242) and locked(4242 + LOCKS) and not locked(4243)
    assert not locked(4242)
