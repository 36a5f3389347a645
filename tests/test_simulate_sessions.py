"""Sessions, runs and the longitudinal design of the simulator: layout, BIDS validity, tables."""
from __future__ import annotations

import json
import re
import subprocess
from datetime import datetime

import numpy as np
import pandas as pd
import pytest
from conftest import simulated
from test_simulate import _validator

from painplast.errors import InputError
from painplast.simulate import SimulationParameters

PREP = "derivatives/fmriprep"
SPACE = "MNI152NLin2009cAsym"
FAST = dict(resolution=6, volumes_pain=30, volumes_somatotopy=30, volumes_modulation=30, volumes_rest=30)
#: 12 participants, 2 sites, baseline and follow-up, two runs of every task.
LONGITUDINAL = dict(n_participants=12, n_sites=2, seed=4, design="longitudinal", n_runs=2, **FAST)


@pytest.fixture(scope="module")
def longitudinal():
    return simulated(**LONGITUDINAL)


def _files(root, pid):
    return sorted(str(p.relative_to(root)) for p in root.rglob(f"{pid}*") if p.is_file())


def test_longitudinal_layout_is_fmriprep_with_sessions_and_runs(longitudinal):
    root = longitudinal
    tasks = ("pain", "somatotopy", "modulation", "rest")
    for pid in ("sub-001", "sub-012"):
        files = set(_files(root, pid))
        for ses in ("baseline", "followup"):
            raw, prep = f"{pid}/ses-{ses}", f"{PREP}/{pid}/ses-{ses}"
            assert f"{raw}/anat/{pid}_ses-{ses}_T1w.nii.gz" in files
            for suffix in ("label-GM_probseg", "label-WM_probseg", "desc-brain_mask"):
                assert f"{prep}/anat/{pid}_ses-{ses}_space-{SPACE}_{suffix}.nii.gz" in files
            for task in tasks:
                for run in (1, 2):
                    stem = f"{pid}_ses-{ses}_task-{task}_run-{run}"
                    assert f"{raw}/func/{stem}_bold.nii.gz" in files
                    assert f"{prep}/func/{stem}_space-{SPACE}_desc-preproc_bold.nii.gz" in files
                    assert f"{prep}/func/{stem}_desc-confounds_timeseries.tsv" in files
                    assert (f"{raw}/func/{stem}_events.tsv" in files) == (task != "rest")
        # nothing outside the session folders but the sessions table
        outside = sorted(f for f in files if "/ses-" not in f and not f.startswith("derivatives/simulation"))
        assert outside == [f"{pid}/{pid}_sessions.json", f"{pid}/{pid}_sessions.tsv"], outside
    # runs of one task: independent trial orders and noise, the same latent state
    a = pd.read_csv(root / "sub-001/ses-baseline/func/sub-001_ses-baseline_task-pain_run-1_events.tsv", sep="\t")
    b = pd.read_csv(root / "sub-001/ses-baseline/func/sub-001_ses-baseline_task-pain_run-2_events.tsv", sep="\t")
    assert len(a) == len(b) and not np.array_equal(a.intensity, b.intensity)


def test_longitudinal_cohort_passes_the_bids_validator(longitudinal):
    proc = subprocess.run([_validator(), "--json", str(longitudinal)], capture_output=True, text=True, timeout=300)
    report = json.loads(proc.stdout)
    assert report["issues"]["errors"] == [], [e.get("reason") for e in report["issues"]["errors"]]
    # every column of every table is described (participants.json, sessions.json)
    keys = {w["key"] for w in report["issues"]["warnings"]}
    assert "CUSTOM_COLUMN_WITHOUT_DESCRIPTION" not in keys
    assert sorted(report["summary"]["sessions"]) == ["baseline", "followup"]
    assert sorted(report["summary"]["tasks"]) == ["modulation", "pain", "rest", "somatotopy"]


def test_longitudinal_participants_and_sessions_tables(longitudinal):
    parts = pd.read_csv(longitudinal / "participants.tsv", sep="\t", na_values="n/a", keep_default_na=False)
    assert {"stage", "treatment_response", "pain_relief", "outcome"} <= set(parts)
    patients, controls = parts[parts.group == "patient"], parts[parts.group == "control"]
    assert set(patients.stage) == {"chronic", "subacute"} and controls.stage.isna().all()
    chronic, subacute = parts[parts.stage == "chronic"], parts[parts.stage == "subacute"]
    for _, site in parts.groupby("site"):
        assert {"chronic", "subacute"} <= set(site.stage.dropna()) and (site.group == "control").sum() >= 2
    # responders are the treated patients with >= 30% relief; subacute patients are not treated
    assert set(chronic.treatment_response) == {"responder", "non-responder"}
    assert ((chronic.pain_relief >= 30) == (chronic.treatment_response == "responder")).all()
    assert subacute.treatment_response.isna().all() and chronic.outcome.isna().all()
    assert set(subacute.outcome) == {"persisting", "recovering"}
    assert (subacute.loc[subacute.outcome == "recovering", "pain_relief"] >= 60).all()
    assert (subacute.loc[subacute.outcome == "persisting", "pain_relief"] < 30).all()
    assert (subacute.pain_duration_months <= 4).all() and controls.pain_relief.isna().all()
    for row in parts.itertuples():
        ses = pd.read_csv(longitudinal / row.participant_id / f"{row.participant_id}_sessions.tsv", sep="\t")
        assert list(ses.columns) == ["session_id", "acq_time", "pain_intensity", "modulation_score"]
        assert list(ses.session_id) == ["ses-baseline", "ses-followup"]
        t0, t1 = (datetime.fromisoformat(t) for t in ses.acq_time)
        assert 20 * 7 < (t1 - t0).days < 32 * 7
        assert ses.pain_intensity[0] == row.pain_intensity
        if row.group == "patient":
            expected = np.clip(row.pain_intensity * (1 - row.pain_relief / 100), 0, 10)
            assert abs(ses.pain_intensity[1] - expected) <= 0.051
        else:
            assert (ses.pain_intensity == 0).all()
    truth = pd.read_csv(longitudinal / "derivatives/simulation/participants_truth.tsv", sep="\t")
    assert list(truth.columns[:2]) == ["participant_id", "session_id"]
    assert len(truth) == 2 * len(parts)


def test_cross_sectional_sessions_and_runs(tmp_path):
    from painplast.simulate import simulate

    kw = dict(FAST, n_participants=4, n_sites=1, volumes_rest=20, tasks=("rest",))
    root = simulate(tmp_path / "ses", SimulationParameters(**kw, n_sessions=3), progress=False)
    files = _files(root, "sub-001")
    assert f"{PREP}/sub-001/ses-3/func/sub-001_ses-3_task-rest_space-{SPACE}_desc-preproc_bold.nii.gz" in files
    assert not [f for f in files if "run-" in f or "task-pain" in f]
    ses = pd.read_csv(root / "sub-001/sub-001_sessions.tsv", sep="\t")
    assert list(ses.session_id) == ["ses-1", "ses-2", "ses-3"]
    truth = pd.read_csv(root / "derivatives/simulation/participants_truth.tsv", sep="\t")
    coupling = truth.pivot(index="participant_id", columns="session_id", values="connectivity.mpfc_nacc")
    assert coupling.shape == (4, 3) and coupling.std(axis=1).min() > 0   # test-retest noise
    root = simulate(tmp_path / "run", SimulationParameters(**kw, n_runs=2), progress=False)
    files = _files(root, "sub-002")
    assert f"sub-002/func/sub-002_task-rest_run-2_bold.nii.gz" in files
    assert f"{PREP}/sub-002/func/sub-002_task-rest_run-1_desc-confounds_timeseries.tsv" in files
    assert not [f for f in files if "ses-" in f]
    assert not (root / "sub-002/sub-002_sessions.tsv").exists()
    assert "session_id" not in pd.read_csv(root / "derivatives/simulation/participants_truth.tsv", sep="\t")


@pytest.mark.parametrize("change, flag", [
    (dict(design="longitudinal", n_sessions=3), "--sessions"),
    (dict(n_runs=0), "--runs"),
    (dict(design="crossover"), "--design"),
    (dict(tasks=("pain", "nback")), "--tasks"),
])
def test_bad_layout_options_name_the_flag(change, flag):
    with pytest.raises(InputError, match=re.escape(flag)):
        SimulationParameters(n_participants=24, **change).validate()


def test_cli_simulate_writes_sessions_and_refuses_bad_layouts(tmp_path, capsys):
    from painplast.cli import main

    out = tmp_path / "sim"
    args = ["simulate", str(out), "--participants", "4", "--sites", "1", "--resolution", "6",
            "--sessions", "2", "--runs", "2", "--tasks", "rest", "--quiet", "--n-jobs", "1"]
    assert main(args) == 0
    assert (out / "derivatives/fmriprep/sub-004/ses-2/func/"
            f"sub-004_ses-2_task-rest_run-2_space-{SPACE}_desc-preproc_bold.nii.gz").exists()
    truth = json.loads((out / "derivatives/simulation/ground_truth.json").read_text())
    assert truth["sessions"] == ["1", "2"] and truth["parameters"]["n_runs"] == 2 and "icc" in truth
    bad = tmp_path / "bad"
    assert main(["simulate", str(bad), "--design", "longitudinal", "--sessions", "3", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--sessions" in err[0]
    assert not bad.exists() and [p.name for p in tmp_path.iterdir()] == ["sim"]
