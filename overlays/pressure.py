"""/proc/pressure/{cpu,memory,io}: pressure stall information, in the kernel's format.

The kernel (kernel/sched/psi.c `psi_show`) prints one line per kind it tracks:

    some avg10=%lu.%02lu avg60=%lu.%02lu avg300=%lu.%02lu total=%llu
    full avg10=...

The averages are percentages with two decimals; `total` is the stall time in microseconds. A
cgroup's `cpu.pressure`, `memory.pressure` and `io.pressure` have the same format as the
host's files, so a container's file is its cgroup's, re-rendered from parsed values (garbled
lines are dropped, never passed on).
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("some", "full")
WINDOWS = ("avg10", "avg60", "avg300")


@dataclass(frozen=True)
class PressureLine:
    kind: str  # "some" or "full"
    avg_centi: tuple[int, int, int]  # avg10, avg60, avg300 in hundredths of a percent
    total_us: int


@dataclass(frozen=True)
class PressureSnapshot:
    lines: tuple[PressureLine, ...]


def _number(text: str) -> int | None:
    """Plain ASCII digits (no sign, no other scripts' digits, not absurdly long)."""
    if not (text.isascii() and text.isdigit() and len(text) <= 30):
        return None
    return int(text)


def _centi(text: str) -> int | None:
    whole, _, frac = text.partition(".")
    w, f = _number(whole), _number((frac + "00")[:2])
    if w is None or f is None or (frac and _number(frac) is None):
        return None
    return w * 100 + f


def parse_line(line: str) -> PressureLine | None:
    parts = line.split()
    if len(parts) != 5 or parts[0] not in KINDS:
        return None
    values: dict[str, str] = {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if not sep:
            return None
        values[key] = value
    avgs = [_centi(values.get(w, "")) for w in WINDOWS]
    total = _number(values.get("total", ""))
    if any(a is None for a in avgs) or total is None:
        return None
    a10, a60, a300 = (a or 0 for a in avgs)
    return PressureLine(parts[0], (a10, a60, a300), total)


def parse(text: str) -> PressureSnapshot:
    """The well-formed lines of a pressure file, each kind once (the first one seen)."""
    seen: dict[str, PressureLine] = {}
    for raw in text.splitlines():
        line = parse_line(raw)
        if line is not None and line.kind not in seen:
            seen[line.kind] = line
    return PressureSnapshot(tuple(seen[k] for k in KINDS if k in seen))


def render(snap: PressureSnapshot) -> bytes:
    out: list[str] = []
    for line in snap.lines:
        avgs = " ".join(f"{w}={a // 100}.{a % 100:02d}" for w, a in zip(WINDOWS, line.avg_centi,
                                                                            strict=True))
        out.append(f"{line.kind} {avgs} total={line.total_us}\n")
    return "".join(out).encode()
