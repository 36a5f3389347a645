"""painplast on datasets laid out as real pipelines write them (the corpus in ``tests/layouts``).

Each case is built in a temporary folder and the user's commands are run in order through
``painplast.cli.main`` (in this process, so the corpus runs in about a minute; warnings are
shown as a fresh interpreter shows them). Each step's outcome is checked exactly as the case
records it:

- a run: exit 0; every expected features sidecar written by this step, listing exactly the runs
  it used (and, in ``input_checksums``, a file of each of those runs and the inputs the case
  names, none from a pipeline ``--derivatives`` left out), and no other sidecar of those modules;
  at group level each module's findings table written;
- a stop: exit 2; exactly one line on stderr, naming the flag that fixes it; nothing on stdout;
  nothing written to the output folder.

Always: no traceback on stdout, stderr or in the run's logs; the input dataset never modified.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import traceback
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

import painplast.cli
import painplast.cohort
import painplast.engine
from layouts import CASES, SUBJECT_LEVEL, Group, Participant, Stop, normalise_run
from layouts import _ds000001_names as DS1
from layouts import _images as I
from layouts.cases import build_ds000001
from painplast import plasticity
from painplast.config import MODULES

# what the CLI imports lazily is imported here, once, so that a library's import-time warning
# (printed once per process) cannot land in whichever step happens to run first
for _module in MODULES:
    plasticity.load(_module)

ROOT = Path(__file__).resolve().parents[1]
TRACEBACK = "Traceback (most recent call last)"
FINDINGS_COLUMNS = ["feature", "contrast", "estimate", "ci_low", "ci_high", "p", "p_corrected", "n"]


# ------------------------------------------------------------------------------ running the CLI

def _run_cli(argv: list[str], capfd) -> tuple[int | None, str, str]:
    """``painplast <argv>`` in this process: exit status, stdout, stderr (an escaped exception's
    traceback is appended to stderr, as the interpreter would print it)."""
    capfd.readouterr()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    escaped = ""
    with warnings.catch_warnings():
        # the filters of a fresh interpreter: DeprecationWarnings hidden, the rest shown once
        warnings.resetwarnings()
        warnings.simplefilter("default")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.filterwarnings("ignore", category=category)
        try:
            code = painplast.cli.main(argv)
        except SystemExit as exit_:
            code = exit_.code
        except Exception:              # what a user would see: the interpreter's traceback
            code, escaped = None, traceback.format_exc()
    for handler in root.handlers:      # the CLI's handlers write to this step's streams and logs
        if handler not in saved[0]:
            handler.close()
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    out, err = capfd.readouterr()
    return code, out, err + escaped


def _snapshot(folder: Path, skip: frozenset[str] = frozenset()) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mtime_ns)}`` of every file, leaving out top-level ``skip`` folders."""
    if not folder.exists():
        return {}
    found = {}
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if rel.parts[0] in skip or not path.is_file():
            continue
        stat = path.stat()
        found[str(rel)] = (stat.st_size, stat.st_mtime_ns)
    return found


def _argv(case, step, root: Path) -> list[str]:
    args = [a.replace("{root}", str(root)) for a in step.args]
    return ["run", str(root / case.bids), str(root / step.out), step.level, *args, "--quiet"]


# ------------------------------------------------------------------------------ checking outcomes

def _sidecar_path(out: Path, pid: str, session: str | None, module: str) -> Path:
    if session:
        return out / pid / f"ses-{session}" / f"{pid}_ses-{session}_desc-{module}_features.json"
    return out / pid / f"{pid}_desc-{module}_features.json"


def _check_sidecar(path: Path, pid: str, expected, root: Path, not_from, where: str) -> None:
    data = json.loads(path.read_text())
    runs = data.get("runs", []) if not expected.runs else data.get("runs")
    assert runs is not None, f"{where}: {path.name} has no 'runs'"
    got = sorted(normalise_run(r) for r in runs)
    assert got == sorted(normalise_run(r) for r in expected.runs), (
        f"{where}: {path.relative_to(root)} lists runs {runs}, expected {list(expected.runs)}")
    inputs = data.get("input_checksums") or {}
    resolved = {Path(p).resolve() for p in inputs}
    names = [normalise_run(Path(p).name) for p in inputs]
    for run in expected.runs:
        prefix = f"{pid}_{normalise_run(run)}_"
        assert any(n.startswith(prefix) for n in names), (
            f"{where}: {path.relative_to(root)} lists run {run} but none of its files in input_checksums: "
            f"{sorted(inputs)}")
    for rel in expected.inputs:
        assert (root / rel).resolve() in resolved, (
            f"{where}: {path.relative_to(root)} does not list input {rel}; it lists {sorted(inputs)}")
    for folder in not_from:
        base = (root / folder).resolve()
        bad = [str(p) for p in resolved if base in p.parents]
        assert not bad, f"{where}: {path.relative_to(root)} read {bad}, from {folder} (left out by --derivatives)"


def _check_participant(expect: Participant, out: Path, root: Path, before: dict, where: str) -> None:
    modules = {module for _, _, module in expect.outputs}
    found = {p for m in modules for p in out.glob(f"sub-*/**/*_desc-{m}_features.json")}
    claimed = set()
    for (pid, session, module), sidecar in expect.outputs.items():
        if session == SUBJECT_LEVEL:
            whole = _sidecar_path(out, pid, None, module)
            each = [_sidecar_path(out, pid, s, module) for s in expect.sessions[pid]]
            paths = [whole] if whole.exists() else each
        else:
            paths = [_sidecar_path(out, pid, session, module)]
        for path in paths:
            assert path.exists(), (f"{where}: no {path.relative_to(root)}; features sidecars written: "
                                   f"{sorted(str(p.relative_to(root)) for p in found) or 'none'}")
            rel = str(path.relative_to(out))
            stat = path.stat()
            assert before.get(rel) != (stat.st_size, stat.st_mtime_ns), f"{where}: {rel} not written by this step"
            _check_sidecar(path, pid, sidecar, root, expect.not_from, where)
            claimed.add(path)
    extra = sorted(str(p.relative_to(root)) for p in found - claimed)
    assert not extra, f"{where}: sidecars the case does not expect: {extra}"


def _check_group(expect: Group, out: Path, root: Path, before: dict, where: str) -> None:
    for module in expect.modules:
        path = out / "group" / f"{module}_findings.tsv"
        assert path.exists(), f"{where}: no {path.relative_to(root)}"
        stat = path.stat()
        assert before.get(str(path.relative_to(out))) != (stat.st_size, stat.st_mtime_ns), (
            f"{where}: {path.relative_to(root)} was not written by this step")
        table = pd.read_csv(path, sep="\t")
        assert list(table.columns) == FINDINGS_COLUMNS, f"{where}: {path.name} columns {list(table.columns)}"


def _check_stop(expect: Stop, code, out_text: str, err: str, where: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"{where}: exit {code}, expected 2 (a stop before any work); stderr: {err.strip()[-2000:]}"
    assert len(lines) == 1, f"{where}: {len(lines)} lines on stderr, expected one:\n{err.strip()[-2000:]}"
    assert not out_text.strip(), f"{where}: a stop printed on stdout: {out_text.strip()[-500:]}"
    line = lines[0]
    if expect.flags:
        named = [f for f in expect.flags if re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", line)]
        assert named, f"{where}: the line names none of {', '.join(expect.flags)}: {line}"
    if expect.says:
        assert re.search(expect.says, line, re.IGNORECASE), f"{where}: the line does not match /{expect.says}/: {line}"


def _no_traceback_in_logs(out: Path, where: str) -> None:
    for path in (out / "logs").rglob("*") if (out / "logs").is_dir() else ():
        if path.is_file() and path.suffix in (".log", ".json", ".txt"):
            assert TRACEBACK not in path.read_text(errors="replace"), (
                f"{where}: traceback in {path.name}:\n{path.read_text(errors='replace')[-3000:]}")


def _check_case(case, root: Path) -> None:
    """The case itself is right: every input it expects exists, and every run it expects has files."""
    for step in case.steps:
        if not isinstance(step.expect, Participant):
            continue
        for (pid, _, _), sidecar in step.expect.outputs.items():
            for rel in sidecar.inputs:
                assert (root / rel).is_file(), f"case {case.name} expects an input it did not write: {rel}"
            for run in sidecar.runs:
                prefix = f"{pid}_{normalise_run(run)}_"
                files = (root / case.bids).rglob(f"{pid}_*")
                assert any(normalise_run(p.name).startswith(prefix) for p in files), (
                    f"case {case.name} expects run {run} of {pid} but wrote no file of it")


# ------------------------------------------------------------------------------ the corpus, run

@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_layout(case, tmp_path, capfd):
    """Every step of the case gives the outcome the case records (see the module docstring)."""
    case.build(tmp_path)
    _check_case(case, tmp_path)
    outputs = frozenset(step.out for step in case.steps)
    inputs = _snapshot(tmp_path, skip=outputs)
    for number, step in enumerate(case.steps, start=1):
        argv = _argv(case, step, tmp_path)
        where = f"{case.name} step {number} (painplast {' '.join(argv[3:])})"
        out = tmp_path / step.out
        before = _snapshot(out)
        code, stdout, stderr = _run_cli(argv, capfd)
        assert TRACEBACK not in stdout + stderr, f"{where}: a traceback (exit {code}):\n{(stdout + stderr)[-4000:]}"
        _no_traceback_in_logs(out, where)
        if isinstance(step.expect, Stop):
            _check_stop(step.expect, code, stdout, stderr, where)
            assert _snapshot(out) == before, f"{where}: a stop wrote to {step.out}"
        else:
            assert code == 0, f"{where}: exit {code}; stderr:\n{stderr.strip()[-3000:]}"
            if isinstance(step.expect, Participant):
                _check_participant(step.expect, out, tmp_path, before, where)
            else:
                _check_group(step.expect, out, tmp_path, before, where)
        assert _snapshot(tmp_path, skip=outputs) == inputs, f"{where}: the input dataset was modified"


# ------------------------------------------------------------------------------ the corpus itself

def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", [c for c in CASES if c.name in (
    "fmriprep-1.1", "xcpd-beside-fmriprep", "cat12-sessions", "roi-timeseries-no-tr", "participants-dropout")],
    ids=lambda c: c.name)
def test_builders_are_deterministic(case, tmp_path):
    """Two builds of a case are byte-identical (these cases use every kind of writer: fMRIPrep
    legacy and current names, XCP-D, CAT12, ROI time series, participants), and a case stays small."""
    case.build(tmp_path / "a")
    case.build(tmp_path / "b")
    a, b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert a == b
    assert sum((tmp_path / "a" / rel).stat().st_size for rel in a) < 20e6


def test_run_names_compare_by_run_index():
    assert normalise_run("ses-1_task-rest_run-02") == "ses-1_task-rest_run-2"
    assert normalise_run("sub-01_task-rest_run-010_desc-x") == "sub-01_task-rest_run-10_desc-x"
    assert normalise_run("task-rest_run-1") == "task-rest_run-1"
    assert normalise_run("task-rerun-01") == "task-rerun-01"


def test_every_case_says_where_its_names_come_from():
    for case in CASES:
        assert case.source and len(case.source.strip()) > 20, case.name
        assert case.steps, case.name
        # a case that stops for want of a flag also shows the flag working
        for step in case.steps:
            if isinstance(step.expect, Stop) and step.expect.flags:
                runs = [s for s in case.steps if not isinstance(s.expect, Stop)]
                assert any(f in s.args for s in runs for f in step.expect.flags), (
                    f"{case.name}: stops naming {step.expect.flags} but no step runs with the flag")


@pytest.mark.parametrize("space", [*I.TEMPLATES, "CAT12"])
def test_every_pain_roi_lands_in_the_brain(space):
    """Each ROI sphere's nearest voxel (painplast always includes it) is inside the image and the
    brain, on every grid of the corpus; the grid spans every ROI sphere."""
    from painplast import atlas

    grid = I.cat12_grid() if space == "CAT12" else I.template_grid(space)
    brain = I.brain(grid)
    inverse = np.linalg.inv(grid.affine)
    corners = grid.affine @ np.array([[0, 0, 0, 1], [*(np.array(grid.shape) - 1), 1]]).T
    low, high = corners[:3].min(1), corners[:3].max(1)
    for roi in atlas.PAIN_ROIS:
        ijk = np.round(inverse @ np.r_[roi.center, 1.0])[:3].astype(int)
        assert np.all((ijk >= 0) & (ijk < grid.shape)), (roi.name, ijk)
        assert brain[tuple(ijk)], f"{roi.name} falls outside the brain on the {space} grid"
        assert np.all(np.array(roi.center) - 6 >= low) and np.all(np.array(roi.center) + 6 <= high), roi.name


def test_ds000001_names_are_bids_examples_names(tmp_path):
    """The ds000001 case holds every file of bids-examples' ds000001-fmriprep (code/ aside), and
    its images are real NIfTIs on the template grid."""
    build_ds000001(tmp_path)
    prep = tmp_path / "bids" / "derivatives" / "fmriprep"
    expected = {n.format(sub=s) for n in DS1.TOP for s in DS1.PARTICIPANTS} | {
        f"sub-{s}/{n.format(sub=s)}" for n in DS1.SUBJECT for s in DS1.PARTICIPANTS} | {
        f"sub-{s}/log/{DS1.LOG_RUNS[s]}/fmriprep.toml" for s in DS1.PARTICIPANTS}
    written = {str(p.relative_to(prep)) for p in prep.rglob("*") if p.is_file()}
    assert written == expected
    gm = nib.load(prep / "sub-10/anat/sub-10_space-MNI152NLin2009cAsym_res-2_label-GM_probseg.nii.gz")
    assert gm.shape == I.template_grid("MNI152NLin2009cAsym").shape
    assert np.allclose(gm.affine[:3, 3], I.TEMPLATES["MNI152NLin2009cAsym"][0])
    run = prep / "sub-10" / "func" / "sub-10_task-balloonanalogrisktask_run-1"
    bold = nib.load(f"{run}_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz")
    confounds = pd.read_csv(f"{run}_desc-confounds_timeseries.tsv", sep="\t", na_values="n/a")
    assert bold.shape[3] == len(confounds) and "trans_x_derivative1" in confounds


def _validator() -> str:
    path = os.environ.get("PAINPLAST_BIDS_VALIDATOR", str(ROOT / ".tools/node_modules/.bin/bids-validator"))
    assert Path(path).exists(), f"bids-validator 1.15.0 not installed at {path}; run `make validator`"
    return path


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in CASES if c.name in (
    "ds000001-fmriprep", "fmriprep-20.2", "fmriprep-24.1-sessions", "sessions-x-runs", "cat12-sessions",
    "task-restingstate", "participants-dropout")], ids=lambda c: c.name)
def test_raw_datasets_are_valid_bids(case, tmp_path):
    """The raw side of the corpus is valid BIDS (bids-validator 1.15.0, derivatives ignored as it
    does by default), so a stop on it is painplast's, not the dataset's fault."""
    case.build(tmp_path)
    proc = subprocess.run([_validator(), "--json", str(tmp_path / case.bids)], capture_output=True, text=True,
                          timeout=300)
    errors = json.loads(proc.stdout)["issues"]["errors"]
    assert errors == [], [(e.get("key"), e.get("reason"),
                           [f.get("file", {}).get("relativePath") for f in e.get("files", [])][:3]) for e in errors]
