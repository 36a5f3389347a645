"""Standardized effects with intervals: Cohen's d for group contrasts, partial r for continuous.

These definitions are shared by every module's findings table and by the simulator's ground
truth, so that "the size of a planted effect" and "the estimate of that effect" are the same
quantity:

* group contrast: ``y ~ 1 + group + covariates``; ``d = beta_group / sigma_residual``, with
  ``sigma_residual`` the residual standard deviation of that model. Equivalent to
  ``t * sqrt(1/n1 + 1/n2)`` in a balanced design.
* continuous contrast: ``y ~ 1 + x + covariates``; the partial correlation
  ``r = t / sqrt(t**2 + df)``.

Arrays in, numbers out; float64 throughout.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as _st


@dataclass(frozen=True)
class Effect:
    """A standardized effect.

    Attributes
    ----------
    estimate : float
        Cohen's d (group) or partial Pearson r (continuous).
    ci_low, ci_high : float
        95% (or ``1 - alpha``) confidence interval.
    t, df, p : float
        t statistic, residual degrees of freedom and two-sided p-value.
    n : int
        Participants used.
    kind : str
        ``"group"`` or ``"continuous"``.
    """

    estimate: float
    ci_low: float
    ci_high: float
    t: float
    df: int
    p: float
    n: int
    kind: str


def design_matrix(x: np.ndarray, covariates: np.ndarray | None = None) -> np.ndarray:
    """Design ``[1, x, covariates]`` of a test of ``x``, without covariates that add no rank.

    Constant covariate columns (a single site) and columns that are linear combinations of
    earlier ones are dropped (a pivoted QR after removing the intercept and ``x``), so the
    intercept and ``x`` are always the first two columns.

    Parameters
    ----------
    x : ndarray, shape (n,)
    covariates : ndarray, shape (n, k), optional

    Returns
    -------
    ndarray, shape (n, 2 + k_kept)

    Examples
    --------
    >>> x = np.array([0.0, 1, 0, 1, 0, 1])
    >>> age = np.array([30.0, 40, 50, 35, 45, 55])
    >>> design_matrix(x, np.column_stack([age, 2 * age, np.ones(6)])).shape   # 2*age, constant dropped
    (6, 3)
    """
    n = x.shape[0]
    cols = [np.ones(n), x]
    if covariates is not None and np.size(covariates):
        cov = np.asarray(covariates, float).reshape(n, -1)
        cov = cov[:, np.ptp(cov, axis=0) > 0]  # drop constant columns (e.g. a single site)
        cols.append(cov)
    X = np.column_stack(cols)
    # drop covariate columns that are linear combinations of earlier ones (keep 1 and x)
    if X.shape[1] <= 2:
        return X
    # a pivoted QR finds the covariate columns that add rank, keeping 1 and x first
    from scipy.linalg import qr
    scale = np.linalg.norm(X, axis=0)
    scale[scale == 0] = 1
    _, r, piv = qr(X[:, 2:] / scale[2:] - (X[:, :2] / scale[:2]) @ np.linalg.lstsq(X[:, :2] / scale[:2], X[:, 2:] / scale[2:], rcond=None)[0], mode="economic", pivoting=True)
    diag = np.abs(np.diag(r)) if r.size else np.array([])
    tol = max(X.shape) * np.finfo(float).eps * (diag[0] if diag.size else 0) * 1e3
    good = sorted(piv[: int(np.sum(diag > tol))] + 2)
    return X[:, [0, 1, *good]]


def ols_t(y: np.ndarray, x: np.ndarray, covariates: np.ndarray | None = None):
    """t statistic of ``x`` in ``y ~ 1 + x + covariates``.

    Parameters
    ----------
    y : ndarray, shape (n,) or (n, m)
        Outcome(s); several outcomes share the design.
    x : ndarray, shape (n,)
        Regressor of interest.
    covariates : ndarray, shape (n, k), optional
        Nuisance regressors (constant and collinear columns are dropped).

    Returns
    -------
    beta, t, sigma, df : ndarray of shape (m,), ndarray (m,), ndarray (m,), int
    """
    y = np.asarray(y, float)
    squeeze = y.ndim == 1
    Y = y.reshape(len(y), -1)
    X = design_matrix(np.asarray(x, float), covariates)
    n, p = X.shape
    df = n - p
    if df < 1:
        nan = np.full(Y.shape[1], np.nan)
        return (nan, nan, nan, df) if not squeeze else (np.nan, np.nan, np.nan, df)
    pinv = np.linalg.pinv(X)
    B = pinv @ Y
    resid = Y - X @ B
    sigma = np.sqrt(np.sum(resid**2, axis=0) / df)
    xtx_inv = pinv @ pinv.T
    se = sigma * np.sqrt(xtx_inv[1, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        t = B[1] / se
    if squeeze:
        return B[1, 0], t[0], sigma[0], df
    return B[1], t, sigma, df


def _complete_cases(y, x, covariates):
    """Participants with finite outcome, regressor and covariates: (y, x, covariates or None)."""
    y = np.asarray(y, float)
    x = np.asarray(x, float)
    ok = np.isfinite(y) & np.isfinite(x)
    cov = None
    if covariates is not None and np.size(covariates):
        cov = np.asarray(covariates, float).reshape(len(y), -1)
        ok &= np.all(np.isfinite(cov), axis=1)
        cov = cov[ok]
    return y[ok], x[ok], cov


def group_effect(y: np.ndarray, group: np.ndarray, covariates: np.ndarray | None = None,
                 alpha: float = 0.05) -> Effect:
    """Cohen's d of ``group`` (1 vs 0) adjusted for covariates, with a CI and p-value.

    The interval uses the normal approximation of the sampling variance of d
    (Hedges & Olkin 1985): ``var(d) = 1/n1 + 1/n0 + d**2 / (2 (n1 + n0))``, widened to the
    t quantile with the model's residual degrees of freedom.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> g = np.repeat([0, 1], 500)
    >>> e = group_effect(rng.normal(size=1000) + g, g)
    >>> round(e.estimate, 1), e.ci_low < 1 < e.ci_high
    (1.0, True)
    """
    y, g, cov = _complete_cases(y, group, covariates)
    n1, n0 = int(np.sum(g == 1)), int(np.sum(g == 0))
    if n1 < 2 or n0 < 2:
        return Effect(np.nan, np.nan, np.nan, np.nan, 0, np.nan, int(len(y)), "group")
    beta, t, sigma, df = ols_t(y, g, cov)
    d = beta / sigma if sigma > 0 else np.nan
    se = np.sqrt(1.0 / n1 + 1.0 / n0 + d**2 / (2.0 * (n1 + n0)))
    q = _st.t.ppf(1 - alpha / 2, df)
    p = 2 * _st.t.sf(abs(t), df)
    return Effect(float(d), float(d - q * se), float(d + q * se), float(t), int(df), float(p),
                  int(len(y)), "group")


def continuous_effect(y: np.ndarray, x: np.ndarray, covariates: np.ndarray | None = None,
                      alpha: float = 0.05) -> Effect:
    """Partial Pearson r of ``y`` with ``x`` given covariates, with a Fisher-z CI and p-value.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=2000)
    >>> e = continuous_effect(0.5 * x + rng.normal(size=2000) * np.sqrt(0.75), x)
    >>> round(e.estimate, 1)
    0.5
    """
    y, x, cov = _complete_cases(y, x, covariates)
    if len(y) < 5 or np.ptp(x) == 0:
        return Effect(np.nan, np.nan, np.nan, np.nan, 0, np.nan, int(len(y)), "continuous")
    _, t, _, df = ols_t(y, x, cov)
    r = t / np.sqrt(t**2 + df)
    k = len(y) - df - 2  # number of covariates kept in the model
    se_z = 1.0 / np.sqrt(max(len(y) - k - 3, 1))
    z = np.arctanh(np.clip(r, -0.999999, 0.999999))
    q = _st.norm.ppf(1 - alpha / 2)
    p = 2 * _st.t.sf(abs(t), df)
    return Effect(float(r), float(np.tanh(z - q * se_z)), float(np.tanh(z + q * se_z)), float(t),
                  int(df), float(p), int(len(y)), "continuous")


def holm(p: np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (family-wise error), NaN-aware.

    Examples
    --------
    >>> holm(np.array([0.01, 0.04, 0.03])).round(2).tolist()
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(p, float)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    q = p[ok]
    m = len(q)
    if m == 0:
        return out
    order = np.argsort(q)
    adj = np.maximum.accumulate((m - np.arange(m)) * q[order])
    res = np.empty(m)
    res[order] = np.minimum(adj, 1.0)
    out[ok] = res
    return out


def fdr_bh(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (false discovery rate), NaN-aware."""
    p = np.asarray(p, float)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    q = p[ok]
    m = len(q)
    if m == 0:
        return out
    order = np.argsort(q)
    ranked = q[order] * m / np.arange(1, m + 1)
    adj = np.minimum.accumulate(ranked[::-1])[::-1]
    res = np.empty(m)
    res[order] = np.minimum(adj, 1.0)
    out[ok] = res
    return out
