"""Tests of painplast.stats.glm against slow per-voxel references and nilearn."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from painplast.errors import InputError
from painplast.stats import glm


def _random_problem(seed=0, n=15, p=3, v=7):
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.standard_normal((n, p - 1))])
    Y = X @ rng.standard_normal((p, v)) + rng.standard_normal((n, v))
    return X, Y


def _reference_fit(X, Y):
    """One voxel at a time with lstsq: betas, residual variance, (X'X)^-1."""
    n, p = X.shape
    betas, variances = [], []
    for j in range(Y.shape[1]):
        beta, *_ = np.linalg.lstsq(X, Y[:, j], rcond=None)
        residuals = Y[:, j] - X @ beta
        betas.append(beta)
        variances.append(residuals @ residuals / (n - p))
    return np.array(betas).T, np.array(variances), np.linalg.inv(X.T @ X)


def test_fit_ols_matches_voxelwise_lstsq():
    X, Y = _random_problem()
    fit = glm.fit_ols(X, Y)
    beta, variance, xtx_inv = _reference_fit(X, Y)
    np.testing.assert_allclose(fit.beta, beta, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fit.residual_variance, variance, rtol=1e-10)
    np.testing.assert_allclose(fit.xtx_inv, xtx_inv, rtol=1e-10)
    assert fit.df == X.shape[0] - X.shape[1]
    assert fit.beta.dtype == np.float64 and fit.beta.shape == (3, 7)


def test_fit_ols_blocks_many_voxels_like_one_block(monkeypatch):
    X, Y = _random_problem(v=50)
    whole = glm.fit_ols(X, Y)
    monkeypatch.setattr(glm, "_VOXEL_BLOCK", 8)
    blocked = glm.fit_ols(X, Y)
    np.testing.assert_allclose(blocked.residual_variance, whole.residual_variance, rtol=1e-12)


def test_t_contrast_matches_voxelwise_formula_and_scipy():
    X, Y = _random_problem(seed=1)
    c = np.array([0.0, 1.0, -1.0])
    res = glm.t_contrast(glm.fit_ols(X, Y), X, c)
    beta, variance, xtx_inv = _reference_fit(X, Y)
    for j in range(Y.shape[1]):
        se = np.sqrt(variance[j] * c @ xtx_inv @ c)
        assert res.t[j] == pytest.approx(c @ beta[:, j] / se, rel=1e-10)
        assert res.standard_error[j] == pytest.approx(se, rel=1e-10)
    # a simple regression: scipy's linregress gives the same slope t
    x = X[:, 1]
    Xs = np.column_stack([np.ones_like(x), x])
    t = glm.t_contrast(glm.fit_ols(Xs, Y[:, 0]), Xs, [0, 1]).t[0]
    lr = stats.linregress(x, Y[:, 0])
    assert t == pytest.approx(lr.slope / lr.stderr, rel=1e-10)


def test_two_sample_t_equals_scipy_ttest():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(12, 4)) + 0.7, rng.normal(size=(9, 4))
    X = np.column_stack([np.ones(21), np.r_[np.ones(12), np.zeros(9)]])
    res = glm.t_contrast(glm.fit_ols(X, np.vstack([a, b])), X, [0, 1])
    ref = stats.ttest_ind(a, b)
    np.testing.assert_allclose(res.t, ref.statistic, rtol=1e-10)
    np.testing.assert_allclose(glm.t_to_p(res.t, res.df), ref.pvalue, rtol=1e-8)


def test_f_contrast_matches_nested_model_comparison():
    X, Y = _random_problem(seed=2, n=20, p=4, v=5)
    C = np.array([[0, 1, 0, 0], [0, 0, 1, 0]], float)
    res = glm.f_contrast(glm.fit_ols(X, Y), X, C)
    reduced = X[:, [0, 3]]
    for j in range(Y.shape[1]):
        rss_full = np.sum((Y[:, j] - X @ np.linalg.lstsq(X, Y[:, j], rcond=None)[0]) ** 2)
        beta_reduced = np.linalg.lstsq(reduced, Y[:, j], rcond=None)[0]
        rss_red = np.sum((Y[:, j] - reduced @ beta_reduced) ** 2)
        F = ((rss_red - rss_full) / 2) / (rss_full / (20 - 4))
        assert res.F[j] == pytest.approx(F, rel=1e-9)
    assert (res.df_num, res.df_den) == (2, 16)
    np.testing.assert_allclose(glm.f_to_p(res.F, 2, 16), stats.f.sf(res.F, 2, 16), rtol=1e-10)


def test_f_of_one_row_is_t_squared():
    X, Y = _random_problem(seed=4)
    fit = glm.fit_ols(X, Y)
    t = glm.t_contrast(fit, X, [0, 1, 0]).t
    F = glm.f_contrast(fit, X, [0, 1, 0]).F
    np.testing.assert_allclose(F, t**2, rtol=1e-10)


def test_t_to_p_tails():
    t = np.array([-2.5, 0.0, 1.0, 3.0])
    np.testing.assert_allclose(glm.t_to_p(t, 12), 2 * stats.t.sf(np.abs(t), 12), rtol=1e-12)
    np.testing.assert_allclose(glm.t_to_p(t, 12, "greater"), stats.t.sf(t, 12), rtol=1e-12)
    np.testing.assert_allclose(glm.t_to_p(t, 12, "less"), stats.t.cdf(t, 12), rtol=1e-12)
    with pytest.raises(InputError):
        glm.t_to_p(t, 12, "bigger")


def test_constant_voxel_gets_zero_t_not_nan():
    X, Y = _random_problem()
    Y[:, 0] = 0.0
    res = glm.t_contrast(glm.fit_ols(X, Y), X, [0, 1, 0])
    assert res.t[0] == 0.0 and np.all(np.isfinite(res.t))


def test_rank_deficient_design_names_the_collinear_columns():
    rng = np.random.default_rng(0)
    n = 10
    patient = np.r_[np.ones(5), np.zeros(5)]
    X = np.column_stack([np.ones(n), rng.normal(size=n), patient, 1 - patient])
    names = ["intercept", "age", "patient", "control"]
    with pytest.raises(InputError) as info:
        glm.fit_ols(X, rng.normal(size=(n, 3)), names=names)
    message = str(info.value)
    assert "'intercept'" in message and "'patient'" in message and "'control'" in message
    assert "'age'" not in message  # age is not part of the dependency
    assert "rank 3 < 4" in message


def test_rank_deficient_without_names_uses_column_numbers():
    X = np.column_stack([np.ones(6), np.arange(6.0), 2 * np.arange(6.0), np.zeros(6)])
    with pytest.raises(InputError) as info:
        glm.check_design(X)
    message = str(info.value)
    assert "column 1" in message and "column 2" in message and "column 3" in message
    assert "column 0" not in message


def test_design_checks():
    with pytest.raises(InputError, match="no residual degrees of freedom"):
        glm.check_design(np.ones((2, 2)))
    with pytest.raises(InputError, match="missing or infinite"):
        glm.check_design(np.array([[1.0, np.nan], [1.0, 2.0], [1.0, 3.0]]), names=["a", "b"])
    with pytest.raises(InputError, match="2 column names"):
        glm.check_design(np.ones((5, 1)), names=["a", "b"])
    X, Y = _random_problem()
    with pytest.raises(InputError, match="contrast"):
        glm.t_contrast(glm.fit_ols(X, Y), X, [1, 0])
    with pytest.raises(InputError, match="linearly dependent"):
        glm.f_contrast(glm.fit_ols(X, Y), X, [[0, 1, 0], [0, 2, 0]])


def test_t_map_matches_nilearn_permuted_ols():
    from nilearn.mass_univariate import permuted_ols

    rng = np.random.default_rng(5)
    n, v = 24, 300
    group = np.r_[np.ones(12), np.zeros(12)]
    age = rng.normal(40, 10, n)
    Y = rng.standard_normal((n, v)) + 0.5 * group[:, None] + 0.02 * age[:, None]
    X = np.column_stack([np.ones(n), group, age])
    ours = glm.t_contrast(glm.fit_ols(X, Y), X, [0, 1, 0]).t
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = permuted_ols(group[:, None], Y, confounding_vars=age[:, None],
                              model_intercept=True, n_perm=0)["t"][0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
