"""Issue 20's program matrix (docs/programs.md): the programs people run in containers, run
inside a real container (a cgroup of its own limited to 256 MiB and cpuset CPU 0, new pid and
mount namespaces, the served files bound), show the container's numbers where the matrix says
they are right. A test skips when its program is not installed.

PROCFS_TEST_UNBOUND=1 runs the same containers without the served files: the tests of numbers
procfs provides then fail, which is what the matrix's "no procfs" column records (numbers read
from cgroup files or sched_getaffinity stay right: nproc's, the JVM's, node's
availableParallelism and constrainedMemory)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from procfs.server.control import request, socket_path
from tests.support.sandbox import Limits, Sandbox, Server, container, have

from .oci_bundle import Bundle, ensure_runc
from .runtime_support import WRAPPER, Container, wrapper_env

MIB = 1 << 20
LIMIT = 256 * MIB
LIMIT_KIB = LIMIT // 1024
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, where python3-psutil is installed
LIMITS = Limits(memory=LIMIT, cpus="0")


def unbound() -> bool:
    return bool(os.environ.get("PROCFS_TEST_UNBOUND"))


@pytest.fixture
def box(server: Server) -> Iterator[Sandbox]:
    """A fresh container: 256 MiB, CPU 0, every served file bound."""
    with container(None if unbound() else server.mountpoint, LIMITS) as sb:
        yield sb


def need(*programs: str) -> None:
    missing = [p for p in programs if not have(p)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")


def columns(out: str, header_word: str) -> dict[str, str]:
    """The first row after the header line holding `header_word`, by column name."""
    lines = out.splitlines()
    i = next(i for i, line in enumerate(lines) if header_word in line.split())
    return dict(zip(lines[i].split(), lines[i + 1].split(), strict=True))


def test_procps_free_top_uptime_vmstat(box: Sandbox) -> None:
    """free, top and vmstat read /proc/meminfo; top and uptime /proc/uptime and /proc/loadavg;
    top's CPU lines are the cpuN lines of /proc/stat."""
    need("free", "top", "uptime", "vmstat")
    mem = box.sh("free -b").splitlines()[1].split()
    assert mem[0] == "Mem:" and int(mem[1]) == LIMIT, mem
    assert 0 < int(mem[6]) <= LIMIT and int(mem[3]) <= LIMIT, mem  # available, free
    header = box.sh("top -bn1 -1 -w 512 | head -n 5")
    assert re.search(r"^MiB Mem :\s+256\.0 total,", header, re.M), header
    assert re.findall(r"^%Cpu\d+", header, re.M) == ["%Cpu0"], header
    assert re.search(r"^top - \S+ up 0 min,", header), header
    assert " up 0 min," in box.sh("uptime")
    vm = columns(box.sh("vmstat"), "free")
    assert int(vm["free"]) + int(vm["buff"]) + int(vm["cache"]) <= LIMIT_KIB, vm


def test_ps_in_a_time_namespace(server: Server) -> None:
    """ps %MEM is RSS over MemTotal (/proc/meminfo); ELAPSED is /proc/uptime minus the start
    time in /proc/PID/stat, on one clock only in a time namespace whose boot clock starts with
    the container (procfs-runc makes one; here unshare --time does)."""
    need("ps")
    with open("/proc/uptime") as f:
        offset = -int(float(f.read().split()[0]))
    started = time.monotonic()
    with container(None if unbound() else server.mountpoint, LIMITS,
                   boottime_offset=offset) as sb:
        etimes, pmem, rss = sb.sh("ps -o etimes=,pmem=,rss= -p 1").split()
        assert 0 <= int(etimes) <= time.monotonic() - started + 2, etimes
        assert abs(float(pmem) - int(rss) * 100 / LIMIT_KIB) <= 0.1, (pmem, rss)


def test_sysstat_mpstat_iostat_sar(box: Sandbox) -> None:
    """mpstat and iostat count the cpuN directories of /sys/devices/system/cpu and read
    /proc/stat; sar -r reads /proc/meminfo. (iostat -d reads /sys/block/*/stat, the host's:
    not asserted, see docs/programs.md.)"""
    need("mpstat")
    env = "LC_ALL=C S_TIME_FORMAT=ISO "
    out = box.sh(env + "mpstat -P ALL")
    assert "(1 CPU)" in out.splitlines()[0], out
    rows = [r.split() for r in out.splitlines()[3:] if r.strip()]
    assert [r[1] for r in rows] == ["all", "0"], rows
    if have("iostat"):
        assert "(1 CPU)" in box.sh(env + "iostat -c").splitlines()[0]
    if have("sar"):
        mem = columns(box.sh(env + "sar -r 1 1"), "kbmemfree")
        assert 0 < int(mem["kbmemfree"]) <= LIMIT_KIB, mem
        assert 0 < int(mem["kbavail"]) <= LIMIT_KIB, mem


def test_util_linux_and_coreutils(box: Sandbox) -> None:
    """lscpu reads /sys/devices/system/cpu (online, cpuN); glibc's _NPROCESSORS_ONLN `online`,
    _NPROCESSORS_CONF the cpuN directories; nproc sched_getaffinity (right without procfs),
    nproc --all _NPROCESSORS_CONF; dmesg /dev/kmsg."""
    need("lscpu", "nproc", "getconf")
    lscpu = dict(line.split(":", 1) for line in box.sh("LC_ALL=C lscpu").splitlines()
                 if ":" in line)
    assert lscpu["CPU(s)"].strip() == "1", lscpu
    assert lscpu["On-line CPU(s) list"].strip() == "0", lscpu
    assert [x for x in box.sh("lscpu -p=CPU").splitlines() if not x.startswith("#")] == ["0"]
    assert box.sh("nproc").strip() == "1"
    assert box.sh("nproc --all").strip() == "1"
    assert box.sh("getconf _NPROCESSORS_ONLN").strip() == "1"
    assert box.sh("getconf _NPROCESSORS_CONF").strip() == "1"
    if have("dmesg"):
        host_mark, own_mark = (f"procfs-test-{who}-{uuid.uuid4().hex[:8]}"
                               for who in ("host", "own"))
        with open("/dev/kmsg", "w") as kmsg:  # the host's ring
            kmsg.write(host_mark + "\n")
        box.sh(f"echo {own_mark} > /dev/kmsg")
        log = box.sh("dmesg")
        assert own_mark in log and host_mark not in log, log[-2000:]


def test_busybox(box: Sandbox) -> None:
    """busybox top reads /proc/meminfo, /proc/stat and /proc/loadavg; nproc --all counts the
    cpuN directories; cat reads with sendfile; free's available column is /proc/meminfo's
    (its other columns and busybox uptime are sysinfo(2): see the procfs-runc test)."""
    need("busybox")
    mem = re.search(r"^Mem: (\d+)K used, (\d+)K free", box.sh("busybox top -bn1 | head -n 1"))
    assert mem is not None
    assert int(mem.group(1)) + int(mem.group(2)) == LIMIT_KIB, mem.group(0)
    assert box.sh("busybox nproc").strip() == "1"
    assert box.sh("busybox nproc --all").strip() == "1"
    assert re.match(rf"MemTotal: +{LIMIT_KIB} kB\n", box.sh("busybox cat /proc/meminfo"))
    available = box.sh("busybox free").splitlines()[1].split()[6]
    assert 0 < int(available) <= LIMIT_KIB, available


def test_htop_under_tmux(box: Sandbox) -> None:
    """htop 3.2 reads /proc/meminfo, /proc/stat, /proc/uptime, /proc/loadavg and counts the
    cpuN directories; its screen, captured from a detached tmux."""
    need("htop", "tmux")
    with tempfile.TemporaryDirectory(prefix="procfs-test-htop-") as home:
        sock = os.path.join(home, "tmux.sock")
        tmux = f"tmux -S {sock} -f /dev/null"
        # HOME of its own: htop may write its settings there when it ends. A second of the
        # container's life first: htop shows an uptime of 0 s as "(unknown)".
        screen = box.sh(textwrap.dedent(f"""\
            export HOME={home} TERM=xterm
            sleep 1
            {tmux} new-session -d -x 200 -y 40 htop
            for i in $(seq 50); do
                s=$({tmux} capture-pane -p)
                case "$s" in *Uptime:*) break;; esac
                sleep 0.2
            done
            sleep 0.5
            {tmux} capture-pane -p
            {tmux} kill-server
            """), timeout=60)
    assert re.search(r"Mem\[[^\]]*/256M\]", screen), screen
    assert re.search(r"\bCPU\[", screen) and not re.search(r"^\s*[01]\[", screen, re.M), screen
    up = re.search(r"Uptime: (\d\d):(\d\d):(\d\d)\s*$", screen, re.M)
    assert up is not None and up.group(1) == "00" and up.group(2) == "00", screen


PSUTIL_PROBE = textwrap.dedent("""\
    import json, os, time, psutil
    print(json.dumps({
        "init_started": psutil.Process(1).create_time(),  # /proc/1/stat's start + btime
        "now": time.time(),
        "total": psutil.virtual_memory().total,
        "available": psutil.virtual_memory().available,
        "cpu_count": psutil.cpu_count(),
        "cores": psutil.cpu_count(logical=False),
        "percpu": len(psutil.cpu_percent(interval=0.2, percpu=True)),
        "os_cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
    }))
""")


def test_python_psutil(box: Sandbox) -> None:
    """psutil reads /proc/meminfo, /proc/stat and /sys/devices/system/cpu; os.cpu_count() is
    glibc's _NPROCESSORS_ONLN (`online`), os.sched_getaffinity the kernel's cpuset."""
    if not os.path.exists(SYSTEM_PYTHON) or subprocess.run(
            [SYSTEM_PYTHON, "-c", "import psutil"], capture_output=True).returncode != 0:
        pytest.skip("python3-psutil not installed")
    got = json.loads(box.run([SYSTEM_PYTHON, "-c", PSUTIL_PROBE]).stdout)
    assert got["total"] == LIMIT and 0 < got["available"] <= LIMIT, got
    assert got["cpu_count"] == got["cores"] == got["percpu"] == 1, got
    assert got["os_cpu_count"] == got["affinity"] == 1, got
    # the container's init started with the box, before the probe: not in the future (btime
    # was now - the container's uptime, so start times were ahead by the host's uptime)
    assert got["now"] - 120 <= got["init_started"] <= got["now"], got


NODE_PROBE = textwrap.dedent("""\
    const os = require('os');
    console.log(JSON.stringify({
      totalmem: os.totalmem(), freemem: os.freemem(), cpus: os.cpus().length,
      uptime: os.uptime(),
      parallelism: os.availableParallelism ? os.availableParallelism() : null,
      constrained: process.constrainedMemory ? process.constrainedMemory() : null}));
""")


def test_node(box: Sandbox) -> None:
    """libuv: totalmem/freemem from /proc/meminfo, cpus() from /proc/stat, uptime from
    /proc/uptime; availableParallelism is sched_getaffinity, constrainedMemory the cgroup's
    memory.limit_in_bytes / memory.max read directly."""
    need("node")
    started = time.monotonic()
    got = json.loads(box.run(["node", "-e", NODE_PROBE], timeout=60).stdout)
    assert got["totalmem"] == LIMIT and 0 < got["freemem"] <= LIMIT, got
    assert got["cpus"] == 1, got
    assert 0 <= got["uptime"] <= time.monotonic() - started + 5, got
    assert got["parallelism"] in (1, None), got
    assert got["constrained"] in (LIMIT, None), got


JAVA_PROBE = textwrap.dedent("""\
    import java.lang.management.ManagementFactory;
    public class Probe {
        public static void main(String[] args) {
            var os = (com.sun.management.OperatingSystemMXBean)
                ManagementFactory.getOperatingSystemMXBean();
            Runtime rt = Runtime.getRuntime();
            System.out.println(rt.availableProcessors() + " " + rt.maxMemory() + " "
                + os.getTotalMemorySize() + " " + os.getFreeMemorySize());
        }
    }
""")


@pytest.fixture(scope="module")
def java_probe() -> Iterator[str]:
    """Probe.java, run by the JVM's source launcher (which needs the jdk.compiler module)."""
    need("java")
    modules = subprocess.run(["java", "--list-modules"], capture_output=True, text=True,
                             timeout=60).stdout
    if "jdk.compiler@" not in modules:
        pytest.skip("this java has no jdk.compiler module (its source launcher)")
    with tempfile.TemporaryDirectory(prefix="procfs-test-java-") as d:
        os.chmod(d, 0o755)
        path = os.path.join(d, "Probe.java")
        Path(path).write_text(JAVA_PROBE)
        yield path


def jvm_numbers(out: str) -> tuple[int, int, int, int]:
    cpus, max_memory, total, free = (int(x) for x in out.split())
    return cpus, max_memory, total, free


def test_jvm(box: Sandbox, java_probe: str) -> None:
    """HotSpot's container support reads the cgroup files itself (memory.limit_in_bytes or
    memory.max, cpu quota) and sched_getaffinity: right with or without procfs. The default
    heap (maxMemory) is a share of that memory."""
    cpus, max_memory, total, free = jvm_numbers(box.sh(f"java {java_probe}", timeout=120))
    assert cpus == 1
    assert total == LIMIT and 0 < free <= LIMIT
    assert 0 < max_memory <= LIMIT // 2


# --- sysinfo(2): only a container made by procfs-runc (its seccomp rule) gets its own numbers

SYSINFO_PROBE = textwrap.dedent(f"""\
    busybox free | busybox awk '/^Mem:/ {{print $2}}'
    busybox uptime
    {SYSTEM_PYTHON} -c "
    import os
    def proc():
        with open('/proc/loadavg') as f:
            return [float(x) for x in f.read().split()[:3]]
    before, load, after = proc(), os.getloadavg(), proc()
    print(os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE'))
    print(min(max(abs(a - b) for a, b in zip(load, p)) for p in (before, after)))"
""")


@pytest.fixture(scope="module")
def runc_container() -> Iterator[Container]:
    """A container created by procfs-runc (256 MiB, CPU 0) whose sysinfo(2) a server of its
    own answers; the host's /etc bound read-only (the JVM's alternatives and settings)."""
    if ensure_runc() is None or not os.path.exists(WRAPPER):
        pytest.skip("needs runc and procfs-runc (make setup)")
    if unbound():
        pytest.skip("procfs-runc always binds the served files")
    keeper = 0
    with tempfile.TemporaryDirectory(prefix="procfs-ctl-") as d:
        ctl = Path(d)
        state = str(ctl / "attached.json")
        srv = Server(args=["--control-dir", str(ctl)], sysinfo=True,
                     env={**os.environ, "PROCFS_STATE": state})
        try:
            srv.start()
            keeper = request(socket_path(srv.mountpoint, str(ctl)), "sysinfo")["keeper_pid"]
            env = wrapper_env(srv.mountpoint, socket=str(ctl / "sysinfo.sock"), state=state)
            with Bundle(runtime=WRAPPER, memory=LIMIT, cpus="0") as b:
                b.bind("/etc", "/etc")
                with Container(b, [WRAPPER], env) as c:
                    c.create()
                    yield c
        finally:
            srv.stop()
            if keeper:  # started by our server, in a session of its own
                with contextlib.suppress(ProcessLookupError):
                    os.kill(keeper, signal.SIGTERM)


def test_sysinfo_users_in_a_procfs_runc_container(runc_container: Container) -> None:
    """busybox free and uptime, glibc's sysconf(_SC_PHYS_PAGES) and getloadavg() (glibc 2.36
    reads sysinfo(2) for both) show the container's numbers only where sysinfo is answered."""
    need("busybox")
    free_kib, uptime, phys, load_diff = runc_container.exec(SYSINFO_PROBE).strip().splitlines()
    assert int(free_kib) == LIMIT_KIB
    assert " up 0 min," in uptime, uptime
    assert int(phys) == LIMIT
    assert float(load_diff) <= 0.01, load_diff  # getloadavg() says /proc/loadavg's numbers


def test_jvm_without_container_support_in_a_procfs_runc_container(
        runc_container: Container, java_probe: str) -> None:
    """-XX:-UseContainerSupport: the JVM sizes itself by sysconf(_SC_PHYS_PAGES), sysinfo(2)."""
    java = shutil.which("java")
    assert java is not None
    # the probe's directory is the host's /tmp: not in the container, so send it on stdin
    out = runc_container.exec(
        f"d=$(mktemp -d); cat > $d/Probe.java <<'EOF'\n{Path(java_probe).read_text()}EOF\n"
        f"{java} -XX:-UseContainerSupport $d/Probe.java; rm -r $d", timeout=120)
    cpus, max_memory, total, _ = jvm_numbers(out)
    assert cpus == 1  # sched_getaffinity
    assert total == LIMIT and 0 < max_memory <= LIMIT // 2
