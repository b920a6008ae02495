"""The pure renderers of proc/diskstats, proc/pressure/* and proc/slabinfo."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from overlays import diskstats, pressure, slabinfo
from overlays.diskstats import Disk, DiskCounters, DiskstatsSnapshot

# A 6.x kernel's lines: 17 counters after the name.
HOST_17 = (
    "   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
    " 254       0 vda 39457 10487 2997818 19889 7542 24146 1193096 4383 0 6956 24710 4734 23"
    " 158744 384 1004 51\n"
)
HOST_15 = "   8       0 sda 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15\n"


def test_parse_host_keeps_order_and_counts_columns() -> None:
    disks, columns = diskstats.parse_host(HOST_17 + "garbage line\n 8 x sdz 1 2 3\n")
    assert [(d.major, d.minor, d.name) for d in disks] == [(7, 0, "loop0"), (254, 0, "vda")]
    assert columns == 17
    assert diskstats.parse_host(HOST_15)[1] == 15
    assert diskstats.parse_host("")[1] == 17


def test_render_is_the_kernels_format() -> None:
    c = DiskCounters(reads=3, read_bytes=4096, writes=128, write_bytes=64 << 20,
                     discards=2, discard_bytes=1 << 20)
    out = diskstats.render(DiskstatsSnapshot((Disk(254, 0, "vda", c),), 17)).decode()
    # "%4d %7d %s" then the counters: sectors are bytes / 512.
    assert out == " 254       0 vda 3 0 8 0 128 0 131072 0 0 0 0 2 0 2048 0 0 0\n"
    assert len(out.split()) == 3 + 17


def test_render_follows_the_hosts_column_count() -> None:
    c = DiskCounters(reads=1, writes=2, write_bytes=1024, read_ms=7)
    disk = (Disk(8, 16, "sdb", c),)
    assert diskstats.render(DiskstatsSnapshot(disk, 15)).decode() == (
        "   8      16 sdb 1 0 0 7 2 0 2 0 0 0 0 0 0 0 0\n")
    assert len(diskstats.render(DiskstatsSnapshot(disk, 11)).split()) == 3 + 11
    # A kernel with an unknown count: no more fields than we know, no fewer than 11.
    assert len(diskstats.render(DiskstatsSnapshot(disk, 20)).split()) == 3 + 17
    assert len(diskstats.render(DiskstatsSnapshot(disk, 4)).split()) == 3 + 11


def test_render_never_prints_negative_counters() -> None:
    out = diskstats.render(DiskstatsSnapshot((Disk(8, 0, "sda", DiskCounters(reads=-5)),)))
    assert out.split()[3] == b"0"


def test_zero_counters() -> None:
    assert DiskCounters().is_zero()
    assert not DiskCounters(discards=1).is_zero()


@given(st.text())
def test_parse_host_never_raises(text: str) -> None:
    disks, columns = diskstats.parse_host(text)
    # the counters per line of the host's disks, or the full count when it lists none
    assert columns >= 1 and (disks or columns == diskstats.MAX_COLUMNS)
    assert all(d.major >= 0 and d.minor >= 0 and d.name for d in disks)


PSI = (
    "some avg10=40.96 avg60=35.53 avg300=10.33 total=37152116\n"
    "full avg10=0.00 avg60=0.05 avg300=100.00 total=0\n"
)


def test_pressure_round_trip_is_exact() -> None:
    snap = pressure.parse(PSI)
    assert snap.lines[0].avg_centi == (4096, 3553, 1033)
    assert snap.lines[1].avg_centi == (0, 5, 10000)
    assert pressure.render(snap).decode() == PSI


def test_pressure_drops_garbled_lines() -> None:
    text = (
        "some avg10=abc avg60=0.00 avg300=0.00 total=1\n"  # not a number
        "some avg10=1.00 avg60=2.00 avg300=3.00\n"  # no total
        "weird avg10=1.00 avg60=2.00 avg300=3.00 total=4\n"  # unknown kind
        "full avg10=1.5 avg60=2.00 avg300=3.00 total=9\n"  # one decimal: still read
        "full avg10=9.00 avg60=9.00 avg300=9.00 total=9\n"  # a second full line: ignored
    )
    assert pressure.render(pressure.parse(text)).decode() == (
        "full avg10=1.50 avg60=2.00 avg300=3.00 total=9\n")
    assert pressure.parse("").lines == ()
    odd = ("some avg10=\u00b2.00 avg60=0.00 avg300=0.00 total=1\n"
           f"some avg10=0.00 avg60=0.00 avg300=0.00 total={'9' * 5000}\n"
           "some avg10=-1.00 avg60=0.00 avg300=0.00 total=1\n")
    assert pressure.parse(odd).lines == ()


@given(st.text())
def test_pressure_parse_never_raises(text: str) -> None:
    for line in pressure.render(pressure.parse(text)).decode().splitlines():
        assert pressure.parse_line(line) is not None


SLAB_LINE = ("kmalloc-64          2048   2048     64   64    1 : tunables    0    0    0"
             " : slabdata     32     32      0\n")


def test_slabinfo_own_caches_with_and_without_header() -> None:
    with_header = slabinfo.HEADER + SLAB_LINE
    assert slabinfo.render(slabinfo.SlabinfoSnapshot("host\n", with_header)) == with_header.encode()
    assert slabinfo.render(slabinfo.SlabinfoSnapshot("host\n", SLAB_LINE.rstrip("\n"))) == (
        with_header.encode())


def test_slabinfo_falls_back_to_the_host() -> None:
    host = slabinfo.HEADER + SLAB_LINE
    for own in (None, "", slabinfo.HEADER):  # none, empty (kernels >= 5.9), header only
        assert slabinfo.render(slabinfo.SlabinfoSnapshot(host, own)) == host.encode()
