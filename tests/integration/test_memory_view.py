"""Issue 2 acceptance: free and glibc inside a 256 MiB, CPU-0 container; the host unchanged."""

from __future__ import annotations

import os
import subprocess

from tests.support.sandbox import Limits, Server

MIB = 1 << 20


def free_total(output: str) -> int:
    line = next(line for line in output.splitlines() if line.startswith("Mem:"))
    return int(line.split()[1])


def test_free_and_cpu_count_inside(make_container, server: Server) -> None:
    sb = make_container(Limits(memory=256 * MIB, cpus="0"))
    assert free_total(sb.sh("free -b")) == 268435456
    assert sb.sh("getconf _NPROCESSORS_ONLN").strip() == "1"
    assert sb.sh("grep -c ^processor /proc/cpuinfo").strip() == "1"
    assert sb.sh("cat /sys/devices/system/cpu/online").strip() == "0"
    assert sb.sh("python3 -c 'import os; print(os.cpu_count())'").strip() == "1"


def test_host_sees_its_own_values(server: Server) -> None:
    mount = server.mountpoint
    with open(f"{mount}/proc/meminfo") as f, open("/proc/meminfo") as real:
        assert f.readline() == real.readline()
    with open(f"{mount}/proc/cpuinfo") as f, open("/proc/cpuinfo") as real:
        assert f.read().count("processor") == real.read().count("processor")
    with open(f"{mount}/sys/devices/system/cpu/online") as f, \
            open("/sys/devices/system/cpu/online") as real:
        assert f.read() == real.read()
    out = subprocess.run(["free", "-b"], capture_output=True, text=True, check=True).stdout
    assert free_total(out) == os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def test_nested_sub_cgroup_sees_the_whole_container(make_container, make_cgroup) -> None:
    sb = make_container(Limits(memory=256 * MIB, cpus="0"))
    assert sb.cgroup is not None
    child = make_cgroup(Limits(memory=512 * MIB), parent=sb.cgroup)
    out = sb.run(["sh", "-c", "cat /proc/self/cgroup; free -b"], cgroup=child).stdout
    assert child.path() in out  # the reader really ran in the child cgroup
    assert free_total(out) == 268435456
    # the limits of the container's cgroup, not the child's looser one
    out = sb.run(["grep", "-c", "^processor", "/proc/cpuinfo"], cgroup=child).stdout
    assert out.strip() == "1"


def test_a_tighter_limit_above_the_container_is_the_one_in_force(make_cgroup,
                                                                 make_container) -> None:
    # (make_cgroup first: its parent cgroup is then removed after the container in it)
    # a pod-like parent with 128 MiB over a container that asks for 256 MiB: the kernel
    # reclaims at 128 MiB, so that is what free must say (v1: memory.stat's hierarchical limit)
    pod = make_cgroup(Limits(memory=128 * MIB))
    sb = make_container(Limits(memory=256 * MIB), parent=pod)
    assert free_total(sb.sh("free -b")) == 128 * MIB


def test_two_containers_see_their_own_limits(make_container) -> None:
    a = make_container(Limits(memory=256 * MIB))
    b = make_container(Limits(memory=128 * MIB, cpus="1"))
    assert free_total(a.sh("free -b")) == 256 * MIB
    assert free_total(b.sh("free -b")) == 128 * MIB
    assert b.sh("getconf _NPROCESSORS_ONLN").strip() == "1"
    assert a.sh("getconf _NPROCESSORS_ONLN").strip() == str(os.cpu_count())


def test_usage_and_available_follow_the_container(make_container) -> None:
    sb = make_container(Limits(memory=256 * MIB))
    # 64 MiB of anonymous memory held by a process in the container
    hog = sb.popen(["python3", "-c", "import sys,time; b=bytearray(64<<20); "
                    "b[::4096]=b'x'*len(b[::4096]); print('ok', flush=True); time.sleep(60)"],
                   stdout=subprocess.PIPE)
    try:
        assert hog.stdout is not None and hog.stdout.readline().strip() == "ok"
        line = next(x for x in sb.sh("free -b").splitlines() if x.startswith("Mem:"))
        total, used, free = (int(v) for v in line.split()[1:4])
        assert total == 256 * MIB
        assert used >= 64 * MIB and free <= total - 64 * MIB
        meminfo = sb.sh("cat /proc/meminfo")
        anon = int(next(x for x in meminfo.splitlines() if x.startswith("AnonPages:")).split()[1])
        assert anon >= 64 * 1024
    finally:
        hog.kill()
        hog.wait()


def test_memory_limit_max_shows_host_total(make_container) -> None:
    sb = make_container(Limits())
    host_total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert free_total(sb.sh("free -b")) == host_total


def test_server_refuses_bad_mountpoints(tmp_path) -> None:
    import sys

    def serve(path: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "procfs", "serve", path],
                              capture_output=True, text=True, timeout=30)

    r = serve(str(tmp_path / "missing"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full/x").write_text("x")
    r = serve(str(tmp_path / "full"))
    assert r.returncode == 2 and "not empty" in r.stderr
    r = serve("/proc")
    assert r.returncode == 2 and "already a mount" in r.stderr


def test_sigint_and_sigterm_unmount_cleanly() -> None:
    import signal

    from tests.support.sandbox import is_mounted

    for sig in (signal.SIGINT, signal.SIGTERM):
        srv = Server().start()
        try:
            assert srv.proc is not None
            srv.proc.send_signal(sig)
            assert srv.proc.wait(timeout=10) == 0
            assert not is_mounted(srv.mountpoint), srv.log()
            assert "unmounted" in srv.log()
        finally:
            srv.stop()
