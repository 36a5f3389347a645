"""Ground truth of a simulated cohort: planted effects with their population sizes, best AUCs,
reliabilities.

Every size is a population value: the simulator's own estimand
(:mod:`painplast.simulate.estimands`, plain numpy, independent of :mod:`painplast.contrasts`
and :mod:`painplast.stats`) on a Monte Carlo sample of the latent model (``N_MONTE_CARLO``
participants, drawn like the cohort but without exact balancing). Each effect gets two sizes:

* ``size_latent``: on the noise-free features, what a perfect image measurement of each session
  would give (``participants_truth.tsv``);
* ``size``: on the measured scale, i.e. after the image measurement noise that painplast's
  participant stages leave (:mod:`painplast.simulate.measurement`, calibrated on images). This
  is the population value of what a findings table estimates, so "planted size inside the
  95% interval" compares like with like; ``check_recovery.py`` reads ``size`` (it checks signs
  and p-values only).

With several sessions, test-retest noise makes each session's noise-free features differ; the
latent scale includes it (it is a real difference between sessions), the measured scale adds
the image noise. ``icc`` and ``icc_latent`` are the population ICCs of controls across
sessions, measured and noise-free.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import atlas
from . import estimands
from .latent import (DIAGNOSIS_FEATURES, TREATMENT_FEATURES, clinical, participants_frame,
                     session_latents, site_effects, truth_features)
from .measurement import model_for
from .parameters import SimulationParameters

#: (module, feature, contrast, region) of every effect the simulator can plant.
PLANTED = (
    ("sensitization", "sensitization.insula_posterior_slope", "patient-control", "insula_posterior"),
    ("sensitization", "sensitization.dacc_slope", "patient-control", "dacc"),
    ("sensitization", "sensitization.thalamus_response", "patient-control", "thalamus"),
    ("reorganization", "reorganization.shift_mm", "patient-control", "s1_hand"),
    ("reorganization", "reorganization.shift_mm", "pain_intensity", "s1_hand"),
    ("reorganization", "reorganization.asymmetry", "patient-control", "s1_hand"),
    ("connectivity", "connectivity.mpfc_nacc", "patient-control", "mpfc"),
    ("connectivity", "connectivity.dmn_insula", "patient-control", "insula_anterior"),
    ("structure", "structure.gm_dlpfc", "patient-control", "dlpfc"),
    ("structure", "structure.gm_insula_anterior", "patient-control", "insula_anterior"),
    ("structure", "structure.gm_thalamus", "patient-control", "thalamus"),
    ("structure", "structure.gm_dacc", "patient-control", "dacc"),
    ("structure", "structure.gm_dlpfc", "pain_duration", "dlpfc"),
    ("structure", "structure.gm_insula_anterior", "pain_duration", "insula_anterior"),
    ("structure", "structure.gm_thalamus", "pain_duration", "thalamus"),
    ("structure", "structure.gm_dacc", "pain_duration", "dacc"),
    ("modulation", "modulation.dacc_index", "patient-control", "dacc"),
    ("modulation", "modulation.insula_anterior_index", "patient-control", "insula_anterior"),
    ("modulation", "modulation.pag_racc_ppi", "patient-control", "racc"),
    ("modulation", "modulation.dacc_index", "modulation_score", "dacc"),
    ("modulation", "modulation.insula_anterior_index", "modulation_score", "insula_anterior"),
    ("modulation", "modulation.pag_racc_ppi", "modulation_score", "racc"),
    ("connectivity", "connectivity.mpfc_nacc", "responder-nonresponder", "mpfc"),
    ("modulation", "modulation.dacc_index", "responder-nonresponder", "dacc"),
    ("structure", "structure.gm_dlpfc", "responder-nonresponder", "dlpfc"),
)
#: Present in every cohort, null included.
AGE_EFFECT = ("structure", "structure.gm_total", "age", "whole_brain")
#: Features whose latents a treatment reverses (module, feature, region), by module.
REVERSING = (
    ("sensitization", "sensitization.insula_posterior_slope", "insula_posterior"),
    ("sensitization", "sensitization.dacc_slope", "dacc"),
    ("sensitization", "sensitization.thalamus_response", "thalamus"),
    ("reorganization", "reorganization.shift_mm", "s1_hand"),
    ("reorganization", "reorganization.asymmetry", "s1_hand"),
    ("connectivity", "connectivity.mpfc_nacc", "mpfc"),
    ("connectivity", "connectivity.dmn_insula", "insula_anterior"),
    ("structure", "structure.gm_dlpfc", "dlpfc"),
    ("structure", "structure.gm_insula_anterior", "insula_anterior"),
    ("structure", "structure.gm_thalamus", "thalamus"),
    ("structure", "structure.gm_dacc", "dacc"),
    ("modulation", "modulation.dacc_index", "dacc"),
    ("modulation", "modulation.insula_anterior_index", "insula_anterior"),
    ("modulation", "modulation.pag_racc_ppi", "racc"),
)
#: The baseline predictor of chronification (Baliki et al. 2012).
CHRONIFICATION = ("connectivity", "connectivity.mpfc_nacc", "persisting-recovering", "mpfc")
CHRONIFICATION_FEATURES = ("connectivity.mpfc_nacc",)
#: Modules whose features are measured on BOLD scans (mean FD is regressed out of these only,
#: as the biomarker does: painplast.biomarker.model.CONFOUND_SCOPE).
BOLD_MODULES = ("sensitization", "reorganization", "connectivity", "modulation")
UNITS = {"group": "cohen_d", "continuous": "pearson_r", "paired": "cohen_dz"}

N_MONTE_CARLO = 60_000


class Sample:
    """A Monte Carlo sample of the latent model: clinical table, participants columns, and the
    noise-free and measured features of every session."""

    def __init__(self, params: SimulationParameters, n: int, seed_tag: int):
        rng = np.random.default_rng([params.seed, 99, seed_tag])
        self.sites = site_effects(params)
        self.clin = clinical(params, n, rng, exact=False)
        state_rng = np.random.default_rng([params.seed, 98, seed_tag])
        self.latent = [truth_features(lat) for lat in
                       session_latents(params, self.clin, rng, self.sites, state_rng)]
        self.parts = participants_frame(self.clin, exact=False)
        self.coded = estimands.Coded(self.parts)
        self.model = model_for(params)
        self.measured = self.latent
        if self.model is not None:
            site = self.clin["site_index"].to_numpy()
            self.measured = [self.model.measure(f, site, self.sites,
                                                np.random.default_rng([params.seed, 97, seed_tag, k]))
                             for k, f in enumerate(self.latent)]

    def scales(self):
        return (("size_latent", self.latent), ("size", self.measured))


def _cross_sectional_size(module, feature, contrast, feats: pd.DataFrame, coded) -> float:
    extra = {"gm_total": feats["structure.gm_total"].to_numpy()}
    covs = estimands.module_covariates(module, feature, contrast)
    return estimands.size(contrast, feats[feature].to_numpy(), coded, covs, extra)


def _effect(module, feature, contrast, region, sizes: dict) -> dict:
    if region == "whole_brain" or feature.startswith("reorganization."):
        centers = []  # the map moves; there is no fixed cluster to find
    else:
        centers = [list(map(float, r.center)) for r in atlas.region_rois(region)]
    latent = sizes["size_latent"]
    return {
        "module": module, "feature": feature, "contrast": contrast,
        "direction": int(np.sign(latent)) or 1, "size": round(abs(float(sizes["size"])), 4),
        "size_latent": round(abs(float(latent)), 4),
        "size_unit": UNITS[estimands.ESTIMANDS[contrast].kind],
        "region": region, "center_mni": centers[0] if centers else None, "centers_mni": centers,
    }


def _deconfound(X: np.ndarray, columns, parts: pd.DataFrame, mode: str, reference=None) -> np.ndarray:
    """Remove covariate effects from each column of ``X``.

    ``reference``: age, sex and site fitted on the reference class only (a normative model, the
    original best AUC). ``biomarker``: as painplast's biomarker does, fitted on everyone without
    the target: site indicators (ComBat's location part), age and sex out of every feature,
    mean framewise displacement out of the BOLD-derived ones only.
    """
    base = estimands.covariates(parts, ("age", "sex", "site"))  # parts: this target's rows
    D = np.column_stack([np.ones(len(X)), base])
    if mode == "reference":
        beta, *_ = np.linalg.lstsq(D[reference], X[reference], rcond=None)
        return X - D @ beta
    out = X.copy()
    bold = np.array([c.split(".", 1)[0] in BOLD_MODULES for c in columns])
    Dm = np.column_stack([D, parts["mean_fd"].to_numpy(float)])
    for sel, design in ((bold, Dm), (~bold, D)):
        if sel.any():
            beta, *_ = np.linalg.lstsq(design, X[:, sel], rcond=None)
            out[:, sel] = X[:, sel] - design @ beta
    return out


def _best_auc(feats: pd.DataFrame, parts: pd.DataFrame, columns, label: np.ndarray, rng,
              mode: str = "reference") -> float:
    from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
    from sklearn.metrics import roc_auc_score

    ok = np.isfinite(label)
    X = feats.loc[ok, list(columns)].to_numpy(float)
    y = label[ok].astype(int)
    X = _deconfound(X, columns, parts.loc[ok], mode, reference=y == 0)
    half = rng.permutation(len(X))
    a, b = half[: len(X) // 2], half[len(X) // 2:]
    qda = QuadraticDiscriminantAnalysis(reg_param=1e-6).fit(X[a], y[a])
    return float(roc_auc_score(y[b], qda.predict_proba(X[b])[:, 1]))


def _targets(parts: pd.DataFrame, longitudinal: bool):
    out = {"diagnosis": (DIAGNOSIS_FEATURES, (parts["group"] == "patient").to_numpy(float)),
           "treatment": (TREATMENT_FEATURES, parts["treatment_response"].map(
               {"responder": 1.0, "non-responder": 0.0}).to_numpy(float))}
    if longitudinal:
        out["chronification"] = (CHRONIFICATION_FEATURES, parts["outcome"].map(
            {"persisting": 1.0, "recovering": 0.0}).to_numpy(float))
    return out


def icc(values: np.ndarray) -> float:
    """ICC(3,1) of an (n subjects, k sessions) array (McGraw & Wong 1996, two-way mixed,
    consistency); equal to ICC(2,1) in a population without systematic session differences."""
    n, k = values.shape
    grand = values.mean()
    ms_rows = k * np.sum((values.mean(axis=1) - grand) ** 2) / (n - 1)
    resid = values - values.mean(axis=1, keepdims=True) - values.mean(axis=0) + grand
    ms_error = np.sum(resid**2) / ((n - 1) * (k - 1))
    return float((ms_rows - ms_error) / (ms_rows + (k - 1) * ms_error))


def _reliability(sample: Sample) -> dict:
    controls = (sample.parts["group"] == "control").to_numpy()
    out = {"icc": {}, "icc_latent": {}}
    for feature in sample.latent[0].columns:
        for key, scale in (("icc_latent", sample.latent), ("icc", sample.measured)):
            values = np.column_stack([f[feature].to_numpy(float)[controls] for f in scale])
            out[key][feature] = round(icc(values), 4)
    return out


def ground_truth(params: SimulationParameters) -> dict:
    """The ``ground_truth.json`` content for a cohort simulated with ``params``.

    Examples
    --------
    >>> truth = ground_truth(SimulationParameters(n_participants=24, n_sites=2, n_sessions=2))
    >>> e = truth["effects"][1]
    >>> e["contrast"], e["size"] <= e["size_latent"], 0 < truth["icc"]["structure.gm_dlpfc"] < 1
    ('patient-control', True, True)
    """
    sample = Sample(params, N_MONTE_CARLO, 1)
    parts, coded = sample.parts, sample.coded
    planted = [AGE_EFFECT] if params.null else [AGE_EFFECT, *PLANTED]
    effects = []
    for module, feature, contrast, region in planted:
        sizes = {key: _cross_sectional_size(module, feature, contrast, scale[0], coded)
                 for key, scale in sample.scales()}
        effects.append(_effect(module, feature, contrast, region, sizes))
    if params.longitudinal and not params.null:
        module, feature, contrast, region = CHRONIFICATION
        sizes = {key: _cross_sectional_size(module, feature, contrast, scale[0], coded)
                 for key, scale in sample.scales()}
        effects.append(_effect(module, feature, contrast, region, sizes))
        for module, feature, region in REVERSING:
            if getattr(params, f"reversal_{module}") <= 0:
                continue
            for contrast in estimands.LONGITUDINAL:
                sizes = {key: estimands.size(contrast, (scale[1][feature] - scale[0][feature]).to_numpy(), coded)
                         for key, scale in sample.scales()}
                effects.append(_effect(module, feature, contrast, region, sizes))

    targets = _targets(parts, params.longitudinal)
    rng = np.random.default_rng([params.seed, 5])
    best = {}
    for key, mode, scale in (("best_auc", "reference", sample.latent),
                             ("best_auc_deconfounded", "biomarker", sample.latent),
                             ("best_auc_measured", "biomarker", sample.measured)):
        best[key] = {t: 0.5 if params.null else round(_best_auc(scale[0], parts, cols, label, rng, mode), 4)
                     for t, (cols, label) in targets.items()}
    # shift of the affected-hand map in patients (mm): mean planted magnitude
    pat = sample.clin["patient"].to_numpy()
    shift = sample.latent[0]["reorganization.shift_mm"].to_numpy()
    truth = {
        "effects": effects,
        "best_auc": best["best_auc"],
        "best_auc_method": ("quadratic discriminant on the planted latent features, covariates "
                            "(age, sex, site) removed, Monte Carlo with "
                            f"{N_MONTE_CARLO} participants (half fit, half test)"),
        "best_auc_deconfounded": best["best_auc_deconfounded"],
        "best_auc_measured": best["best_auc_measured"],
        "best_auc_deconfounded_method": (
            "as best_auc, but the covariates are removed as painplast's biomarker removes them: "
            "least squares fitted on everyone without the target, site indicators, age and sex "
            "out of every feature, mean framewise displacement out of the BOLD-derived "
            "features only (biomarker.model.CONFOUND_SCOPE). best_auc_measured: the same on the "
            "measured scale (image measurement noise added, see 'measurement')"),
        "size_method": ("population value of the simulator's own estimand "
                        "(painplast.simulate.estimands: adjusted mean difference over residual SD, "
                        "partial r, d_z of change) on a Monte Carlo sample of the latent model "
                        f"({N_MONTE_CARLO} participants); size = measured scale, size_latent = "
                        "noise-free features"),
        "somatotopy": {"mean_shift_mm_patients": round(float(shift[pat].mean()), 3),
                       "mean_shift_mm_controls": round(float(shift[~pat].mean()), 3)},
        "connectivity_component": _planted_component(params),
        "design": params.design,
        "sessions": list(params.sessions()),
        "measurement": _measurement(sample),
        "parameters": params.to_dict(),
    }
    if len(sample.latent) > 1:
        truth.update(_reliability(sample))
        truth["icc_method"] = (
            "ICC(3,1) (= ICC(2,1): no systematic session difference) of controls across the "
            "sessions, sites pooled in their cohort shares, no covariates; Monte Carlo on "
            f"{N_MONTE_CARLO} participants. icc: measured features (latent test-retest noise plus "
            "the calibrated image measurement noise); icc_latent: noise-free features")
    return truth


def _measurement(sample: Sample) -> dict | None:
    model = sample.model
    if model is None:
        return None
    first_latent, first_measured = sample.latent[0], sample.measured[0]
    reliability = {f: round(float(np.corrcoef(first_latent[f], first_measured[f])[0, 1] ** 2), 4)
                   for f in first_latent.columns if f in model.beta}
    return {"calibration": model.name, "exact": model.exact, "source": model.source,
            "reliability": reliability,
            "method": ("measured = alpha + beta * truth + site factor * sigma * noise per feature, "
                       "fitted on painplast's participant-level measurement of simulated images "
                       "(painplast.simulate.measurement); reliability = squared correlation of "
                       "measured and noise-free feature over the first session's participants")}


def _planted_component(params: SimulationParameters) -> dict:
    """Every pain-ROI edge whose correlation the planted couplings change (the NBS target).

    mPFC-NAcc: a shared factor loads on mPFC and both NAcc, so the three edges among them move.
    Default mode-insula: the insula ROIs load on the default-mode factor, so their edges to every
    default-mode-loaded ROI (mPFC, PCC, angular gyri, rACC) and to each other move.
    """
    if params.null:
        return {"nodes": [], "edges": [], "contrast": "patient-control", "direction": 1}
    insula = list(atlas.COUPLINGS["dmn_insula"][1])
    dmn = [*atlas.DMN_ROIS, "racc"]
    edges = [["mpfc", "nacc_l"], ["mpfc", "nacc_r"], ["nacc_l", "nacc_r"]]
    edges += [[a, b] for a in dmn for b in insula]
    edges += [[a, b] for i, a in enumerate(insula) for b in insula[i + 1:]]
    nodes = sorted({n for e in edges for n in e})
    return {"nodes": nodes, "edges": edges, "contrast": "patient-control", "direction": 1}


