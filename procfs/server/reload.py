"""Upgrade in place: put the code now installed into service inside the running server.

The FUSE session cannot move to another process (libfuse answers every request with EIO until it has
seen FUSE_INIT, which the kernel sends once per mount), so the server keeps its session and swaps
its code: every module of the code-only packages (`RELOADABLE`: the renderers, the readers and the
served files) is re-executed (`importlib.reload`, dependencies first), then the code-only objects
(host readers, views, the tree of nodes) are rebuilt from the new modules and installed in one
assignment. Kept as they are: the FUSE session and open files (each keeps the bytes it rendered),
the resolver's cache, and whatever state features keep in `Services` (kmsg rings, loadavg history)
and their background tasks.

All or nothing: if any module fails to load or the new tree cannot be built, every module is put
back as it was and the server goes on with the old code (`ReloadError`).

A module of those packages that keeps state at module level, or whose instances must outlive a
reload with their class, says `RELOAD = False` (the resolver, whose cache of containers is kept).
Nothing outside them is reloaded: the server loop, the FUSE operations, the error classes `to_errno`
matches, attach, the kmsg rings and their tasks."""

from __future__ import annotations

import ast
import importlib
import logging
import sys
import time
import types
from dataclasses import dataclass

from procfs.fuse.ops import ProcFS
from procfs.server.services import Services

log = logging.getLogger(__name__)

# Code-only packages: what a reload re-executes. Everything else (the FUSE layer, the server,
# attach, the CLI, the kmsg rings and their tasks) holds state or the loop itself and is kept.
RELOADABLE = ("overlays", "procfs.sources", "procfs.files")


class ReloadError(Exception):
    """The new code could not be put into service; the old code still serves."""


@dataclass(frozen=True)
class ReloadResult:
    modules: tuple[str, ...]
    files: int
    seconds: float


def reloadable(modules: dict[str, types.ModuleType] | None = None) -> list[str]:
    """The loaded modules a reload re-executes, dependencies first."""
    modules = dict(modules if modules is not None else sys.modules)
    names = sorted(
        name for name, mod in modules.items()
        if isinstance(mod, types.ModuleType)
        and any(name == p or name.startswith(p + ".") for p in RELOADABLE)
        and getattr(mod, "RELOAD", True) is not False
        and getattr(mod, "__file__", None)
    )
    deps = {name: _imports(modules[name], set(names)) for name in names}
    return _toposort(names, deps)


def _imports(mod: types.ModuleType, among: set[str]) -> set[str]:
    """The modules of `among` that the source now on disk imports (a new version may import
    differently from the one loaded)."""
    path = mod.__file__ or ""
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, ValueError):
        return set()  # the reload itself will report it
    package = mod.__name__ if path.endswith("__init__.py") else mod.__name__.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return (found & among) - {mod.__name__}


def _toposort(names: list[str], deps: dict[str, set[str]]) -> list[str]:
    order: list[str] = []
    done: set[str] = set()
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in done or name in visiting:  # a cycle: python itself copes with it
            return
        visiting.add(name)
        for dep in sorted(deps.get(name, ())):
            visit(dep)
        visiting.discard(name)
        done.add(name)
        order.append(name)

    for name in names:
        visit(name)
    return order


def _rebuild(services: Services) -> None:
    """Replace the code-only parts of `services` with instances of the reloaded classes."""
    hostproc = importlib.import_module("procfs.sources.hostproc")
    cfg = services.config
    host = hostproc.HostProc(cfg.proc_root, cfg.sys_root)
    services.host = host
    services.resolver.host = host


def reload_code(ops: ProcFS, services: Services) -> ReloadResult:
    """Reload the code and install the new tree; ReloadError (old code kept) when it fails."""
    t0 = time.perf_counter()
    importlib.invalidate_caches()
    names = reloadable()
    saved = {name: dict(sys.modules[name].__dict__) for name in names}
    kept_host = services.host
    try:
        for name in names:
            importlib.reload(sys.modules[name])
        _rebuild(services)
        table = importlib.import_module("procfs.files.table")
        tree = ops.build_tree(table.all_nodes(services))
    except Exception as e:
        for name, namespace in saved.items():
            mod = sys.modules[name]
            mod.__dict__.clear()
            mod.__dict__.update(namespace)
        services.host = services.resolver.host = kept_host
        log.exception("reload failed; the old code goes on serving")
        raise ReloadError(f"{type(e).__name__}: {e}") from e
    ops.install(tree)
    result = ReloadResult(tuple(names), len(tree.files), time.perf_counter() - t0)
    log.warning("reloaded %d modules, serving %d files (%.0f ms)",
                len(names), result.files, result.seconds * 1000)
    return result
