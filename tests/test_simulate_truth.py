"""The simulator's recorded sizes and ICCs against independent computations.

The ground truth records each planted size from the latent model with the simulator's own
plain-numpy estimand (painplast.simulate.estimands), not with painplast.contrasts. Here the
recorded values are checked against (a) closed-form values where the latent model allows one,
and (b) a fresh Monte Carlo draw of the latent model estimated with statsmodels' OLS, an
implementation shared with neither. Tolerances are five standard errors of the difference of
two Monte Carlo estimates, so a correct simulator passes with probability > 0.999 per check.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

from painplast.simulate import SimulationParameters
from painplast.simulate.latent import clinical, participants_frame, session_latents, site_effects, truth_features
from painplast.simulate.measurement import model_for
from painplast.simulate.truth import N_MONTE_CARLO, ground_truth

N_CHECK = 60_000
ACCEPTANCE = dict(n_participants=120, n_sites=3)
LONGITUDINAL = dict(n_participants=120, n_sites=3, design="longitudinal")


@lru_cache(maxsize=4)
def _truth(**kwargs) -> dict:
    return ground_truth(SimulationParameters(**kwargs))


def _truth_of(kwargs: dict) -> dict:
    return _truth(**kwargs)


def _draw(params: SimulationParameters, n: int, tag: int):
    """A fresh Monte Carlo sample: participants columns, noise-free and measured features."""
    rng = np.random.default_rng([params.seed, 4242, tag])
    sites = site_effects(params)
    clin = clinical(params, n, rng, exact=False)
    lats = session_latents(params, clin, rng, sites, np.random.default_rng([params.seed, 4243, tag]))
    latent = [truth_features(lat) for lat in lats]
    model = model_for(params)
    measured = latent if model is None else [
        model.measure(f, clin["site_index"].to_numpy(), sites, np.random.default_rng([params.seed, 4244, tag, k]))
        for k, f in enumerate(latent)]
    return participants_frame(clin, exact=False), latent, measured


def _dummies(parts: pd.DataFrame, names) -> pd.DataFrame:
    cols = {}
    for name in names:
        if name == "site":
            for level in sorted(parts.site.unique())[1:]:
                cols[f"site_{level}"] = (parts.site == level).astype(float)
        elif name == "sex":
            cols["sex"] = (parts.sex == "F").astype(float)
        elif name == "group":
            cols["group"] = (parts.group == "patient").astype(float)
        else:
            cols[name] = parts[name].astype(float)
    return pd.DataFrame(cols, index=parts.index)


REGRESSOR = {
    "patient-control": ("group", "all", {"patient": 1.0, "control": 0.0}, ("age", "sex", "site")),
    "responder-nonresponder": ("treatment_response", "patients", {"responder": 1.0, "non-responder": 0.0}, ("age", "sex", "site")),
    "persisting-recovering": ("outcome", "subacute", {"persisting": 1.0, "recovering": 0.0}, ("age", "sex", "site")),
    "pain_intensity": ("pain_intensity", "patients", None, ("age", "sex", "site")),
    "pain_duration": ("pain_duration_months", "patients", None, ("age", "sex", "site")),
    "modulation_score": ("modulation_score", "all", None, ("group", "age", "sex", "site")),
    "age": ("age", "all", None, ("group", "sex", "site")),
    "group:time": ("stage", "chronic+controls", {"chronic": 1.0, "n/a": 0.0}, ("age", "sex", "site")),
    "change~pain_relief": ("pain_relief", "chronic", None, ("age", "sex", "site")),
}


def _rows(parts: pd.DataFrame, who: str) -> np.ndarray:
    stage = parts["stage"] if "stage" in parts else pd.Series("", index=parts.index)
    return {"all": np.ones(len(parts), bool), "patients": (parts.group == "patient").to_numpy(),
            "chronic": (stage == "chronic").to_numpy(), "subacute": (stage == "subacute").to_numpy(),
            "chronic+controls": ((stage == "chronic") | (parts.group == "control")).to_numpy()}[who]


def _statsmodels_size(effect: dict, parts: pd.DataFrame, first: pd.DataFrame, change: pd.DataFrame | None):
    """(estimate, standard error) of one effect with statsmodels OLS.

    Cross-sectional contrasts use the first session and the module's covariates (connectivity:
    mean FD; structure: total GM, except for total GM itself); change-score contrasts use only
    age, sex and site (docs/simulator.md).
    """
    contrast, feature, module = effect["contrast"], effect["feature"], effect["module"]
    if contrast == "time":
        y = change.loc[_rows(parts, "chronic"), feature].to_numpy()
        dz = y.mean() / y.std(ddof=1)
        return dz, np.sqrt((1 + dz**2 / 2) / len(y))
    column, who, levels, covs = REGRESSOR[contrast]
    keep = _rows(parts, who)
    on_change = contrast in ("group:time", "change~pain_relief")
    source = change if on_change else first
    x = parts[column].map(levels) if levels else parts[column].astype(float)
    keep = keep & x.notna().to_numpy()   # e.g. no treatment response for subacute patients
    design = _dummies(parts, covs)
    if not on_change and module == "connectivity":
        design["mean_fd"] = parts["mean_fd"]
    if not on_change and module == "structure" and feature != "structure.gm_total":
        design["gm_total"] = first["structure.gm_total"]
    X = sm.add_constant(pd.concat([x.rename("x"), design], axis=1)[keep].astype(float))
    fit = sm.OLS(source.loc[keep, feature].to_numpy(), X).fit()
    n = int(keep.sum())
    if levels:
        d = fit.params["x"] / np.sqrt(fit.scale)
        n1 = int((X["x"] == 1).sum())
        return d, np.sqrt(1 / n1 + 1 / (n - n1) + d**2 / (2 * n))
    t = fit.tvalues["x"]
    r = t / np.sqrt(t**2 + fit.df_resid)
    return r, (1 - r**2) / np.sqrt(n)


@pytest.mark.parametrize("kwargs", [ACCEPTANCE, LONGITUDINAL], ids=["cross-sectional", "longitudinal"])
def test_recorded_sizes_match_an_independent_monte_carlo(kwargs):
    params = SimulationParameters(**kwargs)
    truth = _truth_of(kwargs)
    parts, latent, measured = _draw(params, N_CHECK, 1)
    checked = set()
    for effect in truth["effects"]:
        for key, scale in (("size_latent", latent), ("size", measured)):
            change = scale[1] - scale[0] if len(scale) > 1 else None
            est, se = _statsmodels_size(effect, parts, scale[0], change)
            # two independent Monte Carlo estimates; the recorded one used N_MONTE_CARLO
            se_diff = se * np.sqrt(1 + N_CHECK / N_MONTE_CARLO)
            recorded = effect["direction"] * effect[key]
            assert abs(est - recorded) < 5 * se_diff + 1e-4, (effect, key, est)
            checked.add(effect["contrast"])
    expected = {"patient-control", "responder-nonresponder", "pain_intensity", "pain_duration",
                "modulation_score", "age"}
    if params.longitudinal:
        expected |= {"persisting-recovering", "time", "group:time", "change~pain_relief"}
    assert checked == expected


def test_recorded_sizes_match_closed_forms():
    """Single site (no site gain), so two effects have a closed form.

    Posterior-insula slope: z = N(0,1) + s * burden in patients, burden ~ Gamma(4, 1/4) (mean 1,
    variance 1/4); with half the cohort patients, Cohen's d over the pooled residual SD is
    s / sqrt(1 + s**2 / 8). Total GM and age: gm = a - b * age + N(0, sd_g) with age a clipped
    (18-78), rounded normal(45, 12); the partial r is -b sd_age / sqrt(b**2 var_age + sd_g**2).
    """
    from painplast.simulate import latent

    params = SimulationParameters(n_participants=40, n_sites=1)
    truth = ground_truth(params)
    s = params.sensitization_slope_insula_posterior
    d_closed = s / np.sqrt(1 + s**2 / 8)
    e = next(e for e in truth["effects"] if e["feature"] == "sensitization.insula_posterior_slope")
    se = np.sqrt(4 / N_MONTE_CARLO + d_closed**2 / (2 * N_MONTE_CARLO))
    assert abs(e["size_latent"] - d_closed) < 5 * se, (e, d_closed)
    # variance of the clipped, rounded age distribution, by quadrature over integer ages
    ages = np.arange(18, 79)
    cdf = stats.norm.cdf(np.r_[ages - 0.5, 78.5].clip(18, 78), 45, 12)
    cdf[0], cdf[-1] = 0.0, 1.0
    p = np.diff(cdf)
    var_age = np.sum(p * ages**2) - np.sum(p * ages) ** 2
    b = params.gm_age_slope
    r_closed = -b * np.sqrt(var_age) / np.sqrt(b**2 * var_age + latent.GM_GLOBAL_SD**2)
    e = next(e for e in truth["effects"] if e["contrast"] == "age")
    assert abs(e["direction"] * e["size_latent"] - r_closed) < 5 * (1 - r_closed**2) / np.sqrt(N_MONTE_CARLO)
    # a d standardised by the total SD, or scaled by 1.1, would be far outside this margin
    assert abs(d_closed * 1.1 - d_closed) > 10 * se


def _icc31(values: np.ndarray) -> float:
    n, k = values.shape
    grand = values.mean()
    msr = k * ((values.mean(1) - grand) ** 2).sum() / (n - 1)
    resid = values - values.mean(1, keepdims=True) - values.mean(0) + grand
    mse = (resid**2).sum() / ((n - 1) * (k - 1))
    return (msr - mse) / (msr + (k - 1) * mse)


def test_recorded_iccs_match_a_large_sample_of_controls():
    kwargs = dict(n_participants=120, n_sites=3, n_sessions=2)
    params = SimulationParameters(**kwargs)
    truth = _truth_of(kwargs)
    parts, latent, measured = _draw(params, N_CHECK, 2)
    controls = (parts.group == "control").to_numpy()
    n = int(controls.sum())
    assert set(truth["icc"]) == set(latent[0].columns)
    for key, scale in (("icc_latent", latent), ("icc", measured)):
        for feature, recorded in truth[key].items():
            values = np.column_stack([f.loc[controls, feature].to_numpy() for f in scale])
            icc = _icc31(values)
            # SE of an ICC(3,1) with two sessions: (1 - icc^2) / sqrt(n); two estimates
            se = (1 - icc**2) / np.sqrt(n) * np.sqrt(2)
            assert abs(icc - recorded) < 5 * se + 1e-3, (key, feature, icc, recorded)
    # the latent ICCs are the ones the parameters set (within what site and transforms move)
    assert abs(truth["icc_latent"]["connectivity.mpfc_nacc"] - params.retest_icc_coupling) < 0.05
    assert abs(truth["icc_latent"]["structure.gm_dlpfc"] - params.retest_icc_gm) < 0.03
    # measurement noise only lowers them
    for feature, value in truth["icc"].items():
        assert value <= truth["icc_latent"][feature] + 0.02, feature


def test_longitudinal_effects_are_in_the_truth_features():
    """Every longitudinal effect shows with its recorded sign and size in the cohort's own
    noise-free features (the values of participants_truth.tsv), on a large cohort drawn as
    simulate draws it (exact allocation per site, not the Monte Carlo's)."""
    from painplast.simulate import _cohort, _participants

    params = SimulationParameters(n_participants=1200, n_sites=3, design="longitudinal", seed=3)
    truth = _truth_of(dict(n_participants=1200, n_sites=3, design="longitudinal", seed=3))
    clin, lats, ids, _ = _cohort(params)
    first, second = (truth_features(lat) for lat in lats)
    first.index = second.index = ids
    change = second - first
    parts = _participants(clin, ids).set_index("participant_id")
    parts = parts.fillna({"stage": "n/a", "outcome": "n/a", "treatment_response": "n/a"})
    parts["mean_fd"] = clin["mean_fd_target"].to_numpy()
    new = [e for e in truth["effects"]
           if e["contrast"] in ("time", "group:time", "change~pain_relief", "persisting-recovering")]
    assert {e["contrast"] for e in new} == {"time", "group:time", "change~pain_relief", "persisting-recovering"}
    assert {e["module"] for e in new if e["contrast"] == "time"} == {
        "structure", "reorganization", "connectivity", "modulation"}
    for e in new:
        est, se = _statsmodels_size(e, parts, first, change)
        assert np.sign(est) == e["direction"], (e, est)
        assert abs(est - e["direction"] * e["size_latent"]) < 5 * se, (e, est, se)
    # nobody but the treated chronic patients changes beyond test-retest noise
    for rows in ((parts.group == "control").to_numpy(), (parts.stage == "subacute").to_numpy()):
        for e in new:
            if e["contrast"] == "time":
                y = change.loc[rows, e["feature"]]
                assert abs(y.mean()) < 5 * y.std() / np.sqrt(len(y)), e["feature"]
