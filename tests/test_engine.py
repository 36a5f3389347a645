"""The engine: joblib and dask give the same bytes, SIGKILL + rerun gives the same bytes, reruns skip.

The engine is tested with a small stand-in for a plasticity module (``toy_subject`` /
``toy_group`` below, registered as ``structure`` by patching ``painplast.plasticity.load``), so
these tests do not depend on the real modules being finished. The stand-in does real image work
(reads each participant's gray-matter map and resting BOLD series) and its features are checked
against the simulator's per-participant truth, which also proves that no worker wrote one
participant's result under another's name.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from painplast import atlas, engine, plasticity
from painplast.cohort import Cohort
from painplast.config import Config
from painplast.derivatives import Derivatives
from painplast.errors import InputError
from painplast.results import FINDINGS_COLUMNS, GroupResult, SubjectResult

N_PARTICIPANTS = 10
GROUP_CALLS: list[int] = []
SUBJECT_CALLS: list[str] = []   # participants whose stage ran in this process


# ------------------------------------------------------------------ the stand-in module
def toy_subject(subject, config) -> SubjectResult:
    """Regional and total gray matter from the GM map; the mean resting BOLD image as a map."""
    SUBJECT_CALLS.append(subject.participant_id)
    failing = config.options.get("structure", {}).get("fail", [])
    if subject.participant_id in failing:
        raise InputError(f"{subject.participant_id} has no usable GM map (test)", path=subject.gm)
    gm_img = nib.load(subject.gm)
    gm = np.asarray(gm_img.dataobj, dtype=np.float64)
    voxel_ml = abs(np.linalg.det(gm_img.affine[:3, :3])) / 1000.0
    features = {"structure.gm_total": float(gm.sum() * voxel_ml)}
    for region in ("dlpfc", "thalamus", "dacc"):
        mask = atlas.region_mask(region, gm_img, radius=config.roi_radius_mm)
        features[f"structure.gm_{region}"] = float(gm[mask].mean())
    bold = nib.load(subject.run("rest").bold)
    mean_bold = np.asarray(bold.dataobj, dtype=np.float32).mean(axis=3)
    return SubjectResult("structure", subject.participant_id, features,
                         maps={"mean_rest": nib.Nifti1Image(mean_bold, bold.affine)},
                         arrays={"gm_histogram": np.histogram(gm[gm > 0], bins=20, range=(0, 1))[0]},
                         info={"n_voxels": int((gm > 0).sum())})


def toy_group(results, cohort, config) -> GroupResult:
    GROUP_CALLS.append(len(results))
    table = pd.DataFrame([r.features for r in results], index=[r.participant_id for r in results])
    rows = []
    for feature in table.columns:
        rows.append({"feature": feature, "contrast": "patient-control", "estimate": float(table[feature].mean()),
                     "ci_low": float(table[feature].min()), "ci_high": float(table[feature].max()),
                     "p": 0.5, "p_corrected": 1.0, "n": len(table)})
    return GroupResult("structure", pd.DataFrame(rows, columns=list(FINDINGS_COLUMNS)),
                       tables={"features": table.reset_index(names="participant_id")})


TOY = types.SimpleNamespace(subject=toy_subject, group=toy_group, group_options=())


def toy_load(name):
    """``plasticity.load`` with the stand-in as ``structure`` and every other module absent."""
    return TOY if name == "structure" else None


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr(plasticity, "load", toy_load)
    GROUP_CALLS.clear()


@pytest.fixture(scope="module")
def cohort(small_cohort) -> Cohort:
    labels = [f"{i:03d}" for i in range(1, N_PARTICIPANTS + 1)]
    return Cohort.from_bids(small_cohort, participant_label=labels)


CONFIG = Config(modules=("structure",), options={"structure": {"fail": ["sub-004"]}})


def outputs(root: Path) -> dict[str, bytes]:
    """Every participant output and failure record, by relative path."""
    files = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and (rel.startswith("sub-") or rel.startswith("logs/skipped/")):
            files[rel] = path.read_bytes()
    return files


@pytest.fixture(scope="module")
def joblib_run(cohort, small_cohort, tmp_path_factory):
    """The reference: joblib with 2 workers (the stand-in patched in for the whole module)."""
    mp = pytest.MonkeyPatch()
    mp.setattr(plasticity, "load", toy_load)
    out = tmp_path_factory.mktemp("joblib") / "out"
    t0 = time.perf_counter()
    summary = engine.run_participant_level(cohort, CONFIG, out, n_jobs=2, progress=False)
    seconds = time.perf_counter() - t0
    mp.undo()
    return out, summary, seconds


def test_features_match_truth_and_failures_are_recorded(joblib_run, small_cohort):
    out, summary, _ = joblib_run
    assert len(summary.done) == N_PARTICIPANTS - 1
    assert summary.failed and summary.failed[0][:2] == ("sub-004", "structure")
    failures = Derivatives(out).failures()
    assert failures["participant_id"].tolist() == ["sub-004"]
    assert "no usable GM map" in failures["reason"].iloc[0]
    truth = pd.read_csv(small_cohort / "derivatives/simulation/participants_truth.tsv", sep="\t",
                        index_col="participant_id")
    rows = []
    for pid, _ in summary.done:
        rows.append(pd.read_csv(out / pid / f"{pid}_desc-structure_features.tsv", sep="\t",
                                index_col="participant_id"))
    measured = pd.concat(rows)
    for feature in ("structure.gm_total", "structure.gm_dlpfc"):
        r = np.corrcoef(measured[feature], truth.loc[measured.index, feature])[0, 1]
        assert r > 0.8, (feature, r)  # each participant's result is under its own name
    sidecar = json.loads((out / "sub-001" / "sub-001_desc-structure_features.json").read_text())
    assert sidecar["parameter_hash"] == CONFIG.parameter_hash("structure")
    assert any(k.endswith("label-GM_probseg.nii.gz") for k in sidecar["input_checksums"])
    logs = list((out / "logs").glob("painplast-*.log"))
    assert logs and "sub-001 structure done" in "".join(p.read_text() for p in logs)


def test_dask_local_cluster_gives_identical_bytes(joblib_run, cohort, tmp_path, toy):
    ref, _, _ = joblib_run
    out = tmp_path / "dask"
    summary = engine.run_participant_level(cohort, CONFIG, out, dask_workers=2, progress=False)
    assert len(summary.done) == N_PARTICIPANTS - 1
    a, b = outputs(ref), outputs(out)
    assert sorted(a) == sorted(b) and len(a) > 3 * (N_PARTICIPANTS - 1)
    assert [k for k in a if a[k] != b[k]] == []


def test_sigkill_midway_then_rerun_gives_identical_bytes(joblib_run, cohort, small_cohort, tmp_path, toy):
    ref, _, _ = joblib_run
    out = tmp_path / "killed"
    script = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import test_engine
from painplast import engine, plasticity
from painplast.cohort import Cohort
plasticity.load = test_engine.toy_load
cohort = Cohort.from_bids({str(small_cohort)!r}, participant_label=[f"{{i:03d}}" for i in range(1, {N_PARTICIPANTS + 1})])
engine.run_participant_level(cohort, test_engine.CONFIG, {str(out)!r}, n_jobs=1, progress=False)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 600  # generous: a busy machine is slow, not wrong
    while time.monotonic() < deadline:
        if len(list(out.glob("sub-*/*_features.json"))) >= 3:
            break
        if proc.poll() is not None:
            pytest.fail("the engine finished or crashed before it could be killed")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(out.glob("sub-*/*_features.json")))
    assert 3 <= done < N_PARTICIPANTS - 1, "killed mid-way"
    # every file under its real name is complete: each sidecar parses, each TSV has its row
    for side in out.glob("sub-*/*_features.json"):
        assert json.loads(side.read_text())["parameter_hash"] == CONFIG.parameter_hash("structure")
    for tsv in out.glob("sub-*/*_features.tsv"):
        assert len(pd.read_csv(tsv, sep="\t")) == 1
    summary = engine.run_participant_level(cohort, CONFIG, out, n_jobs=1, progress=False)
    assert len(summary.skipped_existing) == done
    assert len(summary.done) + done == N_PARTICIPANTS - 1
    assert not [p for p in out.rglob("*.tmp")]
    a, b = outputs(ref), outputs(out)
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []


def test_stray_temporaries_and_unfinished_outputs_are_redone(joblib_run, cohort, tmp_path, toy):
    """What a kill can leave (temporaries, files without their sidecar, a stale hash) is redone."""
    import shutil
    ref, _, _ = joblib_run
    out = tmp_path / "copy"
    shutil.copytree(ref, out)
    (out / "sub-002" / ".sub-002_desc-structure_features.tsv.x1y2.tmp").write_text("half a row")
    (out / "group").mkdir(exist_ok=True)
    (out / "group" / ".structure_findings.tsv.abc.tmp").write_bytes(b"")
    (out / "sub-003" / "sub-003_desc-structure_features.json").unlink()       # killed before the sidecar
    (out / "sub-003" / "sub-003_desc-structure_features.tsv").write_text("garbage")
    side = out / "sub-005" / "sub-005_desc-structure_features.json"           # other parameters
    side.write_text(side.read_text().replace(CONFIG.parameter_hash("structure"), "0" * 16))
    summary = engine.run_participant_level(cohort, CONFIG, out, n_jobs=1, progress=False)
    assert summary.removed_temporaries == 2
    assert sorted(p for p, _ in summary.done) == ["sub-003", "sub-005"]
    assert not list(out.rglob("*.tmp"))
    a, b = outputs(ref), outputs(out)
    assert [k for k in a if a[k] != b[k]] == [] and sorted(a) == sorted(b)


def test_rerun_skips_participants_and_group_stage(joblib_run, cohort, tmp_path, toy):
    import shutil
    ref, _, _ = joblib_run
    out = tmp_path / "rerun"
    shutil.copytree(ref, out)
    groups = engine.run_group_level(cohort, CONFIG, out, progress=False)
    assert GROUP_CALLS == [N_PARTICIPANTS - 1]
    findings = (out / "group" / "structure_findings.tsv").read_bytes()
    written = {p: p.stat().st_mtime_ns for p in out.glob("sub-*/*")}
    SUBJECT_CALLS.clear()
    summary = engine.run_participant_level(cohort, CONFIG, out, n_jobs=1, progress=False)
    again = engine.run_group_level(cohort, CONFIG, out, progress=False)
    assert summary.done == [] and len(summary.skipped_existing) == N_PARTICIPANTS - 1
    assert GROUP_CALLS == [N_PARTICIPANTS - 1], "unchanged group stage was recomputed"
    pd.testing.assert_frame_equal(again["structure"].findings, groups["structure"].findings,
                                  check_dtype=False)
    assert set(again["structure"].tables) == {"features"}
    assert (out / "group" / "structure_findings.tsv").read_bytes() == findings
    # sub-004 (still failing) is retried, the rest only checked: no other stage ran (n_jobs=1:
    # in this process, where the stand-in records its calls) and no participant file was rewritten
    assert SUBJECT_CALLS == ["sub-004"], SUBJECT_CALLS
    assert {p: p.stat().st_mtime_ns for p in out.glob("sub-*/*")} == written
    # a changed participant result invalidates the group stage
    feat = out / "sub-001" / "sub-001_desc-structure_features.tsv"
    table = pd.read_csv(feat, sep="\t")
    table["structure.gm_total"] += 1.0
    feat.write_text(table.to_csv(sep="\t", index=False))
    engine.run_group_level(cohort, CONFIG, out, progress=False)
    assert GROUP_CALLS == [N_PARTICIPANTS - 1] * 2


def test_run_biomarker_skips_when_up_to_date(joblib_run, cohort, tmp_path, toy):
    import shutil
    ref, _, _ = joblib_run
    out = tmp_path / "bio"
    shutil.copytree(ref, out)
    calls = []

    def runner(cohort_, config_, out_dir, target):
        calls.append(target)
        (Path(out_dir) / "group").mkdir(exist_ok=True)
        (Path(out_dir) / "group" / f"biomarker_{target}.json").write_text('{"model": null}')

    assert engine.run_biomarker(cohort, CONFIG, out, "diagnosis", runner) is True
    assert engine.run_biomarker(cohort, CONFIG, out, "diagnosis", runner) is False
    assert engine.run_biomarker(cohort, CONFIG.replace(random_state=1), out, "diagnosis", runner) is True
    assert calls == ["diagnosis", "diagnosis"]


def test_a_second_run_on_the_same_folder_is_refused(joblib_run, cohort, tmp_path, toy):
    import fcntl
    out = tmp_path / "locked"
    (out / "logs").mkdir(parents=True)
    with open(out / "logs" / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(InputError, match="another painplast run"):
            engine.run_participant_level(cohort, CONFIG, out, progress=False)
