"""The layout stays as issue 23 left it: no import cycles between the modules of procfs and
overlays (a cycle makes the import order matter and a reload half-done), and one flock helper."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("procfs", "overlays")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imported_at_load(path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `path` imports when it is loaded: its top-level imports, not those
    inside functions (deferred on purpose) or under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If):
                test = ast.unparse(node.test)
                if "TYPE_CHECKING" not in test:
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names if a.name in known)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module in known:
                    out.add(node.module)
                out.update(f"{node.module}.{a.name}" for a in node.names
                           if f"{node.module}.{a.name}" in known)

    visit(tree.body)
    return out


def test_no_import_cycles() -> None:
    known = modules()
    graph = {name: imported_at_load(path, known) for name, path in known.items()}
    for name in graph:
        graph[name].discard(name)  # a package's __init__ naming its own submodules
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def walk(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep):], dep] if dep in path else [name, dep])
            elif dep not in state:
                walk(dep, [*path, dep])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])
    assert cycles == [], cycles


def test_one_flock_helper() -> None:
    users = [str(p.relative_to(ROOT)) for p in modules().values()
             if "flock(" in p.read_text() and p.name != "lock.py"]
    assert users == [], f"take locks through procfs.util.lock, not in {users}"
