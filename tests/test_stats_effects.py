"""painplast.stats.effects against independent implementations and against known populations.

The findings tables of every module and the simulator's sizes rest on these few functions, so
each quantity is checked against a peer that shares no code with them: statsmodels' OLS (t,
p, degrees of freedom, the coefficient and residual scale behind Cohen's d, the residuals behind
the partial correlation), scipy (the exact noncentral-t interval of d, Pearson's r with its
Fisher interval) and statsmodels' ``multipletests`` (Holm, Benjamini-Hochberg). Then, because
agreeing with a peer on one sample does not show that an interval covers what it should, the
intervals are drawn many times from populations whose d and partial r are known.
"""
from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import optimize, stats
from statsmodels.stats.multitest import multipletests

from conftest import record_figures, seed_offset
from painplast.stats.effects import continuous_effect, fdr_bh, group_effect, holm

# statsmodels warns about the deliberately rank-deficient designs (a constant and a duplicated
# covariate); its pseudo-inverse fit is what effects' dropping of those columns must equal
pytestmark = pytest.mark.filterwarnings("ignore::statsmodels.tools.sm_exceptions.SingularMatrixWarning")


def _covariates(rng, n, kind):
    """Nuisance columns: none, age and sex, or those with site dummies, a constant column and a
    duplicated column (effects drops the last two; statsmodels' pinv copes with them)."""
    if kind == "none":
        return None
    age = rng.uniform(20, 70, n)
    sex = rng.integers(0, 2, n).astype(float)
    if kind == "age_sex":
        return np.column_stack([age, sex])
    site = rng.integers(0, 3, n)
    dummies = np.column_stack([(site == 1), (site == 2)]).astype(float)
    return np.column_stack([age, sex, dummies, np.ones(n), age])


def _ols(y, x, cov):
    X = np.column_stack([np.ones(len(y)), x] + ([] if cov is None else [cov]))
    return sm.OLS(y, X).fit()


def _nct_interval(t, df, scale, level=0.95):
    """Exact interval of a standardized effect ``delta * scale`` from a noncentral t statistic
    (Steiger & Fouladi 1997): the noncentrality values whose t distribution puts ``t`` at the
    upper and lower ``(1 - level) / 2`` tails."""
    tail = (1 - level) / 2

    def bound(target):
        return optimize.brentq(lambda nc: stats.nct.sf(t, df, nc) - target, t - 20, t + 20)

    return bound(tail) * scale, bound(1 - tail) * scale


@pytest.mark.parametrize("kind", ["none", "age_sex", "sites_constant_duplicate"])
@pytest.mark.parametrize("n1,n0,true_d", [(30, 30, 0.8), (18, 41, -0.5), (25, 25, 0.0)])
def test_group_effect_agrees_with_statsmodels_ols(kind, n1, n0, true_d):
    rng = np.random.default_rng([n1, n0, len(kind)])
    g = rng.permutation(np.repeat([1.0, 0.0], [n1, n0]))
    n = n1 + n0
    cov = _covariates(rng, n, kind)
    y = 2.0 + true_d * g + rng.normal(size=n) * 1.7
    if cov is not None:
        y += 0.03 * cov[:, 0] - 0.4 * cov[:, 1]
    fit = _ols(y, g, cov)
    effect = group_effect(y, g, cov)
    # t, p and degrees of freedom of the group coefficient
    assert effect.t == pytest.approx(fit.tvalues[1], rel=1e-9)
    assert effect.p == pytest.approx(fit.pvalues[1], rel=1e-9)
    assert effect.df == fit.df_resid
    assert effect.n == n
    # Cohen's d: the group coefficient in units of the residual standard deviation
    assert effect.estimate == pytest.approx(fit.params[1] / np.sqrt(fit.scale), rel=1e-9)
    # the interval against the exact noncentral-t interval of d (same t, same df; the scale
    # from the coefficient's standard error, i.e. sqrt((X'X)^-1) of the group column)
    scale = fit.bse[1] / np.sqrt(fit.scale)
    low, high = _nct_interval(fit.tvalues[1], fit.df_resid, scale)
    # (Hedges & Olkin's normal approximation: within 0.02 of it for these n, the width ~1.1)
    assert effect.ci_low == pytest.approx(low, abs=0.025)
    assert effect.ci_high == pytest.approx(high, abs=0.025)


@pytest.mark.parametrize("kind", ["none", "age_sex", "sites_constant_duplicate"])
@pytest.mark.parametrize("n,slope", [(60, 0.5), (25, -0.9), (200, 0.0)])
def test_continuous_effect_agrees_with_statsmodels_and_the_residual_correlation(kind, n, slope):
    rng = np.random.default_rng([n, len(kind), 3])
    cov = _covariates(rng, n, kind)
    x = rng.normal(size=n) + (0.02 * cov[:, 0] if cov is not None else 0)
    y = slope * x + rng.normal(size=n)
    if cov is not None:
        y += 0.05 * cov[:, 0] + 0.5 * cov[:, 1]
    fit = _ols(y, x, cov)
    effect = continuous_effect(y, x, cov)
    assert effect.t == pytest.approx(fit.tvalues[1], rel=1e-9)
    assert effect.p == pytest.approx(fit.pvalues[1], rel=1e-9)
    assert effect.df == fit.df_resid
    # partial r: Pearson's r of y and x once both are residualized on the covariates
    if cov is None:
        reference = stats.pearsonr(y, x)
        k = 0
    else:
        Z = sm.add_constant(cov)
        ry = sm.OLS(y, Z).fit().resid
        rx = sm.OLS(x, Z).fit().resid
        reference = stats.pearsonr(ry, rx)
        k = np.linalg.matrix_rank(Z) - 1  # covariates that carry information
    assert effect.estimate == pytest.approx(reference.statistic, rel=1e-9, abs=1e-12)
    # Fisher interval; with no covariate it is scipy's, with k covariates n - k - 3 degrees
    if cov is None:
        ci = reference.confidence_interval(0.95)
        assert (effect.ci_low, effect.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-6)
    else:
        z, half = np.arctanh(reference.statistic), stats.norm.ppf(0.975) / np.sqrt(n - k - 3)
        assert (effect.ci_low, effect.ci_high) == pytest.approx(
            (np.tanh(z - half), np.tanh(z + half)), rel=1e-6)


def test_missing_values_leave_out_the_participant_as_statsmodels_missing_drop():
    rng = np.random.default_rng(5)
    g = np.repeat([1.0, 0.0], 20)
    cov = rng.normal(size=(40, 2))
    y = 0.6 * g + rng.normal(size=40)
    y[[1, 30]] = np.nan
    cov[5, 1] = np.nan
    X = sm.add_constant(np.column_stack([g, cov]))
    fit = sm.OLS(y, X, missing="drop").fit()
    effect = group_effect(y, g, cov)
    assert effect.n == 37 and effect.t == pytest.approx(fit.tvalues[1], rel=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_holm_and_benjamini_hochberg_match_multipletests(seed):
    rng = np.random.default_rng(seed)
    m = [1, 2, 7, 30, 200, 33][seed]
    p = rng.uniform(0, 1, m) ** 3                   # many small p-values
    p[rng.random(m) < 0.2] = p[0]                   # ties
    if m > 5:
        p[3] = np.nan                               # a row that could not be tested
    ok = np.isfinite(p)
    for ours, method in ((holm, "holm"), (fdr_bh, "fdr_bh")):
        adjusted = ours(p)
        np.testing.assert_allclose(adjusted[ok], multipletests(p[ok], method=method)[1],
                                   rtol=1e-12, atol=0)
        assert np.isnan(adjusted[~ok]).all()


def _population_draws(m, seed):
    """m samples from populations of known d and partial r (site, age and sex as nuisance)."""
    rng = np.random.default_rng(seed)
    true_d, true_r = 0.7, 0.4
    slope = true_r / np.sqrt(1 - true_r ** 2)    # r = b / sqrt(b^2 + 1) with sd(x|cov) = sd(e) = 1
    d_hits, r_hits, d_hat, r_hat = [], [], [], []
    for _ in range(m):
        n1, n0 = 22, 26
        g = rng.permutation(np.repeat([1.0, 0.0], [n1, n0]))
        cov = _covariates(rng, n1 + n0, "age_sex")
        y = true_d * g + 0.02 * cov[:, 0] + 0.3 * cov[:, 1] + rng.normal(size=n1 + n0)
        e = group_effect(y, g, cov)
        d_hits.append(e.ci_low <= true_d <= e.ci_high)
        d_hat.append(e.estimate)
        x = rng.normal(size=n1 + n0)
        y = slope * x + 0.02 * cov[:, 0] - 0.3 * cov[:, 1] + rng.normal(size=n1 + n0)
        e = continuous_effect(y, x, cov)
        r_hits.append(e.ci_low <= true_r <= e.ci_high)
        r_hat.append(e.estimate)
    return (np.array(d_hits), np.array(r_hits), np.array(d_hat), np.array(r_hat), true_d, true_r)


@pytest.mark.statistical
def test_intervals_cover_the_population_effect_in_k_of_m_draws():
    """95% intervals of d and partial r cover the population value in at least k of m draws.

    k is the 0.0005 quantile of Binomial(m, 0.95): a method with 95% coverage passes each
    check with probability >= 0.9995, both with >= 0.999. An estimator on a wrong scale (d over
    the total instead of the residual SD, say) moves the estimates off the population value,
    which the second pair of checks catches: the mean estimate lies within 4.5 Monte Carlo
    standard errors of the truth plus the small-sample bias of d (1 + 3 / (4 df) - 1, Hedges
    1981) and of r (-r (1 - r^2) / (2 n), Olkin & Pratt 1958).
    """
    m = 1000
    d_hits, r_hits, d_hat, r_hat, true_d, true_r = _population_draws(m, 190_000 + seed_offset())
    k = int(stats.binom.ppf(0.0005, m, 0.95))
    record_figures("effect_intervals", draws=m, d_covered=int(d_hits.sum()),
                   r_covered=int(r_hits.sum()), mean_d=float(d_hat.mean()), mean_r=float(r_hat.mean()))
    assert d_hits.sum() >= k, (d_hits.sum(), k)
    assert r_hits.sum() >= k, (r_hits.sum(), k)
    df = 48 - 4
    d_bias = true_d * 3 / (4 * df)
    r_bias = -true_r * (1 - true_r ** 2) / (2 * 48)
    assert abs(d_hat.mean() - true_d - d_bias) < 4.5 * d_hat.std() / np.sqrt(m), d_hat.mean()
    assert abs(r_hat.mean() - true_r - r_bias) < 4.5 * r_hat.std() / np.sqrt(m), r_hat.mean()
