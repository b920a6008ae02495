"""Issue 8 acceptance: reloads under load, kill -9 + restart repairs attached containers, a
failing renderer answers one read and the server goes on, new code goes into service.

Each test runs its own server with a state directory of its own (PROCFS_STATE_DIR)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from procfs.attach.attach import Attacher
from procfs.attach.state import StateFile
from procfs.server.shards import served_by
from tests.support.sandbox import Limits, Sandbox, Server, container, served_paths

MIB = 1 << 20
REPO = Path(__file__).resolve().parents[2]

# Runs inside a container: read /proc/meminfo in a loop until the stop file appears; count
# failed reads and malformed or foreign values.
MEMINFO_READER = r"""
import json, os, re, sys
stop, expect = sys.argv[1], int(sys.argv[2])
line = re.compile(r"^[A-Za-z0-9_()]+:\s+\d+( kB)?$")
reads = errors = bad = 0
notes = []
while not os.path.exists(stop):
    try:
        with open("/proc/meminfo") as f:
            text = f.read()
    except OSError as e:
        errors += 1
        notes.append(repr(e))
        continue
    reads += 1
    rows = text.splitlines()
    values = {r.split(":")[0]: int(r.split()[1]) for r in rows if line.match(r)}
    if (not rows or len(values) != len(rows) or values.get("MemTotal") != expect
            or not 0 <= values.get("MemAvailable", -1) <= expect):
        bad += 1
        notes.append(text[:300])
print(json.dumps({"reads": reads, "errors": errors, "bad": bad, "notes": notes[:5]}))
"""


# Opens /proc/meminfo, reads it, waits for a line on stdin, then reads the same fd again.
HOLDER = """
import os, sys
fd = os.open("/proc/meminfo", os.O_RDONLY)
os.read(fd, 65536)
print("open", flush=True)
sys.stdin.readline()
try:
    os.pread(fd, 65536, 0)
except OSError as e:
    print(e.errno)
else:
    print("ok")
"""


@pytest.fixture
def own_server(state_dir: Path) -> Iterator[Server]:
    with Server() as srv:
        yield srv


def procfs_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "procfs", *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd, check=False)


def mem_total(sb: Sandbox) -> int:
    return int(sb.sh("head -1 /proc/meminfo").split()[1])


def test_reload_five_times_under_load(own_server: Server, tmp_path: Path) -> None:
    stop = tmp_path / "stop"
    limits = [64, 96, 128]
    with ExitStack() as stack:
        readers = []
        for mib in limits:
            sb = stack.enter_context(container(own_server.mountpoint, Limits(memory=mib * MIB)))
            p = sb.popen(["python3", "-c", MEMINFO_READER, str(stop), str(mib * 1024)],
                         stdout=subprocess.PIPE)
            readers.append(p)
            stack.callback(lambda p=p: p.poll() is None and p.kill())
        time.sleep(0.3)  # the readers are reading
        times = []
        for _ in range(5):
            done = procfs_cli("reload", "--mount", own_server.mountpoint)
            assert done.returncode == 0, done.stderr + done.stdout
            assert "reloaded" in done.stdout
            times.append(done.stdout)
            time.sleep(0.2)
        stop.touch()
        results = [json.loads(p.communicate(timeout=30)[0]) for p in readers]
    for r in results:
        assert r["reads"] > 20, r
        assert r["errors"] == 0 and r["bad"] == 0, r
    # Each process reloads: the server and, with --workers auto on several CPUs, its shards.
    assert own_server.log().count("reloaded") == 5 * len(served_by(own_server.mountpoint))


def test_kill9_then_restart_repairs_attached(state_dir: Path) -> None:
    with ExitStack() as stack:
        # Control sockets in the test's directory: the killed server leaves its own behind.
        first = Server(args=["--control-dir", str(state_dir)])
        stack.callback(first.stop)
        first.start()
        mount = first.mountpoint
        files = served_paths(mount)
        boxes = {mib: stack.enter_context(container(mount, Limits(memory=mib * MIB)))
                 for mib in (64, 128)}
        gone = Sandbox(None, mount).start()  # attached, then vanishes before the restart
        stack.callback(gone.stop)
        attacher = Attacher(mount, StateFile())  # as `procfs attach PID` records them
        for sb in [*boxes.values(), gone]:
            assert sorted(attacher.attach(sb.pid).kept) == files
        for mib, sb in boxes.items():
            assert mem_total(sb) == mib * 1024
        # A reader that keeps its file open across the crash (as top does).
        holder = boxes[64].popen(["python3", "-c", HOLDER], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stack.callback(lambda: holder.poll() is None and holder.kill())
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"

        first.kill()
        gone_pid = gone.pid
        gone.stop()
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{gone_pid}") and time.monotonic() < deadline:
            time.sleep(0.05)  # reaped by whoever inherited it
        for sb in boxes.values():  # between the crash and the repair: ENOTCONN
            out = sb.run(["cat", "/proc/meminfo"], check=False)
            assert out.returncode != 0 and "not connected" in out.stderr

        t0 = time.monotonic()
        second = Server(mountpoint=mount, args=["--control-dir", str(state_dir)])
        stack.callback(second.stop)
        second.start()
        pending = dict(boxes)
        while pending and time.monotonic() - t0 < 5.0:
            for mib, sb in list(pending.items()):
                out = sb.run(["head", "-1", "/proc/meminfo"], check=False)
                if out.returncode == 0 and int(out.stdout.split()[1]) == mib * 1024:
                    del pending[mib]
        elapsed = time.monotonic() - t0
        assert not pending, f"not repaired after {elapsed:.1f} s:\n{second.log()}"
        print(f"repaired in {elapsed:.2f} s")
        for mib, sb in boxes.items():  # every file, not only meminfo
            out = sb.run(["grep", "-c", "^processor", "/proc/cpuinfo"], check=False)
            assert out.returncode == 0, out.stderr + second.log()
            assert mem_total(sb) == mib * 1024
        # the repair's report is logged when its child process has exited, which can be
        # a little after the mounts it replaced answer
        lines = []
        while len(lines) < len(boxes) and time.monotonic() - t0 < 10.0:
            lines = [json.loads(line[line.index("{"):])
                     for line in second.log().splitlines() if "reattach: {" in line]
            time.sleep(0.05)
        assert sorted(r["pid"] for r in lines) == sorted(sb.pid for sb in boxes.values())
        assert all(sorted(r["replaced"]) == files for r in lines)  # and the vanished skipped
        assert [a.pid for a in StateFile().load()] == [sb.pid for sb in boxes.values()]
        # A file opened before the crash stays dead: only a new open reaches the new server.
        out, err = holder.communicate("go\n", timeout=10)
        assert out.strip() == "107", err  # ENOTCONN


def _copy_code(dest: Path) -> Path:
    for pkg in ("procfs", "overlays"):
        shutil.copytree(REPO / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def test_new_code_and_failing_renderers(state_dir: Path, tmp_path: Path) -> None:
    """The server runs a copy of the code; the test edits the copy and reloads, as an upgrade
    would: a new line appears; then a renderer that raises (a container gets its last rendering
    of the file, or an error when it had none: never the host's file); then a host reader that
    raises (a host read fails); then a syntax error (reload refused, the old code still
    serves); then the original code again."""
    code = _copy_code(tmp_path / "code")
    meminfo_py = code / "overlays" / "meminfo.py"
    hostproc_py = code / "procfs" / "sources" / "hostproc.py"
    original = {p: p.read_text() for p in (meminfo_py, hostproc_py, code / "overlays/swaps.py")}

    def reload() -> subprocess.CompletedProcess[str]:
        return procfs_cli("reload", "--mount", srv.mountpoint, cwd=code)

    with Server(cwd=str(code)) as srv, container(srv.mountpoint,
                                                 Limits(memory=64 * MIB)) as sb:
        assert mem_total(sb) == 65536
        _edit(meminfo_py, "return (template % tuple(own[name] for name in names)).encode()",
              "return (template % tuple(own[name] for name in names)"
              " + 'Upgraded:              1 kB\\n').encode()")
        assert reload().returncode == 0
        assert "Upgraded:" in sb.sh("cat /proc/meminfo") and mem_total(sb) == 65536

        _edit(meminfo_py, "def render(snap: MeminfoSnapshot) -> bytes:\n",
              "def render(snap: MeminfoSnapshot) -> bytes:\n"
              "    raise RuntimeError('injected fault')\n")
        assert reload().returncode == 0
        assert "Upgraded:" in sb.sh("cat /proc/meminfo") and mem_total(sb) == 65536
        assert "injected fault" in srv.log() and "serving its last rendering" in srv.log()
        with container(srv.mountpoint, Limits(memory=32 * MIB)) as fresh:  # it had none
            out = fresh.run(["cat", "/proc/meminfo"], check=False)
            assert out.returncode != 0 and "Input/output error" in out.stderr
        assert sb.sh("cat /sys/devices/system/cpu/online").strip()  # the rest serves

        _edit(hostproc_py, "return lambda: self.text(name).encode()",
              "return lambda: (_ for _ in ()).throw(RuntimeError('host fault ' + name))")
        assert reload().returncode == 0
        with pytest.raises(OSError):  # the host's own read of it
            (Path(srv.mountpoint) / "proc/meminfo").read_text()
        assert "host fault meminfo" in srv.log()
        assert sb.sh("grep -c ^processor /proc/cpuinfo").strip().isdigit()

        _edit(code / "overlays/swaps.py", "HEADER =", "HEADER = (")
        done = reload()
        assert done.returncode == 1 and "reload failed" in done.stdout
        assert "Upgraded:" in sb.sh("cat /proc/meminfo")  # still the old code's answer

        for path, text in original.items():
            path.write_text(text)
        assert reload().returncode == 0
        assert mem_total(sb) == 65536 and "Upgraded" not in sb.sh("cat /proc/meminfo")
        assert srv.proc is not None and srv.proc.poll() is None


def test_second_server_refused_while_first_lives(own_server: Server) -> None:
    done = procfs_cli("serve", own_server.mountpoint)
    assert done.returncode == 2 and "served by pid" in done.stderr
    assert os.path.ismount(own_server.mountpoint)
