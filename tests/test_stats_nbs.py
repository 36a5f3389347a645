"""Tests of painplast.stats.nbs: against bctpy, against a slow reference, and under the null."""
from __future__ import annotations

import contextlib
import io
from collections import deque

import bct
import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats

from painplast.errors import InputError
from painplast.stats.nbs import edge_t_statistic, nbs
from painplast.stats.permutation import draw_permutations


def _symmetric(a):
    """(n, n, s) array -> symmetric with zero diagonal, built from the upper triangle."""
    upper = np.triu(np.moveaxis(a, 2, 0), 1)
    return np.moveaxis(upper + np.swapaxes(upper, 1, 2), 0, 2)


def _two_groups(seed, n_nodes=20, n_x=12, n_y=14, planted=(2, 5, 7, 9), effect=1.5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_nodes, n_nodes, n_x))
    y = rng.normal(size=(n_nodes, n_nodes, n_y))
    x[np.ix_(planted, planted)] += effect
    return _symmetric(x), _symmetric(y)


def _bct_permutations(seed, k, n):
    """The permutations ``bct.nbs_bct(..., seed=seed)`` draws: ``RandomState(seed).permutation(n)``."""
    rng = np.random.RandomState(seed)
    return np.array([rng.permutation(n) for _ in range(k)])


def _run_bct(x, y, thresh, k, tail, seed):
    with contextlib.redirect_stdout(io.StringIO()):  # bctpy prints progress
        return bct.nbs_bct(x, y, thresh, k=k, tail=tail, seed=seed)


def _bct_components(adj):
    """bctpy's labelled adjacency -> {frozenset(nodes): frozenset(edges)} by label order."""
    out = []
    for label in range(1, int(adj.max()) + 1):
        i, j = np.nonzero(np.triu(adj == label, 1))
        out.append((frozenset(np.r_[i, j].tolist()), frozenset(zip(i.tolist(), j.tolist()))))
    return out


# --------------------------------------------------------------------------- bctpy agreement


@pytest.mark.parametrize("tail", ["both", "right", "left"])
def test_same_components_and_null_as_bct(tail):
    x, y = _two_groups(seed=3)
    k = 60
    p_bct, adj_bct, null_bct = _run_bct(x, y, 2.5, k, tail, seed=11)
    result = nbs(x, y, threshold=2.5, tail=tail, n_permutations=k,
                 permutations=_bct_permutations(11, k, x.shape[2] + y.shape[2]))

    np.testing.assert_array_equal(result.supra_threshold, adj_bct > 0)
    ours = {frozenset(c.nodes.tolist()): c for c in result.components}
    theirs = _bct_components(adj_bct)
    assert set(ours) == {nodes for nodes, _ in theirs}
    for (nodes, edges), p in zip(theirs, p_bct):
        component = ours[nodes]
        assert {tuple(e) for e in component.edges.tolist()} == edges
        assert component.size == len(edges)
        # same seed -> same permutations -> the same count of null >= size
        assert round(component.p_fwe * (k + 1)) - 1 == round(p * k)
    # given bctpy's permutations, the null distribution is bctpy's
    np.testing.assert_array_equal(result.null_distribution, null_bct)
    np.testing.assert_array_equal(result.component_labels > 0, adj_bct > 0)


def test_t_statistic_is_bct_pooled_two_sample_t_of_x_minus_y():
    x, y = _two_groups(seed=4)
    result = nbs(x, y, threshold=2.5, n_permutations=1)
    i, j = result.edge_index.T
    expected = stats.ttest_ind(x[i, j, :], y[i, j, :], axis=1, equal_var=True).statistic
    np.testing.assert_allclose(result.t_statistic, expected, rtol=1e-11, atol=1e-12)
    planted = result.t_matrix[np.ix_((2, 5, 7, 9), (2, 5, 7, 9))]
    assert np.all(planted[np.triu_indices(4, 1)] > 0)  # x was raised: positive t


def test_p_values_agree_with_bct_within_monte_carlo_error():
    x, y = _two_groups(seed=5, planted=(1, 4, 8), effect=0.9)
    k_bct, k_ours = 150, 1000
    p_bct, adj_bct, _ = _run_bct(x, y, 2.2, k_bct, "both", seed=1)
    result = nbs(x, y, threshold=2.2, n_permutations=k_ours, random_state=2)
    ours = {frozenset(c.nodes.tolist()): c.p_fwe for c in result.components}
    theirs = [nodes for nodes, _ in _bct_components(adj_bct)]
    assert set(ours) == set(theirs)
    assert any(0.02 < p < 0.98 for p in p_bct)  # at least one informative comparison
    for nodes, p in zip(theirs, p_bct):
        pooled = (p * k_bct + ours[nodes] * k_ours) / (k_bct + k_ours)
        se = np.sqrt(max(pooled * (1 - pooled), 0.01) * (1 / k_bct + 1 / k_ours))
        assert abs(ours[nodes] - p) < 4 * se + 1 / k_bct


# --------------------------------------------------------------------------- slow reference


def _slow_components(supra_edges, weights, n_nodes):
    """Breadth-first search over an adjacency list: list of (node set, size)."""
    neighbours = {v: [] for v in range(n_nodes)}
    weight = {}
    for (a, b), w in zip(supra_edges, weights):
        neighbours[a].append(b)
        neighbours[b].append(a)
        weight[(a, b)] = w
    seen, out = set(), []
    for start in range(n_nodes):
        if start in seen or not neighbours[start]:
            continue
        queue, nodes = deque([start]), {start}
        seen.add(start)
        while queue:
            v = queue.popleft()
            for u in neighbours[v]:
                if u not in seen:
                    seen.add(u)
                    nodes.add(u)
                    queue.append(u)
        out.append((nodes, sum(w for (a, b), w in weight.items() if a in nodes)))
    return out


def _slow_t(data, design, contrast):
    beta, *_ = np.linalg.lstsq(design, data, rcond=None)
    resid = data - design @ beta
    df = design.shape[0] - design.shape[1]
    var_c = contrast @ np.linalg.inv(design.T @ design) @ contrast
    return contrast @ beta / np.sqrt((resid ** 2).sum(0) / df * var_c)


def _slow_nbs(data, design, contrast, threshold, tail, size, perms):
    """One permutation at a time: Freedman–Lane refit with lstsq, components by BFS."""
    n_subjects, n_edges = data.shape
    n_nodes = int((1 + np.sqrt(1 + 8 * n_edges)) / 2)
    pairs = list(zip(*np.triu_indices(n_nodes, 1)))
    keep = contrast == 0
    nuisance = design[:, keep]
    fit = nuisance @ np.linalg.lstsq(nuisance, data, rcond=None)[0]
    resid = data - fit
    orient = {"both": np.abs, "right": lambda t: t, "left": lambda t: -t}[tail]

    def max_size(t):
        stat = orient(t)
        supra = np.flatnonzero(stat > threshold)
        w = (stat[supra] - threshold) if size == "intensity" else np.ones(supra.size)
        comps = _slow_components([pairs[e] for e in supra], w, n_nodes)
        return max((s for _, s in comps), default=0.0), comps

    _, observed = max_size(_slow_t(data, design, contrast))
    null = [max_size(_slow_t(resid[perm] + fit, design, contrast))[0] for perm in perms]
    return observed, np.array(null)


def _covariate_design(rng, n_subjects, n_sites=3):
    group = np.r_[np.ones(n_subjects // 2), np.zeros(n_subjects - n_subjects // 2)]
    site = np.arange(n_subjects) % n_sites
    age = rng.normal(45, 12, n_subjects) + 5 * group
    sex = rng.integers(0, 2, n_subjects)
    mean_fd = rng.gamma(2.0, 0.08, n_subjects)
    site_dummies = (site[:, None] == np.arange(1, n_sites)).astype(float)
    design = np.column_stack([np.ones(n_subjects), group, age, sex, mean_fd, site_dummies])
    return design, site


@pytest.mark.parametrize("case", ["two_groups", "covariates_intensity", "covariates_blocks"])
def test_vectorized_path_matches_slow_reference(case):
    rng = np.random.default_rng(21)
    n_nodes, n_subjects = 12, 24
    n_edges = n_nodes * (n_nodes - 1) // 2
    design, site = _covariate_design(rng, n_subjects)
    if case == "two_groups":
        design = design[:, :2]
    data = rng.normal(size=(n_subjects, n_edges))
    data += 0.05 * design[:, 2:3] if design.shape[1] > 2 else 0  # a real age effect
    planted = [e for e, (i, j) in enumerate(zip(*np.triu_indices(n_nodes, 1)))
               if i in (0, 3, 4) and j in (3, 4, 6)]
    data[:, planted] += 1.2 * design[:, [1]]
    contrast = np.zeros(design.shape[1])
    contrast[1] = 1.0
    size = "intensity" if case == "covariates_intensity" else "extent"
    tail = "right" if case == "two_groups" else "both"
    blocks = site if case == "covariates_blocks" else None
    k = 40

    perms, _ = draw_permutations(n_subjects, k, blocks=blocks, random_state=5)  # nbs's own draws
    observed, null = _slow_nbs(data, design, contrast, 2.0, tail, size, perms)
    result = nbs(data, design=design, contrast=contrast, threshold=2.0, tail=tail,
                 n_permutations=k, size=size, blocks=blocks, random_state=5, chunk_size=7)

    np.testing.assert_allclose(result.null_distribution, null, rtol=1e-9, atol=1e-9)
    assert np.any(null > 0)
    slow = sorted((sorted(nodes), s) for nodes, s in observed)
    fast = sorted((c.nodes.tolist(), c.size) for c in result.components)
    assert [n for n, _ in slow] == [n for n, _ in fast]
    np.testing.assert_allclose([s for _, s in fast], [s for _, s in slow], rtol=1e-9)


def test_glm_t_matches_statsmodels():
    rng = np.random.default_rng(8)
    design, _ = _covariate_design(rng, 40)
    data = rng.normal(size=(40, 15)) + 0.3 * design[:, [1]]
    for contrast in (np.eye(design.shape[1])[1], np.r_[0, 0, 0, 0, 0, 1.0, -1.0]):
        ours = edge_t_statistic(data, design, contrast)
        expected = [np.ravel(sm.OLS(data[:, e], design).fit().t_test(contrast).tvalue)[0]
                    for e in range(data.shape[1])]
        np.testing.assert_allclose(ours, expected, rtol=1e-10)


def test_nonzero_contrast_entries_and_chunking_do_not_change_the_result():
    rng = np.random.default_rng(9)
    design, _ = _covariate_design(rng, 30)
    data = rng.normal(size=(30, 28)) + 0.8 * design[:, [1]]
    contrast = np.eye(design.shape[1])[1]
    a = nbs(data, design=design, contrast=contrast, threshold=2.0, n_permutations=50)
    b = nbs(data, design=design, contrast=contrast, threshold=2.0, n_permutations=50,
            chunk_size=3)
    np.testing.assert_array_equal(a.null_distribution, b.null_distribution)
    # the same hypothesis written as a two-entry contrast on a reparametrized design
    reparam = design.copy()
    reparam[:, 1] = 1.0 - design[:, 1]                     # control indicator instead
    c = nbs(data, design=reparam, contrast=-contrast, threshold=2.0, n_permutations=50)
    np.testing.assert_allclose(c.t_statistic, a.t_statistic, rtol=1e-10)
    np.testing.assert_array_equal(c.null_distribution, a.null_distribution)


# --------------------------------------------------------------------------- validity and power


@pytest.mark.parametrize("model", ["two_groups", "freedman_lane"])
def test_familywise_error_rate_under_the_null(model):
    """Rejections of the global null over many small repetitions stay within the binomial margin."""
    rng = np.random.default_rng(100 if model == "two_groups" else 200)
    n_reps, k, alpha, n_nodes, n_subjects = 400, 99, 0.05, 12, 20
    n_edges = n_nodes * (n_nodes - 1) // 2
    rejections = 0
    for rep in range(n_reps):
        if model == "two_groups":
            data = rng.normal(size=(n_subjects, n_edges))
            result = nbs(data[:10], data[10:], threshold=2.0, n_permutations=k, random_state=rep)
        else:
            # a nuisance covariate correlated with group, with a strong effect on every edge:
            # permuting raw data would inflate the error rate, Freedman–Lane must not
            group = np.r_[np.ones(10), np.zeros(10)]
            age = rng.normal(size=n_subjects) + 1.5 * group
            design = np.column_stack([np.ones(n_subjects), group, age])
            data = rng.normal(size=(n_subjects, n_edges)) + 1.5 * age[:, None]
            result = nbs(data, design=design, contrast=[0, 1, 0], threshold=2.0,
                         n_permutations=k, size="intensity", random_state=rep)
        rejections += bool(result.components) and min(result.p_fwe) <= alpha
    low, high = stats.binom.ppf([0.0005, 0.9995], n_reps, alpha)
    print(f"{model}: {rejections}/{n_reps} rejections (allowed {low:.0f}-{high:.0f})")
    assert low <= rejections <= high, rejections


def test_planted_component_is_recovered():
    rng = np.random.default_rng(31)
    n_nodes, n_per_group = 30, 20
    x = rng.normal(size=(n_nodes, n_nodes, n_per_group))
    y = rng.normal(size=(n_nodes, n_nodes, n_per_group))
    planted = [3, 7, 11, 12, 20, 25]
    y[np.ix_(planted, planted)] += 1.3                          # x < y on the planted edges
    result = nbs(_symmetric(x), _symmetric(y), threshold=3.0, tail="left", n_permutations=500,
                 random_state=0)
    best = result.components[0]
    assert set(best.nodes.tolist()) == set(planted)
    assert best.p_fwe < 0.05
    assert all(c.p_fwe > 0.05 for c in result.components[1:])
    assert result.p_fwe[0] == best.p_fwe


# --------------------------------------------------------------------------- interface


def test_edge_vectors_equal_matrices_and_same_seed_same_bytes():
    x, y = _two_groups(seed=6)
    i, j = np.triu_indices(x.shape[0], 1)
    a = nbs(x, y, threshold=2.5, n_permutations=30, random_state=4)
    b = nbs(x[i, j, :].T, y[i, j, :].T, threshold=2.5, n_permutations=30, random_state=4)
    assert a.t_statistic.tobytes() == b.t_statistic.tobytes()
    assert a.null_distribution.tobytes() == b.null_distribution.tobytes()
    assert [c.nodes.tolist() for c in a.components] == [c.nodes.tolist() for c in b.components]
    generator = nbs(x, y, threshold=2.5, n_permutations=30,
                    random_state=np.random.default_rng(4))
    assert generator.null_distribution.shape == (30,)


def test_no_supra_threshold_edge_gives_no_component():
    x, y = _two_groups(seed=7, effect=0.0)
    result = nbs(x, y, threshold=50.0, n_permutations=10)
    assert result.components == () and result.p_fwe.shape == (0,)
    assert not result.supra_threshold.any()
    np.testing.assert_array_equal(result.null_distribution, np.zeros(10))


@pytest.mark.parametrize("kwargs, match", [
    (dict(tail="two-sided"), "tail"),
    (dict(size="mass"), "size"),
    (dict(n_permutations=0), "n_permutations"),
    (dict(blocks=[0, 1]), "blocks"),
])
def test_bad_options_raise_input_error(kwargs, match):
    x, y = _two_groups(seed=8)
    with pytest.raises(InputError, match=match):
        nbs(x, y, **kwargs)


def test_bad_design_raises_input_error():
    data = np.random.default_rng(0).normal(size=(10, 6))
    design = np.column_stack([np.ones(10), np.ones(10)])
    with pytest.raises(InputError, match="rank deficient"):
        nbs(data, design=design, contrast=[0, 1])
    with pytest.raises(InputError, match="upper-triangle"):
        nbs(data[:, :5], design=design[:, :1], contrast=[1])
    with pytest.raises(InputError, match="either"):
        nbs(data, data, design=design, contrast=[0, 1])
