"""`procfs oci-hook`: the OCI hook for runc, crun, podman and CRI-O.

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
from dataclasses import dataclass, field
from typing import IO, Any

from procfs.attach.attach import Attacher
from procfs.attach.errors import AttachError, ExitCode, HalfAttached, NoProcess
from procfs.attach.pids import ns_ancestor
from procfs.attach.state import StateError
from procfs.errors import ProcfsError
from procfs.sources.hostproc import HostProc

DISABLE_ANNOTATION = "io.procfs.disable"
TRUE = frozenset({"1", "true", "yes", "on"})



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
