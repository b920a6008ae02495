"""`procfs oci-hook` (runc, crun, podman, CRI-O) and `procfs docker-flags`.

The hook reads the OCI state (`id`, `pid`, `bundle`, `annotations`) on stdin and attaches the
container's init under its rootfs (from the bundle's config.json). Where it runs:

- `createRuntime` / `prestart` (runtime namespaces): `pid` is the init in our pid namespace.
  runc runs these after it mounted the container's /proc, /sys and /dev under the rootfs, before
  pivot_root, so the binds land on the container's own procfs and move with the root.
- `createContainer` (container namespaces, before pivot_root): `pid` is the init as seen from
  the container's new pid namespace (1); the hook finds it among its ancestors in /proc. crun
  passes `"pid": 0` there (it forks the hook from the container's init): the target is then the
  init of the hook's own pid namespace.

Exit status: 0 unless the container would otherwise start with wrong files: a bind failed and
could not be undone (6). A container is never left half-attached silently: a failed bind rolls
back the others and says so on stderr. `--strict` also fails the container whenever it could not
be attached (server down, ...), with the `attach` exit codes.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from procfs.attach import (
    Attacher,
    AttachError,
    ExitCode,
    HalfAttached,
    NoProcess,
    ns_ancestor,
    served_files,
    server_dev,
)
from procfs.errors import ProcfsError
from procfs.hostproc import HostProc
from procfs.shards import choose
from procfs.state import StateError

DISABLE_ANNOTATION = "io.procfs.disable"
TRUE = frozenset({"1", "true", "yes", "on"})

# runc (and so Docker) refuses bind mounts under /proc except on these files, the ones LXCFS
# emulates (runc libcontainer/rootfs_linux.go checkProcMount).
RUNC_PROC_MOUNTS = frozenset({
    "proc/cpuinfo", "proc/diskstats", "proc/meminfo", "proc/stat", "proc/swaps", "proc/uptime",
    "proc/loadavg", "proc/slabinfo", "proc/net/dev", "proc/sys/kernel/ns_last_pid",
})


class BadState(AttachError):
    code = ExitCode.USAGE


@dataclass(frozen=True)
class HookState:
    id: str
    pid: int
    bundle: str
    annotations: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: bytes) -> HookState:
        try:
            d = json.loads(data)
        except ValueError as e:
            raise BadState(f"the OCI state on stdin is not JSON: {e}") from e
        if not isinstance(d, dict):
            raise BadState("the OCI state on stdin is not a JSON object")
        pid, bundle = d.get("pid"), d.get("bundle")
        # 0: crun's createContainer hook, run inside the container (HookState.target)
        if not isinstance(pid, int) or isinstance(pid, bool) or pid < 0:
            raise BadState("the OCI state has no pid (is this a createRuntime, createContainer "
                           "or prestart hook?)")
        if not isinstance(bundle, str) or not bundle:
            raise BadState("the OCI state has no bundle")
        annotations = d.get("annotations") or {}
        if not isinstance(annotations, dict):
            annotations = {}
        return cls(str(d.get("id", "")), pid, bundle,
                   {str(k): str(v) for k, v in annotations.items()})

    def target(self, host: HostProc) -> int:
        """The container's init, in /proc's pid namespace."""
        if self.pid > 0:
            return ns_ancestor(self.pid, host)
        # crun: the hook runs in the container's pid namespace, whose init is an ancestor.
        try:
            nspid = host.status("self").nspid  # type: ignore[arg-type]
        except ProcfsError as e:
            raise NoProcess("cannot read /proc/self/status") from e
        if len(nspid) <= 1:
            raise BadState("the OCI state has pid 0 and the hook runs in the host's pid "
                           "namespace: no container to attach")
        return ns_ancestor(1, host)

    def config(self) -> dict[str, Any]:
        path = os.path.join(self.bundle, "config.json")
        try:
            with open(path) as f:
                config = json.load(f)
        except (OSError, ValueError) as e:
            raise BadState(f"cannot read {path}: {e}") from e
        if not isinstance(config, dict):
            raise BadState(f"{path} is not a JSON object")
        return config

    def rootfs(self, config: dict[str, Any]) -> str:
        root = config.get("root")
        path = root.get("path") if isinstance(root, dict) else None
        if not isinstance(path, str) or not path:
            raise BadState(f"{self.bundle}/config.json has no root.path")
        return os.path.normpath(os.path.join(self.bundle, path))

    def disabled(self, config: dict[str, Any]) -> bool:
        notes = dict(config.get("annotations") or {})
        notes.update(self.annotations)
        return str(notes.get(DISABLE_ANNOTATION, "")).lower() in TRUE


def run_hook(data: bytes, attacher: Attacher, *, strict: bool, stream: IO[str]) -> int:
    """Attach the container described by the OCI state `data`; the hook's exit status."""
    try:
        state = HookState.parse(data)
        config = state.config()
        if state.disabled(config):
            return ExitCode.OK
        res = attacher.attach(state.target(attacher.host), rootfs=state.rootfs(config),
                              container_id=state.id or None)
    except HalfAttached as e:
        print(f"procfs oci-hook: {e}", file=stream)
        return ExitCode.HALF_ATTACHED
    except (AttachError, StateError) as e:
        print(f"procfs oci-hook: {e}; the container keeps the host's files", file=stream)
        return int(getattr(e, "code", ExitCode.FAILED)) if strict else ExitCode.OK
    if not res.attached:
        print(f"procfs oci-hook: nothing attached to {state.id or state.pid}", file=stream)
    return ExitCode.OK


def flag_files(mount: str) -> tuple[list[str], list[str]]:
    """(files Docker can bind, files runc refuses), from the running server's tree, or from the
    registry when no server is mounted at `mount`."""
    try:
        server_dev(mount)
        files = served_files(mount)
    except AttachError:
        from procfs.registry import all_nodes
        from procfs.services import Config, Services

        services = Services.build(Config(mountpoint=mount))
        try:
            files = sorted(n.path for n in all_nodes(services))
        finally:
            services.close()
    ok = [f for f in files if not f.startswith("proc/") or f in RUNC_PROC_MOUNTS]
    return ok, [f for f in files if f not in ok]


def docker_flags(mount: str, *, compose: bool = False, host_mount: str | None = None,
                 stream: IO[str] | None = None, key: int | None = None,
                 services: Sequence[str] = ()) -> str:
    """`-v SRC:DST:rw` per file (one a line, for `docker run $(procfs docker-flags) ...`), or a
    compose file giving `services` the binds (compose_fragment). Files runc refuses are named on
    `stream` (stderr), not printed. For one container (`docker run`, on this host) the files
    come from one of the server's shards, as `procfs attach` would bind them, picked by `key`
    (default: at random, so that successive containers spread), and those only the server
    serves from `mount`; a compose file, reused by every container of a project, names `mount`
    alone."""
    ok, refused = flag_files(mount)
    src = (host_mount or mount).rstrip("/")
    if refused and stream is not None:
        print("procfs docker-flags: runc refuses binds on " + ", ".join("/" + f for f in refused)
              + "; attach them with the OCI hook or `procfs attach`", file=stream)
    sources = dict.fromkeys(ok, src)
    if not compose and host_mount is None:
        shard = choose(mount, random.getrandbits(64) if key is None else key)
        if shard != mount:
            sources.update(dict.fromkeys(set(ok) & set(served_files(shard)), shard))
    binds = [f"{sources[f]}/{f}:/{f}:rw" for f in ok]
    if compose:
        return compose_fragment(binds, services)
    return "\n".join(f"-v {b}" for b in binds)


def compose_fragment(binds: Sequence[str], services: Sequence[str]) -> str:
    """A compose file to merge over a project's (`docker compose -f compose.yaml -f THIS up`):
    the binds under the extension `x-procfs-volumes` (an anchor, to paste into a file), given to
    each of `services`. With no service it is still a valid file (compose refuses one whose
    `services` is empty unless it has a `version`)."""
    q = json.dumps  # a JSON string is a YAML double-quoted scalar: any path fits
    named = " ".join(services)
    lines = [
        f"# Generated by `procfs docker-flags --compose{' ' + named if named else ''}`: the files "
        "procfs serves,",
        "# as bind mounts. Merge it over your compose file:",
        "#   docker compose -f compose.yaml -f THIS_FILE up",
        "# or copy the list into a service (`volumes: *procfs-volumes` in the same file).",
    ]
    if not services:
        lines.append('version: "3.8"')
    lines += ["x-procfs-volumes: &procfs-volumes", *(f"  - {q(b)}" for b in binds)]
    if not services:
        return "\n".join([*lines, "services: {}"])
    lines.append("services:")
    for name in services:
        lines += [f"  {q(name)}:", "    volumes: *procfs-volumes"]
    return "\n".join(lines)
