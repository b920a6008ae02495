"""Upgrade in place: put the code now installed into service inside the running server.

The FUSE session cannot move to another process (libfuse answers every request with EIO until it has
seen FUSE_INIT, which the kernel sends once per mount), so the server keeps its session and swaps
its code: every module of the code-only packages (`RELOADABLE`: the renderers, the readers and the
served files) whose source changed since it was loaded, and every module that imports one of those,
is re-executed (`importlib.reload`, dependencies first), then the code-only objects
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
import gc
import importlib
import logging
import os
import sys
import time
import types
from dataclasses import dataclass

from procfs.fuse.held import malloc_trim
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


Stamp = tuple[int, int, int]  # a source file's inode, size and mtime

# The stamp of the source each module was last loaded from (`remember`), and the imports parsed
# from each source (by stamp: parsing every source took longer than re-executing them).
_loaded: dict[str, Stamp | None] = {}
_parsed: dict[tuple[str, Stamp | None], frozenset[str]] = {}


def _stamp(mod: types.ModuleType) -> Stamp | None:
    try:
        st = os.stat(mod.__file__ or "")
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _candidates(modules: dict[str, types.ModuleType]) -> list[str]:
    return sorted(
        name for name, mod in modules.items()
        if isinstance(mod, types.ModuleType)
        and any(name == p or name.startswith(p + ".") for p in RELOADABLE)
        and getattr(mod, "RELOAD", True) is not False
        and getattr(mod, "__file__", None)
    )


def remember(modules: dict[str, types.ModuleType] | None = None) -> None:
    """Note the sources the reloadable modules were loaded from (the server, once it imported
    them; a reload, for what it re-executed)."""
    modules = dict(modules if modules is not None else sys.modules)
    for name in _candidates(modules):
        _loaded[name] = _stamp(modules[name])


def reloadable(modules: dict[str, types.ModuleType] | None = None,
               changed_only: bool = False) -> list[str]:
    """The loaded modules a reload re-executes, dependencies first: all of them, or (with
    `changed_only`) those whose source changed since `remember` and those that import them."""
    modules = dict(modules if modules is not None else sys.modules)
    names = _candidates(modules)
    deps = {name: _imports(modules[name], set(names)) for name in names}
    if changed_only:
        chosen = {n for n in names if n not in _loaded or _loaded[n] != _stamp(modules[n])}
        users: dict[str, set[str]] = {}
        for name, its in deps.items():
            for dep in its:
                users.setdefault(dep, set()).add(name)
        todo = list(chosen)
        while todo:
            for user in users.get(todo.pop(), ()):
                if user not in chosen:
                    chosen.add(user)
                    todo.append(user)
        names = sorted(chosen)
    return _toposort(names, deps)


def _imports(mod: types.ModuleType, among: set[str]) -> set[str]:
    """The modules of `among` that the source now on disk imports (a new version may import
    differently from the one loaded)."""
    key = (mod.__name__, _stamp(mod))
    if key not in _parsed:
        _parsed[key] = frozenset(_parse_imports(mod))
    return set(_parsed[key] & among) - {mod.__name__}


def _parse_imports(mod: types.ModuleType) -> set[str]:
    """Every module name the source on disk may import."""
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
    return found


def _toposort(names: list[str], deps: dict[str, set[str]]) -> list[str]:
    order: list[str] = []
    done: set[str] = set()
    visiting: set[str] = set()
    among = set(names)

    def visit(name: str) -> None:
        if name in done or name in visiting:  # a cycle: python itself copes with it
            return
        visiting.add(name)
        for dep in sorted(deps.get(name, set()) & among):
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
    """Reload the code that changed and install a new tree; ReloadError (old code kept) when it
    fails."""
    t0 = time.perf_counter()
    importlib.invalidate_caches()
    names = reloadable(changed_only=True)
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
    remember()  # what was re-executed, and what the new code imported for the first time
    # The old classes and functions hold each other in cycles: freed by a full collection only,
    # which a server that allocates little runs rarely (each reload would add to its RSS).
    gc.collect()
    malloc_trim()
    result = ReloadResult(tuple(names), len(tree.files), time.perf_counter() - t0)
    log.warning("reloaded %d modules, serving %d files (%.0f ms)",
                len(names), result.files, result.seconds * 1000)
    return result
