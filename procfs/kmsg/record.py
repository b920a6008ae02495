"""Records of the /dev/kmsg ABI (kernel Documentation/ABI/testing/dev-kmsg).

A record reads as `PRI,SEQ,TS_USEC,FLAGS;text\n`, then optional dictionary lines ` KEY=value\n`.
PRI is facility * 8 + level. Bytes below 0x20, 0x7f and above, and the backslash are written as
`\\xNN` (so a record is always one line, whatever the text held).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LOG_KERN = 0
LOG_USER = 1
# devkmsg_write: a message without `<N>` is user.warning (default_message_loglevel).
DEFAULT_LEVEL = 4
# The kernel refuses a write longer than one record can hold (PRINTKRB_RECORD_MAX).
MAX_WRITE = 1024
# What a record costs besides its text, counted against the ring's bound: the Python objects
# that hold it (an honest approximation, so that the bound is about memory, not text).
RECORD_OVERHEAD = 96


@dataclass(frozen=True, slots=True)
class Record:
    seq: int
    pri: int  # facility * 8 + level
    ts_usec: int  # in the container's boottime
    text: bytes
    dict_lines: tuple[bytes, ...] = ()  # b"KEY=value"
    cont: bool = False  # a continuation fragment ('c' flag)

    @property
    def cost(self) -> int:
        return RECORD_OVERHEAD + len(self.text) + sum(len(d) + 1 for d in self.dict_lines)


def escape(data: bytes) -> bytes:
    """The kernel's escaping of record text: non-printable bytes and '\\' as \\xNN."""
    if all(0x20 <= b < 0x7F and b != 0x5C for b in data):
        return data
    return b"".join(
        bytes((b,)) if 0x20 <= b < 0x7F and b != 0x5C else b"\\x%02x" % b for b in data
    )


def unescape(data: bytes) -> bytes:
    return re.sub(rb"\\x([0-9a-fA-F]{2})", lambda m: bytes((int(m.group(1), 16),)), data)


def format_record(r: Record) -> bytes:
    head = b"%d,%d,%d,%s;" % (r.pri, r.seq, r.ts_usec, b"c" if r.cont else b"-")
    out = [head, escape(r.text), b"\n"]
    for line in r.dict_lines:
        out += [b" ", escape(line), b"\n"]
    return b"".join(out)


def parse_write(data: bytes) -> tuple[int, bytes]:
    """(pri, text) of one write to /dev/kmsg, as devkmsg_write reads it.

    An optional `<N>` prefix sets the level and, when N names one, the facility; facility 0
    (kern) is refused by keeping user, as the kernel does. One trailing newline is dropped."""
    level, facility, text = DEFAULT_LEVEL, LOG_USER, data
    m = re.match(rb"<(\d{1,10})>", data)
    if m:
        n = int(m.group(1))
        level = n & 7
        if n >> 3:
            facility = (n >> 3) & 0xFF
        text = data[m.end():]
    if text.endswith(b"\n"):
        text = text[:-1]
    return facility * 8 + level, text


@dataclass(frozen=True, slots=True)
class HostRecord:
    """One record read from the host's /dev/kmsg."""

    pri: int
    seq: int
    ts_usec: int
    text: bytes  # unescaped
    dict_lines: tuple[bytes, ...] = ()


def parse_kmsg(chunk: bytes) -> list[HostRecord]:
    """The records in `chunk` (one read of /dev/kmsg, or several records from a file or pipe).
    Lines that are not records are skipped."""
    records: list[HostRecord] = []
    for line in chunk.split(b"\n"):
        if not line:
            continue
        if line.startswith(b" "):
            if records:
                last = records[-1]
                records[-1] = HostRecord(last.pri, last.seq, last.ts_usec, last.text,
                                         (*last.dict_lines, unescape(line[1:])))
            continue
        head, sep, text = line.partition(b";")
        fields = head.split(b",")
        if not sep or len(fields) < 3:
            continue
        try:
            pri, seq, ts = int(fields[0]), int(fields[1]), int(fields[2])
        except ValueError:
            continue
        records.append(HostRecord(pri, seq, ts, unescape(text)))
    return records
