"""The import graph of src/: no cycle, and no plasticity module imports a sibling module.

Every ``import`` statement counts, at the top of a file or inside a function (a function-level
import that closes a loop is still a loop, only a later one); imports under
``if TYPE_CHECKING:`` do not run and do not count. The registry in
``painplast/plasticity/__init__.py`` loads the modules by name (``importlib``), which is not an
edge: the package does not depend on any module's code, the modules depend on it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in sorted((SRC / "painplast").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def _absolute(module: str, is_package: bool, name: str | None, level: int) -> str:
    if not level:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_graph() -> dict[str, set[str]]:
    """``{module: {painplast modules it imports}}`` from the source text (nothing is imported)."""
    modules = _modules()
    graph = {}
    for module, (path, is_package) in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        typing_only = {id(n) for node in ast.walk(tree)
                       if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                       for stmt in node.body for n in ast.walk(stmt)}
        edges = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(module, is_package, node.module, node.level)
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    edges.add(target if target in modules else base)
        graph[module] = {e for e in edges if e in modules and e != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_walker_sees_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_walker_reads_relative_function_level_imports():
    graph = import_graph()
    assert "painplast.plasticity._firstlevel" in graph["painplast.plasticity.sensitization"]
    assert "painplast.plasticity" in graph["painplast.config"]            # inside a function


def test_no_import_cycle_in_src():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("module", sorted(m for m in _modules()
                                          if m.startswith("painplast.plasticity.")
                                          and not m.rsplit(".", 1)[1].startswith("_")))
def test_no_plasticity_module_imports_a_sibling(module):
    """A module may import its own helpers, ``plasticity/_*`` and the package (the registry)."""
    siblings = {m for m in _modules() if m.startswith("painplast.plasticity.")
                and not m.rsplit(".", 1)[1].startswith("_")} - {module}
    assert import_graph()[module] & siblings == set()
