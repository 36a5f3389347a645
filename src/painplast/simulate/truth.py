"""Ground truth of a simulated cohort: planted effects with their population sizes, best AUCs."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import atlas, contrasts
from .latent import (DIAGNOSIS_FEATURES, TREATMENT_FEATURES, clinical, latents, participants_frame,
                     site_effects, truth_features)
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

N_MONTE_CARLO = 60_000


def _monte_carlo(params: SimulationParameters, n: int, seed_tag: int):
    rng = np.random.default_rng([params.seed, 99, seed_tag])
    clin = clinical(params, n, rng, exact=False)
    lat = latents(params, clin, rng, site_effects(params))
    return clin, truth_features(lat), participants_frame(clin, exact=False)


def effect_size(feature: str, contrast: str, module: str, feats: pd.DataFrame, parts: pd.DataFrame) -> float:
    covs = contrasts.module_covariates(module, feature)
    extra = feats[["structure.gm_total"]].rename(columns={"structure.gm_total": "gm_total"})
    return contrasts.estimate(feats[feature].to_numpy(), parts, contrast, covs, extra).estimate


def _best_auc(feats: pd.DataFrame, parts: pd.DataFrame, columns, label: np.ndarray, rng) -> float:
    from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
    from sklearn.metrics import roc_auc_score

    ok = np.isfinite(label)
    X = feats.loc[ok, list(columns)].to_numpy(float)
    y = label[ok].astype(int)
    cov, _ = contrasts.covariate_matrix(parts.loc[ok], ("age", "sex", "site"))
    D = np.column_stack([np.ones(len(X)), cov])
    ref = y == 0  # covariate effects estimated on the reference class, as a normative model would
    beta, *_ = np.linalg.lstsq(D[ref], X[ref], rcond=None)
    X = X - D @ beta
    half = rng.permutation(len(X))
    a, b = half[: len(X) // 2], half[len(X) // 2:]
    qda = QuadraticDiscriminantAnalysis(reg_param=1e-6).fit(X[a], y[a])
    return float(roc_auc_score(y[b], qda.predict_proba(X[b])[:, 1]))


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


def ground_truth(params: SimulationParameters) -> dict:
    """The ``ground_truth.json`` content for a cohort simulated with ``params``.

    Sizes are population values from a Monte Carlo sample of the latent model
    (``N_MONTE_CARLO`` participants), estimated exactly as the findings tables estimate them.
    """
    clin, feats, parts = _monte_carlo(params, N_MONTE_CARLO, 1)
    planted = [AGE_EFFECT] if params.null else [AGE_EFFECT, *PLANTED]
    effects = []
    for module, feature, contrast, region in planted:
        est = effect_size(feature, contrast, module, feats, parts)
        if region == "whole_brain":
            centers = []
        else:
            centers = [list(map(float, r.center)) for r in atlas.region_rois(region)]
        if feature.startswith("reorganization."):
            centers = []  # the map moves; there is no fixed cluster to find
        effects.append({
            "module": module, "feature": feature, "contrast": contrast,
            "direction": int(np.sign(est)) or 1, "size": round(abs(float(est)), 4),
            "size_unit": "cohen_d" if contrasts.CONTRASTS[contrast].kind == "group" else "pearson_r",
            "region": region, "center_mni": centers[0] if centers else None,
            "centers_mni": centers,
        })
    rng = np.random.default_rng([params.seed, 5])
    if params.null:
        best = {"diagnosis": 0.5, "treatment": 0.5}
    else:
        group = (parts["group"] == "patient").to_numpy(float)
        resp = parts["treatment_response"].map({"responder": 1.0, "non-responder": 0.0}).to_numpy(float)
        best = {"diagnosis": round(_best_auc(feats, parts, DIAGNOSIS_FEATURES, group, rng), 4),
                "treatment": round(_best_auc(feats, parts, TREATMENT_FEATURES, resp, rng), 4)}
    # shift of the affected-hand map in patients (mm): mean planted magnitude
    pat = clin["patient"].to_numpy()
    shift = feats["reorganization.shift_mm"].to_numpy()
    return {
        "effects": effects,
        "best_auc": best,
        "best_auc_method": ("quadratic discriminant on the planted latent features, covariates "
                            "(age, sex, site) removed, Monte Carlo with "
                            f"{N_MONTE_CARLO} participants (half fit, half test)"),
        "somatotopy": {"mean_shift_mm_patients": round(float(shift[pat].mean()), 3),
                       "mean_shift_mm_controls": round(float(shift[~pat].mean()), 3)},
        "connectivity_component": _planted_component(params),
        "parameters": params.to_dict(),
    }
