"""Tests of painplast.stats.permutation: brute-force references, nilearn, calibration."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage
from scipy.linalg import null_space

from painplast.errors import InputError
from painplast.stats import glm, permutation
from painplast.stats.permutation import draw_permutations, permutation_test, tfce

STRUCTURE_ORDER = {6: 1, 18: 2, 26: 3}


# ------------------------------------------------------------------ slow, obvious references

def tfce_reference(stat, *, E=0.5, H=2.0, n_steps=100, connectivity=26, two_sided=True):
    """TFCE by labelling the thresholded map at every height (Smith & Nichols 2009, fslmaths
    convention: heights linspace(0, max, n_steps + 1)[1:], no dh factor)."""
    structure = ndimage.generate_binary_structure(3, STRUCTURE_ORDER[connectivity])
    magnitude = np.abs(stat) if two_sided else np.maximum(stat, 0)
    out = np.zeros(stat.shape)
    if magnitude.max() <= 0:
        return out
    heights = np.linspace(0, magnitude.max(), n_steps + 1)[1:]
    for sign in (1, -1) if two_sided else (1,):
        for h in heights:
            labels, _ = ndimage.label(sign * stat >= h, structure)
            sizes = np.bincount(labels.ravel())
            inside = labels > 0
            out[inside] += sign * sizes[labels[inside]] ** E * h**H
    return out


def t_reference(X, Y, c):
    """t of contrast c, one voxel at a time with lstsq."""
    n, p = X.shape
    xtx_inv = np.linalg.inv(X.T @ X)
    t = np.empty(Y.shape[1])
    for j in range(Y.shape[1]):
        beta = np.linalg.lstsq(X, Y[:, j], rcond=None)[0]
        residuals = Y[:, j] - X @ beta
        t[j] = c @ beta / np.sqrt(residuals @ residuals / (n - p) * (c @ xtx_inv @ c))
    return t


def freedman_lane_reference(Y, X, c, rows, signs, two_sided=True, mask=None, **tfce_kw):
    """Explicit Freedman–Lane: permute (or sign-flip) the nuisance residuals of the data, add
    back the nuisance fit, refit the full model, take the maximum statistic."""
    Z = X @ null_space(c[None, :])
    if Z.shape[1]:
        gamma = np.linalg.lstsq(Z, Y, rcond=None)[0]
        fitted, residuals = Z @ gamma, Y - Z @ gamma
    else:
        fitted, residuals = np.zeros_like(Y), Y
    n_perm = (rows if rows is not None else signs).shape[0]
    null_t, null_tfce = [], []
    for j in range(n_perm):
        permuted = residuals if rows is None else residuals[rows[j]]
        if signs is not None:
            permuted = signs[j][:, None] * permuted
        t = t_reference(X, permuted + fitted, c)
        null_t.append(np.max(np.abs(t)) if two_sided else np.max(t))
        if mask is not None:
            volume = np.zeros(mask.shape)
            volume[mask] = t
            enhanced = tfce_reference(volume, two_sided=two_sided, **tfce_kw)
            null_tfce.append(np.max(np.abs(enhanced)))
    return np.array(null_t), np.array(null_tfce)


def smooth_volumes(rng, n, shape, sigma=1.0):
    return np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
                     for _ in range(n)])


def ks_bound(b1, b2, c_alpha=1.63):
    """Two-sample Kolmogorov–Smirnov critical distance at alpha = 0.01 (plus ties slack)."""
    return c_alpha * np.sqrt((b1 + b2) / (b1 * b2)) + 2.0 / min(b1, b2)


# ------------------------------------------------------------------ TFCE

@pytest.mark.parametrize("connectivity", [6, 18, 26])
@pytest.mark.parametrize("two_sided", [True, False])
def test_tfce_equals_bruteforce_labelling(connectivity, two_sided):
    rng = np.random.default_rng(connectivity + two_sided)
    stat = ndimage.gaussian_filter(rng.standard_normal((9, 10, 8)), 1.0) * 4
    stat[0, :, :] = 0  # some background
    ours = tfce(stat, connectivity=connectivity, two_sided=two_sided)
    ref = tfce_reference(stat, connectivity=connectivity, two_sided=two_sided)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
    assert np.any(ours != 0) and (two_sided == bool(np.any(ours < 0)))


def test_tfce_parameters_follow_bruteforce():
    rng = np.random.default_rng(7)
    stat = ndimage.gaussian_filter(rng.standard_normal((8, 8, 8)), 1.2) * 5
    mx = np.abs(stat).max()
    ours = tfce(stat, E=1.0, H=1.5, dh=mx / 37, connectivity=6)
    ref = tfce_reference(stat, E=1.0, H=1.5, n_steps=37, connectivity=6)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
    with pytest.warns(RuntimeWarning, match="steps"):
        tfce(stat, dh=mx, connectivity=6)  # 1 step -> clipped to 10, as nilearn does


def test_tfce_equals_nilearn_calculate_tfce():
    from nilearn.mass_univariate._utils import calculate_tfce

    rng = np.random.default_rng(11)
    mask = np.zeros((20, 22, 18), bool)
    mask[2:-2, 2:-2, 2:-2] = True
    stat = ndimage.gaussian_filter(rng.standard_normal(mask.shape), 1.5) * 8 * mask
    for connectivity in (6, 26):
        structure = ndimage.generate_binary_structure(3, STRUCTURE_ORDER[connectivity])
        for two_sided in (True, False):
            theirs = calculate_tfce(stat[..., None], structure,
                                    two_sided_test=two_sided)[..., 0]
            ours = tfce(stat, connectivity=connectivity, two_sided=two_sided)
            np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-8 * np.abs(theirs).max())


def test_tfce_of_empty_or_negative_map_is_zero():
    assert not np.any(tfce(np.zeros((3, 3, 3))))
    assert not np.any(tfce(-np.ones((3, 3, 3)), two_sided=False))


# ------------------------------------------------------------------ permutation scheme

def _two_group_problem(seed=0, n=14, v=6, covariate=True):
    rng = np.random.default_rng(seed)
    group = np.r_[np.ones(n // 2), np.zeros(n - n // 2)]
    columns = [np.ones(n), group]
    if covariate:
        columns.append(rng.normal(size=n))
    X = np.column_stack(columns)
    Y = rng.standard_normal((n, v)) + 0.8 * group[:, None]
    c = np.zeros(X.shape[1])
    c[1] = 1.0
    return X, Y, c


def test_t_map_equals_glm_and_reference():
    X, Y, c = _two_group_problem()
    res = permutation_test(Y, X, c, n_permutations=5)
    np.testing.assert_allclose(res.t, glm.t_contrast(glm.fit_ols(X, Y), X, c).t, rtol=1e-10)
    np.testing.assert_allclose(res.t, t_reference(X, Y, c), rtol=1e-10)
    assert res.scheme == "permutation" and res.df == X.shape[0] - 3


@pytest.mark.parametrize("two_sided", [True, False])
def test_freedman_lane_null_distribution_equals_bruteforce(two_sided):
    X, Y, c = _two_group_problem(seed=1)
    res = permutation_test(Y, X, c, n_permutations=40, random_state=3, two_sided=two_sided,
                           chunk_size=7)
    rows, signs = draw_permutations(X.shape[0], 40, random_state=3)
    null_t, _ = freedman_lane_reference(Y, X, c, rows, signs, two_sided=two_sided)
    np.testing.assert_allclose(res.null_max, null_t, rtol=1e-9)
    observed = np.abs(res.t) if two_sided else res.t
    p_fwe = (1 + np.sum(null_t[:, None] >= observed[None] - 1e-9, axis=0)) / 41
    np.testing.assert_allclose(res.p_fwe, p_fwe)
    # uncorrected p: the same permutations voxel by voxel
    assert np.all(res.p_uncorrected <= res.p_fwe + 1e-12)


def test_sign_flip_for_intercept_with_covariate_equals_bruteforce():
    rng = np.random.default_rng(2)
    n = 12
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    Y = rng.standard_normal((n, 5)) + 0.5
    c = np.array([1.0, 0.0])
    res = permutation_test(Y, X, c, n_permutations=30, random_state=4)
    assert res.scheme == "sign-flip"
    rows, signs = draw_permutations(n, 30, sign_flip=True, random_state=4)
    null_t, _ = freedman_lane_reference(Y, X, c, rows, signs)
    np.testing.assert_allclose(res.null_max, null_t, rtol=1e-9)


def test_one_sample_design_uses_sign_flips():
    rng = np.random.default_rng(3)
    Y = rng.standard_normal((10, 4)) + 1.0
    res = permutation_test(Y, np.ones((10, 1)), [1.0], n_permutations=20)
    assert res.scheme == "sign-flip"
    from scipy import stats
    np.testing.assert_allclose(res.t, stats.ttest_1samp(Y, 0).statistic, rtol=1e-10)


def test_tfce_null_distribution_equals_bruteforce():
    rng = np.random.default_rng(4)
    mask = np.zeros((6, 6, 5), bool)
    mask[1:5, 1:5, 1:4] = True
    n = 10
    volumes = smooth_volumes(rng, n, mask.shape, 0.8)
    group = np.r_[np.ones(5), np.zeros(5)]
    Y = volumes[:, mask] + 0.8 * group[:, None]
    X = np.column_stack([np.ones(n), group])
    c = np.array([0.0, 1.0])
    res = permutation_test(Y, X, c, n_permutations=8, tfce=True, mask=mask, connectivity=6,
                           random_state=5)
    rows, signs = draw_permutations(n, 8, random_state=5)
    null_t, null_tfce = freedman_lane_reference(Y, X, c, rows, signs, mask=mask,
                                                connectivity=6)
    np.testing.assert_allclose(res.null_max, null_t, rtol=1e-9)
    np.testing.assert_allclose(res.null_max_tfce, null_tfce, rtol=1e-7)
    volume = np.zeros(mask.shape)
    volume[mask] = res.t
    np.testing.assert_allclose(res.tfce, tfce_reference(volume, connectivity=6)[mask],
                               rtol=1e-9)
    assert np.all((res.p_fwe_tfce > 0) & (res.p_fwe_tfce <= 1))


def test_results_do_not_depend_on_chunking_or_executor():
    X, Y, c = _two_group_problem(seed=5, v=40)
    base = permutation_test(Y, X, c, n_permutations=50, random_state=9)
    for kwargs in (dict(chunk_size=1), dict(chunk_size=13, n_jobs=3, executor=map),
                   dict(n_jobs=2)):  # the last one runs in a process pool
        other = permutation_test(Y, X, c, n_permutations=50, random_state=9, **kwargs)
        np.testing.assert_allclose(other.null_max, base.null_max, rtol=1e-12)
        np.testing.assert_array_equal(other.p_fwe, base.p_fwe)
        np.testing.assert_array_equal(other.p_uncorrected, base.p_uncorrected)
    again = permutation_test(Y, X, c, n_permutations=50, random_state=9)
    assert again.null_max.tobytes() == base.null_max.tobytes()
    different = permutation_test(Y, X, c, n_permutations=50, random_state=10)
    assert not np.array_equal(different.null_max, base.null_max)


def test_permutations_never_cross_exchangeability_blocks():
    n = 18
    rng = np.random.default_rng(6)
    site = rng.choice(["a", "b", "c"], size=n)
    group = np.tile([0.0, 1.0], n // 2)
    X = np.column_stack([np.ones(n), group])
    Y = rng.standard_normal((n, 3))
    seen = []

    def spy(function, tasks):
        tasks = list(tasks)
        seen.extend(tasks)
        return map(function, tasks)

    permutation_test(Y, X, [0, 1], n_permutations=200, blocks=site, executor=spy, n_jobs=2)
    rows = np.concatenate([task.rows for task in seen])
    assert rows.shape == (200, n)
    assert np.all(site[rows] == site[None, :])           # nobody moves to another site
    assert np.all(np.sort(rows, axis=1) == np.arange(n))  # each row is a permutation
    assert np.mean(np.all(rows == np.arange(n), axis=1)) < 0.05  # and they do permute
    # without blocks, subjects do move across sites
    plain, _ = draw_permutations(n, 50, random_state=0)
    assert np.any(site[plain] != site[None, :])


def test_input_errors():
    X, Y, c = _two_group_problem()
    with pytest.raises(InputError, match="mask"):
        permutation_test(Y, X, c, n_permutations=5, tfce=True)
    with pytest.raises(InputError, match="mask"):
        permutation_test(Y, X, c, n_permutations=5, tfce=True, mask=np.ones((2, 2, 2), bool))
    with pytest.raises(InputError, match="blocks"):
        permutation_test(Y, X, c, n_permutations=5, blocks=[1, 2])
    with pytest.raises(InputError, match="contrast"):
        permutation_test(Y, X, [0, 1], n_permutations=5)
    collinear = np.column_stack([X, X[:, 1] * 2])
    with pytest.raises(InputError) as info:
        permutation_test(Y, collinear, [0, 1, 0, 0], n_permutations=5,
                         column_names=["intercept", "group", "age", "group2"])
    assert "'group'" in str(info.value) and "'group2'" in str(info.value)
    assert "'age'" not in str(info.value)


# ------------------------------------------------------------------ against nilearn

def test_agrees_with_nilearn_non_parametric_inference():
    import nibabel as nib
    import pandas as pd
    from nilearn.glm.second_level import non_parametric_inference

    rng = np.random.default_rng(12)
    shape = (14, 14, 12)
    centre = np.array(shape) / 2 - 0.5
    grid = np.indices(shape).transpose(1, 2, 3, 0)
    mask = np.linalg.norm((grid - centre) / (np.array(shape) / 2 - 1), axis=-1) <= 1
    n = 20
    group = np.r_[np.ones(10), -np.ones(10)]
    volumes = smooth_volumes(rng, n, shape, 1.0) / 0.23
    volumes[:, 4:8, 4:8, 4:7] += 0.9 * group[:, None, None, None]
    volumes *= mask
    affine = np.eye(4)
    images = [nib.Nifti1Image(v.astype(np.float64), affine) for v in volumes]
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), affine)
    design = pd.DataFrame({"intercept": np.ones(n), "group": group})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = non_parametric_inference(images, design_matrix=design,
                                          second_level_contrast="group", mask=mask_img,
                                          n_perm=150, tfce=True, two_sided_test=True,
                                          random_state=0, n_jobs=1)
    ours = permutation_test(volumes[:, mask], design.to_numpy(), [0, 1],
                            n_permutations=1000, tfce=True, mask=mask, connectivity=6,
                            random_state=0)
    t_theirs = theirs["t"].get_fdata()[mask]
    np.testing.assert_allclose(ours.t, t_theirs, rtol=1e-6, atol=1e-6)
    tfce_theirs = theirs["tfce"].get_fdata()[mask]
    np.testing.assert_allclose(ours.tfce, tfce_theirs, rtol=1e-4,
                               atol=1e-6 * np.abs(tfce_theirs).max())
    bound = ks_bound(150, 1000)
    for key, p_ours in (("logp_max_t", ours.p_fwe), ("logp_max_tfce", ours.p_fwe_tfce)):
        p_theirs = 10 ** -theirs[key].get_fdata()[mask]
        assert np.max(np.abs(p_ours - p_theirs)) <= bound, key
    assert np.min(ours.p_fwe_tfce) < 0.05  # the planted effect is found


# ------------------------------------------------------------------ calibration and power

def test_fwe_is_calibrated_under_the_null_and_powerful_with_an_effect():
    rng = np.random.default_rng(2024)
    n, v, reps, n_perm = 16, 60, 200, 99   # p <= 0.05 happens with probability exactly 0.05
    group = np.r_[np.ones(8), np.zeros(8)]
    site = np.tile([0, 1], 8)
    X = np.column_stack([np.ones(n), group, rng.normal(size=n)])
    false_positive = 0
    for rep in range(reps):
        blocked = rep % 2 == 1
        Y = rng.standard_normal((n, v)) + 3.0 * blocked * site[:, None]  # site shift, blocked
        res = permutation_test(Y, X, [0, 1, 0], n_permutations=n_perm, random_state=rep,
                               blocks=site if blocked else None)
        false_positive += bool(np.any(res.p_fwe <= 0.05))
    rate = false_positive / reps
    margin = 3 * np.sqrt(0.05 * 0.95 / reps)
    assert abs(rate - 0.05) <= margin, rate

    hits = 0
    for rep in range(20):
        Y = rng.standard_normal((n, v))
        Y[:, :5] += 3.5 * group[:, None]
        res = permutation_test(Y, X, [0, 1, 0], n_permutations=n_perm, random_state=rep)
        hits += int(np.sum(res.p_fwe[:5] <= 0.05))
    assert hits / 100 >= 0.8


def test_sign_flip_fwe_is_calibrated():
    rng = np.random.default_rng(77)
    n, v, reps = 12, 40, 200
    false_positive = 0
    for rep in range(reps):
        Y = rng.standard_normal((n, v))
        res = permutation_test(Y, np.ones((n, 1)), [1.0], n_permutations=99, random_state=rep)
        false_positive += bool(np.any(res.p_fwe <= 0.05))
    assert abs(false_positive / reps - 0.05) <= 3 * np.sqrt(0.05 * 0.95 / reps)


def test_tfce_fwe_is_calibrated():
    rng = np.random.default_rng(99)
    mask = np.ones((5, 5, 4), bool)
    n, reps = 12, 150
    group = np.r_[np.ones(6), np.zeros(6)]
    X = np.column_stack([np.ones(n), group])
    false_positive = 0
    for rep in range(reps):
        Y = smooth_volumes(rng, n, mask.shape, 0.7)[:, mask]
        with warnings.catch_warnings():  # dh=inf: clipped to 10 height steps, to be quick
            warnings.simplefilter("ignore", RuntimeWarning)
            res = permutation_test(Y, X, [0, 1], n_permutations=39, tfce=True, mask=mask,
                                   random_state=rep, dh=1e9)
        false_positive += bool(np.any(res.p_fwe_tfce <= 0.05))
    assert abs(false_positive / reps - 0.05) <= 3 * np.sqrt(0.05 * 0.95 / reps)
