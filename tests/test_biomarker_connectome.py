"""Connectome-wide prediction (painplast.biomarker.connectome).

Checked against peers (nilearn's ConnectivityMeasure, scikit-learn's RobustScaler / SelectKBest /
Ridge / ElasticNet, a direct implementation of the CPM protocol), for leakage (the tangent
reference and every target-dependent step are fitted on training rows only; the fast
cross-validation equals refitting the model in every fold), for safe storage (JSON parameters,
plain-array state), and on the simulator: a planted connectome pattern is recovered and the
permutation p-value is calibrated under the null.
"""
from __future__ import annotations

import functools
import io
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.base import clone

from painplast import atlas
from painplast.biomarker import connectome as cx
from painplast.errors import InputError


def _series(n=30, R=6, T=120, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(R, R)) * 0.4 + np.eye(R)
    return [rng.normal(size=(T, R)) @ mix for _ in range(n)]


def _cohort(n=40, R=8, T=100, seed=0, effect=0.6):
    """Covariances and a target that drives edge (0, 1)."""
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n)
    ts = []
    for v in y:
        t = rng.normal(size=(T, R))
        t[:, 1] += effect * v * t[:, 0]
        ts.append(t)
    return cx.ledoit_wolf_covariances(ts), y


# ----------------------------------------------------------------------------- edges and kinds


@pytest.mark.parametrize("kind", cx.KINDS)
def test_transformer_matches_nilearn(kind):
    from nilearn.connectome import ConnectivityMeasure

    ts = _series()
    z = [cx._zscore(t) for t in ts]  # the connectivity stage writes z-scored series
    train, test = slice(0, 24), slice(24, 30)
    peer = ConnectivityMeasure(kind=kind).fit(z[train])
    expected = cx.upper_triangle(peer.transform(z[test]))
    cov = cx.ledoit_wolf_covariances(ts)
    ours = cx.ConnectomeTransformer(kind=kind).fit(cov[train]).transform(cov[test])
    np.testing.assert_allclose(ours, expected, atol=1e-9)
    if kind == "tangent":
        np.testing.assert_allclose(cx.geometric_mean(cov[train]), peer.mean_, atol=1e-9)


def test_vectorized_covariances_are_accepted():
    cov = cx.ledoit_wolf_covariances(_series(n=10))
    flat = cx.upper_triangle(cov, diagonal=True)
    t = cx.ConnectomeTransformer(kind="partial correlation")
    np.testing.assert_array_equal(t.fit_transform(flat), t.fit_transform(cov))
    assert flat.shape[1] == 21 and cx.n_nodes_of(21, diagonal=True) == 6


def test_partial_correlation_equals_the_subject_stage(shared_data):
    """The kind 'partial correlation' gives the connectivity stage's AtlasPartial array."""
    from painplast.plasticity.connectivity import clean, partial_correlation, scrub_mask

    path = next((shared_data / "rpn_szeged" / "derivatives" / "timeseries").glob(
        "sub-*/func/*_atlas-MIST122_timeseries.tsv"))
    values = pd.read_csv(path, sep="\t").to_numpy(float)[:, 1:]
    ts = clean(values, None, scrub_mask(None, len(values), 0.5), 2.5, 0.01, None)
    stage = partial_correlation(ts)
    ours = cx.ConnectomeTransformer().fit_transform(cx.ledoit_wolf_covariances([ts]))[0]
    np.testing.assert_allclose(ours, cx.upper_triangle(stage), atol=1e-9)


def test_edge_names_follow_the_order_of_the_vector():
    nodes = ["a", "b", "c", "d"]
    m = np.zeros((1, 4, 4))
    m[0, 1, 3] = m[0, 3, 1] = 7.0
    vector = cx.upper_triangle(m)[0]
    assert cx.edge_names(nodes)[int(np.argmax(vector))] == "b--d"
    assert cx.edge_networks(["x", "y", "x", "y"])[int(np.argmax(vector))] == "y--y"


def test_bad_input_says_what_to_fix():
    cov, y = _cohort(n=12)
    with pytest.raises(InputError, match="connectome kind"):
        cx.ConnectomeTransformer(kind="covariance").fit(cov)
    with pytest.raises(InputError, match="target value"):
        cx.ConnectomeRegressor().fit(cov, y[:-1])
    with pytest.raises(InputError, match="missing values"):
        cx.CPMRegressor().fit(cov, np.r_[y[:-1], np.nan])
    with pytest.raises(InputError, match="upper triangle"):
        cx.ConnectomeRegressor().fit(np.zeros((12, 5)), y)
    model = cx.ConnectomeRegressor(kind="correlation", k=[2]).fit(cov, y)
    with pytest.raises(InputError, match="regions"):
        model.predict(cov[:, :5, :5])


# ----------------------------------------------------------------------------- leakage


def test_tangent_reference_is_fitted_on_training_rows_only():
    cov, y = _cohort(n=30)
    model = cx.ConnectomeRegressor(kind="tangent", k=[2, 5], inner_folds=3).fit(cov[:20], y[:20])
    np.testing.assert_allclose(model.reference_, cx.geometric_mean(cov[:20]), atol=1e-12)
    before = model.predict(cov[20:])
    other = cov[20:].copy()
    other[1:] = cov[:9]                # the other test participants change ...
    after = model.predict(other)
    assert before[0] == after[0]       # ... and the first one's prediction does not


@pytest.mark.parametrize("model", [
    cx.ConnectomeRegressor(kind="tangent", k=[3, 10, "all"], inner_folds=4),
    cx.ConnectomeRegressor(kind="correlation", selection="p_value", p_threshold=0.05),
    cx.ConnectomeRegressor(kind="partial correlation", k=[3, 10], estimator="elastic_net",
                           alphas=[0.01, 0.1], inner_folds=3),
    cx.CPMRegressor(kind="partial correlation", network="glm", p_threshold=0.05),
])
def test_fast_cross_validation_equals_refitting_in_every_fold(model):
    """nested_cv reuses the target-free preparation across permutations; it must give exactly
    what cloning and fitting the model in each fold gives, for the true and permuted targets."""
    cov, y = _cohort(n=24, R=7, seed=3)
    result = cx.nested_cv(model, cov, y, folds=4, n_permutations=3, n_bootstrap=50,
                          random_state=5)
    splits = cx._outer_folds(len(y), 4, 1, 5)[0]
    perms = np.random.default_rng([5, 31337])
    perms = [perms.permutation(len(y)) for _ in range(3)]
    for target, predictions in [(y, result["predictions"][0])] + [
            (y[p], None) for p in perms]:
        expected = np.empty(len(y))
        for train, test in splits:
            expected[test] = clone(model).fit(cov[train], target[train]).predict(cov[test])
        if predictions is None:  # permuted target: its r is in the null distribution
            r = np.corrcoef(expected, target)[0, 1]
            assert np.min(np.abs(result["null"] - r)) < 1e-9
        else:
            np.testing.assert_allclose(predictions, expected, atol=1e-9)


# ----------------------------------------------------------------------------- against peers


def test_ridge_with_top_k_equals_scikit_learn():
    from sklearn.feature_selection import SelectKBest, f_regression
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import RobustScaler

    cov, y = _cohort(n=30, R=9, seed=1)
    edges = cx.ConnectomeTransformer().fit_transform(cov)
    ours = cx.ConnectomeRegressor(k=[12], alphas=[0.5]).fit(cov[:24], y[:24])
    peer = make_pipeline(RobustScaler(), SelectKBest(f_regression, k=12),
                         Ridge(alpha=0.5 * 12)).fit(edges[:24], y[:24])
    np.testing.assert_allclose(ours.predict(cov[24:]), peer.predict(edges[24:]), atol=1e-9)
    assert ours.support_.sum() == 12


def test_elastic_net_equals_scikit_learn():
    from sklearn.feature_selection import SelectKBest, f_regression
    from sklearn.linear_model import ElasticNet
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import RobustScaler

    cov, y = _cohort(n=30, R=9, seed=2)
    edges = cx.ConnectomeTransformer().fit_transform(cov)
    ours = cx.ConnectomeRegressor(k=[15], estimator="elastic_net", alphas=[0.05],
                                  l1_ratio=0.9).fit(cov[:24], y[:24])
    peer = make_pipeline(RobustScaler(), SelectKBest(f_regression, k=15),
                         ElasticNet(alpha=0.05, l1_ratio=0.9, max_iter=100000)
                         ).fit(edges[:24], y[:24])
    np.testing.assert_allclose(ours.predict(cov[24:]), peer.predict(edges[24:]), atol=1e-6)


def test_cpm_follows_the_protocol():
    """Shen et al. 2017: edges with p < 0.01 (Pearson), positive minus negative sum, line."""
    cov, y = _cohort(n=40, R=10, seed=4)
    edges = cx.ConnectomeTransformer().fit_transform(cov)
    train, test = slice(0, 32), slice(32, 40)
    p_r = [stats.pearsonr(edges[train, e], y[train]) for e in range(edges.shape[1])]
    r = np.array([v[0] for v in p_r])
    p = np.array([v[1] for v in p_r])
    positive, negative = (p < 0.01) & (r > 0), (p < 0.01) & (r < 0)
    strength = edges[:, positive].sum(1) - edges[:, negative].sum(1)
    slope, intercept = np.polyfit(strength[train], y[train], 1)
    model = cx.CPMRegressor().fit(cov[train], y[train])
    np.testing.assert_array_equal(model.positive_, positive)
    np.testing.assert_array_equal(model.negative_, negative)
    np.testing.assert_allclose(model.predict(cov[test]), slope * strength[test] + intercept,
                               atol=1e-9)


# ----------------------------------------------------------------------------- storage


@pytest.mark.parametrize("model", [cx.ConnectomeRegressor(kind="tangent", k=[3, 8]),
                                   cx.ConnectomeRegressor(selection="p_value"),
                                   cx.CPMRegressor(network="glm")])
def test_parameters_are_json_and_fitted_state_is_plain_arrays(model):
    """What a pickle-free model file needs: get_params() as JSON, the fitted attributes as
    plain arrays / numbers, and a fresh instance given both predicts the same."""
    cov, y = _cohort(n=30, seed=6)
    fitted = model.fit(cov, y)
    params = json.loads(json.dumps(fitted.get_params()))
    state = {key: value for key, value in vars(fitted).items() if key not in params}
    assert set(state) == set(cx.FITTED_ATTRIBUTES[type(model).__name__])
    files = {}
    for key, value in state.items():
        if value is None:
            continue
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(value), allow_pickle=False)
        files[key] = buffer.getvalue()
    fresh = type(model)(**params)
    for key in state:
        value = None if key not in files else np.load(io.BytesIO(files[key]), allow_pickle=False)
        setattr(fresh, key, value if value is None or value.ndim else value[()])
    np.testing.assert_array_equal(fresh.predict(cov), fitted.predict(cov))


# ----------------------------------------------------------------------------- reading derivatives


def test_read_connectomes_from_a_painplast_output_folder(shared_data, tmp_path):
    from painplast.cohort import Cohort
    from painplast.config import Config
    from painplast.derivatives import Derivatives
    from painplast.plasticity import connectivity

    cohort = Cohort.from_bids(shared_data / "rpn_szeged", repetition_time=2.5)
    config = Config(options={"connectivity": {"repetition_time": 2.5, "max_mean_fd": 0.1}})
    out = Derivatives(tmp_path / "out")
    written = []
    for pid in ["sub-szeged001", "sub-szeged003", "sub-szeged004", "sub-szeged005"]:
        result = connectivity.subject(cohort.subject(pid), config)
        out.write_subject(result, {}, "test")
        written.append(result)
    data = cx.read_connectomes(tmp_path / "out", participants=["sub-szeged003", "sub-szeged004",
                                                               "sub-szeged005", "sub-szeged001"])
    kept = [r for r in written if not r.excluded]
    assert data.participant_ids == [r.participant_id for r in kept]
    assert set(data.excluded) == {r.participant_id for r in written if r.excluded} != set()
    expected = cx.ledoit_wolf_covariances([r.arrays["atlas_timeseries"] for r in kept])
    np.testing.assert_allclose(data.covariances, expected)
    assert data.nodes == kept[0].info["atlas_nodes"] and len(data.nodes) == 122
    partial = data.edges("partial correlation")
    stored = np.stack([r.arrays["atlas_partial"] for r in kept])
    np.testing.assert_allclose(partial.to_numpy(), cx.upper_triangle(stored),
                               atol=1e-6)  # the stage stores float32
    assert list(partial.columns[:1]) == [f"{data.nodes[0]}--{data.nodes[1]}"]
    only = cx.read_connectomes(tmp_path / "out", participants=[kept[0].participant_id])
    assert only.participant_ids == [kept[0].participant_id]
    with pytest.raises(InputError, match="no connectivity results"):
        cx.read_connectomes(tmp_path)


# ----------------------------------------------------------------------------- the simulator


def _roi_cohort(params, measurement_noise=0.5):
    """Pain-ROI time series of a simulated cohort, made from its latent couplings as the
    simulator's resting-state model makes them (network factors loaded by the ROIs, the
    mPFC-NAcc coupling factor, the insula's default-mode loading), without the voxel images."""
    from painplast.simulate import _cohort_latents
    from painplast.simulate.images import PAIN_ROI_LOADINGS, bandlimited

    clin, lat, ids, _ = _cohort_latents(params)
    rng = np.random.default_rng([params.seed, 77])
    factors = sorted({k for d in PAIN_ROI_LOADINGS.values() for k in d} | {"coupling_mpfc_nacc"})
    series = []
    for i in range(len(lat)):
        c, w = float(lat["coupling_mpfc_nacc"].iloc[i]), float(lat["loading_dmn_insula"].iloc[i])
        F = bandlimited(rng, params.volumes_rest, len(factors), params.tr)
        ts = np.empty((params.volumes_rest, len(atlas.ROI_NAMES)))
        for j, roi in enumerate(atlas.ROI_NAMES):
            loads = dict(PAIN_ROI_LOADINGS[roi])
            if roi in ("mpfc", "nacc_l", "nacc_r"):
                loads["coupling_mpfc_nacc"] = np.sqrt(abs(c)) * (
                    np.sign(c) if roi != "mpfc" else 1.0)
            if roi.startswith("insula_"):
                loads["DefaultMode"] = loads.get("DefaultMode", 0.0) + w
            private = np.sqrt(max(1.0 - sum(v ** 2 for v in loads.values()), 0.0))
            ts[:, j] = (sum(v * F[:, factors.index(k)] for k, v in loads.items())
                        + private * bandlimited(rng, params.volumes_rest, 1, params.tr)[:, 0]
                        + measurement_noise * rng.normal(size=params.volumes_rest))
        series.append(ts)
    return cx.ledoit_wolf_covariances(series), clin["patient"].to_numpy(float)


@functools.lru_cache(maxsize=4)
def _planted(params) -> np.ndarray:
    from painplast.simulate import ground_truth

    edges = ground_truth(params)["connectivity_component"]["edges"]
    pairs = {frozenset(e) for e in edges}
    names = cx.edge_names(list(atlas.ROI_NAMES))
    return np.array([frozenset(n.split("--")) in pairs for n in names])


@pytest.mark.parametrize("model", [cx.ConnectomeRegressor(k=[10, 30, 100], inner_folds=5),
                                   cx.CPMRegressor()])
def test_planted_connectome_pattern_is_recovered(model):
    """60 simulated participants (default effect sizes): the edges the model keeps in most
    folds are mostly the planted ones (the ground truth's NBS component, 29 of 276 edges)."""
    from painplast.simulate import SimulationParameters

    params = SimulationParameters(n_participants=60, seed=2)
    planted = _planted(params)
    cov, y = _roi_cohort(params)
    result = cx.nested_cv(model, cov, y, folds=5, n_permutations=0, n_bootstrap=100)
    kept = result["edges"]["selection_frequency"].to_numpy() >= 0.8
    hits = int((kept & planted).sum())
    # hypergeometric chance of this many planted edges among those kept
    p = stats.hypergeom.sf(hits - 1, len(planted), planted.sum(), kept.sum())
    assert kept.sum() >= 5 and hits / kept.sum() >= 0.6 and p < 1e-6, (hits, kept.sum())
    assert result["metrics"]["r"]["ci_low"] > 0


def test_permutation_p_is_calibrated_under_the_null():
    """20 null cohorts (the simulator with --null): p < 0.05 in at most 5 of 20 (binomial
    probability of more under a calibrated test: 3e-4), and the observed r inside the central
    95% of its null distribution in at least 15."""
    from painplast.simulate import SimulationParameters

    p_values, inside = [], 0
    for seed in range(20):
        params = SimulationParameters(n_participants=30, seed=100 + seed, null=True)
        cov, y = _roi_cohort(params)
        sub = cov[:, :12, :12]  # 12 of the 24 ROIs: 66 edges keep the test fast
        result = cx.nested_cv(cx.ConnectomeRegressor(k=[5, 20], alphas=[0.1, 10.0],
                                                     inner_folds=3),
                              sub, y, folds=5, n_permutations=99, n_bootstrap=100,
                              random_state=seed)
        perm = result["permutation"]
        p_values.append(perm["p"])
        inside += perm["null_ci"][0] <= perm["observed"] <= perm["null_ci"][1]
    p_values = np.array(p_values)
    assert (p_values < 0.05).sum() <= 5 and inside >= 15, (p_values, inside)
    assert stats.binom.sf(5, 20, 0.05) < 1e-3
