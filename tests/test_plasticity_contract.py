"""The contract every plasticity module keeps, checked on every registered module.

As scikit-learn's ``check_estimator`` and nilearn's ``check_estimator`` run against every
estimator, these tests are parametrized over the registry (:func:`painplast.plasticity.names`)
plus ``toy``, a sixth module defined only in this file: its declaration, its two stages and
nothing else. The toy module also runs end to end (participant level, group level, biomarker
features and the report) without any edit outside this file.

Checked for each module: the declaration (name, title, description, task, BOLD or not,
covariates, a-priori tests with known contrasts), the stage signatures, the public names
(``__all__``, each with an example), purity (no file is opened for writing, created, renamed or
removed during a stage: a ``sys.addaudithook`` hook watches), feature names, the findings
table's columns and rows, and the group stage on empty, all-excluded and single-group input.
"""
from __future__ import annotations

import inspect
import os
import sys
from dataclasses import replace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from conftest import DOCS, SMALL, simulated
from painplast import atlas, contrasts, engine, plasticity
from painplast.cohort import Cohort
from painplast.config import Config
from painplast.errors import InputError
from painplast.plasticity import _group
from painplast.results import FINDINGS_COLUMNS, GroupResult, SubjectResult

# ------------------------------------------------------------------ the sixth module


def toy_subject(subject, config) -> SubjectResult:
    """Temporal SNR of the resting BOLD signal in two regions, and the run's mean head motion."""
    options = config.module("toy")
    run = subject.run("rest")
    if run is None or run.bold is None:
        raise InputError(f"{subject.participant_id} has no rest run", fix="leave out the toy module")
    img = nib.load(run.bold)
    data = np.asarray(img.dataobj, dtype=np.float64)
    features = {}
    for region in ("dacc", "pcc"):
        mask = atlas.region_mask(region, img, radius=options["radius_mm"])
        series = data[mask].mean(axis=0)
        features[f"toy.{region}_tsnr"] = float(series.mean() / series.std())
    fd = pd.to_numeric(run.load_confounds()["framewise_displacement"], errors="coerce")
    features["toy.mean_fd"] = float(fd.mean())
    return SubjectResult("toy", subject.participant_id, features, info={"n_volumes": data.shape[3]})


def _toy_specific(data: _group.GroupData) -> _group.Specific:
    """What only the toy module reports: each group's mean tSNR."""
    groups = data.participants["group"] if "group" in data.participants else "all"
    means = data.features.filter(like="_tsnr").groupby(groups).mean().reset_index()
    return _group.Specific(tables={"tsnr_by_group": means})


def toy_group(results, cohort, config) -> GroupResult:
    """Findings of the two tSNR features; the group means as a table."""
    return _group.run(TOY, results, cohort, config, _toy_specific)


def _toy_tests(config=None):
    return [("toy.dacc_tsnr", "patient-control"), ("toy.pcc_tsnr", "patient-control"),
            ("toy.dacc_tsnr", "age")]


TOY = plasticity.Declaration(
    name="toy", title="Toy signal quality", task="rest", bold=True, subject=toy_subject,
    group=toy_group, defaults={"radius_mm": 8.0}, tests=_toy_tests, covariates={"*": ("mean_fd",)},
    description="A sixth module defined in a test: temporal SNR of two regions at rest.")

NAMES = plasticity.BUILTIN + ("toy",)


@pytest.fixture
def toy_registered():
    plasticity.register(TOY)
    try:
        yield TOY
    finally:
        plasticity.unregister("toy")


@pytest.fixture
def declaration(request, toy_registered):
    return plasticity.get(request.param)


# ------------------------------------------------------------------ purity

#: audit events that change the file system
_CHANGES = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "shutil.rmtree", "os.truncate",
            "os.link", "os.symlink", "shutil.copyfile", "shutil.move"}
_WATCH: list | None = None


def _audit(event, args):
    if _WATCH is None:
        return
    if event == "open":
        path, mode, flags = (tuple(args) + (None, None))[:3]
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND))
        if writes and not isinstance(path, int):
            _WATCH.append((event, str(path)))
    elif event in _CHANGES:
        _WATCH.append((event, str(args[0]) if args else ""))


sys.addaudithook(_audit)


def watched(function, *args):
    """``function(*args)`` and the file-system changes it made (none for a pure stage)."""
    global _WATCH
    import matplotlib.pyplot  # noqa: F401  (its first import makes its cache folders: not a stage's write)
    saved = sys.dont_write_bytecode
    sys.dont_write_bytecode = True        # importing a module lazily must not count as a write
    _WATCH = []
    try:
        out = function(*args)
    finally:
        changes, _WATCH = _WATCH, None
        sys.dont_write_bytecode = saved
    return out, changes


def test_the_watch_sees_a_write(tmp_path):
    _, changes = watched(lambda: (tmp_path / "x.txt").write_text("x"))
    assert changes and changes[0][1].endswith("x.txt")
    _, changes = watched(lambda: nib.save(nib.Nifti1Image(np.zeros((2, 2, 2)), np.eye(4)),
                                          tmp_path / "x.nii.gz"))
    assert changes


# ------------------------------------------------------------------ running the stages once

CONFIG = dict(n_permutations=20, options={"reorganization": {"maps": "s1"}})
_RESULTS: dict[str, tuple] = {}


@pytest.fixture(scope="module")
def docs_cohort():
    return Cohort.from_bids(simulated(**DOCS))


def stage_outputs(declaration, cohort):
    """Subject results of every participant and the group result, with the writes of each."""
    if declaration.name not in _RESULTS:
        config = Config(modules=(declaration.name,), **CONFIG)
        results, changes = [], []
        for subject in cohort:
            result, written = watched(declaration.subject, subject, config)
            results.append(result)
            changes += written
        group, written = watched(declaration.group, results, cohort, config)
        _RESULTS[declaration.name] = (config, results, group, changes + written)
    return _RESULTS[declaration.name]


# ------------------------------------------------------------------ the checks


@pytest.mark.parametrize("declaration", NAMES, indirect=True)
def test_declaration(declaration):
    assert declaration.name in plasticity.names() and declaration.title and declaration.description
    assert declaration.task is None or isinstance(declaration.task, str)
    assert isinstance(declaration.bold, bool)
    tests = declaration.a_priori(Config(modules=(declaration.name,)))
    assert tests and len(set(tests)) == len(tests)
    assert all(f.startswith(declaration.name + ".") for f, _ in tests)
    assert {c for _, c in tests} <= set(contrasts.CONTRASTS)
    assert all(isinstance(c, str) for covs in declaration.covariates.values() for c in covs)
    assert Config(modules=(declaration.name,)).module(declaration.name) == dict(declaration.defaults)
    assert float(declaration.cost) > 0                    # the engine's threads order tasks by it
    with pytest.raises(ValueError, match="cost"):
        replace(declaration, cost=0.0)


@pytest.mark.parametrize("declaration", NAMES, indirect=True)
def test_stage_signatures(declaration):
    assert list(inspect.signature(declaration.subject).parameters) == ["subject", "config"]
    assert list(inspect.signature(declaration.group).parameters) == ["results", "cohort", "config"]


@pytest.mark.parametrize("name", plasticity.BUILTIN)
def test_public_names_are_listed_and_shown(name):
    """``__all__`` lists the stages, the declaration and every public function or class of the
    file, and each of those shows an example (it runs in tests/test_docstrings.py)."""
    module = sys.modules[plasticity.get(name).subject.__module__]
    assert module.DECLARATION is plasticity.get(name) and module.NAME == name
    assert {"DECLARATION", "DEFAULTS", "subject", "group"} <= set(module.__all__)
    assert all(hasattr(module, n) for n in module.__all__)
    defined = [n for n, obj in vars(module).items() if not n.startswith("_")
               and (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == module.__name__]
    assert set(defined) <= set(module.__all__)
    lacking = [n for n in defined if "Examples\n--------" not in (inspect.getdoc(getattr(module, n)) or "")]
    assert not lacking, f"public names of {name} without an example: {lacking}"


@pytest.mark.parametrize("declaration", NAMES, indirect=True)
def test_stages_are_pure_and_keep_the_contract(declaration, docs_cohort):
    config, results, group, changes = stage_outputs(declaration, docs_cohort)
    assert changes == [], f"{declaration.name} wrote files: {changes[:3]}"
    assert [r.module for r in results] == [declaration.name] * len(results)
    assert all(k.startswith(declaration.name + ".") for r in results for k in r.features)
    assert group.module == declaration.name
    findings = group.findings
    assert tuple(findings.columns) == FINDINGS_COLUMNS
    assert len(findings) and set(zip(findings.feature, findings.contrast)) <= set(
        declaration.a_priori(config))
    numbers = findings[["estimate", "ci_low", "ci_high", "p", "p_corrected", "n"]]
    assert all(np.issubdtype(t, np.number) for t in numbers.dtypes)
    assert (findings.p_corrected >= findings.p - 1e-12).all()
    assert (findings.ci_low <= findings.estimate).all() and (findings.estimate <= findings.ci_high).all()
    assert (findings.n <= len(results)).all()
    assert set(group.tables["features"].participant_id) == {
        r.participant_id for r in results if not r.excluded}


@pytest.mark.parametrize("declaration", NAMES, indirect=True)
def test_group_of_nothing_and_of_excluded_participants(declaration, docs_cohort):
    config, results, _, _ = stage_outputs(declaration, docs_cohort)
    empty = declaration.group([], docs_cohort, config)
    assert tuple(empty.findings.columns) == FINDINGS_COLUMNS and empty.findings.empty
    excluded = [replace(r, info={**r.info, "excluded": "test"}) for r in results[:3]]
    out = declaration.group(excluded, docs_cohort, config)
    assert out.findings.empty and out.tables["excluded"].participant_id.tolist() == [
        r.participant_id for r in excluded]
    assert any("no participant left" in n for n in out.notes)


@pytest.mark.parametrize("declaration", NAMES, indirect=True)
def test_group_of_a_single_group(declaration, docs_cohort):
    """Controls only: no patient-control row, the stage still runs and says why."""
    config, results, _, _ = stage_outputs(declaration, docs_cohort)
    controls = docs_cohort.participants.index[docs_cohort.participants["group"] == "control"]
    cohort = Cohort.from_bids(docs_cohort.root, participant_label=list(controls))
    out = declaration.group([r for r in results if r.participant_id in controls], cohort, config)
    assert tuple(out.findings.columns) == FINDINGS_COLUMNS
    assert "patient-control" not in set(out.findings.contrast)
    assert len(out.tables["features"]) == len(controls)


def test_unknown_names_and_taken_names_are_refused(toy_registered):
    with pytest.raises(InputError, match="unknown module"):
        Config(modules=("toys",))
    with pytest.raises(ValueError, match="already registered"):
        plasticity.register(TOY)
    with pytest.raises(ValueError, match="lower-case"):
        replace(TOY, name="Toy")
    assert "toy" in Config().modules


def test_every_module_file_is_registered():
    """A file of painplast/plasticity/ that is not private is a module and must be in BUILTIN."""
    folder = os.path.dirname(plasticity.__file__)
    files = {f[:-3] for f in os.listdir(folder) if f.endswith(".py") and not f.startswith("_")}
    assert files == set(plasticity.BUILTIN)


# ------------------------------------------------------------------ the sixth module, end to end


def test_toy_module_runs_end_to_end(toy_registered, tmp_path):
    """Participant level, group level, biomarker features and the report, with no edit outside
    this file: the registry is the only thing the rest of painplast reads."""
    import json

    from painplast.biomarker import run_from_derivatives
    from painplast.biomarker.store import load_model
    from painplast.report import write_report

    cohort = Cohort.from_bids(simulated(**SMALL), participant_label=[f"{i:03d}" for i in range(1, 17)])
    config = Config(modules=("toy", "structure"), n_permutations=20,
                    options={"structure": {"voxelwise": False}})
    out = tmp_path / "out"
    summary = engine.run_participant_level(cohort, config, out, n_jobs=1, progress=False)
    assert not summary.failed and len(summary.done) == 2 * len(cohort)
    engine.run_group_level(cohort, config, out, progress=False)
    findings = pd.read_csv(out / "group" / "toy_findings.tsv", sep="\t")
    assert set(zip(findings.feature, findings.contrast)) == set(_toy_tests())
    assert (out / "group" / "toy_tsnr_by_group.tsv").exists()

    engine.run_biomarker(cohort, config, out, "diagnosis", runner=lambda c, k, o, t: run_from_derivatives(
        c, k, o, t, folds=3, inner_folds=3, repeats=1, n_permutations=0, n_bootstrap=100,
        learning=False, site_out=False))
    result = json.loads((out / "group" / "biomarker_diagnosis.json").read_text())
    model = load_model(out / result["model"])
    names = model.metadata["biomarker_input"]["features"]
    assert {"toy.dacc_tsnr", "toy.pcc_tsnr"} <= set(names)
    assert any(n.startswith("structure.gm_") for n in names)
    # head motion is regressed out of the BOLD module's features only (toy declares bold=True)
    confounds = dict(model.steps)["confounds"]
    motion = model.metadata["biomarker_input"]["confounds"].index("mean_fd")
    coef = pd.Series(confounds.coef_[motion], index=names)
    assert (coef[[n for n in names if n.startswith("toy.")]] != 0).all()
    assert (coef[[n for n in names if n.startswith("structure.")]] == 0).all()

    html = write_report(out).read_text()
    section = html.split('<section id="toy">')[1].split("</section>")[0]
    assert "Toy signal quality" in section and "temporal SNR of two regions" in section
    assert "toy.dacc_tsnr" in section


@pytest.mark.parametrize("options, message", [
    ({"biomarker": {"repeat": 2}}, "unknown option(s) repeat for biomarker"),
    ({"structure": {"fhwm": 8}}, "unknown option(s) fhwm for structure"),
    ({"strucure": {"fwhm": 8}}, "unknown options section(s) strucure"),
])
def test_options_are_checked_where_a_config_file_enters(options, message, tmp_path, capsys):
    """Module and biomarker options are declared once and checked before anything runs: an
    unknown key is one line on stderr and exit status 2, no output folder."""
    import json

    from painplast.cli import main

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"options": options}))
    out = tmp_path / "out"
    code = main(["run", str(simulated(**DOCS)), str(out), "participant", "--config", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not out.exists()
