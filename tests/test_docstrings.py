"""Every example in painplast's docstrings runs and prints what it says.

The examples of the plasticity modules, the engine and the report need a BIDS dataset with
fMRIPrep derivatives: they read it from ``bids_dir``, which here names a simulated cohort of eight
participants (``conftest.DOCS``); in the docstrings it stands for the reader's own dataset.
"""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import painplast
from conftest import DOCS, simulated

MODULES = sorted(m.name for m in pkgutil.walk_packages(painplast.__path__, "painplast."))
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.fixture(scope="module")
def bids_dir():
    return str(simulated(**DOCS))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, bids_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)          # examples that write files write them here
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder(exclude_empty=True).find(module, name)
             if t.examples and t.name.startswith(name)]
    skipped = [f"{t.name}: {e.source.strip()}" for t in tests for e in t.examples
               if e.options.get(doctest.SKIP)]
    assert not skipped, f"examples marked +SKIP (they must run): {skipped[:3]}"
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in tests:
        test.globs = {**test.globs, "bids_dir": bids_dir}
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (see stdout)"


#: Modules whose every public function and class must show an example (issue 3's acceptance);
#: every plasticity module is checked by tests/test_plasticity_contract.py.
WITH_EXAMPLES = ("painplast.plasticity._firstlevel",)


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_public_functions_have_numpydoc_examples(name):
    import inspect

    module = importlib.import_module(name)
    lacking = [n for n, obj in vars(module).items()
               if not n.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
               and obj.__module__ == name and "Examples\n--------" not in (inspect.getdoc(obj) or "")]
    assert not lacking, f"public functions of {name} without an Examples section: {lacking}"
