"""/proc/vmstat: the renderer, and a container's file read from v1 and v2 fixture trees."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlays import vmstat
from overlays.vmstat import VmstatSnapshot
from procfs.config import Config, KmsgConfig
from procfs.files.table import all_nodes
from procfs.fuse.nodes import OverlayNode
from procfs.server.services import Services
from procfs.sources.cgroups import CgroupDirs, CgroupLayout, parse_proc_cgroup
from procfs.sources.memory import read_oom_kills
from tests.trees import HOST_PIDNS, FakeHost, v1_cgroup, v2_cgroup

MIB = 1 << 20
HOST_VMSTAT = ("nr_free_pages 5000000\nnr_inactive_anon 100000\nnr_active_anon 200000\n"
               "numa_hit 77777777\nnr_anon_pages 250000\nnr_file_pages 900000\n"
               "nr_kernel_stack 20000\npgpgin 123456789\npgpgout 987654321\npswpin 5\n"
               "pswpout 6\npgfault 44444444\npgmajfault 5555\noom_kill 3\n")


def test_render_keeps_the_hosts_lines_with_the_containers_numbers() -> None:
    snap = VmstatSnapshot(HOST_VMSTAT, {"inactive_anon": 8 * MIB, "active_anon": 4 * MIB,
                                        "anon": 12 * MIB, "file": 40 * MIB, "pgfault": 1234,
                                        "pgmajfault": 5, "pswpin": 2},
                          free_bytes=100 * MIB, kernel_stack_bytes=64 << 10,
                          read_bytes=3 * MIB, write_bytes=1 * MIB, oom_kills=1)
    lines = dict(line.split() for line in vmstat.render(snap).decode().splitlines())
    assert list(lines) == [line.split()[0] for line in HOST_VMSTAT.splitlines()]  # the order
    assert lines == {
        "nr_free_pages": "25600", "nr_inactive_anon": "2048", "nr_active_anon": "1024",
        "numa_hit": "0",  # no per-container counter: 0, never the host's
        "nr_anon_pages": "3072", "nr_file_pages": "10240", "nr_kernel_stack": "64",
        "pgpgin": "3072", "pgpgout": "1024", "pswpin": "2", "pswpout": "0",
        "pgfault": "1234", "pgmajfault": "5", "oom_kill": "1"}


@given(st.text(), st.dictionaries(st.text(max_size=20), st.integers(-(2**70), 2**70)),
       st.integers(-(2**70), 2**70), st.integers(-(2**70), 2**70))
def test_render_never_raises_or_goes_negative(host: str, stat: dict[str, int], free: int,
                                              io: int) -> None:
    out = vmstat.render(VmstatSnapshot(host, stat, free_bytes=free, read_bytes=io,
                                       write_bytes=io, page_size=0))
    assert all(int(line.rsplit(" ", 1)[1]) >= 0 for line in out.decode().splitlines())


def serve(tmp_path: Path, version: int) -> tuple[Services, OverlayNode]:
    host = FakeHost(tmp_path / "h")
    (host.proc / "vmstat").write_text(HOST_VMSTAT)
    (host.proc / "stat").write_text("cpu  1 0 1 1 0 0 0 0 0 0\n")
    cg = tmp_path / "cg"
    if version == 2:
        v2_cgroup(cg, "/box", {"memory.max": f"{256 * MIB}\n", "memory.current": f"{56 * MIB}\n",
                               "memory.stat": f"anon {16 * MIB}\nfile {32 * MIB}\npgfault 99\n"
                                              "pgmajfault 7\n",
                               "memory.events": "low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n",
                               "io.stat": f"8:0 rbytes={8 * MIB} wbytes={2 * MIB} rios=9 "
                                          "wios=3 dbytes=0 dios=0\n"})
        line = "0::/box\n"
    else:
        v1_cgroup(cg, "memory", "/box", {
            "memory.limit_in_bytes": f"{256 * MIB}\n", "memory.usage_in_bytes": f"{56 * MIB}\n",
            "memory.stat": f"total_rss {16 * MIB}\ntotal_cache {32 * MIB}\ntotal_pgfault 99\n"
                           "total_pgmajfault 7\nhierarchical_memory_limit 268435456\n",
            "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"})
        v1_cgroup(cg, "blkio", "/box", {
            "blkio.throttle.io_service_bytes_recursive":
                f"8:0 Read {8 * MIB}\n8:0 Write {2 * MIB}\nTotal {10 * MIB}\n",
            "blkio.throttle.io_serviced_recursive": "8:0 Read 9\n8:0 Write 3\n"})
        line = "9:memory:/box\n8:blkio:/box\n"
    host.add_process(1, ppid=0, pidns=HOST_PIDNS, nspid=(1,))
    host.add_process(50, ppid=1, pidns=4026532500, nspid=(50, 1), cgroup=line)
    config = Config(cache_ttl=0, proc_root=str(host.proc), sys_root=str(host.sys),
                    cgroup_root=str(cg), kmsg=KmsgConfig(enabled=False))
    s = Services.build(config)
    node = next(n for n in all_nodes(s) if n.path == "proc/vmstat")
    assert isinstance(node, OverlayNode)
    return s, node



@pytest.mark.parametrize("version", [1, 2])
def test_a_containers_vmstat(tmp_path: Path, version: int) -> None:
    s, node = serve(tmp_path, version)
    c = s.resolver.resolve(50)
    assert c is not None
    lines = dict(x.split() for x in node.render(c).decode().splitlines())
    assert lines["nr_anon_pages"] == str(16 * MIB // 4096)
    assert lines["nr_file_pages"] == str(32 * MIB // 4096)
    assert lines["nr_free_pages"] == str(200 * MIB // 4096)  # 256 MiB limit - 56 in use
    assert (lines["pgfault"], lines["pgmajfault"], lines["oom_kill"]) == ("99", "7", "2")
    assert (lines["pgpgin"], lines["pgpgout"]) == (str(8 * 1024), str(2 * 1024))  # KiB
    assert lines["numa_hit"] == "0"
    # a host caller gets the host's file
    assert node.host() == HOST_VMSTAT.encode()
    s.close()


def test_oom_kills_without_the_file(tmp_path: Path) -> None:
    v2_cgroup(tmp_path, "/c", {})
    dirs = CgroupDirs(CgroupLayout.from_directory(str(tmp_path)), parse_proc_cgroup("0::/c\n"))
    assert read_oom_kills(dirs) == 0
