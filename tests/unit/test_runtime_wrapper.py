"""procfs-runc's settings, its search for the runtime and for `procfs`, the listener probe, the
runtimes' state files, the time offsets, and the pass-through itself (with a stand-in runtime
that reports what it was given)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from procfs.runtime import container_init, timens, wrapper
from procfs.runtime.settings import DEFAULTS, Settings, load, resolve_runtime

WRAPPER = os.path.join(os.path.dirname(sys.executable), "procfs-runc")


def test_settings_precedence(tmp_path: Path) -> None:
    warnings: list[str] = []
    assert load({"PROCFS_RUNTIME_CONFIG": str(tmp_path / "none.json")}, warnings.append) \
        == Settings("runc", "/var/lib/procfs", "/run/procfs/sysinfo.sock", None)
    f = tmp_path / "runtime.json"
    f.write_text(json.dumps({"runtime": "/usr/bin/crun", "mount": "/srv/procfs",
                             "state": "/srv/state.json"}))
    env = {"PROCFS_RUNTIME_CONFIG": str(f)}
    assert load(env, warnings.append) == Settings("/usr/bin/crun", "/srv/procfs",
                                                  "/run/procfs/sysinfo.sock", "/srv/state.json")
    env |= {"PROCFS_MOUNT": "/env/mnt", "PROCFS_SYSINFO_SOCKET": "/env/s", "PROCFS_RUNTIME": ""}
    assert load(env, warnings.append) == Settings("/usr/bin/crun", "/env/mnt", "/env/s",
                                                  "/srv/state.json")
    assert warnings == []
    for bad in ("{", "[]", json.dumps({"runtime": 3, "colour": "red"})):
        f.write_text(bad)
        assert load(env, warnings.append).runtime == DEFAULTS["runtime"]
    assert len(warnings) == 4  # one line each, and the container still runs


def test_runtime_search_skips_the_wrapper_itself(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    me = first / "runc"  # procfs-runc installed under runc's name, first in PATH
    me.write_text("#!/bin/sh\n")
    me.chmod(0o755)
    real = second / "runc"
    real.write_text("#!/bin/sh\n")
    real.chmod(0o755)
    path = f"{first}:{second}"
    assert resolve_runtime("runc", path, avoid=str(me)) == str(real)
    assert resolve_runtime("runc", path, avoid="/nonexistent") == str(me)
    assert resolve_runtime("nothing-called-this", path, avoid=str(me)) is None
    assert resolve_runtime("/opt/x/runc", path, avoid=str(me)) == "/opt/x/runc"


def test_procfs_beside_the_wrapper(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/procfs").write_text("#!/bin/sh\n")
    (tmp_path / "bin/procfs").chmod(0o755)
    (tmp_path / "bin/procfs-runc").write_text("")
    (tmp_path / "sbin").mkdir()
    (tmp_path / "sbin/procfs-runc").symlink_to(tmp_path / "bin/procfs-runc")
    assert wrapper.procfs_command(str(tmp_path / "bin/procfs-runc")) \
        == (str(tmp_path / "bin/procfs"), ["procfs"])
    # through a symlink: beside the file it points at
    assert wrapper.procfs_command(str(tmp_path / "sbin/procfs-runc"))[0] \
        == str(tmp_path / "bin/procfs")
    assert wrapper.procfs_command(str(tmp_path / "sbin/elsewhere")) \
        == (sys.executable, [sys.executable, "-m", "procfs"])


def test_listener_probe(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    assert not wrapper.listener_answers(path)  # nothing there
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(path)
        assert not wrapper.listener_answers(path)  # bound, not listening: refused
        s.listen(1)
        assert wrapper.listener_answers(path)
    assert not wrapper.listener_answers(path)  # its server gone, the file left behind
    (tmp_path / "plain").write_text("")
    assert not wrapper.listener_answers(str(tmp_path / "plain"))


def test_runtime_state_files(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a/state.json").write_text(json.dumps(
        {"id": "a", "init_process_pid": 4242, "init_process_start": 123456}))
    (tmp_path / "b").mkdir()
    (tmp_path / "b/status").write_text(json.dumps({"pid": 77, "process-start-time": 99}))
    (tmp_path / "c").mkdir()
    (tmp_path / "c/state.json").write_text("{")
    assert container_init.recorded(str(tmp_path), "a") == container_init.InitRecord(4242,
                                                                                    123456)
    assert container_init.recorded(str(tmp_path), "b") == container_init.InitRecord(77, 99)
    for cid in ("c", "missing", "", "..", "a/../a"):
        assert container_init.recorded(str(tmp_path), cid) is None
    assert container_init.kind("/usr/bin/crun") == "crun"
    assert container_init.kind("/usr/sbin/runc") == "runc"
    assert container_init.default_root("runc", {"XDG_RUNTIME_DIR": "/run/user/1"}, 0) \
        == "/run/runc"
    assert container_init.default_root("runc", {"XDG_RUNTIME_DIR": "/run/user/1"}, 1000) \
        == "/run/user/1/runc"
    assert container_init.default_root("crun", {"XDG_RUNTIME_DIR": "/run/user/1"}, 0) \
        == "/run/user/1/crun"
    assert container_init.default_root("crun", {}, 0) == "/run/crun"


def test_offsets_put_the_clocks_at_zero() -> None:
    text = timens.offsets_from_zero(5_250_000_000, 1_000_000_007_123)
    # whole clock ticks (10 ms at 100 Hz): the clocks start between 0 and a tick
    assert text == "1 -6 750000000\n7 -1000 0\n"
    for line in text.splitlines():
        _, _secs, nsecs = line.split()
        assert 0 <= int(nsecs) < 10**9
    assert timens.offsets_from_zero(0, 3_000_000_000) == "1 0 0\n7 -3 0\n"


def test_offsets_read_back() -> None:
    assert timens.parse_offsets("monotonic       -4525 433107513\n"
                                "boottime        86400         0\n") \
        == (-4525 * 10**9 + 433107513, 86400 * 10**9)
    assert timens.parse_offsets("1 -6 750000000\n7 -1001 999999877\n") \
        == (-5_250_000_000, -1_000_000_000_123)  # clock ids (before Linux 5.7): ours, back
    assert timens.parse_offsets("") == (0, 0)


STAND_IN = """#!/bin/sh
# a runtime that reports what it was given
printf '%s\\n' "$0" "$@" > "$REPORT"
ls /proc/$$/fd >> "$REPORT"
grep '^SigIgn' /proc/$$/status >> "$REPORT"
exit 42
"""


def test_passthrough_is_an_exec(tmp_path: Path) -> None:
    """Arguments unchanged, the runtime's exit status, inherited descriptors, and no signal
    left ignored that the caller had not ignored."""
    runtime = tmp_path / "fake-runc"
    runtime.write_text(STAND_IN)
    runtime.chmod(0o755)
    report = tmp_path / "report"
    args = ["--root", str(tmp_path / "root"), "--log-format=json", "exec", "--preserve-fds",
            "1", "--pid-file", "/p", "absent", "sh", "-c", "echo 'a b'"]
    r, w = os.pipe()
    try:
        proc = subprocess.run(
            [WRAPPER, *args], pass_fds=(w,), capture_output=True, text=True, timeout=30,
            env={"PATH": os.environ["PATH"], "PROCFS_RUNTIME": str(runtime),
                 "REPORT": str(report), "PROCFS_RUNTIME_CONFIG": str(tmp_path / "none")},
            preexec_fn=lambda: signal.signal(signal.SIGPIPE, signal.SIG_DFL))
    finally:
        os.close(r)
        os.close(w)
    assert proc.returncode == 42, proc.stderr
    assert proc.stderr == ""
    lines = report.read_text().splitlines()
    assert lines[:len(args) + 1] == [str(runtime), *args]
    assert str(w) in lines[len(args) + 1:-1]  # the descriptor the caller passed
    sigign = int(lines[-1].split()[1], 16)
    assert not sigign & (1 << (signal.SIGPIPE - 1))  # Python's own SIG_IGN does not leak
    assert not sigign & (1 << (signal.SIGXFSZ - 1))


def test_missing_runtime_is_reported(tmp_path: Path) -> None:
    proc = subprocess.run([WRAPPER, "state", "x"], capture_output=True, text=True, timeout=30,
                          env={"PATH": str(tmp_path), "PROCFS_RUNTIME": "no-such-runc",
                               "PROCFS_RUNTIME_CONFIG": str(tmp_path / "none")})
    assert proc.returncode == 127
    assert "no runtime 'no-such-runc'" in proc.stderr


@pytest.mark.skipif(not os.path.exists(WRAPPER), reason="procfs-runc is not installed")
def test_installed_beside_procfs() -> None:
    assert os.access(os.path.join(os.path.dirname(WRAPPER), "procfs"), os.X_OK)
