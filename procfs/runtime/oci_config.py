"""The wrapper's edits of an OCI config.json (pure functions on the parsed document), and its
atomic rewrite.

- The procfs OCI hook (createRuntime), unless one is there already.
- A seccomp rule that hands `sysinfo(2)` to a listener (SCMP_ACT_NOTIFY + linux.seccomp.
  listenerPath), keeping the container's profile. libseccomp (2.5, `db_rule_add`) keeps the first
  unconditional rule of a syscall and silently drops later ones, so the notify rule goes first
  and `sysinfo` leaves the rules that allowed it. A profile that refuses `sysinfo`, or matches
  it on arguments, or already sends notifications elsewhere, is left alone.
- Which time namespace the container gets (`time_plan`): the config cannot say it to runc 1.1,
  so the wrapper makes it (`procfs.runtime.timens`).

Annotations: `io.procfs.disable=true` turns everything off (the hook honours it too);
`io.procfs.hook=false`, `io.procfs.timens=false`, `io.procfs.sysinfo=false` one part each.
"""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

from procfs.util.atomic import replace

DISABLE_ANNOTATION = "io.procfs.disable"  # the same name procfs.oci's hook honours
HOOK_ANNOTATION = "io.procfs.hook"
TIMENS_ANNOTATION = "io.procfs.timens"
SYSINFO_ANNOTATION = "io.procfs.sysinfo"
TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})

HOOK_STAGE = "createRuntime"
ATTACH_STAGES = ("createRuntime", "createContainer", "prestart")
HOOK_TIMEOUT = 30

SYSINFO = "sysinfo"
NOTIFY = "SCMP_ACT_NOTIFY"
ALLOWING = frozenset({"SCMP_ACT_ALLOW", "SCMP_ACT_LOG"})
# The architectures a native process may call through (Docker's default profile's map).
ARCHITECTURES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
    "ppc64le": ["SCMP_ARCH_PPC64LE"],
    "s390x": ["SCMP_ARCH_S390X", "SCMP_ARCH_S390"],
    "riscv64": ["SCMP_ARCH_RISCV64"],
    "mips64": ["SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPS"],
}

Config = dict[str, Any]


class Wanted(NamedTuple):
    """Which of the wrapper's additions a container's annotations leave on."""

    hook: bool = True
    timens: bool = True
    sysinfo: bool = True

    @property
    def anything(self) -> bool:
        return self.hook or self.timens or self.sysinfo


def annotations_of(config: Config) -> dict[str, str]:
    notes = config.get("annotations")
    return {str(k): str(v) for k, v in notes.items()} if isinstance(notes, dict) else {}


def wanted(config: Config) -> Wanted:
    notes = {k: v.strip().lower() for k, v in annotations_of(config).items()}
    if notes.get(DISABLE_ANNOTATION) in TRUE:
        return Wanted(False, False, False)
    return Wanted(notes.get(HOOK_ANNOTATION) not in FALSE,
                  notes.get(TIMENS_ANNOTATION) not in FALSE,
                  notes.get(SYSINFO_ANNOTATION) not in FALSE)


# The hook.

def is_procfs_hook(hook: Any) -> bool:
    if not isinstance(hook, dict):
        return False
    path, args = str(hook.get("path", "")), hook.get("args") or []
    if not isinstance(args, list) or "oci-hook" not in args:
        return False
    return "procfs" in os.path.basename(path) or "procfs" in args


def has_procfs_hook(config: Config) -> bool:
    hooks = config.get("hooks")
    if not isinstance(hooks, dict):
        return False
    return any(is_procfs_hook(h) for stage in ATTACH_STAGES
               for h in (hooks.get(stage) or []) if isinstance(hooks.get(stage), list))


def hook_entry(path: str, argv: list[str], mount: str, state: str | None) -> dict[str, Any]:
    """The createRuntime hook running `argv` (from the executable `path`) `oci-hook --mount`."""
    entry: dict[str, Any] = {"path": path, "args": [*argv, "oci-hook", "--mount", mount],
                             "timeout": HOOK_TIMEOUT}
    if state:
        entry["env"] = [f"PROCFS_STATE={state}"]
    return entry


def add_hook(config: Config, entry: dict[str, Any]) -> bool:
    """Add the procfs hook unless one is there; whether the config changed."""
    if has_procfs_hook(config):
        return False
    hooks = config.get("hooks")
    if not isinstance(hooks, dict):
        hooks = config["hooks"] = {}
    stage = hooks.get(HOOK_STAGE)
    if not isinstance(stage, list):
        stage = hooks[HOOK_STAGE] = []
    stage.append(entry)
    return True


# The time namespace.

class TimePlan(NamedTuple):
    """`new`: a namespace of its own, its clocks from 0; `join`: the one at `path` (the
    container shares the pid namespace of another process: it shares its clock too)."""

    action: str  # "new" or "join"
    path: str | None = None


def time_plan(config: Config) -> TimePlan | None:
    """What the wrapper must do, or None: no Linux config, a time namespace already in the
    config (the runtime makes it), or no pid namespace of its own (the host's processes would
    show start times before its clock's 0)."""
    linux = config.get("linux")
    if not isinstance(linux, dict) or not isinstance(linux.get("namespaces"), list):
        return None
    spaces = [n for n in linux["namespaces"] if isinstance(n, dict)]
    if any(n.get("type") == "time" for n in spaces):
        return None
    pid = next((n for n in spaces if n.get("type") == "pid"), None)
    if pid is None:
        return None
    path = pid.get("path")
    if not path:
        return TimePlan("new")
    parts = str(path).split("/")
    if len(parts) == 5 and parts[:2] == ["", "proc"] and parts[2].isdigit() \
            and parts[3:] == ["ns", "pid"]:
        return TimePlan("join", f"/proc/{parts[2]}/ns/time")
    return None


# The sysinfo rule.

def _rules(seccomp: dict[str, Any]) -> list[dict[str, Any]]:
    rules = seccomp.get("syscalls")
    return [r for r in rules if isinstance(r, dict)] if isinstance(rules, list) else []


def _names(rule: dict[str, Any]) -> list[str]:
    names = rule.get("names")
    return [str(n) for n in names] if isinstance(names, list) else []


def notify_rule() -> dict[str, Any]:
    return {"names": [SYSINFO], "action": NOTIFY}


def _notifies(rule: dict[str, Any]) -> bool:
    return rule.get("action") == NOTIFY and SYSINFO in _names(rule) and not rule.get("args")


def sysinfo_allowed(seccomp: dict[str, Any]) -> bool | None:
    """Whether the profile lets `sysinfo` through (None: it matches it on arguments, which the
    wrapper does not rewrite). The first unconditional rule naming it decides, as in
    libseccomp; else the default action."""
    for rule in _rules(seccomp):
        if SYSINFO in _names(rule):
            if rule.get("args"):
                return None
            return rule.get("action") in ALLOWING
    return seccomp.get("defaultAction") in ALLOWING


def add_sysinfo_notify(config: Config, listener: str, machine: str) -> bool:
    """Hand `sysinfo` to the listener at `listener`; whether the config changed."""
    linux = config.get("linux")
    if not isinstance(linux, dict):
        return False
    seccomp = linux.get("seccomp")
    if seccomp is None:
        linux["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ARCHITECTURES.get(machine, []),
            "listenerPath": listener,
            "syscalls": [notify_rule()],
        }
        return True
    if not isinstance(seccomp, dict):
        return False
    if seccomp.get("listenerPath") not in (None, "", listener):
        return False  # another listener gets this container's notifications
    rules = _rules(seccomp)
    if any(_notifies(r) for r in rules):  # ours, from an earlier pass
        if seccomp.get("listenerPath") == listener:
            return False
        seccomp["listenerPath"] = listener
        return True
    if not sysinfo_allowed(seccomp):
        return False
    kept = []
    for rule in rules:
        names = _names(rule)
        if SYSINFO in names and rule.get("action") in ALLOWING:
            names = [n for n in names if n != SYSINFO]
            if not names:
                continue
            rule = {**rule, "names": names}
        kept.append(rule)
    seccomp["syscalls"] = [notify_rule(), *kept]
    seccomp["listenerPath"] = listener
    return True


# Reading and writing.

def load(path: str) -> Config:
    with open(path, "rb") as f:
        config = json.load(f)
    if not isinstance(config, dict):
        raise ValueError(f"{path} is not a JSON object")
    return config


def save(path: str, config: Config) -> None:
    """Replace `path` atomically (a reader sees the old file or the new one), keeping its mode
    and owner."""
    st = os.stat(path)
    owner = (st.st_uid, st.st_gid)
    replace(path, json.dumps(config, separators=(",", ":")).encode(), st.st_mode & 0o7777,
            owner=None if owner == (os.geteuid(), os.getegid()) else owner)
