"""plasticity.sensitization: recovery of planted effects, signatures with real weight maps, group outputs."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from painplast import atlas, contrasts
from painplast.cohort import Cohort
from painplast.config import Config
from painplast.errors import InputError
from painplast.plasticity import sensitization as sz
from conftest import ONE_DRAW_ALPHA

ROI_ONLY = Config(options={"sensitization": {"voxelwise": False}}, n_permutations=0)


def _truth(root):
    sim = root / "derivatives" / "simulation"
    return (json.loads((sim / "ground_truth.json").read_text()),
            pd.read_csv(sim / "participants_truth.tsv", sep="\t", index_col="participant_id"))


@pytest.fixture(scope="module")
def small(small_cohort):
    cohort = Cohort.from_bids(small_cohort)
    results = [sz.subject(s, ROI_ONLY) for s in cohort]
    return cohort, results, sz.group(results, cohort, ROI_ONLY)


def test_planted_effects_recovered(small, small_cohort):
    cohort, results, res = small
    gt, truth = _truth(small_cohort)
    planted = [e for e in gt["effects"] if e["module"] == "sensitization"]
    assert planted
    f = res.findings.set_index(["feature", "contrast"])
    # the same estimator on the noise-free truth: what a perfect measurement would report
    oracle = contrasts.findings_table(truth, cohort.participants, list(f.index)).set_index(["feature", "contrast"])
    covered = 0
    for e in planted:
        row = f.loc[(e["feature"], e["contrast"])]
        assert np.sign(row.estimate) == e["direction"], e["feature"]
        assert row.p < 0.05, e["feature"]
        covered += row.ci_low <= e["direction"] * e["size"] <= row.ci_high
        assert abs(row.estimate - oracle.loc[(e["feature"], e["contrast"]), "estimate"]) < 0.6, e["feature"]
    assert covered >= len(planted) - 1
    # the strongest planted effect survives Holm correction over the module's table
    assert f.loc[("sensitization.insula_posterior_slope", "patient-control"), "p_corrected"] < 0.05
    keys = {(e["feature"], e["contrast"]) for e in planted}
    false_pos = [k for k, r in f.iterrows() if k not in keys and r.p_corrected < ONE_DRAW_ALPHA]
    assert not false_pos


def test_reliability_against_truth(small, small_cohort):
    _, _, res = small
    _, truth = _truth(small_cohort)
    feats = res.tables["features"].set_index("participant_id")
    for r in atlas.PAIN_PROCESSING_REGIONS:
        for kind, floor in (("response", 0.85), ("slope", 0.5)):
            col = f"sensitization.{r}_{kind}"
            assert np.corrcoef(feats[col].astype(float), truth.loc[feats.index, col])[0, 1] > floor, col


def test_subject_features_and_curves(small):
    _, results, res = small
    f = results[0].features
    assert {"sensitization.thalamus_threshold_intensity", "sensitization.dacc_rating_coupling"} <= set(f)
    assert results[0].arrays["roi_by_level"].shape == (len(atlas.PAIN_PROCESSING_REGIONS), 6)
    curves = res.tables["roi_by_level"]
    # responses rise with intensity in every region (the planted slopes are positive)
    for region, part in curves.groupby("region"):
        mean = part.groupby("intensity")["mean"].mean()
        assert mean.iloc[-1] > mean.iloc[0], region
    assert res.figures["stimulus_response"][:8] == b"\x89PNG\r\n\x1a\n"


def test_null_cohort_has_no_corrected_false_positive(null_cohort):
    cohort = Cohort.from_bids(null_cohort)
    res = sz.group([sz.subject(s, ROI_ONLY) for s in cohort], cohort, ROI_ONLY)
    assert len(res.findings) == 2 * len(atlas.PAIN_PROCESSING_REGIONS)
    assert (res.findings.p_corrected >= ONE_DRAW_ALPHA).all()


def test_pattern_similarity_matches_published_values(shared_data):
    d = shared_data / "signatures"
    target = d / "pines_chang2015_weights.nii.gz"
    siips, kragel, pines = (d / "siips1_woo2017_weights.nii.gz", d / "pain_kragel2018_bpls_weights.nii.gz",
                            d / "pines_chang2015_weights.nii.gz")
    assert sz.pattern_similarity(siips, kragel, target) == pytest.approx(0.196, abs=0.003)
    assert sz.pattern_similarity(siips, pines, target) == pytest.approx(0.017, abs=0.003)
    assert sz.pattern_similarity(kragel, pines, target) == pytest.approx(-0.029, abs=0.003)


def test_load_weights_4d_float64_and_nan(shared_data, tmp_path):
    d = shared_data / "signatures"
    w = sz.load_weights(d / "clbp_lee2018_pcasl_svm_weights.nii.gz")
    assert w.shape == (91, 109, 91) and w.get_data_dtype() == np.float64
    img = nib.load(d / "siips1_woo2017_weights.nii.gz")
    data = img.get_fdata()
    data[data == 0] = np.nan
    nan_path = tmp_path / "nan_weights.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.float32), img.affine), nan_path)
    grid = atlas.brain_mask(4)
    a, b = sz.load_weights(nan_path, grid).get_fdata(), sz.load_weights(img, grid).get_fdata()
    assert np.isfinite(a).all() and np.allclose(a, b)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2)), np.eye(4)), tmp_path / "bad.nii.gz")
    with pytest.raises(InputError, match="3-D"):
        sz.load_weights(tmp_path / "bad.nii.gz")


def test_signatures_and_voxelwise_group(small_cohort, shared_data, tmp_path):
    cohort = Cohort.from_bids(small_cohort)
    # a known pattern: positive weights in the pain-processing spheres (2 mm grid, 4-D, NaN outside)
    grid = atlas.brain_mask(2)
    pattern = np.full(grid.shape, np.nan)
    for r in atlas.PAIN_PROCESSING_REGIONS:
        pattern[atlas.region_mask(r, grid, 6.0)] = 1.0
    known = tmp_path / "painrois_weights.nii.gz"
    nib.save(nib.Nifti1Image(pattern[..., None], grid.affine), known)
    cfg = Config(signatures=(str(known), str(shared_data / "signatures" / "siips1_woo2017_weights.nii.gz")),
                 n_permutations=20)
    subs = list(cohort)[:10]
    assert cohort.participants.loc[[s.participant_id for s in subs], "group"].nunique() == 2
    results = [sz.subject(s, cfg) for s in subs]
    f = results[0].features
    for name in ("painrois", "siips1_woo2017"):
        assert np.isfinite(f[f"sensitization.signature_{name}_dot"])
        assert -1 <= f[f"sensitization.signature_{name}_cosine"] <= 1
        assert np.isfinite(f[f"sensitization.signature_{name}_dot_49"])
    # the known pattern's response: positive, and higher at 49 than at 44 degC
    assert all(r.features["sensitization.signature_painrois_dot"] > 0 for r in results)
    assert all(r.features["sensitization.signature_painrois_dot_49"]
               > r.features["sensitization.signature_painrois_dot_44"] for r in results)
    res = sz.group(results, cohort, cfg)
    fc = res.tables["forced_choice"].set_index("signature")
    assert fc.loc["painrois", "accuracy"] >= 0.8
    assert fc.loc["painrois", "ci_low"] < fc.loc["painrois", "accuracy"] <= fc.loc["painrois", "ci_high"]
    assert res.tables["roc"].set_index("signature").loc["painrois", "auc"] > 0.7
    assert "sensitization.signature_painrois_dot" in set(res.findings.feature)
    assert "patient_control_t" in res.maps
    assert list(res.clusters.columns[:8]) == ["contrast", "peak_x", "peak_y", "peak_z", "peak_stat",
                                              "size_mm3", "p_fwe", "label"]
    assert results[0].maps["pain_beta"].shape == results[0].maps["pain_t"].shape


def test_missing_pain_run_is_an_input_error(small_cohort):
    from painplast.cohort import Subject
    with pytest.raises(InputError, match="pain"):
        sz.subject(Subject("sub-x", "x", {}, ()), ROI_ONLY)
