"""Nested cross-validation, leave-site-out, permutations and metrics, against ground truth."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, mean_absolute_error, r2_score, roc_auc_score

from painplast.biomarker import run_biomarker
from painplast.biomarker.features import from_frame
from painplast.biomarker.model import BiomarkerModel, design, predict, resolve_target
from painplast.biomarker.validate import (CrossValidation, _statistic, cross_validate, metrics,
                                          write_result)
from painplast.stats.harmonize import apply_combat, fit_combat


@lru_cache(maxsize=8)
def sim_table(**kwargs):
    """Noise-free features (participants_truth.tsv content), participants and ground truth,
    straight from the simulator's latent model (no images)."""
    from painplast.simulate import SimulationParameters, latent_cohort
    from painplast.simulate.truth import ground_truth

    params = SimulationParameters(**kwargs).validate()
    feats, parts = latent_cohort(params)
    truth = None if params.null else ground_truth(params)
    return feats, parts, truth


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(4)
    y = np.repeat(["control", "patient"], 30)
    scores = np.clip(0.5 + 0.3 * (y == "patient") + 0.25 * rng.normal(size=(3, 60)), 0, 1)
    cv = CrossValidation("binary", scores, np.where(scores >= .5, "patient", "control"), 0.5,
                         ["control", "patient"], True, [])
    out = metrics(y, cv, n_bootstrap=500, calibration=False)
    positive = y == "patient"
    assert out["auc"]["estimate"] == pytest.approx(np.mean([roc_auc_score(positive, s)
                                                            for s in scores]))
    assert out["brier"]["estimate"] == pytest.approx(np.mean([brier_score_loss(positive, s)
                                                              for s in scores]))
    sens = np.mean([np.mean(s[positive] >= .5) for s in scores])
    assert out["sensitivity"]["estimate"] == pytest.approx(sens)
    for value in out.values():
        assert value["ci_low"] <= value["estimate"] <= value["ci_high"]
    yc = rng.normal(size=50)
    pred = yc + rng.normal(size=(2, 50))
    cv = CrossValidation("continuous", pred, pred, 0.0, [], False, [])
    out = metrics(yc, cv, n_bootstrap=300)
    assert out["r2"]["estimate"] == pytest.approx(np.mean([r2_score(yc, p) for p in pred]))
    assert out["mae"]["estimate"] == pytest.approx(np.mean([mean_absolute_error(yc, p)
                                                            for p in pred]))


def test_intervals_cover_the_corrected_fold_variance():
    # 2 repeats x 4 folds of 15: the AUC is the mean of the 8 folds' AUCs, and its interval
    # contains estimate +- t * SE with the Nadeau-Bengio corrected SE of those AUCs, computed
    # here by hand; the pooled AUC is still reported, as auc_pooled
    from scipy import stats

    rng = np.random.default_rng(7)
    y = np.repeat(["control", "patient"], 30)
    positive = y == "patient"
    scores = 0.5 + 0.1 * positive + 0.3 * rng.normal(size=(2, 60))
    folds = np.stack([rng.permutation(np.repeat(np.arange(4), 15)) + 4 * r for r in range(2)])
    cv = CrossValidation("binary", scores, np.where(scores >= .5, "patient", "control"), 0.5,
                         ["control", "patient"], True, [], folds=folds)
    plain = metrics(y, CrossValidation("binary", scores, cv.predicted, 0.5, ["control", "patient"],
                                       True, []), n_bootstrap=500, calibration=False)["auc"]
    both = metrics(y, cv, n_bootstrap=500, calibration=False)
    out = both["auc"]
    per_fold = np.array([roc_auc_score(positive[folds[r] == k], scores[r][folds[r] == k])
                         for r in range(2) for k in np.unique(folds[r])])
    se = np.sqrt((1 / 8 + 15 / 45) * per_fold.var(ddof=1))
    half = stats.t.ppf(0.975, 7) * se
    assert out["estimate"] == pytest.approx(per_fold.mean())
    assert out["estimate"] != pytest.approx(plain["estimate"], abs=1e-3)
    assert both["auc_pooled"]["estimate"] == pytest.approx(plain["estimate"])
    assert out["ci_low"] <= out["estimate"] - half + 1e-12
    assert out["ci_high"] >= min(1.0, out["estimate"] + half) - 1e-12
    assert out["ci_high"] - out["ci_low"] > plain["ci_high"] - plain["ci_low"]
    assert out["ci_high"] - out["ci_low"] < 2 * half + 0.1


def test_delong_variance_matches_the_auc_spread_and_floors_the_interval():
    # DeLong's variance of one AUC estimate against the spread of AUCs over 2000 samples
    from scipy import stats
    from painplast.biomarker.validate import _delong_variance

    rng = np.random.default_rng(11)
    positive = np.repeat([False, True], [14, 10])
    aucs, variances = [], []
    for _ in range(2000):
        s = rng.normal(size=24) + 1.0 * positive
        aucs.append(roc_auc_score(positive, s))
        variances.append(_delong_variance(s, positive))
    assert np.mean(variances) == pytest.approx(np.var(aucs), rel=0.12)
    # folds that agree more than their test sets allow: the interval uses the DeLong floor
    y = np.repeat(["control", "patient"], 30)
    positive = y == "patient"
    base = 0.3 * positive + rng.normal(size=60)
    scores = np.stack([base, base + 1e-3 * rng.normal(size=60)])
    folds = np.stack([np.tile(np.arange(4), 15), np.tile(np.arange(4), 15) + 4])
    cv = CrossValidation("binary", scores, np.where(scores >= 0, "patient", "control"), 0.0,
                         ["control", "patient"], False, [], folds=folds)
    out = metrics(y, cv, n_bootstrap=300, calibration=False)["auc"]
    per_fold = np.array([roc_auc_score(positive[folds[r] == k], scores[r][folds[r] == k])
                         for r in range(2) for k in np.unique(folds[r])])
    floor = np.mean([_delong_variance(scores[r][folds[r] == k], positive[folds[r] == k])
                     for r in range(2) for k in np.unique(folds[r])])
    ratio = 15 / 45
    assert floor / (1 + ratio) > per_fold.var(ddof=1)  # the floor is what applies here
    half = stats.t.ppf(0.975, 7) * np.sqrt((1 / 8 + ratio) * floor / (1 + ratio))
    assert out["ci_low"] <= out["estimate"] - half + 1e-12
    assert out["ci_high"] >= min(1.0, out["estimate"] + half) - 1e-12


def test_fold_auc_bootstrap_equals_scoring_each_resample():
    # the weighted Mann-Whitney shortcut against materializing every resample (duplicates
    # included) and scoring each fold with scikit-learn
    from painplast.biomarker.validate import _bootstrap_indices, _fold_auc_bootstrap

    rng = np.random.default_rng(3)
    positive = np.repeat([False, True], 20)
    scores = np.round(positive + rng.normal(size=(2, 40)), 1)  # ties included
    folds = np.stack([rng.permutation(np.repeat(np.arange(4), 10)) + 4 * r for r in range(2)])
    idx = _bootstrap_indices(positive, "binary", 30, rng)
    fast = _fold_auc_bootstrap(scores, positive, folds, idx)
    for b in range(30):
        values = []
        for r in range(2):
            for k in np.unique(folds[r]):
                members = idx[b][folds[r][idx[b]] == k]
                if 0 < positive[members].sum() < len(members):
                    values.append(roc_auc_score(positive[members], scores[r][members]))
        assert fast[b] == pytest.approx(np.mean(values))


def test_diagnosis_cross_validated_and_leave_site_out_auc_near_best_auc(tmp_path):
    """120 participants, 3 sites, default effect sizes; participants_truth features."""
    feats, parts, truth = sim_table(n_participants=120, n_sites=3, seed=0)
    result, model = run_biomarker(feats, parts, "diagnosis", out_dir=tmp_path, folds=5,
                                  inner_folds=3, repeats=1, n_permutations=0, n_bootstrap=500,
                                  learning=False, n_jobs=2)
    best = truth["best_auc"]["diagnosis"]
    auc = result["metrics"]["auc"]
    # issue 6's acceptance: within 0.05 of the best AUC (0.946 and 0.963 against 0.989 here;
    # the AUC of the scores pooled over folds is reported but not the estimate). These latent
    # participants have no motion confound; with it (latent_cohort(motion=True)) the model
    # removes the group difference motion shares and reaches 0.912 / 0.920 (RESULTS.md).
    assert abs(auc["estimate"] - best) < 0.05, (auc, best)
    assert set(result["metrics"]["auc_pooled"]) == {"estimate", "ci_low", "ci_high"}
    assert auc["ci_low"] < best + 0.01 and auc["ci_high"] > best - 0.1
    assert len(result["leave_site_out"]) == 3
    assert abs(result["leave_site_out_summary"]["auc"] - best) < 0.05
    written = json.loads((tmp_path / "group" / "biomarker_diagnosis.json").read_text())
    for key in ("auc", "balanced_accuracy", "sensitivity", "specificity"):
        assert set(written["metrics"][key]) == {"estimate", "ci_low", "ci_high"}
    assert (tmp_path / written["model"] / "model.json").exists()
    assert [row["site"] for row in written["leave_site_out"]] == ["site1", "site2", "site3"]


def test_harmonization_before_cv_inflates_auc_when_site_and_group_are_confounded():
    """site_confound=0.8, no planted effect: the honest AUC is 0.5."""
    leaky, honest = [], []
    for seed in (0, 1):
        feats, parts, _ = sim_table(n_participants=120, n_sites=3, site_confound=0.8,
                                    null=True, seed=seed)
        X = design(from_frame(feats), parts)
        y = resolve_target(parts, "diagnosis").y.loc[X.index].to_numpy()
        cv = cross_validate(BiomarkerModel(inner_folds=3), X, y, 5, 1, 0, n_jobs=2)
        honest.append(_statistic("binary", y, cv))
        features = [c for c in X.columns if c not in ("site", "age", "sex")]
        covariates = np.column_stack([X["age"], X["sex"], (y == "patient").astype(float)])
        combat = fit_combat(X[features].to_numpy(), X["site"].to_numpy(), covariates)
        H = X.drop(columns="site")
        H[features] = apply_combat(combat, X[features].to_numpy(), X["site"].to_numpy(),
                                   covariates)
        cv = cross_validate(BiomarkerModel(inner_folds=3), H, y, 5, 1, 0, n_jobs=2)
        leaky.append(_statistic("binary", y, cv))
    assert np.mean(leaky) - np.mean(honest) > 0.03, (leaky, honest)
    assert abs(np.mean(honest) - 0.5) < 0.07, honest


def _connectomes(root: Path) -> pd.DataFrame:
    rows = {}
    for path in sorted(root.glob("derivatives/timeseries/sub-*/func/*_timeseries.tsv")):
        if "confounds" in path.name:
            continue
        series = pd.read_csv(path, sep="\t").to_numpy(float)[:, 1:]  # drop GlobSig
        r = np.corrcoef(series.T)
        upper = np.triu_indices_from(r, 1)
        rows[path.name.split("_")[0]] = np.arctanh(np.clip(r[upper], -0.999999, 0.999999))
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.columns = [f"connectivity.edge{i}" for i in range(frame.shape[1])]
    return frame


def test_real_resting_state_pain_sensitivity(shared_data, tmp_path):
    root = shared_data / "rpn_szeged"
    feats = _connectomes(root)
    parts = pd.read_csv(root / "participants.tsv", sep="\t")
    assert feats.shape == (29, 122 * 121 // 2)
    result, model = run_biomarker(feats, parts, "pain_sensitivity", out_dir=tmp_path, folds=5,
                                  inner_folds=3, repeats=1, n_permutations=4, n_bootstrap=500,
                                  learning=False, n_jobs=2)
    assert result["kind"] == "continuous" and result["n"] == 29
    assert result["leave_site_out"] == []  # one site
    assert [name for name, _ in model.pipeline_.steps] == ["confounds", "scale", "estimator"]
    for name in ("r", "r2", "mae"):
        m = result["metrics"][name]
        assert m["ci_low"] <= m["estimate"] <= m["ci_high"]
    assert -1 <= result["metrics"]["r"]["ci_low"] < result["metrics"]["r"]["ci_high"] <= 1
    # the permutation test tested the statistic the result reports (r of the one repeat's
    # out-of-fold predictions) and its p is one that 4 permutations can give, (1 + k) / 5
    perm = result["permutation"]
    assert perm["statistic"] == "r" and perm["n_permutations"] == 4
    assert perm["observed"] == pytest.approx(result["metrics"]["r"]["estimate"], abs=1e-12)
    oof = result["_out_of_fold"]
    assert perm["observed"] == pytest.approx(np.corrcoef(
        oof["score"], parts.set_index("participant_id").loc[oof["participant_id"],
                                                             "pain_sensitivity"])[0, 1])
    k = result["permutation_p"] * 5 - 1
    assert k == pytest.approx(round(k)) and 0 <= round(k) <= 4 and np.isfinite(perm["null_sd"])
    # the model trained on Szeged applies to participants of another site through predict
    other = parts.assign(site="elsewhere")
    out = predict(tmp_path / result["model"], feats, other)
    same = predict(tmp_path / result["model"], feats, parts)
    np.testing.assert_allclose(out["prediction"], same["prediction"])
    np.testing.assert_allclose(out["prediction"], model.predict(design(feats, parts)))
    path = write_result(result, tmp_path)
    assert json.loads(path.read_text())["metrics"]["r"]["estimate"] == pytest.approx(
        result["metrics"]["r"]["estimate"])
