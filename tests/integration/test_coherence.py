"""One coherent view (issue 20): programs that read the files other ways than `cat` does, or
that check them against the kernel, agree with the container's numbers inside real containers:
busybox `cat` (sendfile), `shutil.copyfile`, splice and mmap; `taskset` with the CPU list;
`nproc --all`, `mpstat` and psutil counting the cpuN directories; `vmstat`'s first line;
`dmesg -T`'s times of day."""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
import time
import uuid

import pytest

from tests.support.sandbox import Limits, Sandbox, Server, have, readable_paths

MIB = 1 << 20

READ_EVERY_WAY = textwrap.dedent("""\
    import mmap, os, shutil, sys
    path, out = sys.argv[1], sys.argv[2]
    def plain():
        with open(path, "rb", buffering=0) as f:
            return f.read()
    def sendfile():
        fd = os.open(path, os.O_RDONLY)
        w = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            while os.sendfile(w, fd, None, 1 << 20):
                pass
        finally:
            os.close(fd); os.close(w)
        with open(out, "rb") as f:
            return f.read()
    def splice():
        fd = os.open(path, os.O_RDONLY)
        r, w = os.pipe()
        data = b""
        try:
            while n := os.splice(fd, w, 65536):
                data += os.read(r, n)
        finally:
            os.close(fd); os.close(r); os.close(w)
        return data
    def pread():
        fd = os.open(path, os.O_RDONLY)
        data = b""
        try:
            while chunk := os.pread(fd, 100, len(data)):  # in chunks, at offsets
                data += chunk
        finally:
            os.close(fd)
        return data
    def copyfile():
        shutil.copyfile(path, out)
        with open(out, "rb") as f:
            return f.read()
    def mapped():
        fd = os.open(path, os.O_RDONLY)
        try:
            # the length a read gives: past the end of its content a mapping raises SIGBUS,
            # as past the end of any file (the kernel's /proc files refuse mmap instead)
            size = len(plain())
            with mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ) as m:
                return m[:]
        finally:
            os.close(fd)
    for name, how in (("read", plain), ("pread", pread), ("sendfile", sendfile),
                      ("splice", splice), ("copyfile", copyfile), ("mmap", mapped)):
        data = how()
        print(name, len(data), data.split(b"\\n")[0].decode(errors="replace"))
""")


def ways(sb: Sandbox, path: str) -> dict[str, tuple[int, str]]:
    out = f"/tmp/procfs-test-{uuid.uuid4().hex[:8]}"
    try:
        text = sb.run(["python3", "-c", READ_EVERY_WAY, path, out]).stdout
    finally:
        if os.path.exists(out):
            os.unlink(out)
    found = {}
    for line in text.splitlines():
        name, length, first = line.split(" ", 2)
        found[name] = (int(length), first)
    return found


def test_every_way_of_reading_gives_the_file(make_container) -> None:
    """pread, sendfile, splice, shutil.copyfile and a private mmap read what read() reads (they went
    through the page cache up to st_size 0, and got nothing)."""
    sb = make_container(Limits(memory=256 * MIB, cpus="0"))
    assert sb.sh("busybox cat /proc/meminfo").startswith("MemTotal:         262144 kB\n")
    for path in ("/proc/meminfo", "/proc/cpuinfo", "/proc/stat", "/proc/uptime",
                 "/sys/devices/system/cpu/online"):
        got = ways(sb, path)
        assert set(got) == {"read", "pread", "sendfile", "splice", "copyfile", "mmap"}, got
        first_lines = {first for _, first in got.values()}
        if path in ("/proc/uptime", "/proc/stat"):  # their first lines move with time
            assert len({len(first.split()) for first in first_lines}) == 1, (path, got)
        else:
            assert len(first_lines) == 1, (path, got)
        assert all(length > 0 for length, _ in got.values()), (path, got)
        if path == "/proc/meminfo":
            assert first_lines == {"MemTotal:         262144 kB"}
    # every file bound, through busybox cat (sendfile): not empty, ends with its newline
    mount = sb.mount
    assert mount is not None
    for rel in readable_paths(mount):
        if rel.startswith("dev/") or rel == "proc/slabinfo":
            continue
        text = sb.sh(f"busybox cat /{rel}")
        assert text.endswith("\n") and len(text) > 1, rel
        # a second read right after a longer or shorter one is neither cut nor padded
        assert sb.sh(f"busybox cat /{rel} /{rel}").count("\n") == 2 * text.count("\n"), rel


SIZE_AND_READ = textwrap.dedent("""\
    import os, sys
    for path in sys.argv[1:]:
        for _ in range(5):  # a counter may change the length past the render cache's 10 ms
            fd = os.open(path, os.O_RDONLY)
            size = os.fstat(fd).st_size
            data = b""
            while chunk := os.read(fd, 65536):
                data += chunk
            os.close(fd)
            if size == len(data):
                break
        print(path, size, len(data))
""")

# Files whose length does not move from one read to the next (no counters of changing width).
STEADY = ("proc/meminfo", "proc/cpuinfo", "proc/swaps", "sys/devices/system/cpu/online")


def test_size_is_the_length_read(make_container) -> None:
    """A container's file has the size of what an open of it reads, as a regular file: so `wc
    -c` (which seeks by st_size) and `tail -c` (which reads from st_size back) agree with `cat`
    (with a size above the content, for splice's sake, they printed 4097 bytes for meminfo's
    1503, and nothing)."""
    sb = make_container(Limits(memory=256 * MIB, cpus="0"))
    mount = sb.mount
    assert mount is not None
    paths = [f"/{rel}" for rel in readable_paths(mount) if not rel.startswith("dev/")]
    lines = sb.run(["python3", "-c", SIZE_AND_READ, *paths]).stdout.splitlines()
    assert len(lines) == len(paths)
    for line in lines:
        _, size, length = line.split()
        assert size == length, line  # (diskstats: empty before the container does I/O)
    for rel in STEADY:
        size, by_wc, by_cat, tail, cat_tail = sb.sh(
            f"stat -c %s /{rel}; wc -c < /{rel}; cat /{rel} | wc -c; "
            f"tail -c 24 /{rel} | od -An -c | tr -d ' \\n'; echo; "
            f"cat /{rel} | tail -c 24 | od -An -c | tr -d ' \\n'; echo").split("\n")[:5]
        assert size == by_wc == by_cat, (rel, size, by_wc, by_cat)
        assert tail == cat_tail and tail, (rel, tail, cat_tail)


SPLICE_LOOP = textwrap.dedent("""\
    import os, sys, time
    want, until, bad, n = sys.argv[1], time.monotonic() + float(sys.argv[2]), 0, 0
    r, w = os.pipe()
    while time.monotonic() < until:
        fd = os.open("/proc/meminfo", os.O_RDONLY)
        data = b""
        while k := os.splice(fd, w, 65536):
            data += os.read(r, k)
        os.close(fd)
        n += 1
        bad += not data.startswith(want.encode())
    print(n, bad)
""")


def test_splice_never_shows_a_container_anothers_rendering(make_container) -> None:
    """The kernel's splice reads through a page cache per inode: each container has inodes
    of its own, so two containers splicing at once each read only their own numbers."""
    boxes = {mib: make_container(Limits(memory=mib * MIB)) for mib in (64, 128)}
    procs = {mib: sb.popen(["python3", "-c", SPLICE_LOOP, f"MemTotal: {mib * 1024:14d} kB",
                            "4"], stdout=subprocess.PIPE)
             for mib, sb in boxes.items()}
    for mib, p in procs.items():
        out, _ = p.communicate(timeout=60)
        n, bad = (int(x) for x in out.split())
        assert n > 20 and bad == 0, (mib, n, bad)


def test_cpu_numbers_are_the_kernels(make_container) -> None:
    """On host CPU 1: every file says CPU 1, as sched_getaffinity does, so the list works
    with taskset; the cpuN directories hold cpu1 alone, so counters of them count 1."""
    ncpu = os.cpu_count() or 1
    if ncpu < 2:
        pytest.skip("needs two CPUs")
    sb = make_container(Limits(cpus="1"))
    assert sb.sh("cat /sys/devices/system/cpu/online").strip() == "1"
    assert sb.run(["sh", "-c", "taskset -c $(cat /sys/devices/system/cpu/online) true"]
                  ).returncode == 0
    assert re.findall(r"^processor\s*:\s*(\d+)", sb.sh("cat /proc/cpuinfo"), re.M) == ["1"]
    cpus = re.findall(r"^cpu(\d+) ", sb.sh("cat /proc/stat"), re.M)
    assert cpus == ["1"]
    entries = sb.sh("ls /sys/devices/system/cpu").split()
    assert [e for e in entries if re.fullmatch(r"cpu\d+", e)] == ["cpu1"]
    assert sb.sh("cat /sys/devices/system/cpu/cpu1/topology/core_id").strip().isdigit()
    assert sb.run(["cat", "/sys/devices/system/cpu/cpu0/online"], check=False).returncode != 0
    assert sb.sh("nproc").strip() == "1"
    assert sb.sh("busybox nproc --all").strip() == "1"
    assert sb.sh("getconf _NPROCESSORS_ONLN").strip() == "1"
    assert sb.sh("cat /sys/devices/system/cpu/possible").strip() == "0-1"  # sched_getcpu < 2
    if have("mpstat"):
        assert "(1 CPU)" in sb.sh("mpstat -P ALL 1 1")
        rows = [x.split() for x in sb.sh("mpstat -P ALL").splitlines()[3:] if x.strip()]
        assert [r[1] for r in rows if r[1] != "all"] == ["1"], rows


def test_vmstat_first_line_shows_rates_not_totals(make_container) -> None:
    """vmstat's first line divides counters since boot by the CPU lines' time: the
    container's CPU lines cover its own life, so its counters must too (they were the host's
    since boot: in, cs, bi and bo 100-1500 times too high)."""
    sb = make_container(Limits(memory=256 * MIB))
    time.sleep(1.0)

    def first_line(out: str) -> dict[str, int]:
        head, values = out.strip().splitlines()[1:3]
        return dict(zip(head.split(), map(int, values.split()), strict=True))

    inside = first_line(sb.sh("vmstat"))
    host = first_line(subprocess.run(["vmstat"], capture_output=True, text=True,
                                      check=True).stdout)
    # the host's own rates (its counters over its time), within noise
    assert inside["in"] <= 3 * host["in"] + 100, (inside, host)
    assert inside["cs"] <= 3 * host["cs"] + 100, (inside, host)
    assert inside["bi"] <= 3 * host["bi"] + 100 and inside["bo"] <= 3 * host["bo"] + 100
    assert inside["free"] <= 256 * 1024  # KiB: its own memory
    lines = dict(line.split() for line in sb.sh("cat /proc/vmstat").splitlines())
    assert int(lines["nr_free_pages"]) * 4096 <= 256 * MIB


@pytest.mark.skipif(not have("dmesg"), reason="needs util-linux dmesg")
@pytest.mark.parametrize("own_clock", [False, True])
def test_dmesg_times_of_day(make_container, own_clock: bool) -> None:
    """dmesg -T makes a time of day of a stamp with the clocks as read in the container: the
    stamps are on its monotonic clock, so a line written now is dated now (it was dated the
    host's uptime at the container's start in the past)."""
    with open("/proc/uptime") as f:
        offset = -int(float(f.read().split()[0])) if own_clock else None
    sb = make_container(boottime_offset=offset)
    mark = f"procfs-test-{uuid.uuid4().hex[:8]}"
    sb.sh(f"echo {mark} > /dev/kmsg")
    line = next(x for x in sb.sh("dmesg -T").splitlines() if mark in x)
    stamp = re.match(r"\[(.+?)\]", line)
    assert stamp is not None, line
    when = time.mktime(time.strptime(stamp.group(1), "%a %b %d %H:%M:%S %Y"))
    assert abs(when - time.time()) <= 5, (line, time.ctime())


def test_a_server_bound_by_a_host_process_still_answers(server: Server) -> None:
    """The host's inodes (a host process's own walk of the mount) keep the kernel's size 0
    and the host's numbers."""
    st = os.stat(os.path.join(server.mountpoint, "proc/meminfo"))
    assert st.st_size == 0
    with open(os.path.join(server.mountpoint, "proc/meminfo")) as f, open("/proc/meminfo") as h:
        assert f.readline() == h.readline()
