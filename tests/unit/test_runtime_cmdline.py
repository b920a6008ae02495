"""procfs.runtime.cmdline: the command, bundle and container id of runc's and crun's command
lines as Docker's, containerd's, podman's and CRI-O's callers write them."""

from __future__ import annotations

import os

import pytest

from procfs.runtime.cmdline import parse


@pytest.mark.parametrize("argv, command, cid, bundle", [
    # containerd-shim-runc-v2 (go-runc), as Docker and Kubernetes call it
    (["--root", "/run/containerd/runc/k8s.io", "--log", "/run/x/log.json", "--log-format",
      "json", "--systemd-cgroup", "create", "--bundle", "/run/b", "--pid-file", "/run/b/pid",
      "--console-socket", "/tmp/pty.sock", "abc"], "create", "abc", "/run/b"),
    # conmon (podman, CRI-O): --flag=value forms
    (["--root=/run/runc", "--log-format=json", "--log=/var/log/x", "create", "--bundle=/b",
      "--pid-file=/b/pid", "--no-new-keyring", "c1"], "create", "c1", "/b"),
    # Go's flag package: one dash before a long name, -b
    (["-root", "/r", "-debug", "run", "-b", "/bb", "-d", "c2"], "run", "c2", "/bb"),
    (["run", "--preserve-fds", "3", "--detach", "c3"], "run", "c3", None),
    (["--rootless", "false", "--criu", "/usr/sbin/criu", "create", "c4"], "create", "c4", None),
    (["--cgroup-manager", "cgroupfs", "create", "-f", "other.json", "c5"], "create", "c5", None),
])
def test_create_lines(argv: list[str], command: str, cid: str, bundle: str | None) -> None:
    inv = parse(argv)
    assert (inv.command, inv.container_id) == (command, cid)
    assert inv.bundle() == (bundle or os.getcwd())
    assert [*inv.global_args, command, *inv.args] == argv  # nothing lost or reordered


def test_crun_config_flag_and_default() -> None:
    assert parse(["create", "--bundle", "/b", "x"]).config_path() == "/b/config.json"
    assert parse(["create", "-f", "/etc/c.json", "x"]).config_path() == "/etc/c.json"
    assert parse(["create", "--config=rel.json", "-b", "/b", "x"]).config_path() \
        == os.path.join(os.getcwd(), "rel.json")  # crun: relative to the current directory
    assert parse(["create", "--config", "config.json", "-b", "/b", "x"]).config_path() \
        == "/b/config.json"


@pytest.mark.parametrize("argv, command, cid", [
    # go-runc exec, as the shim runs `docker exec`
    (["--root", "/r", "--log", "/l", "--log-format", "json", "exec", "--process",
      "/tmp/p.json", "--console-socket", "/s", "--detach", "--pid-file", "/p", "abc"],
     "exec", "abc"),
    (["exec", "-t", "-u", "0:0", "-e", "A=1", "--cwd", "/", "abc", "sh", "-c", "ps"], "exec",
     "abc"),
    (["exec", "--env=A=1", "--cap", "CAP_SYS_ADMIN", "abc", "--", "ls"], "exec", "abc"),
    (["kill", "--all", "abc", "KILL"], "kill", "abc"),
    (["delete", "--force", "abc"], "delete", "abc"),
    (["delete", "abc", "--force"], "delete", "abc"),
    (["state", "abc"], "state", "abc"),
    (["ps", "--format", "json", "abc"], "ps", "abc"),
    (["events", "--interval", "5s", "--stats", "abc"], "events", "abc"),
    (["update", "--memory", "1000", "--resources", "-", "abc"], "update", "abc"),
    (["start", "abc"], "start", "abc"),
])
def test_container_commands(argv: list[str], command: str, cid: str) -> None:
    inv = parse(argv)
    assert (inv.command, inv.container_id) == (command, cid)


def test_exec_process_arguments_are_not_flags_of_exec() -> None:
    inv = parse(["exec", "abc", "ps", "-p", "1", "--bundle", "/x"])
    assert inv.operands == ("abc", "ps", "-p", "1", "--bundle", "/x")
    assert "bundle" not in inv.flags and "p" not in inv.flags


@pytest.mark.parametrize("argv", [[], ["--version"], ["-v"], ["--help"], ["--root", "/r"],
                                  ["--debug", "--"]])
def test_no_command(argv: list[str]) -> None:
    assert parse(argv).command is None


def test_global_flag_values() -> None:
    inv = parse(["--log", "/l", "--root=/r", "--debug", "state", "x"])
    assert inv.global_flag("root") == "/r"
    assert inv.global_flag("log") == "/l"
    assert inv.global_flag("criu") is None
    assert parse(["-root", "/go", "state", "x"]).global_flag("root") == "/go"


def test_commands_without_an_id() -> None:
    for argv in (["features"], ["spec", "--bundle", "/b"], ["list", "-q"]):
        assert parse(argv).command == argv[0]
    assert parse(["spec", "--rootless"]).container_id is None
