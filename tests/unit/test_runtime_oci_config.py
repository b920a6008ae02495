"""procfs.runtime.oci_config: the hook, the sysinfo notify rule, the time-namespace plan, the
opt-out annotations, and the atomic rewrite."""

from __future__ import annotations

import copy
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from procfs.attach.oci import DISABLE_ANNOTATION as HOOK_DISABLE
from procfs.runtime import oci_config as oc

SOCK = "/run/procfs/sysinfo.sock"


def config(**linux: Any) -> dict[str, Any]:
    return {"ociVersion": "1.0.2", "process": {"args": ["sh"]}, "root": {"path": "rootfs"},
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}], **linux}}


def docker_profile() -> dict[str, Any]:
    """The shape of Docker's default profile as dockerd hands it to runc (flattened: no
    includes/excludes): deny by default, one big allow rule that lists sysinfo, rules on
    arguments."""
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["accept", "read", "sysinfo", "write"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["sysinfo"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        ],
    }


def sysinfo_action(seccomp: dict[str, Any]) -> str:
    """What libseccomp does with sysinfo: the first unconditional rule naming it, else the
    default."""
    for rule in seccomp.get("syscalls", []):
        if "sysinfo" in rule.get("names", []) and not rule.get("args"):
            return str(rule["action"])
    return str(seccomp["defaultAction"])


def test_hook_added_once() -> None:
    c = config()
    entry = oc.hook_entry("/usr/local/bin/procfs", ["procfs"], "/var/lib/procfs", None)
    assert entry == {"path": "/usr/local/bin/procfs", "timeout": oc.HOOK_TIMEOUT,
                     "args": ["procfs", "oci-hook", "--mount", "/var/lib/procfs"]}
    assert oc.add_hook(c, entry)
    assert not oc.add_hook(c, entry)
    assert c["hooks"] == {"createRuntime": [entry]}


def test_hook_kept_beside_others_and_not_doubled_by_a_users_own() -> None:
    c = config()
    other = {"path": "/usr/bin/nvidia-container-runtime-hook", "args": ["x", "prestart"]}
    c["hooks"] = {"prestart": [other], "createRuntime": []}
    entry = oc.hook_entry("/usr/bin/python3", ["/usr/bin/python3", "-m", "procfs"], "/m", "/s")
    assert entry["env"] == ["PROCFS_STATE=/s"]
    assert oc.add_hook(c, entry)
    assert c["hooks"] == {"prestart": [other], "createRuntime": [entry]}
    # a hook the user (or contrib/oci/hooks.d through podman) put there already
    users = config()
    users["hooks"] = {"createContainer": [{"path": "/opt/procfs",
                                           "args": ["procfs", "oci-hook", "--mount", "/m"]}]}
    assert not oc.add_hook(users, entry)


def test_annotations() -> None:
    assert oc.DISABLE_ANNOTATION == HOOK_DISABLE  # the hook honours the same one
    assert oc.wanted(config()) == oc.Wanted(True, True, True)
    for value in ("true", "1", "yes", " TRUE "):
        assert not oc.wanted({"annotations": {"io.procfs.disable": value}}).anything
    assert oc.wanted({"annotations": {"io.procfs.disable": "false"}}).anything
    assert oc.wanted({"annotations": {"io.procfs.timens": "false"}}) == oc.Wanted(True, False,
                                                                                   True)
    assert oc.wanted({"annotations": {"io.procfs.sysinfo": "0"}}) == oc.Wanted(True, True, False)
    assert oc.wanted({"annotations": {"io.procfs.hook": "off"}}) == oc.Wanted(False, True, True)
    assert oc.wanted({"annotations": "garbage"}) == oc.Wanted()


def test_time_plan() -> None:
    assert oc.time_plan(config()) == oc.TimePlan("new")
    assert oc.time_plan({"process": {}}) is None  # not a Linux container
    host_pid = config()
    host_pid["linux"]["namespaces"] = [{"type": "mount"}]
    assert oc.time_plan(host_pid) is None  # docker --pid=host: the host's clock
    shared = config()
    shared["linux"]["namespaces"][0]["path"] = "/proc/4242/ns/pid"  # a pod's shared pid ns
    assert oc.time_plan(shared) == oc.TimePlan("join", "/proc/4242/ns/time")
    pinned = config()
    pinned["linux"]["namespaces"][0]["path"] = "/run/netns/pinned-pid"
    assert oc.time_plan(pinned) is None
    has_time = config()
    has_time["linux"]["namespaces"].append({"type": "time"})
    assert oc.time_plan(has_time) is None  # the runtime makes it: left alone


def test_new_seccomp_section() -> None:
    c = config()
    assert oc.add_sysinfo_notify(c, SOCK, "x86_64")
    assert c["linux"]["seccomp"] == {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "listenerPath": SOCK,
        "syscalls": [{"names": ["sysinfo"], "action": "SCMP_ACT_NOTIFY"}],
    }
    before = copy.deepcopy(c)
    assert not oc.add_sysinfo_notify(c, SOCK, "x86_64")  # never twice
    assert c == before


def test_docker_profile_kept_and_notify_wins() -> None:
    c = config(seccomp=docker_profile())
    assert sysinfo_action(c["linux"]["seccomp"]) == "SCMP_ACT_ALLOW"
    assert oc.add_sysinfo_notify(c, SOCK, "x86_64")
    seccomp = c["linux"]["seccomp"]
    assert sysinfo_action(seccomp) == "SCMP_ACT_NOTIFY"
    assert seccomp["listenerPath"] == SOCK
    assert seccomp["syscalls"][0] == {"names": ["sysinfo"], "action": "SCMP_ACT_NOTIFY"}
    # everything else as it was, sysinfo gone from the rules that allowed it
    rest = seccomp["syscalls"][1:]
    assert rest == [
        {"names": ["accept", "read", "write"], "action": "SCMP_ACT_ALLOW"},
        docker_profile()["syscalls"][1],
        docker_profile()["syscalls"][3],
    ]
    for key in ("defaultAction", "defaultErrnoRet", "architectures"):
        assert seccomp[key] == docker_profile()[key]
    before = copy.deepcopy(c)
    assert not oc.add_sysinfo_notify(c, SOCK, "x86_64")
    assert c == before


@pytest.mark.parametrize("profile", [
    # refuses sysinfo: by default, by a rule before the allow, by killing
    {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"],
                                                      "action": "SCMP_ACT_ALLOW"}]},
    {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["sysinfo"], "action": "SCMP_ACT_ERRNO"},
        {"names": ["sysinfo"], "action": "SCMP_ACT_ALLOW"}]},
    {"defaultAction": "SCMP_ACT_KILL", "syscalls": []},
    # matches it on arguments
    {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["sysinfo"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]}]},
    # another listener gets this container's notifications
    {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/other.sock",
     "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_NOTIFY"}]},
])
def test_profiles_left_alone(profile: dict[str, Any]) -> None:
    c = config(seccomp=copy.deepcopy(profile))
    assert not oc.add_sysinfo_notify(c, SOCK, "x86_64")
    assert c["linux"]["seccomp"] == profile


def test_allowing_default_gets_the_rule_first() -> None:
    profile = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO"}]}
    c = config(seccomp=copy.deepcopy(profile))
    assert oc.add_sysinfo_notify(c, SOCK, "aarch64")
    assert c["linux"]["seccomp"]["syscalls"] == [oc.notify_rule(), *profile["syscalls"]]
    assert "architectures" not in c["linux"]["seccomp"]  # the profile's own choice


def test_save_is_atomic_and_keeps_mode(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config()))
    os.chmod(path, 0o600)
    inode = path.stat().st_ino
    c = oc.load(str(path))
    oc.add_hook(c, oc.hook_entry("/p", ["procfs"], "/m", None))
    oc.save(str(path), c)
    assert oc.load(str(path)) == c
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_ino != inode  # replaced by rename, never rewritten in place
    assert sorted(os.listdir(tmp_path)) == ["config.json"]  # no temporary left behind
    path.write_text("[1, 2]")
    with pytest.raises(ValueError):
        oc.load(str(path))
