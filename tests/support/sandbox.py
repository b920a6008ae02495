"""Throwaway containers and a served mount, for `make demo`, the integration tests and the
benchmarks.

A `Sandbox` is a real container in miniature: a cgroup of its own (v1 or v2, whichever this host
has) with real limits, and an init in new pid and mount namespaces (optionally a time namespace),
with procfs's files bind-mounted over their twins. Everything is created under names of its own
and removed by its own handles: no process is killed by name, no foreign cgroup touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from procfs.errors import DEAD_CONNECTION
from procfs.sources.cgroups import CgroupLayout

V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "cpuset", "blkio", "pids")


def unique_name(prefix: str = "procfs-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


V2_WANTED = ("cpu", "cpuset", "memory", "io", "pids")


def _enable_controllers(d: str) -> None:
    """Enable for the children of v2 cgroup `d` the controllers our limits need, where `d`
    has them and has not enabled them yet (a host without systemd leaves the root bare)."""
    have = set(_read(os.path.join(d, "cgroup.controllers")).split())
    on = set(_read(os.path.join(d, "cgroup.subtree_control")).split())
    missing = [c for c in V2_WANTED if c in have and c not in on]
    if missing:
        _write(os.path.join(d, "cgroup.subtree_control"), " ".join("+" + c for c in missing))


@dataclass
class Limits:
    memory: int | None = None  # bytes
    swap: int | None = None  # bytes of swap on top of memory (v1 memsw, v2 swap.max)
    cpus: str | None = None  # cpuset, e.g. "0"
    quota: tuple[int, int] | None = None  # (quota_us, period_us)
    pids: int | None = None
    write_bps: dict[str, int] = field(default_factory=dict)  # "MAJ:MIN" → bytes/s throttle


class Cgroup:
    """A cgroup we created, in every hierarchy procfs reads (v1, plus the controller-less v2
    one on hybrid hosts), or the unified one (v2)."""

    def __init__(self, name: str, layout: CgroupLayout | None = None, parent: Cgroup | None = None):
        self.layout = layout or CgroupLayout.from_mountinfo()
        self.name = name
        self.parent = parent
        self.dirs: dict[str, str] = {}  # controller ("unified" on v2) → directory
        self.v2 = self.layout.version_of("memory") == 2

    def path(self) -> str:
        """The cgroup's path as /proc/PID/cgroup prints it."""
        return (self.parent.path() if self.parent else "") + "/" + self.name

    def create(self, limits: Limits | None = None) -> Cgroup:
        limits = limits or Limits()
        if self.v2:
            assert self.layout.v2 is not None
            top = self.parent._delegate() if self.parent else self.layout.v2.mountpoint
            if self.parent is None:
                _enable_controllers(top)
            d = os.path.join(top, self.name)
            os.mkdir(d)
            self.dirs["unified"] = d
        else:
            for ctrl in V1_CONTROLLERS:
                mount = self.layout.v1.get(ctrl)
                if mount is None:
                    continue
                top = self.parent.dirs[ctrl] if self.parent else mount.mountpoint
                d = os.path.join(top, self.name)
                os.makedirs(d, exist_ok=True)  # cpu and cpuacct may share one mount
                self.dirs[ctrl] = d
                if ctrl == "cpuset":
                    for f in ("cpuset.cpus", "cpuset.mems"):
                        _write(os.path.join(d, f), _read(os.path.join(top, f)))
            self._create_hybrid_unified()
        self.apply(limits)
        return self

    def _delegate(self) -> str:
        """Make room for a child cgroup with controllers of its own (v2): a cgroup with
        controllers enabled for its children may hold no processes, so ours move to a leaf
        `init.scope`, as systemd inside a container does (procfs drops that leaf when it
        resolves a container)."""
        d = self.dirs["unified"]
        leaf = os.path.join(d, "init.scope")
        if "init.scope" not in self.dirs:
            os.mkdir(leaf)
            self.dirs["init.scope"] = leaf
            for pid in _read(os.path.join(d, "cgroup.procs")).split():
                with contextlib.suppress(ProcessLookupError):  # exited meanwhile
                    _write(os.path.join(leaf, "cgroup.procs"), pid)
            _enable_controllers(d)
        return d

    def _leaf(self) -> str:
        """Where this cgroup's own processes go (v2: init.scope once it has children)."""
        return self.dirs.get("init.scope") or self.dirs["unified"]

    def cpu_usage_ns(self) -> int:
        """CPU time used by the cgroup's tasks, in ns (v1 cpuacct.usage, v2 cpu.stat)."""
        if not self.v2:
            return int(_read(self.file("cpuacct", "cpuacct.usage")))
        stat = dict(line.split() for line in _read(self.file("cpu", "cpu.stat")).splitlines())
        return int(stat["usage_usec"]) * 1000

    def _create_hybrid_unified(self) -> None:
        """On a hybrid host, a directory of our own in the controller-less v2 hierarchy too:
        the kernel tracks pressure stall information (cpu/memory/io.pressure) per v2 cgroup,
        so this gives the container PSI of its own, as a runtime on such a host does."""
        v2 = self.layout.v2
        if v2 is None:
            return
        top = self.parent.dirs.get("unified") if self.parent else v2.mountpoint
        if top is None:
            return
        d = os.path.join(top, self.name)
        try:
            os.mkdir(d)
        except OSError:  # a read-only or delegated-away v2 mount: PSI stays the host's
            return
        self.dirs["unified"] = d

    def file(self, controller: str, name: str) -> str:
        return os.path.join(self.dirs["unified" if self.v2 else controller], name)

    def apply(self, limits: Limits) -> None:
        v2 = self.v2
        if limits.memory is not None:
            _write(self.file("memory", "memory.max" if v2 else "memory.limit_in_bytes"),
                   str(limits.memory))
        if limits.swap is not None:
            if v2:
                _write(self.file("memory", "memory.swap.max"), str(limits.swap))
            elif os.path.exists(self.file("memory", "memory.memsw.limit_in_bytes")):
                total = (limits.memory or 0) + limits.swap
                _write(self.file("memory", "memory.memsw.limit_in_bytes"), str(total))
        if limits.cpus is not None:
            _write(self.file("cpuset", "cpuset.cpus"), limits.cpus)
        if limits.quota is not None:
            quota, period = limits.quota
            if v2:
                _write(self.file("cpu", "cpu.max"), f"{quota} {period}")
            else:
                _write(self.file("cpu", "cpu.cfs_period_us"), str(period))
                _write(self.file("cpu", "cpu.cfs_quota_us"), str(quota))
        if limits.pids is not None:
            _write(self.file("pids", "pids.max"), str(limits.pids))
        for dev, bps in limits.write_bps.items():
            if v2:
                _write(self.file("blkio", "io.max"), f"{dev} wbps={bps}")
            else:
                _write(self.file("blkio", "blkio.throttle.write_bps_device"), f"{dev} {bps}")

    def add(self, pid: int) -> None:
        dirs = [self._leaf()] if self.v2 else dict.fromkeys(self.dirs.values())
        for d in dirs:
            _write(os.path.join(d, "cgroup.procs"), str(pid))

    def procs(self) -> list[int]:
        d = self._leaf() if self.v2 else next(iter(self.dirs.values()))
        return [int(x) for x in _read(os.path.join(d, "cgroup.procs")).split()]

    def remove(self, timeout: float = 5.0) -> None:
        """Remove the directories we made (children first is the caller's job)."""
        deadline = time.monotonic() + timeout
        for d in sorted(set(self.dirs.values()), key=len, reverse=True):
            while os.path.isdir(d):
                try:
                    os.rmdir(d)
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        self.dirs.clear()


def served_paths(mount: str) -> list[str]:
    """What the server at `mount` binds into a container: files, and directories bound whole."""
    from procfs.attach.attach import served_files

    return served_files(mount)


def readable_paths(mount: str) -> list[str]:
    """A file for each thing the server binds: a bound directory by the CPU list in it."""
    return [os.path.join(rel, "online") if os.path.isdir(os.path.join(mount, rel)) else rel
            for rel in served_paths(mount)]


class Sandbox:
    """An init in new pid + mount (+ time) namespaces inside `cgroup`, with procfs's files
    bind-mounted over their twins. `run` executes a program inside it."""

    def __init__(
        self,
        cgroup: Cgroup | None,
        mount: str | None,
        *,
        boottime_offset: int | None = None,
        files: Sequence[str] | None = None,
        attach: bool = False,
    ) -> None:
        self.cgroup = cgroup
        self.mount = mount
        self.boottime_offset = boottime_offset
        self.files = files
        self.attach = attach  # bind with `procfs attach` (procfs.attach.attach) instead of a script
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0  # the init, as seen from the host

    def _binds(self) -> str:
        if self.mount is None:
            return ""
        files = self.files if self.files is not None else served_paths(self.mount)
        lines = []
        for rel in files:
            src, dst = os.path.join(self.mount, rel), "/" + rel
            lines.append(f'[ -e {dst} ] || {{ [ {dst} = /dev/kmsg ] && touch {dst}; }}; '
                         f'[ -e {dst} ] && mount --bind {src} {dst}')
        return "\n".join(lines)

    def start(self, timeout: float = 10.0) -> Sandbox:
        argv = ["unshare", "--pid", "--fork", "--mount", "--propagation", "private",
                "--mount-proc"]
        if self.boottime_offset is not None:
            argv += ["--time", "--boottime", str(self.boottime_offset)]
        binds = "" if self.attach else self._binds()
        script = binds + "\necho ready\nexec sleep infinity\n"
        argv += ["sh", "-ec", script]
        cg = self.cgroup
        # unshare's own complaints when its init is killed at stop go to a file, not the
        # terminal; they are shown if the init fails to start.
        with tempfile.TemporaryFile() as errors:
            self.proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, stderr=errors,
                preexec_fn=(lambda: cg.add(os.getpid())) if cg else None,
            )
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline()
            if line.strip() != b"ready":
                self.stop()
                errors.seek(0)
                raise RuntimeError(f"sandbox init failed to start: {errors.read().decode()!r}")
        self.pid = self._child_of(self.proc.pid, timeout)
        if self.attach and self.mount is not None:
            from procfs.attach.attach import Attacher

            try:
                Attacher(self.mount).attach(self.pid, files=self.files)
            except BaseException:
                self.stop()
                raise
        return self

    @staticmethod
    def _child_of(pid: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                kids = _read(f"/proc/{pid}/task/{pid}/children").split()
                if kids:
                    return int(kids[0])
            time.sleep(0.01)
        raise RuntimeError(f"unshare {pid} has no child")

    def enter_argv(self, argv: Sequence[str]) -> list[str]:
        ns = ["--pid", "--mount"] + (["--time"] if self.boottime_offset is not None else [])
        return ["nsenter", "--target", str(self.pid), *ns, "--", *argv]

    def popen(self, argv: Sequence[str], cgroup: Cgroup | None = None,
              **kw: object) -> subprocess.Popen[str]:
        """Run `argv` inside, in the sandbox's cgroup (or in `cgroup`, a child of it, say)."""
        cg = cgroup or self.cgroup
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
            self.enter_argv(argv), text=True,
            preexec_fn=(lambda: cg.add(os.getpid())) if cg else None, **kw,
        )

    def run(self, argv: Sequence[str], timeout: float = 30.0, check: bool = True,
            input: str | None = None, cgroup: Cgroup | None = None,
            ) -> subprocess.CompletedProcess[str]:
        p = self.popen(argv, cgroup, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL)
        try:
            out, err = p.communicate(input=input, timeout=timeout)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        result = subprocess.CompletedProcess(list(argv), p.returncode, out, err)
        if check and p.returncode != 0:
            raise subprocess.CalledProcessError(p.returncode, list(argv), out, err)
        return result

    def sh(self, script: str, **kw: object) -> str:
        return self.run(["sh", "-c", script], **kw).stdout  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)  # init's death ends its whole namespace
        if self.proc is not None:
            # unshare reaps the init and exits; killing it first would leave the init to be
            # reaped later by the host's init, a zombie that still looks alive for a while.
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            if self.proc.stdout:
                self.proc.stdout.close()
        self.pid = 0

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def is_mounted(path: str) -> bool:
    """Whether a mount (live or dead) is at `path`."""
    with open("/proc/self/mountinfo") as f:
        target = os.path.realpath(path)
        return any(line.split()[4] == target for line in f)


class Server:
    """`procfs serve` in a child process on a mountpoint of its own."""

    name = "procfs serve"

    def __init__(self, mountpoint: str | None = None, args: Sequence[str] = (),
                 log_path: str | None = None, env: dict[str, str] | None = None,
                 cwd: str | None = None, prefix: str = "procfs-mnt-",
                 sysinfo: bool = False) -> None:
        self.mountpoint = mountpoint or tempfile.mkdtemp(prefix=prefix)
        self._own_dir = mountpoint is None
        # sysinfo(2) only when asked: its keeper outlives a server (that is its job), and two
        # test servers on one control directory would take its listeners from each other
        self.args = list(args) if sysinfo else ["--no-sysinfo", *args]
        self.env = env  # None: ours
        self.cwd = cwd  # where `python -m procfs` finds the package (None: ours)
        self.log_path = log_path or os.path.join(tempfile.gettempdir(),
                                                 f"procfs-{uuid.uuid4().hex[:8]}.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The daemon's argv (the benchmarks start other FUSE servers through this class)."""
        return [sys.executable, "-m", "procfs", "-v", "serve", self.mountpoint, *self.args]

    def start(self, timeout: float = 15.0) -> Server:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env, cwd=self.cwd,
            )
        deadline = time.monotonic() + timeout
        while not self.serving():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not mount:\n{self.log()}")
            time.sleep(0.02)
        return self

    def serving(self) -> bool:
        """A live mount is at the mountpoint (not a dead one a restarted server takes over)."""
        if not is_mounted(self.mountpoint):
            return False
        try:
            os.statvfs(self.mountpoint)
        except OSError as e:
            if e.errno in DEAD_CONNECTION:  # a dead server's mount (stat may still answer)
                return False
            # other errors (ENOSYS from a server without statfs) say nothing of liveness
        try:
            parent = os.stat(os.path.dirname(os.path.abspath(self.mountpoint)))
            return os.stat(self.mountpoint).st_dev != parent.st_dev
        except OSError:
            return False

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would: its mount stays, dead (ENOTCONN)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if is_mounted(self.mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", self.mountpoint], check=False)
        if self._own_dir:
            with contextlib.suppress(OSError):
                os.rmdir(self.mountpoint)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def container(mount: str | None, limits: Limits | None = None, *, prefix: str = "procfs-test",
              boottime_offset: int | None = None) -> Iterator[Sandbox]:
    """A cgroup with `limits` and a sandbox in it, both removed on exit."""
    cg = Cgroup(unique_name(prefix))
    try:
        cg.create(limits)
        with Sandbox(cg, mount, boottime_offset=boottime_offset) as sb:
            yield sb
    finally:
        cg.remove()


def have(program: str) -> bool:
    return shutil.which(program) is not None
