"""The package's import structure: layers point one way, and no module imports itself in a loop.

Layers, lowest first: the base modules (errors, paths, hardware, artifacts, ...), ``data``,
``baselines``, ``memory`` and ``agents`` (peers), ``training`` and ``eval`` (peers), ``envs``,
``reproduce``, ``cli``. A module may import its own layer or any lower one, never a higher one, and
the graph of imports between modules (function-level imports included; ``if TYPE_CHECKING:`` imports
left out, as they never run) has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import recsim_personas

ROOT = Path(recsim_personas.__file__).parent
LAYERS = {
    "data": 1, "baselines": 2, "memory": 3, "agents": 3, "training": 4, "eval": 4,
    "envs": 5, "reproduce": 6, "cli": 7,
}  # any other top-level name (errors, paths, hardware, artifacts, integrity, ...) is layer 0


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:`` (annotations only, never imported)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                stack.extend(child.orelse)
                continue
            stack.append(child)


def _imports() -> dict[str, set[str]]:
    modules = {_module(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            graph[mod].update(t for t in targets if t in modules and t != mod)
    return graph


def _layer(mod: str) -> int:
    parts = mod.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def test_no_import_points_up_the_layers():
    upward = sorted(
        f"{a} -> {b}" for a, targets in _imports().items() for b in targets
        # the package root only registers PersonaRec-v0 (a string entry point) and holds __version__
        if a != ROOT.name and _layer(b) > _layer(a)
    )
    assert upward == []


def test_no_import_cycles():
    graph = _imports()
    # Package __init__ files re-export their children: an edge child -> package is how a child
    # reaches a sibling, so it is followed to the sibling itself instead of counting as a loop.
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue  # a package and its own submodules
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [])
    assert [" -> ".join(c) for c in cycles] == []
