"""Reorganization: localisation of the hand maps, recovery of the planted shift and shrinkage."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from painplast import atlas
from painplast.cohort import Cohort
from painplast.config import Config
from painplast.errors import InputError
from painplast.plasticity import reorganization as reorg
from painplast.results import FINDINGS_COLUMNS
from conftest import ONE_DRAW_ALPHA

#: Fast settings for the cohort-wide tests: fit only the S1 hand regions, unsmoothed peak t.
#: The features do not depend on ``maps`` (checked in test_s1_maps_give_the_same_features).
FAST = Config(smoothing_fwhm=None, options={"reorganization": {"maps": "s1"}})


def _truth(root) -> tuple[pd.DataFrame, dict]:
    sim = root / "derivatives" / "simulation"
    return (pd.read_csv(sim / "participants_truth.tsv", sep="\t", index_col="participant_id"),
            json.loads((sim / "ground_truth.json").read_text()))


def _run(root):
    cohort = Cohort.from_bids(root, validate=False)
    results = [reorg.subject(s, FAST) for s in cohort]
    return cohort, results, reorg.group(results, cohort, FAST)


@pytest.fixture(scope="module")
def small(small_cohort):
    return (small_cohort, *_run(small_cohort))


@pytest.fixture(scope="module")
def null(null_cohort):
    return (null_cohort, *_run(null_cohort))


# ----------------------------------------------------------------------------- localisation


def _blob(center, width, amplitude=2.5, noise=0.0, seed=0):
    """A simulator-like Gaussian map on the 4 mm MNI grid, plus white noise."""
    mask_img = atlas.brain_mask(4)
    mask = mask_img.get_fdata() > 0.5
    xyz = atlas.voxel_coordinates(mask.shape, mask_img.affine)
    beta = amplitude * np.exp(-np.sum((xyz - np.asarray(center)) ** 2, axis=-1) / (2 * width**2))
    beta += np.random.default_rng(seed).normal(0, noise, beta.shape)
    return np.where(mask, beta, 0.0), mask, mask_img.affine


@pytest.mark.parametrize("center,width", [((41.3, -26.2, 53.1), 5.0), ((36.5, -29.7, 57.9), 3.5)])
def test_gaussian_fit_finds_an_off_grid_centre_and_width(center, width):
    beta, mask, affine = _blob(center, width)
    opts = dict(reorg.DEFAULTS)
    loc = reorg._locate(beta, beta, mask, affine, 1.0, opts)
    assert np.linalg.norm(loc["centroid"] - np.asarray(center)) < 0.05
    assert loc["width_mm"] == pytest.approx(width, rel=0.01)
    # extent: where the Gaussian exceeds half its height, a sphere of radius w * sqrt(2 ln 2)
    assert loc["extent_mm3"] == pytest.approx(4 / 3 * np.pi * (width * np.sqrt(2 * np.log(2))) ** 3, rel=0.03)
    # the thresholded, weighted centroid is pulled towards the 4 mm grid; the fit is not
    grid = reorg._locate(beta, beta, mask, affine, 1.0, {**opts, "localization": "centroid"})
    assert np.linalg.norm(grid["centroid"] - np.asarray(center)) < 1.5
    assert loc["peak"][0] > 0 and loc["peak_t"] == pytest.approx(beta[mask].max(), rel=0.2)


def test_localisation_error_under_noise_is_sub_voxel():
    # simulator-like noise on an unsmoothed beta map (SD ~0.35 % signal, peak 2.5 %)
    errors = []
    for seed in range(8):
        center = np.array([38.0, -28.0, 56.0]) + np.random.default_rng(100 + seed).uniform(-2, 2, 3)
        beta, mask, affine = _blob(center, 5.0, noise=0.35, seed=seed)
        loc = reorg._locate(beta, beta, mask, affine, 1.0, dict(reorg.DEFAULTS))
        errors.append(np.linalg.norm(loc["centroid"] - center))
    assert np.mean(errors) < 1.0, errors


def test_pseudo_random_side_is_fixed_by_the_id():
    sides = [reorg._pseudo_random_side(f"sub-{i:03d}") for i in range(40)]
    assert sides == [reorg._pseudo_random_side(f"sub-{i:03d}") for i in range(40)]
    assert 10 < sides.count("left") < 30


def test_correlation_table_matches_scipy():
    rng = np.random.default_rng(3)
    ids = [f"sub-{i:02d}" for i in range(30)]
    parts = pd.DataFrame({"group": ["patient"] * 20 + ["control"] * 10,
                          "pain_intensity": np.r_[rng.uniform(2, 9, 20), np.zeros(10)]}, index=ids)
    feats = pd.DataFrame({"reorganization.shift_mm": parts["pain_intensity"] + rng.normal(0, 2, 30)}, index=ids)
    table = reorg.correlation_table(feats, parts, ["reorganization.shift_mm"]).set_index("method")
    y, x = feats.iloc[:20, 0], parts["pain_intensity"].iloc[:20]
    assert table.loc["pearson", "r"] == pytest.approx(stats.pearsonr(y, x)[0])
    assert table.loc["spearman", "r"] == pytest.approx(stats.spearmanr(y, x)[0])
    assert table.loc["pearson", "p"] == pytest.approx(stats.pearsonr(y, x)[1])
    assert (table["n"] == 20).all()
    assert ((table["ci_low"] < table["r"]) & (table["r"] < table["ci_high"])).all()
    z, se = np.arctanh(table.loc["pearson", "r"]), 1 / np.sqrt(17)
    assert table.loc["pearson", "ci_low"] == pytest.approx(np.tanh(z - 1.959964 * se), abs=1e-6)


# ----------------------------------------------------------------------------- subject stage


def test_subject_default_maps_and_features(small_cohort):
    cohort = Cohort.from_bids(small_cohort, validate=False)
    truth, _ = _truth(small_cohort)
    patient = next(s for s in cohort if s.info.get("group") == "patient")
    res = reorg.subject(patient, Config())
    import nibabel as nib
    grid = nib.load(str(patient.run("somatotopy").bold)).shape[:3]
    for name in ("affected_hand_t", "affected_hand_beta", "unaffected_hand_t", "unaffected_hand_beta",
                 "affected_hand_beta_unsmoothed", "unaffected_hand_beta_unsmoothed"):
        img = res.maps[name]
        assert img.shape == grid and img.get_data_dtype() == np.float32
    assert res.info["affected_side"] == patient.info["affected_side"]
    assert res.info["affected_side_source"] == "participants.tsv"
    f = res.features
    # the affected map lies contralateral to the affected side
    sign = 1 if patient.info["affected_side"] == "left" else -1
    assert np.sign(f["reorganization.centroid_affected_x"]) == sign
    assert np.sign(f["reorganization.centroid_unaffected_x"]) == -sign
    assert f["reorganization.laterality_affected"] > 0.3
    assert abs(f["reorganization.shift_mm"] - truth.loc[patient.participant_id, "reorganization.shift_mm"]) < 2.0
    assert f["reorganization.peak_t_affected"] > 5


def test_s1_maps_give_the_same_features(small_cohort):
    sub = Cohort.from_bids(small_cohort, validate=False).subjects[1]
    whole = reorg.subject(sub, Config(smoothing_fwhm=None))
    fast = reorg.subject(sub, FAST)
    for key, value in whole.features.items():
        assert fast.features[key] == pytest.approx(value, rel=1e-6, abs=1e-6, nan_ok=True), key


def test_missing_run_and_bad_options_raise_input_errors(small_cohort, tmp_path):
    sub = Cohort.from_bids(small_cohort, validate=False).subjects[0]
    from dataclasses import replace
    no_run = replace(sub, runs=tuple(r for r in sub.runs if r.task != "somatotopy"))
    with pytest.raises(InputError, match="somatotopy"):
        reorg.subject(no_run, FAST)
    with pytest.raises(InputError, match="localization"):
        reorg.subject(sub, Config(options={"reorganization": {"localization": "spline"}}))
    with pytest.raises(InputError, match="no 'left_hand' trials"):
        reorg.subject(sub, Config(options={"reorganization": {"affected_condition": "left_hand"}}))
    bad = replace(sub, info={**sub.info, "affected_side": "upper"})
    with pytest.raises(InputError, match="affected_side"):
        reorg.subject(bad, FAST)


# ----------------------------------------------------------------------------- recovery


def test_shift_and_asymmetry_recover_the_planted_truth(small):
    root, cohort, results, _ = small
    truth, gt = _truth(root)
    assert not any(r.excluded for r in results)
    feats = pd.DataFrame({r.participant_id: r.features for r in results}).T
    patient = cohort.participants.loc[feats.index, "group"].eq("patient").to_numpy()
    shift, true_shift = feats["reorganization.shift_mm"], truth.loc[feats.index, "reorganization.shift_mm"]
    error = shift - true_shift
    assert np.abs(error).mean() < 1.2                       # mm; measured 0.81 at 4 mm
    assert np.abs(error).max() < 3.5
    assert abs(shift[patient].mean() - true_shift[patient].mean()) < 2.0
    assert abs(shift[patient].mean() - gt["somatotopy"]["mean_shift_mm_patients"]) < 2.0
    assert np.corrcoef(shift, true_shift)[0, 1] > 0.95
    asym, true_asym = feats["reorganization.asymmetry"], truth.loc[feats.index, "reorganization.asymmetry"]
    assert np.corrcoef(asym, true_asym)[0, 1] > 0.8
    assert np.abs(asym - true_asym).mean() < 0.15
    # controls (affected_side n/a): the side is read from the maps; the right side is what makes
    # their asymmetry follow its truth (a wrong side flips its sign)
    sources = {r.participant_id: r.info["affected_side_source"] for r in results}
    assert all(sources[p] == "data" for p in feats.index[~patient])
    assert all(sources[p] == "participants.tsv" for p in feats.index[patient])
    assert np.corrcoef(asym[~patient], true_asym[~patient])[0, 1] > 0.5


def test_hash_side_for_controls(small_cohort):
    control = next(s for s in Cohort.from_bids(small_cohort, validate=False) if s.info.get("group") == "control")
    res = reorg.subject(control, Config(smoothing_fwhm=None,
                                        options={"reorganization": {"maps": "s1", "unknown_side": "hash"}}))
    assert res.info["affected_side_source"] == "pseudo-random"
    assert res.info["affected_side"] == reorg._pseudo_random_side(control.participant_id)


def test_group_finds_the_planted_effects(small):
    root, cohort, results, out = small
    _, gt = _truth(root)
    findings = out.findings.set_index(["feature", "contrast"])
    assert list(out.findings.columns) == list(FINDINGS_COLUMNS)
    planted = {(e["feature"], e["contrast"]): e for e in gt["effects"] if e["module"] == "reorganization"}
    assert len(planted) == 3
    for key, effect in planted.items():
        row = findings.loc[key]
        assert row["p_corrected"] < 0.05, key
        assert np.sign(row["estimate"]) == effect["direction"], key
    for key in set(findings.index) - set(planted):
        assert findings.loc[key, "p_corrected"] >= ONE_DRAW_ALPHA, key
    corr = out.tables["correlations"]
    assert set(corr["method"]) == {"pearson", "spearman"}
    shift_r = corr[(corr.feature == "reorganization.shift_mm") & (corr.method == "pearson")].iloc[0]
    assert shift_r["r"] > 0.3 and shift_r["ci_low"] < shift_r["r"] < shift_r["ci_high"]
    for name in ("shift_vs_pain", "centroids"):
        assert out.figures[name][:8] == b"\x89PNG\r\n\x1a\n"
    assert len(out.tables["features"]) == len(cohort)


def test_null_cohort_gives_no_corrected_finding(null):
    root, cohort, results, out = null
    truth, _ = _truth(root)
    assert len(out.findings) == 4
    assert (out.findings["p_corrected"] >= ONE_DRAW_ALPHA).all(), out.findings
    feats = pd.DataFrame({r.participant_id: r.features for r in results}).T
    error = feats["reorganization.shift_mm"] - truth.loc[feats.index, "reorganization.shift_mm"]
    assert np.abs(error).mean() < 1.5


def test_excluded_participants_are_listed_not_tested(small):
    root, cohort, results, _ = small
    from dataclasses import replace
    first = results[0]
    marked = [replace(first, info={**first.info, "excluded": "no hand map"}), *results[1:]]
    out = reorg.group(marked, cohort, FAST)
    assert out.tables["excluded"]["participant_id"].tolist() == [first.participant_id]
    assert out.findings["n"].max() == len(cohort) - 1
