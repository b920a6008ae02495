"""Issue 21 with real runc: bundles with no hook, run and driven through `procfs-runc`."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from procfs.runtime import timens
from procfs.runtime.oci_config import ARCHITECTURES
from tests.support.sandbox import Server

from .oci_bundle import Bundle, ensure_runc
from .runtime_support import (
    AUDIT_ARCH_I386,
    CLOCK_PROBE,
    MIB,
    WRAPPER,
    Clock,
    Container,
    Listener,
    host_time_ns,
    listener,
    sysinfo_calls,
    wrapper_env,
)

HOST_TOTAL = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
VIEW = "free -b | grep ^Mem: | tr -s ' ' | cut -d' ' -f2; getconf _NPROCESSORS_ONLN"
WAIT = 2.0  # seconds between a container's creation and reading its clock


@pytest.fixture(scope="module")
def runc() -> str:
    path = ensure_runc()
    if path is None:
        pytest.skip("runc is not installed and apt-get could not install it")
    if not os.path.exists(WRAPPER):
        pytest.skip("procfs-runc is not installed (make setup)")
    return path


@pytest.fixture
def bundle(runc: str) -> Iterator[Bundle]:
    with Bundle(runtime=WRAPPER, memory=256 * MIB, cpus="0") as b:
        yield b


def run(bundle: Bundle, script: str, env: dict[str, str],
        timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`procfs-runc run` (foreground) of `sh -c script`."""
    bundle.config["process"]["args"] = ["sh", "-c", script]
    with open(os.path.join(bundle.dir, "config.json"), "w") as f:
        json.dump(bundle.config, f, indent=1)
    try:
        return subprocess.run([WRAPPER, "run", "--bundle", bundle.dir, bundle.id], env=env,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    finally:
        subprocess.run([WRAPPER, "delete", "-f", bundle.id], env=env, capture_output=True,
                       check=False)


def procfs_hooks(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [h for stage in (config.get("hooks") or {}).values() for h in stage
            if "oci-hook" in h.get("args", [])]


def test_run_gives_the_view_with_no_hook_in_the_bundle(bundle: Bundle, server: Server,
                                                       state_path: str) -> None:
    assert "hooks" not in bundle.config
    r = run(bundle, VIEW, wrapper_env(server.mountpoint, state=state_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(256 * MIB), "1"]
    with open(os.path.join(bundle.dir, "config.json")) as f:
        hooks = procfs_hooks(json.load(f))
    assert len(hooks) == 1
    assert hooks[0]["path"] == os.path.join(os.path.dirname(WRAPPER), "procfs")
    assert hooks[0]["args"] == ["procfs", "oci-hook", "--mount", server.mountpoint]
    assert hooks[0]["env"] == [f"PROCFS_STATE={state_path}"]
    # the same bundle again: the hook is there once
    r = run(bundle, VIEW, wrapper_env(server.mountpoint, state=state_path))
    assert r.returncode == 0, r.stderr
    with open(os.path.join(bundle.dir, "config.json")) as f:
        assert len(procfs_hooks(json.load(f))) == 1


def test_exec_and_every_command_join_the_time_namespace(bundle: Bundle, server: Server,
                                                        state_path: str, runc: str) -> None:
    env = wrapper_env(server.mountpoint, state=state_path)
    with Container(bundle, [WRAPPER], env) as c:
        c.create()
        state = c.state()
        assert state["status"] == "running" and isinstance(state["pid"], int)
        init = state["pid"]
        init_ns = os.readlink(f"/proc/{init}/ns/time")
        assert init_ns != host_time_ns()
        # the namespace's clocks started at 0 at creation
        with open(f"/proc/{init}/timens_offsets") as f:
            mono_ns, boot_ns = timens.parse_offsets(f.read())
        assert abs(boot_ns / 1e9 + time.clock_gettime(time.CLOCK_BOOTTIME)) < 30
        assert abs(mono_ns / 1e9 + time.clock_gettime(time.CLOCK_MONOTONIC)) < 30
        out = c.exec("readlink /proc/1/ns/time /proc/self/ns/time; free -b | grep ^Mem:")
        ns_init, ns_exec, mem = out.splitlines()
        assert ns_init == ns_exec == init_ns
        assert int(mem.split()[1]) == 256 * MIB
        # Why every command goes through the wrapper: runc outside the namespace reads
        # another start time for the init and calls the container stopped.
        plain = subprocess.run([runc, "state", bundle.id], capture_output=True, text=True)
        assert json.loads(plain.stdout)["status"] == "stopped"
        c.cmd("kill", bundle.id, "KILL")
        deadline = time.monotonic() + 10
        while c.state()["status"] != "stopped":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        c.cmd("delete", bundle.id)
        assert c.cmd("state", bundle.id, check=False).returncode != 0


def test_clock_from_the_kernel_alone(bundle: Bundle, server: Server, state_path: str) -> None:
    """Without the hook (io.procfs.hook=false) every time a container shows comes from the
    kernel, in the wrapper's time namespace: right for the init and for exec'd processes."""
    bundle.config["annotations"] = {"io.procfs.hook": "false"}
    with Container(bundle, [WRAPPER], wrapper_env(server.mountpoint, state=state_path)) as c:
        created = c.create()
        time.sleep(WAIT)
        clock = Clock.parse(c.exec(CLOCK_PROBE))
        clock.check(created, WAIT, time.time())
        assert clock.init_ns == clock.self_ns != host_time_ns()
        assert not procfs_hooks(c.config())
    assert not os.path.exists(state_path)


def test_clock_with_the_served_files(bundle: Bundle, server: Server, state_path: str) -> None:
    """With the hook's files as well: the served uptime is the time namespace's boot clock,
    and `ps` ELAPSED and STARTED are right (the kernel's start times and the served btime and
    uptime on one clock)."""
    with Container(bundle, [WRAPPER], wrapper_env(server.mountpoint, state=state_path)) as c:
        created = c.create()
        time.sleep(WAIT)
        clock = Clock.parse(c.exec(CLOCK_PROBE))
        clock.check(created, WAIT, time.time())


def test_run_foreground_clock(bundle: Bundle, server: Server) -> None:
    """`procfs-runc run` in the foreground (one runc process for create and start)."""
    bundle.config["annotations"] = {"io.procfs.hook": "false"}
    created = time.time()
    r = run(bundle, f"sleep {WAIT}; {CLOCK_PROBE}", wrapper_env(server.mountpoint))
    assert r.returncode == 0, r.stderr
    Clock.parse(r.stdout).check(created, WAIT, time.time())


def test_opt_out_behaves_as_plain_runc(bundle: Bundle, server: Server, state_path: str) -> None:
    bundle.config["annotations"] = {"io.procfs.disable": "true"}
    with listener() as lst:
        env = wrapper_env(server.mountpoint, lst.path, state_path)
        r = run(bundle, "free -b | grep ^Mem:; cut -d' ' -f1 /proc/uptime; "
                "readlink /proc/self/ns/time; grep ^Seccomp: /proc/self/status", env)
        assert r.returncode == 0, r.stderr
        mem, uptime, ns, seccomp = r.stdout.splitlines()
        assert int(mem.split()[1]) == HOST_TOTAL
        with open("/proc/uptime") as f:
            assert abs(float(uptime) - float(f.read().split()[0])) < 5
        assert ns == host_time_ns()
        assert seccomp.split() == ["Seccomp:", "0"]
        assert lst.fds() == 0
    with open(os.path.join(bundle.dir, "config.json")) as f:
        assert json.load(f) == bundle.config  # not a byte of the config changed
    assert not os.path.exists(state_path)


def test_timens_opt_out_keeps_the_rest(bundle: Bundle, server: Server) -> None:
    bundle.config["annotations"] = {"io.procfs.timens": "false"}
    r = run(bundle, f"{VIEW}; readlink /proc/self/ns/time", wrapper_env(server.mountpoint))
    assert r.returncode == 0, r.stderr
    total, cpus, ns = r.stdout.split()
    assert (int(total), int(cpus)) == (256 * MIB, 1)
    assert ns == host_time_ns()


# sysinfo(2): the notify rule


def test_sysinfo_reaches_the_listener(bundle: Bundle, server: Server) -> None:
    with listener() as lst:
        env = wrapper_env(server.mountpoint, lst.path)
        with Container(bundle, [WRAPPER], env) as c:
            c.create()
            seccomp = c.config()["linux"]["seccomp"]  # type: ignore[index]
            assert seccomp == {
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ARCHITECTURES.get(platform.machine(), []),
                "listenerPath": lst.path,
                "syscalls": [{"names": ["sysinfo"], "action": "SCMP_ACT_NOTIFY"}],
            }
            out = c.exec("busybox free | grep Mem:; echo $$; grep ^Seccomp: /proc/self/status")
            mem, shell, seccomp_line = out.splitlines()
            assert int(mem.split()[1]) > 0  # the listener let it through: the host's numbers
            assert seccomp_line.split() == ["Seccomp:", "2"]
            # the init's fd, then the exec'd process's
            assert lst.fds() == 2
            callers = [pid for _, _, pid in sysinfo_calls(lst)]
            assert callers, lst.text()
            assert int(shell) > 1  # in the container's pid namespace; the listener sees ours


@pytest.mark.parametrize("kind", ["missing", "refusing"])
def test_no_rule_when_the_socket_does_not_answer(kind: str, bundle: Bundle,
                                                 server: Server) -> None:
    """procfs down: the container starts and runs as before, and sysinfo never waits."""
    with tempfile.TemporaryDirectory(prefix="procfs-sock-") as d:
        path = os.path.join(d, "sysinfo.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            if kind == "refusing":  # a dead server's socket file: connect is refused
                s.bind(path)
            r = run(bundle, "busybox free | grep -c Mem:; grep ^Seccomp: /proc/self/status",
                    wrapper_env(server.mountpoint, path), timeout=20)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["1", "Seccomp:", "0"]
        with open(os.path.join(bundle.dir, "config.json")) as f:
            assert "seccomp" not in json.load(f)["linux"]


def syscall_names() -> list[str]:
    """Every x86_64 syscall the host's headers name (an allow-all list, as Docker's is)."""
    for header in ("/usr/include/x86_64-linux-gnu/asm/unistd_64.h",
                   "/usr/include/asm/unistd_64.h"):
        if os.path.exists(header):
            with open(header) as f:
                return [w[1][len("__NR_"):] for w in (line.split() for line in f)
                        if len(w) == 3 and w[0] == "#define" and w[1].startswith("__NR_")]
    pytest.skip("no asm/unistd_64.h (linux-libc-dev) to list the syscalls from")


def docker_like(names: list[str], notify_after: bool = False) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"},
                     {"names": ["reboot"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }
    if notify_after:
        profile["syscalls"].append({"names": ["sysinfo"], "action": "SCMP_ACT_NOTIFY"})
    return profile


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the profile lists x86_64 calls")
def test_docker_like_profile_keeps_working_and_notifies(bundle: Bundle, server: Server) -> None:
    names = syscall_names()
    assert "sysinfo" in names
    bundle.config["linux"]["seccomp"] = docker_like(names)
    with listener() as lst:
        r = run(bundle, "busybox free | grep -c Mem:; busybox reboot -f; echo $?",
                wrapper_env(server.mountpoint, lst.path))
        assert r.returncode == 0, r.stderr
        assert r.stdout.split()[0] == "1"
        assert r.stdout.split()[-1] != "0"  # the profile's own refusals stand
        assert sysinfo_calls(lst), lst.text()


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the profile lists x86_64 calls")
def test_a_notify_rule_after_the_allow_rule_is_dropped(bundle: Bundle, runc: str) -> None:
    """Why the wrapper puts its rule first and takes sysinfo out of allow rules: libseccomp
    keeps the first unconditional rule of a syscall (plain runc, the naive edit)."""
    names = syscall_names()
    with listener() as lst:
        bundle.config["linux"]["seccomp"] = {**docker_like(names, notify_after=True),
                                             "listenerPath": lst.path}
        bundle.runtime = runc
        r = bundle.run(["sh", "-c", "busybox free | grep -c Mem:"])
        assert r.returncode == 0, r.stderr
        assert lst.fds() == 1  # runc handed over the fd
        assert sysinfo_calls(lst) == []  # and no sysinfo ever reached it


INT80 = r"""
#include <stdio.h>
#include <unistd.h>
#include <sys/syscall.h>
static char info[256];  /* static: below 4 GiB, where a 32-bit call can point */
int main(void) {
    long pid64 = syscall(SYS_getpid), pid32, ret32;
    __asm__ volatile ("int $0x80" : "=a"(pid32) : "a"(20L) : "memory");               /* getpid */
    __asm__ volatile ("int $0x80" : "=a"(ret32) : "a"(116L), "b"(info) : "memory");  /* sysinfo */
    printf("%ld %ld %ld\n", pid64, pid32, ret32);
    return 0;
}
"""


@pytest.fixture
def int80(tmp_path: Path) -> str:
    if platform.machine() != "x86_64":
        pytest.skip("int $0x80 is x86")
    src = tmp_path / "int80.c"
    src.write_text(INT80)
    exe = tmp_path / "int80"
    r = subprocess.run(["gcc", "-static", "-O1", "-o", str(exe), str(src)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot build a static test program: {r.stderr[-200:]}")
    os.chmod(tmp_path, 0o755)
    return str(tmp_path)


def test_new_profile_leaves_32_bit_calls_alone(bundle: Bundle, server: Server,
                                               int80: str) -> None:
    """A config without seccomp gets a filter: the container's 32-bit calls (int $0x80) still
    work as before, and a 32-bit sysinfo reaches the listener too (with its arch)."""
    bundle.bind(int80, "/opt")
    outputs = {}
    with listener() as lst:
        env = wrapper_env(server.mountpoint, lst.path)
        for sysinfo in ("false", "true"):
            bundle.config["annotations"] = {"io.procfs.sysinfo": sysinfo}
            r = run(bundle, "/opt/int80", env)
            assert r.returncode == 0, r.stderr
            outputs[sysinfo] = r.stdout
        # the same answers with and without the filter (the pid itself varies between runs)
        with_rule, without = ([int(v) for v in outputs[k].split()] for k in ("true", "false"))
        assert (with_rule[0] == with_rule[1], with_rule[2]) \
            == (without[0] == without[1], without[2])
        if without[0] == without[1]:  # the kernel runs 32-bit calls (IA32 emulation)
            assert with_rule[2] == 0
            assert any(arch == AUDIT_ARCH_I386 and nr == 116 for nr, arch, _ in lst.calls())


def test_exec_fails_while_the_listener_is_gone(bundle: Bundle, server: Server) -> None:
    """A finding for whoever keeps the listener: runc connects to listenerPath for every
    exec'd process too, so `exec` (docker exec) fails while nothing accepts there. The
    container itself keeps running."""
    lst = Listener().start()
    try:
        env = wrapper_env(server.mountpoint, lst.path)
        with Container(bundle, [WRAPPER], env) as c:
            c.create()
            assert c.exec("echo up").strip() == "up"
            lst.proc.kill()  # type: ignore[union-attr]
            lst.proc.wait()  # type: ignore[union-attr]
            r = c.cmd("exec", bundle.id, "true", check=False)
            assert r.returncode != 0
            assert "seccomp agent" in r.stderr
            assert c.state()["status"] == "running"
    finally:
        lst.stop()
