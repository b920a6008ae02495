"""The /dev/kmsg record format: fields, escaping, `<N>` prefixes, and parsing host records."""

from __future__ import annotations

import pytest

from procfs.kmsg.record import Record, escape, format_record, parse_kmsg, parse_write, unescape


def test_format_fields_and_flags() -> None:
    assert format_record(Record(7, 6, 1234567, b"hello")) == b"6,7,1234567,-;hello\n"
    assert format_record(Record(0, 14, 0, b"x", cont=True)) == b"14,0,0,c;x\n"


def test_dictionary_lines_follow_with_a_space() -> None:
    r = Record(1, 3, 5, b"usb 1-1: new device", (b"SUBSYSTEM=usb", b"DEVICE=c189:1"))
    assert format_record(r) == b"3,1,5,-;usb 1-1: new device\n SUBSYSTEM=usb\n DEVICE=c189:1\n"


@pytest.mark.parametrize(("raw", "shown"), [
    (b"plain text", b"plain text"),
    (b"two\nlines", b"two\\x0alines"),
    (b"tab\there", b"tab\\x09here"),
    (b"back\\slash", b"back\\x5cslash"),
    (b"del\x7f", b"del\\x7f"),
    ("ünï".encode(), b"\\xc3\\xbcn\\xc3\\xaf"),
    (b"\x00\x1b[31m", b"\\x00\\x1b[31m"),
])
def test_escaping(raw: bytes, shown: bytes) -> None:
    assert escape(raw) == shown
    assert unescape(shown) == raw
    line = format_record(Record(0, 6, 0, raw))
    assert line.count(b"\n") == 1  # a record is always one line


@pytest.mark.parametrize(("data", "pri", "text"), [
    (b"hello-a\n", 1 * 8 + 4, b"hello-a"),  # user.warning by default
    (b"hello", 12, b"hello"),
    (b"<3>disk on fire\n", 1 * 8 + 3, b"disk on fire"),  # level only: facility stays user
    (b"<0>kern?", 1 * 8 + 0, b"kern?"),  # facility kern is refused
    (b"<14>user.info", 14, b"user.info"),
    (b"<30>daemon.info\n", 30, b"daemon.info"),
    (b"<abc>not a prefix", 12, b"<abc>not a prefix"),
    (b"two\nlines\n", 12, b"two\nlines"),  # only the last newline goes
    (b"\n", 12, b""),
])
def test_parse_write(data: bytes, pri: int, text: bytes) -> None:
    assert parse_write(data) == (pri, text)


def test_parse_host_records_with_continuations_and_junk() -> None:
    chunk = (b"6,100,2643813725,-;oom-kill:constraint=CONSTRAINT_MEMCG,task_memcg=/a\n"
             b" SUBSYSTEM=memory\n"
             b"not a record\n"
             b"3,101,2643813745,-;Killed process 5 (x) \\x5cok\n")
    recs = parse_kmsg(chunk)
    assert [(r.pri, r.seq, r.ts_usec) for r in recs] == [(6, 100, 2643813725),
                                                         (3, 101, 2643813745)]
    assert recs[0].dict_lines == (b"SUBSYSTEM=memory",)
    assert recs[1].text == b"Killed process 5 (x) \\ok"
