"""plasticity.modulation: modulation indices and gPPI against the simulator's planted effects."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from painplast import atlas
from painplast.cohort import Cohort
from painplast.config import Config
from painplast.plasticity import modulation as md
from conftest import ONE_DRAW_ALPHA

ROI_ONLY = Config(options={"modulation": {"voxelwise": False}})


@pytest.fixture(scope="module")
def small(small_cohort):
    cohort = Cohort.from_bids(small_cohort)
    results = [md.subject(s, ROI_ONLY) for s in cohort]
    sim = small_cohort / "derivatives" / "simulation"
    return (cohort, md.group(results, cohort, ROI_ONLY), json.loads((sim / "ground_truth.json").read_text()),
            pd.read_csv(sim / "participants_truth.tsv", sep="\t", index_col="participant_id"))


def test_ppi_regressors_recover_a_planted_interaction():
    rng = np.random.default_rng(0)
    n = 200
    psych = np.r_[np.zeros(50), np.ones(50), np.zeros(50), np.ones(50)] * 2.0
    design = pd.DataFrame({"a": psych, "b": 2.0 - psych, "constant": 1.0})
    seed = rng.normal(size=n)
    y = 0.2 * seed + 0.7 * seed * psych / 2.0
    extra = md.ppi_regressors(seed, design, ["a", "b"], ["constant"])
    X = pd.concat([design, extra], axis=1).to_numpy()
    beta = np.linalg.lstsq(X, y, rcond=None)[0]
    cols = list(design.columns) + list(extra.columns)
    assert beta[cols.index("ppi_a")] - beta[cols.index("ppi_b")] == pytest.approx(0.7, abs=1e-6)


def test_planted_effects_recovered(small):
    from painplast import contrasts
    cohort, res, gt, truth = small
    f = res.findings.set_index(["feature", "contrast"])
    # the same estimator on the noise-free truth: what a perfect measurement would report here
    oracle = contrasts.findings_table(truth, cohort.participants, list(f.index)).set_index(["feature", "contrast"])
    covered = 0
    assert set(f.index.get_level_values("contrast")) == set(md.CONTRASTS)
    planted = [e for e in gt["effects"] if e["module"] == "modulation"]
    for e in planted:
        row = f.loc[(e["feature"], e["contrast"])]
        assert np.sign(row.estimate) == e["direction"], (e["feature"], e["contrast"])
        if e["contrast"] == "patient-control":
            assert row.p_corrected < 0.05, e["feature"]
        covered += row.ci_low <= e["direction"] * e["size"] <= row.ci_high
        if e["feature"] != "modulation.pag_racc_ppi":   # PPI: attenuated by seed noise (see report)
            o = oracle.loc[(e["feature"], e["contrast"]), "estimate"]
            assert row.ci_low - 0.3 <= o <= row.ci_high + 0.3, (e["feature"], e["contrast"])
    # measurement noise shrinks large standardized effects (see report): most, not all, intervals cover the
    # planted size; agreement with the noise-free oracle above is the stricter check
    assert covered >= len(planted) - 3
    keys = {(e["feature"], e["contrast"]) for e in planted}
    assert not [k for k, r in f.iterrows() if k not in keys and r.p_corrected < ONE_DRAW_ALPHA]
    assert res.figures["index_vs_score"][:4] == b"\x89PNG"


def test_reliability_against_truth(small):
    _, res, _, truth = small
    feats = res.tables["features"].set_index("participant_id")
    floors = {"modulation.dacc_index": 0.9, "modulation.insula_anterior_index": 0.9, "modulation.pag_racc_ppi": 0.6}
    # unplanted regions: their truth still varies between participants (SD ~0.3 %), less than
    # in the planted ones, so the measurement tracks it less closely. Floors: the 0.999 lower
    # bound (Fisher z, n = 32) of the reliability seen here (0.95, 0.93, 0.90, 0.83, 0.74).
    # The PAG index (0.28 here: a 6 mm sphere of a few 4 mm voxels) is left out: no floor above
    # chance holds for it with that certainty on 32 participants.
    floors.update({"modulation.s1_hand_index": 0.7, "modulation.s2_index": 0.7,
                   "modulation.insula_posterior_index": 0.7, "modulation.thalamus_index": 0.5,
                   "modulation.amygdala_index": 0.35})
    assert set(floors) >= {f"modulation.{r}_index" for r in atlas.PAIN_PROCESSING_REGIONS} - {"modulation.pag_index"}
    for col, floor in floors.items():
        assert np.corrcoef(feats[col].astype(float), truth.loc[feats.index, col])[0, 1] > floor, col


def test_null_cohort_has_no_corrected_false_positive(null_cohort):
    cohort = Cohort.from_bids(null_cohort)
    res = md.group([md.subject(s, ROI_ONLY) for s in cohort], cohort, ROI_ONLY)
    assert len(res.findings) > 0 and (res.findings.p_corrected >= ONE_DRAW_ALPHA).all()
