"""contrib/lxc/lxc.mount.hook names the binary, the mountpoint and the state file from the options
on its lxc.hook.mount line (before the arguments LXC appends), then from the environment, then
from what make install wrote. The binary here records how it was called; the whole hook with
LXC is run by test_install.py::test_lxc_busybox_container_with_the_include."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.sandbox import Server

HOOK = Path(__file__).resolve().parents[2] / "contrib/lxc/lxc.mount.hook"


def test_hook_options_name_binary_mount_and_state(server: Server, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    binary = tmp_path / "procfs"
    binary.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    binary.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "LXC_ROOTFS_MOUNT": str(tmp_path), "LXC_NAME": "c1"}
    state = tmp_path / "state.json"
    done = subprocess.run([str(HOOK), "--procfs", str(binary), "--mount", server.mountpoint,
                           "--state", str(state), "c1", "lxc", "mount"], env=env,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([str(HOOK), "c1", "lxc", "mount"],
                          env={**env, "PROCFS": str(binary), "PROCFS_MOUNT": server.mountpoint},
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert calls.read_text().splitlines() == [
        f"attach init --rootfs {tmp_path} --mount {server.mountpoint} --quiet --state {state}",
        f"attach init --rootfs {tmp_path} --mount {server.mountpoint} --quiet",
    ]
