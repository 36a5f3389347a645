"""The simulator: BIDS validity, determinism, and a ground truth that matches the images."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from painplast import atlas
from painplast.simulate import SimulationParameters, simulate
from painplast.simulate.truth import PLANTED

ROOT = Path(__file__).resolve().parents[1]
PREP = "derivatives/fmriprep"
SPACE = "MNI152NLin2009cAsym"
TINY = dict(n_participants=8, n_sites=2, resolution=6, volumes_pain=40, volumes_somatotopy=40,
            volumes_modulation=40, volumes_rest=40)


def _validator() -> str:
    path = os.environ.get("PAINPLAST_BIDS_VALIDATOR", str(ROOT / ".tools/node_modules/.bin/bids-validator"))
    assert Path(path).exists(), f"bids-validator 1.15.0 not installed at {path}; run `make validator`"
    return path


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_bids_validator_accepts_simulated_cohort(small_cohort):
    proc = subprocess.run([_validator(), "--json", str(small_cohort)], capture_output=True, text=True, timeout=300)
    report = json.loads(proc.stdout)
    errors = report["issues"]["errors"]
    assert errors == [], [e.get("reason") for e in errors]
    assert sorted(report["summary"]["tasks"]) == ["modulation", "pain", "rest", "somatotopy"]
    assert report["summary"]["subjects"] and len(report["summary"]["subjects"]) == 32


#: Digest of every file of the TINY cohort but README and ground_truth.json (which list the
#: parameters and the recorded sizes), as the simulator wrote it before sessions, runs and the
#: longitudinal design existed (commit a56ad9e). Cached test cohorts and the thresholds tuned
#: on them rely on the default layout keeping its bytes. Regenerate only for a deliberate change
#: of the images or tables (the digest also depends on numpy's and zlib's builds).
TINY_DIGEST = "31e289cfde87564d90a9644163f7c75319b230db02cb88889e679c226cd4a911"


def _combined(digest: dict[str, str]) -> str:
    keep = {k: v for k, v in digest.items() if k not in ("README", "derivatives/simulation/ground_truth.json")}
    return hashlib.sha256("".join(f"{k} {v}\n" for k, v in sorted(keep.items())).encode()).hexdigest()


def test_same_seed_same_bytes_serial_and_parallel(tmp_path):
    a = simulate(tmp_path / "a", SimulationParameters(**TINY), progress=False)
    b = simulate(tmp_path / "b", SimulationParameters(**TINY, n_sessions=1, n_runs=1), n_jobs=2, progress=False)
    c = simulate(tmp_path / "c", SimulationParameters(**TINY, seed=1), progress=False)
    da, db, dc = _tree_digest(a), _tree_digest(b), _tree_digest(c)
    assert da == db
    assert da.keys() == dc.keys()
    bold = f"{PREP}/sub-001/func/sub-001_task-rest_space-{SPACE}_desc-preproc_bold.nii.gz"
    assert da[bold] != dc[bold]
    # one session and one run: no ses-/run- entity, and the bytes written before they existed
    assert not [k for k in da if "ses-" in k or "run-" in k]
    assert _combined(da) == TINY_DIGEST


def test_refuses_to_overwrite(tmp_path):
    from painplast.errors import InputError
    target = tmp_path / "data"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        simulate(target, SimulationParameters(**TINY), progress=False)
    assert (target / "keep.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no partial output left behind


def test_ground_truth_form_and_default_sizes():
    from painplast.simulate.truth import ground_truth
    truth = ground_truth(SimulationParameters(n_participants=120, n_sites=3))
    assert set(truth) >= {"effects", "parameters", "best_auc", "best_auc_deconfounded", "best_auc_measured"}
    modules = {e["module"] for e in truth["effects"]}
    assert modules == {"sensitization", "reorganization", "connectivity", "structure", "modulation"}
    for e in truth["effects"]:
        assert set(e) >= {"module", "feature", "contrast", "direction", "size", "size_latent", "region", "center_mni"}
        assert e["feature"].startswith(e["module"] + ".")
        assert e["direction"] in (1, -1)
        # the literature's sizes are the latent ones (docs/architecture.md); measurement noise
        # attenuates them on the measured scale, never inflates them beyond Monte Carlo error
        latent = e["size_latent"]
        assert e["size"] <= latent + 0.02, e
        if e["contrast"] == "age":
            assert 0.4 <= latent <= 0.65
        elif e["contrast"] == "responder-nonresponder":
            # within patients only: planted above the group range (docs/architecture.md, Decisions)
            assert 1.25 <= latent <= 1.5, e
        elif e["size_unit"] == "cohen_d":
            assert 0.75 <= latent <= 1.25, e        # the literature's range (docs/architecture.md)
        else:
            assert 0.38 <= latent <= 0.62, e
    assert 0.75 < truth["best_auc"]["treatment"] < truth["best_auc"]["diagnosis"] < 1.0
    # motion removed as the biomarker removes it costs a little (patients move more), measured
    # features a little more
    for target in ("diagnosis", "treatment"):
        assert truth["best_auc_measured"][target] <= truth["best_auc_deconfounded"][target] + 0.005
        assert truth["best_auc_deconfounded"][target] <= truth["best_auc"][target] + 0.005
    assert truth["best_auc_deconfounded"]["diagnosis"] < truth["best_auc"]["diagnosis"] - 0.002
    null = ground_truth(SimulationParameters(null=True))
    assert [e["contrast"] for e in null["effects"]] == ["age"]
    assert null["best_auc"] == {"diagnosis": 0.5, "treatment": 0.5}


# ---------------------------------------------------------------------------- plain measurements


def _bold(root: Path, pid: str, task: str):
    img = nib.load(root / PREP / pid / "func" / f"{pid}_task-{task}_space-{SPACE}_desc-preproc_bold.nii.gz")
    conf = pd.read_csv(root / PREP / pid / "func" / f"{pid}_task-{task}_desc-confounds_timeseries.tsv",
                       sep="\t", na_values="n/a")
    return img, conf


def _plain_measures(root: Path) -> pd.DataFrame:
    """ROI-level features measured the plainest way: ROI means, OLS, Pearson correlation."""
    from nilearn.glm.first_level import make_first_level_design_matrix
    parts = pd.read_csv(root / "participants.tsv", sep="\t", index_col=0)
    rows = {}
    for pid in parts.index:
        row = {}
        img, conf = _bold(root, pid, "pain")
        data = img.get_fdata(dtype=np.float32)
        ev = pd.read_csv(root / pid / "func" / f"{pid}_task-pain_events.tsv", sep="\t")
        frames = np.arange(data.shape[-1]) * 2.0
        events = pd.concat([ev[["onset", "duration"]].assign(trial_type="pain", modulation=1.0),
                            ev[["onset", "duration"]].assign(trial_type="slope", modulation=ev.intensity - ev.intensity.mean())])
        X = make_first_level_design_matrix(frames, events, hrf_model="glover",
                                           add_regs=conf[["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]].to_numpy())
        for region in ("insula_posterior", "dacc", "thalamus"):
            y = data[atlas.region_mask(region, img)].mean(0)
            beta = np.linalg.lstsq(X.to_numpy(), 100 * (y / y.mean() - 1), rcond=None)[0]
            row[f"sensitization.{region}_slope"] = beta[list(X.columns).index("slope")]
            row[f"sensitization.{region}_response"] = beta[list(X.columns).index("pain")]
        gm = nib.load(root / PREP / pid / "anat" / f"{pid}_space-{SPACE}_label-GM_probseg.nii.gz").get_fdata()
        for region in ("dlpfc", "insula_anterior", "thalamus", "dacc"):
            row[f"structure.gm_{region}"] = gm[atlas.region_mask(region, img)].mean() / gm.mean()
        img, conf = _bold(root, pid, "rest")
        data = img.get_fdata(dtype=np.float32)
        C = np.column_stack([np.ones(len(conf)), conf[["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z",
                                                       "white_matter", "csf"]].to_numpy()])

        def ts(name):
            y = data[atlas.sphere_mask(atlas.roi(name).center, img)].mean(0)
            return y - C @ np.linalg.lstsq(C, y, rcond=None)[0]

        def z(a, b):
            return np.arctanh(np.corrcoef(ts(a), ts(b))[0, 1])

        row["connectivity.mpfc_nacc"] = np.mean([z("mpfc", "nacc_l"), z("mpfc", "nacc_r")])
        row["connectivity.dmn_insula"] = np.mean([z(a, b) for a in atlas.DMN_ROIS for b in atlas.COUPLINGS["dmn_insula"][1]])
        rows[pid] = row
    return pd.DataFrame(rows).T.astype(float).join(parts)


PLAIN = {f for _, f, c, _ in PLANTED if c == "patient-control"} & {
    "sensitization.insula_posterior_slope", "sensitization.dacc_slope", "sensitization.thalamus_response",
    "structure.gm_dlpfc", "structure.gm_insula_anterior", "structure.gm_thalamus", "structure.gm_dacc",
    "connectivity.mpfc_nacc", "connectivity.dmn_insula"}


def test_planted_group_differences_are_in_the_images(small_cohort):
    truth = json.loads((small_cohort / "derivatives/simulation/ground_truth.json").read_text())
    planted = {e["feature"]: e["direction"] for e in truth["effects"] if e["contrast"] == "patient-control"}
    measured = _plain_measures(small_cohort)
    patient = measured["group"] == "patient"
    assert PLAIN <= set(planted)
    for feature in sorted(PLAIN):
        t, p = stats.ttest_ind(measured.loc[patient, feature], measured.loc[~patient, feature])
        assert p < 0.01 and np.sign(t) == planted[feature], (feature, t, p)
    # the noise-free per-participant truth and the plain measurement agree
    per_subject = pd.read_csv(small_cohort / "derivatives/simulation/participants_truth.tsv", sep="\t", index_col=0)
    for feature in sorted(PLAIN):
        r = np.corrcoef(measured[feature], per_subject.loc[measured.index, feature])[0, 1]
        assert r > 0.7, (feature, r)


def test_null_cohort_has_no_group_differences(null_cohort):
    measured = _plain_measures(null_cohort)
    patient = measured["group"] == "patient"
    p = [stats.ttest_ind(measured.loc[patient, f], measured.loc[~patient, f]).pvalue for f in sorted(PLAIN)]
    # nine tests, no effect: Bonferroni-corrected, none should be significant
    assert min(p) * len(p) > 0.05, dict(zip(sorted(PLAIN), np.round(p, 4)))


def test_nilearn_loads_every_image_on_one_grid(small_cohort):
    from nilearn.image import load_img
    shapes, affines = set(), []
    for path in sorted((small_cohort / PREP).rglob("*.nii.gz"))[:60]:
        img = load_img(str(path))
        assert np.isfinite(img.get_fdata()).all()
        shapes.add(img.shape[:3])
        affines.append(img.affine)
    assert len(shapes) == 1
    assert all(np.allclose(a, affines[0]) for a in affines)
    bold = nib.load(next((small_cohort / PREP).rglob("*task-rest*_bold.nii.gz")))
    assert bold.header.get_zooms()[3] == 2.0 and bold.header.get_xyzt_units() == ("mm", "sec")


def test_participants_table_has_every_recognised_column(small_cohort):
    parts = pd.read_csv(small_cohort / "participants.tsv", sep="\t", na_values="n/a", keep_default_na=False)
    for col in ("participant_id", "group", "diagnosis", "site", "age", "sex", "pain_intensity",
                "pain_duration_months", "affected_side", "modulation_score", "treatment_response"):
        assert col in parts
    assert set(parts.group) == {"patient", "control"}
    for _, site in parts.groupby("site"):
        assert set(site.group) == {"patient", "control"}
    patients = parts[parts.group == "patient"]
    assert patients.diagnosis.notna().all() and parts.loc[parts.group == "control", "diagnosis"].isna().all()
    assert set(patients.treatment_response) == {"responder", "non-responder"}
    # patients move more than controls: by design (large sample of the clinical model), and the
    # confounds' framewise displacement follows each participant's planted motion level
    from painplast.simulate.latent import clinical
    big = clinical(SimulationParameters(), 20000, np.random.default_rng(0), exact=False)
    assert big.loc[big.patient, "mean_fd_target"].mean() > 1.1 * big.loc[~big.patient, "mean_fd_target"].mean()
    truth = pd.read_csv(small_cohort / "derivatives/simulation/participants_truth.tsv", sep="\t", index_col=0)
    fd = {}
    for pid in parts.participant_id:
        conf = pd.read_csv(small_cohort / PREP / pid / "func" / f"{pid}_task-rest_desc-confounds_timeseries.tsv", sep="\t", na_values="n/a")
        fd[pid] = conf.framewise_displacement.mean()
    measured = pd.Series(fd)
    assert np.corrcoef(measured, truth.loc[measured.index, "mean_fd_target"])[0, 1] > 0.7
