"""Disk I/O, pressure stall information and slab caches as a container sees them.

- `proc/diskstats`: the container's I/O per device (procfs/cgroup_io.py), named and ordered as
  the host's /proc/diskstats, with as many columns as the host's kernel prints. Devices the
  container never touched are left out. No blkio/io cgroup of its own: the host's file.
- `proc/pressure/{cpu,memory,io}`: the `*.pressure` files of the container's cgroup in the
  unified (v2) hierarchy. Hybrid hosts have them too (PSI is tracked per v2 cgroup whatever
  hierarchy the controllers are on), so a container gets its own PSI wherever its `0::` path is
  a cgroup of its own. A container in the v2 root (pure v1 hosts, or a runtime that never made
  a v2 cgroup for it), a cgroup with PSI switched off (`cgroup.pressure` 0) or a kernel without
  cgroup PSI: the host's file. Reading is one read of a seq_file, which never blocks; poll()
  triggers are not offered (a trigger needs a write, and the files are read-only).
- `proc/slabinfo`: the container's v1 `memory.kmem.slabinfo` where it lists caches (kernels
  before 5.9), else the host's. Readable by root only, as the kernel's.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from overlays import diskstats, pressure, slabinfo
from procfs.errors import Malformed
from procfs.sources.containers import Container
from procfs.sources.hostproc import HostProc
from procfs.sources.io import AbsentFiles, Device, read_io
from procfs.sources.text import read_optional

PRESSURE_KINDS = ("cpu", "memory", "io")


class IoFiles:
    def __init__(self, host: HostProc, recent_text: Callable[[str], str] | None = None,
                 absent: AbsentFiles | None = None) -> None:
        self.host = host
        # the host's diskstats, shared by the containers rendering at once (HostFiles)
        self.recent_text = recent_text or host.text
        self.absent = absent

    def device_name(self, dev: Device) -> str | None:
        """A device missing from the host's diskstats, by its sysfs uevent (None: gone)."""
        text = read_optional(os.path.join(self.host.sys_root, "dev/block", f"{dev[0]}:{dev[1]}",
                                          "uevent"))
        for line in (text or "").splitlines():
            key, _, value = line.partition("=")
            if key == "DEVNAME" and value.strip():
                return value.strip().rsplit("/", 1)[-1]
        return None

    def diskstats(self, c: Container) -> bytes:
        host_text = self.recent_text("diskstats")
        own = read_io(c.cgroups, self.absent)
        if own is None:
            return host_text.encode()
        host_disks, columns = diskstats.parse_host(host_text)
        disks: list[diskstats.Disk] = []
        for hd in host_disks:
            counters = own.pop((hd.major, hd.minor), None)
            if counters is not None:
                disks.append(diskstats.Disk(hd.major, hd.minor, hd.name, counters))
        for (major, minor), counters in sorted(own.items()):
            name = self.device_name((major, minor))
            if name is not None:
                disks.append(diskstats.Disk(major, minor, name, counters))
        return diskstats.render(diskstats.DiskstatsSnapshot(tuple(disks), columns))

    def pressure(self, kind: str) -> Callable[[Container], bytes]:
        def render(c: Container) -> bytes:
            d = c.cgroups.unified()
            layout_v2 = c.cgroups.layout.v2
            own = None
            if d is not None and layout_v2 is not None and (
                    os.path.normpath(d) != os.path.normpath(layout_v2.mountpoint)):
                own = read_optional(os.path.join(d, f"{kind}.pressure"))
            if own is None:
                return self.host.text(f"pressure/{kind}").encode()
            snap = pressure.parse(own)
            if not snap.lines:
                raise Malformed(f"{d}/{kind}.pressure: {own[:80]!r}")
            return pressure.render(snap)

        return render

    def slabinfo(self, c: Container) -> bytes:
        where = c.cgroups.of("memory")
        own = None
        if where is not None and where[1] == 1:
            own = read_optional(os.path.join(where[0], "memory.kmem.slabinfo"))
        if slabinfo.has_caches(own):
            return slabinfo.render(slabinfo.SlabinfoSnapshot("", own))
        return slabinfo.render(slabinfo.SlabinfoSnapshot(self.host.text("slabinfo"), None))
