"""painplast.stats.longitudinal against statsmodels and scipy, and against known populations.

Each estimand is computed again by a peer that shares no code with it: scipy's paired t test and
its noncentral t distribution (d_z and its interval), statsmodels' OLS (group x time on change
scores, change with pain relief, baseline contrasts), least squares on the long table with one
intercept per subject and statsmodels' linear mixed model (the group x time interaction that the
change-score contrast equals), statsmodels' Holm. Then the tests are drawn many times from
populations with known effects: the paired test's and the findings table's error rates under the
null, and the recovery of planted effects by the intervals.
"""
from __future__ import annotations

import os
import time as _time

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import optimize, stats
from statsmodels.stats.multitest import multipletests

from painplast import contrasts
from painplast.errors import InputError
from painplast.results import FINDINGS_COLUMNS
from painplast.stats.longitudinal import (LONGITUDINAL_CONTRASTS, LongitudinalContrast,
                                          change_map_test, change_scores, group_time_map_test,
                                          longitudinal_effect, longitudinal_findings,
                                          paired_effect)

LONGITUDINAL = ("time", "group:time", "change~pain_relief", "persisting-recovering")


def _seed(*keys: int) -> list[int]:
    """Fixed seeds of the statistical tests, shifted by PAINPLAST_SEED_OFFSET (default 0)."""
    return [int(os.environ.get("PAINPLAST_SEED_OFFSET", "0")), *keys]


def _bounds(m: int, level: float, tail: float = 0.0005) -> tuple[float, float]:
    """Shares a correct method stays within with probability >= 1 - 2 * tail."""
    return stats.binom.ppf(tail, m, level) / m, stats.binom.isf(tail, m, level) / m


def _participants(rng, n_controls=40, n_chronic=50, n_subacute=30) -> pd.DataFrame:
    """A participants table as the longitudinal simulator writes it (n/a as NaN)."""
    n = n_controls + n_chronic + n_subacute
    ids = [f"sub-{i:03d}" for i in range(n)]
    group = np.array(["control"] * n_controls + ["patient"] * (n_chronic + n_subacute))
    stage = np.array([np.nan] * n_controls + ["chronic"] * n_chronic + ["subacute"] * n_subacute,
                     dtype=object)
    outcome = np.array([np.nan] * (n_controls + n_chronic)
                       + list(rng.permutation(["persisting", "recovering"] * (n_subacute // 2)
                                              + ["persisting"] * (n_subacute % 2))), dtype=object)
    relief = np.where(stage == "chronic", rng.uniform(-10, 90, n), np.nan)
    return pd.DataFrame({"group": group, "stage": stage, "outcome": outcome,
                         "pain_relief": relief, "age": rng.uniform(20, 70, n).round(),
                         "sex": rng.choice(["F", "M"], n), "site": rng.choice(["A", "B", "C"], n)},
                        index=pd.Index(ids, name="participant_id"))


def _long(parts: pd.DataFrame, baseline: np.ndarray, followup: np.ndarray,
          names: list[str]) -> pd.DataFrame:
    """Long table (participant_id, session, features) from (n, p) baseline and follow-up values."""
    n = len(parts)
    frame = pd.DataFrame(np.vstack([baseline, followup]), columns=names)
    frame.insert(0, "session", ["baseline"] * n + ["followup"] * n)
    frame.insert(0, "participant_id", list(parts.index) * 2)
    return frame


def _coded(parts: pd.DataFrame) -> pd.DataFrame:
    """age, sex (F=1), site dummies: the covariates coded independently of painplast."""
    site = pd.get_dummies(parts["site"], drop_first=True, dtype=float)
    return pd.concat([parts[["age"]], (parts["sex"] == "F").astype(float).rename("sex"), site],
                     axis=1)


# --------------------------------------------------------------------------------------------
# each estimand against a peer
# --------------------------------------------------------------------------------------------

def _nct_interval(t, df, n):
    """d_z interval by root finding on scipy's noncentral t (Steiger & Fouladi 1997)."""
    def bound(target):
        return optimize.brentq(lambda nc: stats.nct.sf(t, df, nc) - target, t - 15, t + 15,
                               xtol=1e-12)
    return bound(0.025) / np.sqrt(n), bound(0.975) / np.sqrt(n)


@pytest.mark.parametrize("n,shift", [(12, 0.0), (30, 0.6), (80, -0.3), (25, 2.5)])
def test_paired_effect_agrees_with_scipy(n, shift):
    rng = np.random.default_rng([n, 11])
    before = rng.normal(size=n) * 2 + 5
    after = before + shift + rng.normal(size=n)
    effect = paired_effect(after - before)
    test = stats.ttest_rel(after, before)
    assert effect.t == pytest.approx(test.statistic, rel=1e-10)
    assert effect.p == pytest.approx(test.pvalue, rel=1e-9)
    assert (effect.df, effect.n, effect.kind) == (n - 1, n, "paired")
    change = after - before
    assert effect.estimate == pytest.approx(change.mean() / change.std(ddof=1), rel=1e-12)
    low, high = _nct_interval(test.statistic, n - 1, n)
    assert effect.ci_low == pytest.approx(low, abs=1e-6)
    assert effect.ci_high == pytest.approx(high, abs=1e-6)
    # missing changes are dropped; too few or constant changes give NaN
    with_nan = paired_effect(np.r_[change, np.nan])
    assert with_nan.n == n and with_nan.estimate == pytest.approx(effect.estimate)
    assert np.isnan(paired_effect(change[:2]).estimate)
    assert np.isnan(paired_effect(np.ones(10)).estimate)


def _cohort_with_effects(rng, dz=0.0, extra_change=0.0, relief_slope=0.0, baseline_d=0.0,
                         **sizes):
    """One feature: baseline and follow-up values with planted longitudinal effects."""
    parts = _participants(rng, **sizes)
    n = len(parts)
    chronic = (parts["stage"] == "chronic").to_numpy()
    persisting = (parts["outcome"] == "persisting").to_numpy()
    relief = np.nan_to_num(parts["pain_relief"].to_numpy(float))
    age = parts["age"].to_numpy(float)
    site = pd.get_dummies(parts["site"], dtype=float).to_numpy() @ np.array([0.0, 0.4, -0.3])
    baseline = rng.normal(size=n) + 0.02 * age + site + baseline_d * persisting
    change = (rng.normal(size=n) + dz * chronic + extra_change * chronic
              + relief_slope * (relief - 40) / 30 * chronic)
    return parts, baseline, baseline + change


def test_group_time_agrees_with_statsmodels_ols_on_change_scores():
    rng = np.random.default_rng(21)
    parts, base, follow = _cohort_with_effects(rng, dz=0.3, extra_change=0.5)
    effect = longitudinal_effect(follow - base, parts, "group:time")
    keep = ((parts["stage"] == "chronic") | (parts["group"] == "control")).to_numpy()
    g = (parts["stage"] == "chronic").to_numpy(float)[keep]
    X = sm.add_constant(np.column_stack([g, _coded(parts).to_numpy()[keep]]))
    fit = sm.OLS((follow - base)[keep], X).fit()
    assert effect.n == keep.sum() == 90
    assert effect.estimate == pytest.approx(fit.params[1] / np.sqrt(fit.scale), rel=1e-10)
    assert effect.t == pytest.approx(fit.tvalues[1], rel=1e-10)
    assert effect.p == pytest.approx(fit.pvalues[1], rel=1e-9)
    assert effect.df == fit.df_resid


def _long_design(parts, keep):
    """Long-table designs of the group x time model: rows (subject, time), time 0/1."""
    g = (parts["stage"] == "chronic").to_numpy(float)[keep]
    between = np.column_stack([np.ones(keep.sum()), g, _coded(parts).to_numpy()[keep]])
    n, q = between.shape
    time = np.repeat([0.0, 1.0], n)
    stacked = np.vstack([between, between])
    return time, stacked, np.tile(np.arange(n), 2), q


def test_group_time_equals_the_interaction_with_subject_fixed_effects():
    """Change scores = the group x time coefficient of least squares with one intercept per
    subject (two sessions, complete data): same estimate, t and p, and the long model's residual
    SD is the change model's over sqrt(2)."""
    rng = np.random.default_rng(22)
    parts, base, follow = _cohort_with_effects(rng, dz=0.2, extra_change=0.7)
    keep = ((parts["stage"] == "chronic") | (parts["group"] == "control")).to_numpy()
    time, stacked, subject, q = _long_design(parts, keep)
    n = keep.sum()
    subject_dummies = np.eye(n)[subject]
    X = np.column_stack([subject_dummies, time[:, None] * stacked])     # time x [1, g, covs]
    y = np.r_[base[keep], follow[keep]]
    fit = sm.OLS(y, X).fit()
    effect = longitudinal_effect(follow - base, parts, "group:time")
    interaction = n + 1                                                  # time x g
    assert fit.df_resid == effect.df
    assert effect.t == pytest.approx(fit.tvalues[interaction], rel=1e-9)
    assert effect.p == pytest.approx(fit.pvalues[interaction], rel=1e-8)
    d_long = fit.params[interaction] / (np.sqrt(2 * fit.scale))
    assert effect.estimate == pytest.approx(d_long, rel=1e-9)


def test_group_time_equals_the_mixed_model_interaction():
    """... and the group x time coefficient of a linear mixed model with a random intercept per
    subject (REML), with the same standard error."""
    rng = np.random.default_rng(23)
    parts, base, follow = _cohort_with_effects(rng, dz=0.2, extra_change=0.6)
    keep = ((parts["stage"] == "chronic") | (parts["group"] == "control")).to_numpy()
    time, stacked, subject, q = _long_design(parts, keep)
    exog = np.column_stack([stacked, time[:, None] * stacked])         # between + time x between
    y = np.r_[base[keep], follow[keep]]
    fit = sm.MixedLM(y, exog, groups=subject).fit(reml=True)
    change = (follow - base)[keep]
    ols = sm.OLS(change, stacked[: keep.sum()]).fit()
    interaction = q + 1
    assert fit.params[interaction] == pytest.approx(ols.params[1], abs=1e-6)
    assert fit.bse[interaction] == pytest.approx(ols.bse[1], rel=1e-4)
    effect = longitudinal_effect(follow - base, parts, "group:time")
    assert effect.t == pytest.approx(fit.params[interaction] / fit.bse[interaction], rel=1e-4)
    print(f"MixedLM vs change score: |beta diff| = "
          f"{abs(fit.params[interaction] - ols.params[1]):.1e}, "
          f"|se ratio - 1| = {abs(fit.bse[interaction] / ols.bse[1] - 1):.1e}")


def test_change_with_pain_relief_agrees_with_statsmodels():
    rng = np.random.default_rng(24)
    parts, base, follow = _cohort_with_effects(rng, relief_slope=0.8)
    effect = longitudinal_effect(follow - base, parts, "change~pain_relief")
    chronic = (parts["stage"] == "chronic").to_numpy()
    covs = sm.add_constant(_coded(parts).to_numpy()[chronic])
    change, relief = (follow - base)[chronic], parts["pain_relief"].to_numpy(float)[chronic]
    # the partial correlation: Pearson r of the residuals on the covariates
    ry = sm.OLS(change, covs).fit().resid
    rx = sm.OLS(relief, covs).fit().resid
    assert effect.estimate == pytest.approx(np.corrcoef(ry, rx)[0, 1], rel=1e-10)
    fit = sm.OLS(change, np.column_stack([covs, relief])).fit()
    assert effect.p == pytest.approx(fit.pvalues[-1], rel=1e-9)
    assert effect.n == 50 and effect.estimate > 0.3


def test_persisting_recovering_agrees_with_statsmodels_at_baseline():
    rng = np.random.default_rng(25)
    parts, base, _ = _cohort_with_effects(rng, baseline_d=1.0)
    effect = longitudinal_effect(base, parts, "persisting-recovering")
    subacute = (parts["stage"] == "subacute").to_numpy()
    g = (parts["outcome"] == "persisting").to_numpy(float)[subacute]
    fit = sm.OLS(base[subacute], sm.add_constant(np.column_stack(
        [g, _coded(parts).to_numpy()[subacute]]))).fit()
    assert effect.estimate == pytest.approx(fit.params[1] / np.sqrt(fit.scale), rel=1e-10)
    assert effect.p == pytest.approx(fit.pvalues[1], rel=1e-9)
    assert effect.n == 30


# --------------------------------------------------------------------------------------------
# the findings table
# --------------------------------------------------------------------------------------------

def test_findings_table_rows_holm_and_who_was_left_out():
    rng = np.random.default_rng(26)
    parts, base, follow = _cohort_with_effects(rng, dz=0.6, extra_change=0.3, baseline_d=0.8)
    other_base, other_follow = rng.normal(size=(2, len(parts)))
    long = _long(parts, np.column_stack([base, other_base]),
                 np.column_stack([follow, other_follow]), ["structure.gm_acc", "structure.gm_s1"])
    long["session"] = "ses-" + long["session"]          # BIDS labels: matched without ses-
    ids = list(parts.index)
    chronic = [i for i in ids if parts.loc[i, "stage"] == "chronic"]
    control = [i for i in ids if parts.loc[i, "group"] == "control"]
    subacute = [i for i in ids if parts.loc[i, "stage"] == "subacute"]
    # a chronic patient without follow-up, a control with one n/a value at follow-up, a chronic
    # patient with pain relief n/a, a subacute patient with age n/a, one row not in participants
    long = long[~((long.participant_id == chronic[0]) & (long.session == "ses-followup"))]
    long.loc[(long.participant_id == control[0]) & (long.session == "ses-followup"),
             "structure.gm_acc"] = np.nan
    parts = parts.copy()
    parts.loc[chronic[1], "pain_relief"] = np.nan
    parts.loc[subacute[0], "age"] = np.nan
    stranger = pd.DataFrame({"participant_id": ["sub-999"], "session": ["ses-baseline"],
                             "structure.gm_acc": [0.0], "structure.gm_s1": [0.0]})
    long = pd.concat([long, stranger])
    tests = [(f, c) for f in ("structure.gm_acc", "structure.gm_s1") for c in LONGITUDINAL]
    tests += [("structure.gm_acc", "patient-control"), ("structure.gm_missing", "time")]
    before = long.copy(), parts.copy()
    out = longitudinal_findings(long, parts, tests, baseline="baseline", followup="ses-followup")
    pd.testing.assert_frame_equal(long, before[0])                      # input never modified
    pd.testing.assert_frame_equal(parts, before[1])
    table = out.table
    assert list(table.columns) == list(FINDINGS_COLUMNS)
    assert len(table) == 9
    assert table[["feature", "contrast"]].apply(tuple, axis=1).tolist() == tests[:9]
    np.testing.assert_allclose(table.p_corrected,
                               multipletests(table.p, method="holm")[1], rtol=1e-12)
    n = table.set_index(["feature", "contrast"])["n"]
    assert n["structure.gm_acc", "time"] == 49                          # chronic[0]: no follow-up
    assert n["structure.gm_acc", "group:time"] == 88                    # and control[0]: n/a
    assert n["structure.gm_s1", "group:time"] == 89
    assert n["structure.gm_acc", "change~pain_relief"] == 48            # and chronic[1]: relief
    assert n["structure.gm_acc", "persisting-recovering"] == 29         # subacute[0]: age n/a
    assert n["structure.gm_acc", "patient-control"] == 119
    # the values are those of the one-feature function on the same participants
    change = follow - base
    change[ids.index(chronic[0])] = np.nan
    change[ids.index(control[0])] = np.nan
    effect = longitudinal_effect(change, parts, "group:time")
    row = table[(table.feature == "structure.gm_acc") & (table.contrast == "group:time")].iloc[0]
    assert (row.estimate, row.ci_low, row.ci_high, row.p) == pytest.approx(
        (effect.estimate, effect.ci_low, effect.ci_high, effect.p), rel=1e-12)
    # a cross-sectional contrast is the baseline session's cross-sectional findings row
    baseline_rows = long[long.session == "ses-baseline"].set_index("participant_id")
    cross = contrasts.findings_table(baseline_rows[["structure.gm_acc"]], parts,
                                     [("structure.gm_acc", "patient-control")])
    pd.testing.assert_series_equal(
        table.iloc[8][["estimate", "ci_low", "ci_high", "p", "n"]].astype(float),
        cross.iloc[0][["estimate", "ci_low", "ci_high", "p", "n"]].astype(float),
        check_names=False)
    # who was left out, and why
    excluded = set(out.excluded.itertuples(index=False, name=None))
    assert ("sub-999", "*", "*", "not in the participants table") in excluded
    for contrast in ("time", "group:time", "change~pain_relief"):
        assert (chronic[0], "*", contrast, "no followup session") in excluded
    assert (control[0], "structure.gm_acc", "group:time",
            "structure.gm_acc n/a at followup") in excluded
    assert (chronic[1], "*", "change~pain_relief", "pain_relief n/a") in excluded
    for contrast in ("persisting-recovering", "patient-control"):
        assert (subacute[0], "*", contrast, "age n/a") in excluded
    assert not [r for r in excluded if r[0] == control[0] and r[1] == "structure.gm_s1"]
    assert len(excluded) == 1 + 3 + 1 + 1 + 2
    assert out.skipped.values.tolist() == [["structure.gm_missing", "time",
                                            "feature not in the feature table"]]
    # the planted effects are found
    found = table.set_index(["feature", "contrast"]).loc["structure.gm_acc"]
    assert found.loc["time", "estimate"] > 0.3 and found.loc["time", "p_corrected"] < 0.05
    assert found.loc["persisting-recovering", "estimate"] > 0.2


def test_module_covariates_enter_the_baseline_contrasts_only():
    """``extra_covariates`` (head motion, total GM) adjust the contrasts on the baseline session,
    as the simulator's estimands do; a change score has no single value of them."""
    rng = np.random.default_rng(28)
    parts, base, follow = _cohort_with_effects(rng, dz=0.3, baseline_d=0.8)
    mean_fd = pd.DataFrame({"mean_fd": rng.uniform(0.05, 0.4, len(parts))}, index=parts.index)
    base = base + 3.0 * mean_fd["mean_fd"].to_numpy()
    long = _long(parts, base[:, None], follow[:, None] + 3.0 * mean_fd.to_numpy(), ["x"])
    tests = [("x", c) for c in LONGITUDINAL]
    plain = longitudinal_findings(long, parts, tests, baseline="baseline", followup="followup")
    moved = longitudinal_findings(long, parts, tests, baseline="baseline", followup="followup",
                                  extra_covariates={"*": ["mean_fd"]}, extra=mean_fd)
    unadjusted = ["estimate", "ci_low", "ci_high", "p", "n"]          # Holm's p depends on all rows
    for contrast in ("time", "group:time", "change~pain_relief"):
        pd.testing.assert_series_equal(plain.table.set_index("contrast").loc[contrast, unadjusted],
                                       moved.table.set_index("contrast").loc[contrast, unadjusted])
    row = moved.table.set_index("contrast").loc["persisting-recovering"]
    subacute = (parts["stage"] == "subacute").to_numpy()
    g = (parts["outcome"] == "persisting").to_numpy(float)[subacute]
    X = sm.add_constant(np.column_stack([g, _coded(parts).to_numpy()[subacute],
                                         mean_fd.to_numpy()[subacute]]))
    fit = sm.OLS(base[subacute], X).fit()
    assert row.estimate == pytest.approx(fit.params[1] / np.sqrt(fit.scale), rel=1e-10)
    assert row.p == pytest.approx(fit.pvalues[1], rel=1e-9)
    assert row.estimate != pytest.approx(
        plain.table.set_index("contrast").loc["persisting-recovering", "estimate"], rel=1e-3)


def test_findings_table_skips_what_cannot_be_tested():
    rng = np.random.default_rng(27)
    parts, base, follow = _cohort_with_effects(rng)
    long = _long(parts, base[:, None], follow[:, None], ["x"])
    no_relief = parts.drop(columns=["pain_relief", "stage"])
    out = longitudinal_findings(long, no_relief.reset_index(), [("x", "change~pain_relief"),
                                                                ("x", "patient-control")],
                                baseline="baseline", followup="followup")
    assert out.table.contrast.tolist() == ["patient-control"]
    assert out.skipped.reason.tolist() == ["participants table has no 'stage' column"]
    # a contrast of one's own: change in controls, who should not change
    controls_time = LongitudinalContrast("time[controls]", "paired", "", "controls")
    own = longitudinal_findings(long, parts, [("x", controls_time)], baseline="baseline",
                                followup="followup")
    assert own.table[["contrast", "n"]].values.tolist() == [["time[controls]", 40]]
    with pytest.raises(InputError, match="unknown participant subset"):
        LongitudinalContrast("time[x]", "paired", "", "responders")
    with pytest.raises(InputError, match="unknown longitudinal contrast"):
        longitudinal_findings(long, parts, [("x", "tiem")], baseline="baseline",
                              followup="followup")
    with pytest.raises(InputError, match="several rows"):
        longitudinal_findings(pd.concat([long, long.iloc[:1]]), parts, [("x", "time")],
                              baseline="baseline", followup="followup")
    with pytest.raises(InputError, match="same session"):
        change_scores(long, "baseline", "ses-baseline")


# --------------------------------------------------------------------------------------------
# error rates and recovery over known populations
# --------------------------------------------------------------------------------------------

@pytest.mark.statistical
def test_paired_test_is_calibrated_under_the_null():
    m = 4000
    rng = np.random.default_rng(_seed(41))
    p = np.array([paired_effect(rng.normal(size=20) * 3 + 0.0).p for _ in range(m)])
    low, high = _bounds(m, 0.05)
    assert low <= np.mean(p < 0.05) <= high, np.mean(p < 0.05)
    # the whole distribution is uniform, not just its 5% quantile
    assert stats.kstest(p, "uniform").pvalue > 0.001


@pytest.mark.statistical
def test_dz_interval_recovers_a_planted_change():
    """Changes with mean 0.4 and SD 1 (d_z = 0.4) in 30 people: the interval misses on each side
    in 2.5% of draws and the estimates centre on 0.4."""
    m, n, dz = 4000, 30, 0.4
    rng = np.random.default_rng(_seed(42))
    baseline = rng.normal(size=(m, n)) * 2
    followup = baseline + dz + rng.normal(size=(m, n))
    effects = [paired_effect(after - before) for before, after in zip(baseline, followup)]
    low = np.array([e.ci_low for e in effects])
    high = np.array([e.ci_high for e in effects])
    tail_low, tail_high = _bounds(m, 0.025)
    assert tail_low <= np.mean(low > dz) <= tail_high
    assert tail_low <= np.mean(high < dz) <= tail_high
    estimates = np.array([e.estimate for e in effects])
    # d_z is biased upwards by the factor J ~ 1 + 3 / (4 df - 1); its median is close to dz
    assert abs(np.median(estimates) - dz) < 0.03
    power = np.mean([e.p < 0.05 for e in effects])
    expected = stats.nct.sf(stats.t.isf(0.025, n - 1), n - 1, dz * np.sqrt(n))
    assert abs(power - expected) < 3.3 * np.sqrt(expected * (1 - expected) / m) + 0.01


def _null_draw(rng, n_features):
    parts = _participants(rng)
    n = len(parts)
    base = rng.normal(size=(n, n_features))
    follow = base + rng.normal(size=(n, n_features))
    names = [f"f{j}" for j in range(n_features)]
    return parts, _long(parts, base, follow, names), names


@pytest.mark.statistical
def test_findings_table_controls_the_family_wise_error_under_the_null():
    """6 features x 4 longitudinal contrasts under the null: each test rejects in 5% of
    (independent) features and draws, and Holm keeps the table's family-wise error <= 5%."""
    m, n_features = 200, 6
    rng = np.random.default_rng(_seed(43))
    any_significant, rejections = [], {c: [] for c in LONGITUDINAL}
    start = _time.perf_counter()
    for _ in range(m):
        parts, long, names = _null_draw(rng, n_features)
        out = longitudinal_findings(long, parts, [(f, c) for f in names for c in LONGITUDINAL],
                                    baseline="baseline", followup="followup")
        assert len(out.table) == n_features * len(LONGITUDINAL)
        any_significant.append(bool((out.table.p_corrected < 0.05).any()))
        for contrast, group in out.table.groupby("contrast"):
            rejections[contrast].extend(group.p < 0.05)
    elapsed = _time.perf_counter() - start
    _, high = _bounds(m, 0.05, tail=0.001)
    fwer = np.mean(any_significant)
    assert fwer <= high, (fwer, high)
    low_each, high_each = _bounds(m * n_features, 0.05)
    rates = {c: np.mean(r) for c, r in rejections.items()}
    assert all(low_each <= r <= high_each for r in rates.values()), (rates, low_each, high_each)
    print(f"FWER {fwer:.3f} (bound {high:.3f}); per-test rates {rates} "
          f"(bounds {low_each:.3f}-{high_each:.3f}); {elapsed / m * 1e3:.0f} ms per table")


@pytest.mark.statistical
def test_findings_intervals_cover_planted_effects():
    """A cohort of 120 with every longitudinal effect planted; the population values are known
    from the generating model: d_z = 0.5 (chronic change mean 0.5, SD 1), group:time d = 0.5
    (controls do not change), change~pain_relief r = 0.6 / sqrt(1 + 0.36) ~ 0.51 at the
    population level, persisting-recovering d = 0.8. Each interval covers its value in >= 95% of
    draws (binomial bound)."""
    m = 200
    rng = np.random.default_rng(_seed(44))
    slope = 0.6
    truth = {"time": 0.5, "group:time": 0.5, "persisting-recovering": 0.8,
             "change~pain_relief": slope / np.sqrt(1 + slope**2)}
    covered = {c: [] for c in truth}
    for _ in range(m):
        parts = _participants(rng)
        n = len(parts)
        chronic = (parts["stage"] == "chronic").to_numpy()
        # relief standardized within the chronic patients' population: uniform(-10, 90)
        relief = (np.nan_to_num(parts["pain_relief"].to_numpy(float)) - 40) / np.sqrt(100**2 / 12)
        base = rng.normal(size=n) + 0.8 * (parts["outcome"] == "persisting").to_numpy()
        # change in chronic patients: 0.5 + slope * relief + e, with var(slope * relief + e)
        # = 1 + slope**2; scaled so the change SD (d_z's and group:time's denominator) is 1
        noise = rng.normal(size=n)
        change = np.where(chronic, 0.5 + (slope * relief + noise) / np.sqrt(1 + slope**2), noise)
        long = _long(parts, base[:, None], (base + change)[:, None], ["x"])
        out = longitudinal_findings(long, parts, [("x", c) for c in truth], baseline="baseline",
                                    followup="followup").table.set_index("contrast")
        for contrast, value in truth.items():
            row = out.loc[contrast]
            covered[contrast].append(row.ci_low < value < row.ci_high)
    low, _ = _bounds(m, 0.95, tail=0.001)
    rates = {c: np.mean(v) for c, v in covered.items()}
    assert all(rate >= low for rate in rates.values()), (rates, low)
    print(f"coverage over {m} draws: {rates} (lower bound {low:.3f})")


# --------------------------------------------------------------------------------------------
# voxel-wise
# --------------------------------------------------------------------------------------------

def _maps(rng, n, shape=(8, 8, 6)):
    mask = np.ones(shape, bool)
    mask[0] = False
    noise = rng.normal(size=(n, int(mask.sum())))
    blob = np.zeros(shape, bool)
    blob[3:6, 3:6, 2:5] = True
    return mask, noise, blob[mask]


def test_change_map_test_finds_a_planted_change_with_tfce():
    rng = np.random.default_rng(51)
    mask, change, blob = _maps(rng, 20)
    change[:, blob] += 1.2
    age = rng.uniform(20, 70, 20)
    result = change_map_test(change, mask, covariates=np.column_stack([age, np.ones(20)]),
                             n_permutations=50, tfce=False, random_state=0)
    # the t map is the one-sample t of the change adjusted for (centred) age
    fit = sm.OLS(change[:, 0], np.column_stack([np.ones(20), age - age.mean()])).fit()
    assert result.t[0] == pytest.approx(fit.tvalues[0], rel=1e-9)
    plain = change_map_test(change, mask, n_permutations=100, random_state=0)
    np.testing.assert_allclose(plain.t, stats.ttest_1samp(change, 0.0).statistic, rtol=1e-9)
    assert plain.scheme == "sign-flip"
    assert np.mean(plain.p_fwe_tfce[blob] < 0.05) > 0.9
    assert np.mean(plain.p_fwe_tfce[~blob] < 0.05) < 0.2          # TFCE spreads a little


def test_group_time_map_test_finds_a_planted_difference_in_change():
    rng = np.random.default_rng(52)
    n = 40
    mask, change, blob = _maps(rng, n)
    group = np.repeat([1.0, 0.0], n // 2)
    site = rng.integers(0, 2, n).astype(float)
    change += 0.8 * site[:, None]                                      # a site shift, adjusted
    change[:, blob] += 1.6 * group[:, None]
    covariates = np.column_stack([site, rng.uniform(20, 70, n)])
    result = group_time_map_test(change, group, mask, covariates=covariates, blocks=site,
                                 n_permutations=100, random_state=0)
    fit = sm.OLS(change[:, 5], sm.add_constant(np.column_stack([group, covariates]))).fit()
    assert result.t[5] == pytest.approx(fit.tvalues[1], rel=1e-9)
    assert result.scheme == "permutation"
    assert np.mean(result.p_fwe_tfce[blob] < 0.05) > 0.9
    assert np.mean(result.p_fwe_tfce[~blob] < 0.05) < 0.2
    with pytest.raises(InputError, match="1 or 0"):
        group_time_map_test(change, group * 2, mask)


def test_longitudinal_contrasts_match_the_simulators_names():
    assert set(LONGITUDINAL) == set(LONGITUDINAL_CONTRASTS)
    assert LONGITUDINAL_CONTRASTS["time"].covariates == ()
    assert not LONGITUDINAL_CONTRASTS["persisting-recovering"].uses_change
