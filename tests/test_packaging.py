"""Packaging: every package painplast imports at run time is a declared runtime dependency.

``pip install painplast`` installs ``[project.dependencies]`` only; a module imported from
``src/`` whose distribution sits in the ``test`` extra works in the developers' environment and
crashes for users (bctpy, imported by the connectivity module, was such a case). The wheel itself
is installed without extras into a fresh environment and run on a tiny cohort by ``make
wheel-check`` (part of ``make test``); this test is the quick static half of that check.
"""
from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "painplast"


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imports() -> dict[str, list[str]]:
    """Top-level names of every absolute import in src/painplast -> files importing them."""
    found: dict[str, list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], []).append(str(path.relative_to(ROOT)))
    return found


def test_every_runtime_import_is_a_declared_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_name(r) for r in project["dependencies"]}
    extras = project.get("optional-dependencies", {})
    # an optional feature (dask.distributed for --scheduler) may live in its own extra; the test
    # extra is for the test suite only
    optional = {_name(r) for key, reqs in extras.items() if key != "test" for r in reqs}
    distributions = md.packages_distributions()
    problems = []
    for module, files in sorted(_imports().items()):
        if module in sys.stdlib_module_names or module in ("painplast", "__future__"):
            continue
        dists = {d.lower().replace("_", "-") for d in distributions.get(module, [])}
        assert dists, f"{module} (imported by {files[0]}) is not installed in this environment"
        if not dists & (runtime | optional):
            problems.append(f"{module} ({', '.join(sorted(dists))}) imported by "
                            f"{', '.join(sorted(set(files)))}")
    assert not problems, "imported at run time but not a runtime dependency: " + "; ".join(problems)


def test_the_import_scan_sees_the_lazy_imports():
    # imports inside functions count (connectivity imports bct and networkx where they are used)
    imports = _imports()
    assert "src/painplast/plasticity/connectivity.py" in imports["bct"]
    assert "src/painplast/plasticity/connectivity.py" in imports["networkx"]
