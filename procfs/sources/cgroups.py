"""Where the cgroup hierarchies are mounted, and which cgroup a process is in.

Handles cgroup v1 (one mount per controller set), v2 (one unified mount) and hybrid hosts
(v1 controllers plus a v2 mount that holds none of them, but still has PSI files).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

from procfs.sources import mountinfo
from procfs.sources.text import read_optional

# The v1 controllers procfs reads; anything else in a v1 mount's options is a mount flag.
V1_CONTROLLERS = frozenset(
    {"memory", "cpu", "cpuacct", "cpuset", "blkio", "pids", "devices", "freezer", "hugetlb",
     "net_cls", "net_prio", "perf_event", "rdma", "misc"}
)
# v1 controller → the v2 controller that replaces it.
V2_NAME = {"blkio": "io", "cpuacct": "cpu"}


@dataclass(frozen=True)
class CgroupMount:
    mountpoint: str
    root: str  # the cgroup path the mount shows at its top ("/" unless a cgroup-ns bind)
    version: int
    controllers: frozenset[str] = frozenset()

    def directory(self, cgroup_path: str) -> str:
        """The directory of `cgroup_path` (as /proc/PID/cgroup prints it) under this mount."""
        rel = cgroup_path
        if self.root != "/" and (rel == self.root or rel.startswith(self.root + "/")):
            rel = rel[len(self.root):]
        rel = os.path.normpath("/" + rel.lstrip("/")).lstrip("/")
        return os.path.join(self.mountpoint, rel) if rel else self.mountpoint


def parse_mountinfo(text: str) -> list[CgroupMount]:
    """The cgroup mounts in a /proc/PID/mountinfo text, first mount of each hierarchy first."""
    mounts: list[CgroupMount] = []
    for m in mountinfo.parse_mountinfo(text):
        if m.fstype == "cgroup2":
            mounts.append(CgroupMount(m.mountpoint, m.root, 2))
        elif m.fstype == "cgroup":
            ctrls = {o for o in m.super_options if o in V1_CONTROLLERS or o.startswith("name=")}
            mounts.append(CgroupMount(m.mountpoint, m.root, 1, frozenset(ctrls)))
    return mounts


@dataclass(frozen=True)
class CgroupLayout:
    v1: dict[str, CgroupMount] = field(default_factory=dict)  # controller → its mount
    v2: CgroupMount | None = None
    v2_controllers: frozenset[str] = frozenset()

    @classmethod
    def from_mounts(cls, mounts: list[CgroupMount]) -> CgroupLayout:
        v1: dict[str, CgroupMount] = {}
        v2: CgroupMount | None = None
        for m in mounts:
            if m.version == 1:
                for c in m.controllers:
                    v1.setdefault(c, m)
            elif v2 is None:
                v2 = m
        ctrls: frozenset[str] = frozenset()
        if v2 is not None:
            text = read_optional(os.path.join(v2.mountpoint, "cgroup.controllers"))
            ctrls = frozenset((text or "").split())
        return cls(v1, v2, ctrls)

    @classmethod
    def from_mountinfo(cls, proc_root: str = "/proc") -> CgroupLayout:
        text = read_optional(os.path.join(proc_root, "self", "mountinfo")) or ""
        return cls.from_mounts(parse_mountinfo(text))

    @classmethod
    def from_directory(cls, root: str) -> CgroupLayout:
        """A layout read off a directory tree instead of mountinfo (fixture trees, odd hosts).

        `root/cgroup.controllers` makes it a pure v2 tree; otherwise each subdirectory is a v1
        hierarchy named by its controllers (`cpu,cpuacct`), and `unified` is the v2 mount.
        """
        if os.path.exists(os.path.join(root, "cgroup.controllers")):
            return cls.from_mounts([CgroupMount(root, "/", 2)])
        mounts: list[CgroupMount] = []
        for name in sorted(os.listdir(root)):
            path = os.path.join(root, name)
            if not os.path.isdir(path) or os.path.islink(path):
                continue
            if name == "unified":
                mounts.append(CgroupMount(path, "/", 2))
                continue
            ctrls = {c for c in name.split(",") if c in V1_CONTROLLERS}
            if name == "systemd":
                ctrls.add("name=systemd")
            if ctrls:
                mounts.append(CgroupMount(path, "/", 1, frozenset(ctrls)))
        return cls.from_mounts(mounts)

    def version_of(self, controller: str) -> int | None:
        """1 or 2: which hierarchy serves `controller` here; None when neither has it."""
        if controller in self.v1:
            return 1
        if self.v2 is not None and V2_NAME.get(controller, controller) in self.v2_controllers:
            return 2
        return None


@dataclass(frozen=True)
class CgroupPaths:
    """The cgroup paths of one process, as /proc/PID/cgroup lists them."""

    v1: dict[str, str] = field(default_factory=dict)  # controller → path
    v2: str | None = None

    def is_root(self) -> bool:
        return all(p == "/" for p in self.v1.values()) and self.v2 in (None, "/")


def parse_proc_cgroup(text: str) -> CgroupPaths:
    """Parse /proc/PID/cgroup. A trailing `/init.scope` (systemd inside the container moves its
    init there) is dropped, so that the whole container is seen, as LXCFS does."""
    v1: dict[str, str] = {}
    v2: str | None = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, ctrls, path = parts
        path = _prune_init_scope(path.strip() or "/")
        if hid == "0" and ctrls == "":
            v2 = path
        else:
            for c in ctrls.split(","):
                if c:
                    v1[c] = path
    return CgroupPaths(v1, v2)


def _prune_init_scope(path: str) -> str:
    if path.endswith("/init.scope"):
        return path[: -len("/init.scope")] or "/"
    return path


@dataclass(frozen=True)
class CgroupDirs:
    """One container's cgroup directories, per controller, on this host's layout."""

    layout: CgroupLayout
    paths: CgroupPaths
    # What `of` found, per controller: a container's paths are fixed (one whose paths change is
    # resolved again, to a new CgroupDirs), and every rendering asks for some of them again.
    _found: dict[str, tuple[str, int, str] | None] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def of(self, controller: str) -> tuple[str, int, str] | None:
        """(directory, version, mount top) for `controller`, or None when no hierarchy has it."""
        try:
            return self._found[controller]
        except KeyError:
            found = self._found[controller] = self._find(controller)
            return found

    def _find(self, controller: str) -> tuple[str, int, str] | None:
        version = self.layout.version_of(controller)
        if version == 1:
            mount = self.layout.v1[controller]
            path = self.paths.v1.get(controller)
        elif version == 2 and self.layout.v2 is not None:
            mount, path = self.layout.v2, self.paths.v2
        else:
            return None
        if path is None:
            return None
        return mount.directory(path), version, mount.mountpoint

    def unified(self) -> str | None:
        """The container's directory in the v2 hierarchy (PSI lives there even on hybrid hosts)."""
        if self.layout.v2 is None or self.paths.v2 is None:
            return None
        return self.layout.v2.directory(self.paths.v2)


@functools.lru_cache(maxsize=4096)  # the same few per container, on every rendering
def ancestors(directory: str, top: str) -> tuple[str, ...]:
    """`directory` and its parents up to, not including, the hierarchy's `top`."""
    out: list[str] = []
    d = os.path.normpath(directory)
    top = os.path.normpath(top)
    while d != top and d.startswith(top + os.sep):
        out.append(d)
        d = os.path.dirname(d)
    return tuple(out)


def own_dir(where: tuple[str, int, str] | None) -> tuple[str, int] | None:
    """(directory, version) of a controller's cgroup, None when absent or the hierarchy's root
    (the root's numbers are the whole host's, not a container's)."""
    if where is None:
        return None
    directory, version, top = where
    if os.path.normpath(directory) == os.path.normpath(top) or not os.path.isdir(directory):
        return None
    return directory, version
