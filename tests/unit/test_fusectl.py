"""fusectl tuning: the files it writes, where it finds fusectl, and that failures only log."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from procfs.server import fusectl

MOUNTINFO = """\
22 1 0:21 / /proc rw,nosuid - proc proc rw
40 22 0:36 / /sys/fs/fuse/connections rw,nosuid,nodev,noexec,relatime - fusectl fusectl rw
"""


def test_write_limits_sets_both_files(tmp_path: Path) -> None:
    (tmp_path / "max_background").write_text("12\n")
    (tmp_path / "congestion_threshold").write_text("9\n")
    assert fusectl.write_limits(str(tmp_path), 1024) == (12, 1024)
    assert (tmp_path / "max_background").read_text() == "1024"
    assert (tmp_path / "congestion_threshold").read_text() == "768"


def test_fusectl_mount_from_mountinfo(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    assert fusectl.fusectl_mount(str(info)) == "/sys/fs/fuse/connections"
    info.write_text(MOUNTINFO.splitlines()[0] + "\n")
    assert fusectl.fusectl_mount(str(info)) is None


def test_connection_id_is_the_kernel_dev_t(tmp_path: Path) -> None:
    dev = os.stat(tmp_path).st_dev
    assert fusectl.connection_id(str(tmp_path)) == str((os.major(dev) << 20) | os.minor(dev))


def test_main_reports_a_missing_mountpoint(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert fusectl.main([str(tmp_path / "absent"), "1024"]) == 1
    assert "absent" in capsys.readouterr().err


async def test_tuning_that_fails_only_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                           ) -> None:
    with caplog.at_level(logging.WARNING, logger="procfs.server.fusectl"):
        await fusectl.tune_connection(str(tmp_path / "absent"), 1024)  # never raises
        await fusectl.tune_connection(str(tmp_path), 0)  # 0: left alone, nothing run
    assert len(caplog.records) == 1
    assert "max_background" in caplog.records[0].getMessage()
