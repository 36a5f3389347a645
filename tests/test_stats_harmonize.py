"""ComBat harmonization: agreement with neuroHarmonize, site removal, covariate preservation,
and the scikit-learn step fitted inside cross-validation folds."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from neuroHarmonize import harmonizationApply, harmonizationLearn
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from painplast.biomarker.combat import ComBatTransformer
from painplast.errors import InputError
from painplast.stats.harmonize import ComBatModel, apply_combat, fit_combat

# neuroHarmonize 2.4 uses np.matrix internally
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")

SITES = np.array(["siteA", "siteB", "siteC", "siteD"])
AGE_EFFECT, SEX_EFFECT = 0.04, 0.5


def simulate(n=160, n_features=120, seed=0, age_float32=False):
    """Features with additive and multiplicative site effects and planted age/sex effects."""
    rng = np.random.default_rng(seed)
    site = rng.choice(SITES, size=n, p=[0.4, 0.3, 0.2, 0.1])
    # older participants at siteB: site and age are partly confounded, as in real cohorts
    age = rng.uniform(20, 70, n) + np.where(site == "siteB", 8.0, 0.0)
    if age_float32:
        age = age.astype(np.float32).astype(np.float64)
    sex = rng.integers(0, 2, n).astype(np.float64)
    additive = rng.normal(0, 1.0, (len(SITES), n_features)) * np.array([[0], [1.5], [-1], [2]])
    scale = (np.array([1.0, 2.0, 0.6, 1.5])[:, None]
             * rng.uniform(0.8, 1.2, (len(SITES), n_features)))
    index = np.searchsorted(SITES, site)
    noise = rng.normal(size=(n, n_features)) * scale[index]
    base = rng.normal(5, 1, n_features)
    Y = base + AGE_EFFECT * age[:, None] + SEX_EFFECT * sex[:, None] + additive[index] + noise
    return Y, site, np.column_stack([age, sex])


def covars_frame(site, covariates):
    return pd.DataFrame({"SITE": site, "age": covariates[:, 0], "sex": covariates[:, 1]})


@pytest.mark.parametrize("eb", [True, False])
def test_fit_and_harmonize_match_neuroharmonize(eb):
    Y, site, cov = simulate()
    nh_model, nh_data = harmonizationLearn(Y, covars_frame(site, cov), eb=eb)
    model = fit_combat(Y, site, cov, eb=eb)
    ours = apply_combat(model, Y, site, cov)
    assert np.max(np.abs(ours - nh_data)) < 1e-6
    assert model.empirical_bayes is eb
    np.testing.assert_array_equal(model.site_labels, nh_model["SITE_labels"])
    np.testing.assert_allclose(model.gamma_star, nh_model["gamma_star"], atol=1e-6)
    np.testing.assert_allclose(model.delta_star, nh_model["delta_star"], rtol=1e-6)
    np.testing.assert_allclose(model.grand_mean, nh_model["stand_mean"][:, 0], atol=1e-6)
    np.testing.assert_allclose(model.pooled_variance, nh_model["var_pooled"][:, 0], rtol=1e-6)
    np.testing.assert_allclose(model.covariate_betas, nh_model["B_hat"][len(SITES):], atol=1e-6)


def test_same_arithmetic_as_neuroharmonize_when_covariates_are_float32_exact():
    # neuroCombat casts covariates to float32; with covariates exactly representable in float32
    # the only remaining differences are floating-point rounding
    Y, site, cov = simulate(seed=3, age_float32=True)
    _, nh_data = harmonizationLearn(Y, covars_frame(site, cov))
    ours = apply_combat(fit_combat(Y, site, cov), Y, site, cov)
    assert np.max(np.abs(ours - nh_data)) < 1e-10


def test_apply_to_held_out_matches_harmonization_apply():
    Y, site, cov = simulate(n=200, seed=1)
    train = np.zeros(len(site), bool)
    train[np.random.default_rng(1).permutation(len(site))[:140]] = True
    assert set(site[~train]) == set(SITES)  # neuroHarmonize misaligns columns otherwise
    nh_model, _ = harmonizationLearn(Y[train], covars_frame(site[train], cov[train]))
    nh_test = harmonizationApply(Y[~train], covars_frame(site[~train], cov[~train]), nh_model)
    model = fit_combat(Y[train], site[train], cov[train])
    ours = apply_combat(model, Y[~train], site[~train], cov[~train])
    assert np.max(np.abs(ours - nh_test)) < 1e-6


def _site_spread(Y, site, cov):
    """Median over features of the range of site means and of the max/min site SD ratio,
    after removing the planted covariate effects."""
    residual = Y - cov @ np.array([AGE_EFFECT, SEX_EFFECT])[:, None]
    means = np.array([residual[site == s].mean(axis=0) for s in SITES])
    sds = np.array([residual[site == s].std(axis=0, ddof=1) for s in SITES])
    return np.median(np.ptp(means, axis=0)), np.median(sds.max(axis=0) / sds.min(axis=0))


def _covariate_slopes(Y, cov):
    design = np.column_stack([np.ones(len(Y)), cov])
    return np.linalg.lstsq(design, Y, rcond=None)[0][1:].mean(axis=1)


def test_removes_site_effects_and_preserves_covariate_effects():
    Y, site, cov = simulate(n=400, n_features=200, seed=2)
    harmonized = apply_combat(fit_combat(Y, site, cov), Y, site, cov)
    mean_spread_before, sd_ratio_before = _site_spread(Y, site, cov)
    mean_spread_after, sd_ratio_after = _site_spread(harmonized, site, cov)
    assert mean_spread_before > 2.0 and sd_ratio_before > 3.0  # the planted site effects
    assert mean_spread_after < 0.35
    assert sd_ratio_after < 1.4
    age_slope, sex_slope = _covariate_slopes(harmonized, cov)
    assert age_slope == pytest.approx(AGE_EFFECT, abs=0.005)
    assert sex_slope == pytest.approx(SEX_EFFECT, abs=0.08)
    # without the covariates in the model, the age effect confounded with siteB is damaged
    naive = apply_combat(fit_combat(Y, site), Y, site)
    assert abs(_covariate_slopes(naive, cov)[0] - AGE_EFFECT) > 2 * abs(age_slope - AGE_EFFECT)


def test_unseen_site_raises_input_error_naming_it():
    Y, site, cov = simulate(seed=4)
    model = fit_combat(Y, site, cov)
    new_site = site.copy()
    new_site[:3] = "siteZ"
    with pytest.raises(InputError) as error:
        apply_combat(model, Y, new_site, cov)
    assert "'siteZ'" in str(error.value) and "fix:" in str(error.value)


def test_site_with_one_participant_gets_a_location_only_adjustment():
    Y, site, cov = simulate(n=60, n_features=10, seed=5)
    site = site.astype(object)
    site[0] = "siteLonely"
    model = fit_combat(Y, site, cov)
    lonely = list(model.site_labels).index("siteLonely")
    assert np.all(model.delta_star[lonely] == 1.0)
    assert np.all(np.isfinite(model.gamma_star[lonely]))
    out = apply_combat(model, Y, site, cov)
    assert np.all(np.isfinite(out))
    # the other sites are harmonized as if the lonely participant's site were its own
    assert np.allclose(model.delta_star[[i for i in range(len(model.site_labels)) if i != lonely]].mean(), 1.0, atol=0.5)


def test_constant_feature_passes_through_and_the_others_match_the_fit_without_it():
    Y, site, cov = simulate(n=60, n_features=10, seed=5)
    Yc = Y.copy()
    Yc[:, 2] = 1.0
    out = apply_combat(fit_combat(Yc, site, cov), Yc, site, cov)
    assert np.allclose(out[:, 2], 1.0)
    keep = [j for j in range(10) if j != 2]
    ref = apply_combat(fit_combat(Y[:, keep], site, cov), Y[:, keep], site, cov)
    assert np.allclose(out[:, keep], ref, atol=1e-8)


@pytest.mark.parametrize("case", ["collinear", "nan", "n_cov"])
def test_bad_input_raises_input_error(case):
    Y, site, cov = simulate(n=60, n_features=10, seed=5)
    if case == "collinear":
        cov = np.column_stack([cov, (site == "siteA").astype(float)])
    elif case == "nan":
        Y = Y.copy()
        Y[3, 4] = np.nan
    with pytest.raises(InputError):
        if case == "n_cov":
            apply_combat(fit_combat(Y, site, cov), Y, site, cov[:, :1])
        else:
            fit_combat(Y, site, cov)


def test_model_is_frozen_and_read_only():
    Y, site, cov = simulate(n=60, n_features=10, seed=6)
    model = fit_combat(Y, site, cov)
    assert isinstance(model, ComBatModel)
    with pytest.raises(ValueError):
        model.grand_mean[0] = 1.0
    with pytest.raises(AttributeError):
        model.grand_mean = np.zeros(10)


# -------------------------------------------------------------------------------------------
# the scikit-learn step


def feature_table(Y, site, cov):
    table = pd.DataFrame(Y, columns=[f"roi_{i:03d}" for i in range(Y.shape[1])])
    table["site"] = site
    table["age"] = cov[:, 0]
    table["sex"] = cov[:, 1]
    return table


def test_transformer_matches_neuroharmonize_on_dataframe_and_array():
    Y, site, cov = simulate(seed=7)
    _, nh_data = harmonizationLearn(Y, covars_frame(site, cov))
    table = feature_table(Y, site, cov)
    step = ComBatTransformer(site="site", covariates=("age", "sex"))
    assert np.max(np.abs(step.fit_transform(table) - nh_data)) < 1e-6
    assert list(step.get_feature_names_out()) == list(table.columns[:-3])
    # plain array, columns by position (numeric site codes)
    array = np.column_stack([np.searchsorted(SITES, site), cov, Y])
    by_position = ComBatTransformer(site=0, covariates=(1, 2)).fit_transform(array)
    assert np.max(np.abs(by_position - nh_data)) < 1e-6
    kept = ComBatTransformer(site="site", covariates=("age", "sex"), keep_covariates=True)
    frame = kept.set_output(transform="pandas").fit_transform(table)
    assert list(frame.columns[-2:]) == ["age", "sex"]
    np.testing.assert_array_equal(frame[["age", "sex"]].to_numpy(), cov)


def test_transformer_follows_estimator_contract():
    step = ComBatTransformer(site="scanner", covariates=("age",), eb=False)
    assert step.get_params() == {"site": "scanner", "covariates": ("age",), "eb": False,
                                 "keep_covariates": False}
    assert not hasattr(clone(step), "model_")
    Y, site, cov = simulate(n=60, n_features=5, seed=8)
    table = feature_table(Y, site, cov)
    with pytest.raises(InputError, match="scanner"):
        step.fit(table)


def test_pipeline_cross_validation_fits_combat_on_training_folds_only():
    Y, site, cov = simulate(n=160, n_features=30, seed=9)
    table = feature_table(Y, site, cov)
    rng = np.random.default_rng(9)
    y = (table["roi_000"] + rng.normal(size=len(table)) > table["roi_000"].median()).astype(int)
    pipe = make_pipeline(ComBatTransformer(site="site", covariates=("age", "sex")),
                         StandardScaler(), LogisticRegression())
    # stratify the folds by site so every training fold sees every site
    folds = list(StratifiedKFold(4, shuffle=True, random_state=0).split(table, site))
    scores = cross_val_score(pipe, table, y, cv=folds, scoring="roc_auc")
    assert np.all(np.isfinite(scores))
    fitted = cross_validate(pipe, table, y, cv=folds, return_estimator=True)["estimator"]
    whole = fit_combat(Y, site, cov)
    for estimator, (train, test) in zip(fitted, folds):
        learned = estimator[0].model_
        np.testing.assert_array_equal(learned.site_sizes,
                                      [np.sum(site[train] == s) for s in SITES])
        by_hand = fit_combat(Y[train], site[train], cov[train])
        np.testing.assert_array_equal(learned.grand_mean, by_hand.grand_mean)
        np.testing.assert_array_equal(learned.gamma_star, by_hand.gamma_star)
        assert not np.allclose(learned.grand_mean, whole.grand_mean, rtol=0, atol=1e-12)
        # the test fold is harmonized with the training fold's model
        np.testing.assert_array_equal(
            estimator[0].transform(table.iloc[test]),
            apply_combat(by_hand, Y[test], site[test], cov[test]))


def test_held_out_data_may_lack_some_training_sites():
    # neuroHarmonize 2.4's harmonizationApply fails here (it re-indexes the sites it is given)
    Y, site, cov = simulate(seed=10)
    model = fit_combat(Y, site, cov)
    subset = site != "siteB"
    np.testing.assert_allclose(apply_combat(model, Y[subset], site[subset], cov[subset]),
                               apply_combat(model, Y, site, cov)[subset], rtol=0, atol=1e-12)


def test_transformer_leaves_out_a_covariate_constant_within_every_site_of_the_fold(tmp_path):
    """A training fold whose small site is all one sex: the fit preserves the covariates it can
    tell apart from site (age), equals ComBat fitted with those alone, and does not fail; the
    saved model applies the same way (the store keeps preserved_covariates_)."""
    from painplast.biomarker.store import load_model, save_model

    rng = np.random.default_rng(4)
    n = 30
    site = np.repeat(["a", "b"], [20, 10])
    sex = np.where(site == "b", 1.0, rng.integers(0, 2, n).astype(float))
    sex[site == "a"] = 0.0                      # constant within each site: inseparable
    age = rng.uniform(20, 70, n)
    Y = rng.normal(size=(n, 5)) + np.where(site == "b", 2.0, 0.0)[:, None] + 0.02 * age[:, None]
    X = pd.DataFrame(Y, columns=[f"f{j}" for j in range(5)]).assign(site=site, sex=sex, age=age)
    with pytest.raises(InputError, match="collinear"):
        fit_combat(Y, site, np.column_stack([sex, age]))       # the function itself says so
    step = ComBatTransformer(covariates=["sex", "age"]).fit(X)
    assert step.preserved_covariates_.tolist() == [False, True]
    reference = apply_combat(fit_combat(Y, site, age[:, None]), Y, site, age[:, None])
    np.testing.assert_allclose(step.transform(X), reference, atol=1e-10)
    pipe = make_pipeline(ComBatTransformer(covariates=["sex", "age"]), StandardScaler()).fit(X)
    folder = save_model(pipe, tmp_path / "m",
                        metadata={"feature_names": list(X.columns)})
    np.testing.assert_allclose(load_model(folder).transform(X), reference, atol=1e-10)
