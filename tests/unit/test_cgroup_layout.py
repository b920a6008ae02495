from __future__ import annotations

from pathlib import Path

from procfs.sources.cgroups import (
    CgroupDirs,
    CgroupLayout,
    CgroupMount,
    ancestors,
    parse_mountinfo,
    parse_proc_cgroup,
)

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/net_cls,net_prio rw - cgroup cgroup rw,net_cls,net_prio
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
"""

V2 = "29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"


def test_hybrid_mountinfo_maps_each_controller() -> None:
    mounts = parse_mountinfo(HYBRID)
    layout = CgroupLayout.from_mounts(mounts)
    assert layout.v1["memory"].mountpoint == "/sys/fs/cgroup/memory"
    assert layout.v1["net_prio"].mountpoint == "/sys/fs/cgroup/net_cls,net_prio"
    assert "name=systemd" in layout.v1
    assert layout.v2 is not None and layout.v2.mountpoint == "/sys/fs/cgroup/unified"
    assert layout.version_of("memory") == 1
    assert layout.version_of("io") is None  # v2 mount holds no controllers here


def test_v2_mountinfo_with_optional_fields() -> None:
    (m,) = parse_mountinfo(V2)
    assert (m.mountpoint, m.version, m.root) == ("/sys/fs/cgroup", 2, "/")


def test_mountinfo_escapes_and_garbage() -> None:
    text = "garbage line\n50 23 0:40 / /mnt/with\\040space rw - cgroup2 cgroup2 rw\n- -\n"
    (m,) = parse_mountinfo(text)
    assert m.mountpoint == "/mnt/with space"


def test_from_directory_detects_v1_and_v2(tmp_path: Path) -> None:
    (tmp_path / "v1/memory").mkdir(parents=True)
    (tmp_path / "v1/cpu,cpuacct").mkdir()
    (tmp_path / "v1/unified").mkdir()
    layout = CgroupLayout.from_directory(str(tmp_path / "v1"))
    assert layout.v1["cpuacct"] is layout.v1["cpu"]
    assert layout.v2 is not None
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2/cgroup.controllers").write_text("cpu memory\n")
    layout2 = CgroupLayout.from_directory(str(tmp_path / "v2"))
    assert layout2.version_of("memory") == 2
    assert layout2.version_of("cpuacct") == 2  # v2's cpu controller replaces it
    assert layout2.version_of("blkio") is None  # io not enabled in this tree


def test_proc_cgroup_parsing_prunes_init_scope() -> None:
    paths = parse_proc_cgroup("12:memory:/lxc/c1\n3:cpu,cpuacct:/lxc/c1\n0::/lxc/c1/init.scope\n"
                              "bad line\n")
    assert paths.v1 == {"memory": "/lxc/c1", "cpu": "/lxc/c1", "cpuacct": "/lxc/c1"}
    assert paths.v2 == "/lxc/c1"
    assert parse_proc_cgroup("0::/init.scope\n").is_root()


def test_cgroup_namespace_root_is_stripped() -> None:
    m = CgroupMount("/sys/fs/cgroup", "/kubepods/pod1", 2)
    assert m.directory("/kubepods/pod1/c") == "/sys/fs/cgroup/c"
    assert m.directory("/other/../../etc") == "/sys/fs/cgroup/etc"  # never escapes the mount


def test_dirs_and_ancestors(tmp_path: Path) -> None:
    layout = CgroupLayout.from_mounts([CgroupMount(str(tmp_path), "/", 2)])
    dirs = CgroupDirs(layout, parse_proc_cgroup("0::/a/b\n"))
    where = dirs.of("memory")
    assert where is None  # no cgroup.controllers file: the controller is not enabled
    assert dirs.unified() == f"{tmp_path}/a/b"
    assert ancestors(f"{tmp_path}/a/b", str(tmp_path)) == (f"{tmp_path}/a/b", f"{tmp_path}/a")
    assert ancestors(str(tmp_path), str(tmp_path)) == ()
