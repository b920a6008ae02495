"""/proc/PID/mountinfo, parsed once for everyone (cgroup discovery, attach's layer checks)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/PID/mountinfo."""

    mount_id: int
    dev: str  # "major:minor"
    root: str  # the path, inside its filesystem, of what is mounted
    mountpoint: str  # relative to the reading process's root
    fstype: str
    source: str
    super_options: tuple[str, ...] = ()


def unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Every well-formed line (optional fields before the ` - ` separator skipped)."""
    entries = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        a, b = left.split(), right.split()
        if not sep or len(a) < 5 or len(b) < 2:
            continue
        try:
            mount_id = int(a[0])
        except ValueError:
            continue
        options = tuple(b[2].split(",")) if len(b) > 2 else ()
        entries.append(MountEntry(mount_id, a[2], unescape(a[3]), unescape(a[4]), b[0],
                                  unescape(b[1]), options))
    return entries
