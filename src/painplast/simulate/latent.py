"""The latent model of the synthetic cohort: clinical variables and per-participant truths.

Every planted effect is a shift of a per-participant latent quantity (a regional response
amplitude, a coupling, a gray-matter fraction, a map position...). Images are then made from
these latents (:mod:`painplast.simulate.images`). The same generator, run on a large Monte Carlo
sample, gives the population size of each effect with the simulator's own estimators
(:mod:`painplast.simulate.estimands`) and the theoretical best AUC of the diagnosis, treatment
and chronification targets (quadratic discriminant with the true class distributions).

Sessions. A participant's latents at one session are the trait (what one session alone shows)
plus, when there are several sessions, independent within-person test-retest noise
(:func:`state_noise`, set by the ``retest_icc_*`` parameters) and, at a longitudinal follow-up,
the reversal of part of a treated chronic patient's plasticity in proportion to their pain
relief (:func:`reversal`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import atlas
from .parameters import BMRK3_MEAN_RATINGS, BMRK3_TEMPERATURES, SimulationParameters

PAIN_REGIONS = atlas.PAIN_PROCESSING_REGIONS
GM_REGIONS = atlas.STRUCTURE_REGIONS

# natural units of the latent quantities (percent signal change unless said otherwise)
RESP_MEAN = {"s1_hand": 0.35, "s2": 0.55, "insula_anterior": 0.5, "insula_posterior": 0.6,
             "dacc": 0.55, "thalamus": 0.45, "amygdala": 0.2, "pag": 0.3}
RESP_SD = 0.22
SLOPE_MEAN = 0.14          # % per degC
SLOPE_SD = 0.07
MI_MEAN = 0.3              # modulation index: unmodulated minus modulated response
MI_SD = 0.3
PPI_MEAN = 0.25            # PAG -> rACC coupling gained in the modulated condition
PPI_SD = 0.2
COUPLING_MEAN = 0.2        # mPFC-NAcc latent coupling (Fisher z)
COUPLING_SD = 0.25
DMN_INSULA_MEAN = 0.15     # loading of the insula on the default-mode fluctuation
DMN_INSULA_SD = 0.25
DMN_LOADINGS = {"mpfc": 0.5, "pcc": 0.6, "angular_l": 0.6, "angular_r": 0.6}
GM_REGION_SD = 0.05        # fraction of regional gray matter
GM_GLOBAL_SD = 0.06
GM_SCALE = 0.85            # template GM probability is scaled by this before deviations
HAND_JITTER_MM = 1.0
HAND_WIDTH_MM = 5.0
HAND_WIDTH_CV = 0.08
MEAN_PAIN = 5.5
MEAN_DURATION = 78.0       # months (Gamma(3, 24) + 6)

HAND_CENTERS = {"left_hemisphere": np.array([-38.0, -28.0, 56.0]),
                "right_hemisphere": np.array([38.0, -28.0, 56.0])}

# effects planted on diagnosis-relevant latents (used for the best AUC)
DIAGNOSIS_FEATURES = (
    "sensitization.insula_posterior_slope", "sensitization.dacc_slope",
    "sensitization.thalamus_response", "reorganization.shift_mm", "reorganization.asymmetry",
    "connectivity.mpfc_nacc", "connectivity.dmn_insula", "structure.gm_dlpfc",
    "structure.gm_insula_anterior", "structure.gm_thalamus", "structure.gm_dacc",
    "modulation.dacc_index", "modulation.insula_anterior_index", "modulation.pag_racc_ppi",
)
TREATMENT_FEATURES = ("connectivity.mpfc_nacc", "modulation.dacc_index", "structure.gm_dlpfc")


def site_effects(params: SimulationParameters) -> dict[str, np.ndarray]:
    """Scanner (site) effects, fixed by the seed: additive and multiplicative."""
    rng = np.random.default_rng([params.seed, 7])
    k = params.n_sites

    def spread(lo, hi):
        values = np.linspace(lo, hi, k) if k > 1 else np.array([1.0])
        return rng.permutation(values)

    gain = spread(0.8, 1.2)
    gain = gain / np.sqrt(np.mean(gain**2))
    return {
        "task_gain": gain,                                        # BOLD sensitivity (x)
        "task_offset": rng.normal(0, 0.6 * RESP_SD, k) if k > 1 else np.zeros(1),  # thermode (+)
        "noise_scale": spread(0.8, 1.25),                         # thermal noise level (x)
        "intensity": spread(260.0, 420.0) if k > 1 else np.array([340.0]),  # raw scale (x)
        "gm_offset": rng.normal(0, 0.04, k) if k > 1 else np.zeros(1),       # segmentation (+)
        "gm_gain": spread(0.75, 1.25),                            # segmentation noise (x)
        "motion_scale": spread(0.85, 1.15),
    }


def clinical(params: SimulationParameters, n: int, rng: np.random.Generator,
             exact: bool = True) -> pd.DataFrame:
    """Participants' clinical and demographic variables, plus hidden latents.

    With ``exact``, group and responder counts are balanced exactly within each site (the real
    cohort); otherwise they are drawn (the Monte Carlo sample).
    """
    k = params.n_sites
    site = np.arange(n) % k if exact else rng.integers(0, k, n)
    # share of patients per site; site_confound tilts it from the first to the last site
    tilt = (np.arange(k) / max(k - 1, 1) - 0.5) if k > 1 else np.zeros(1)
    fraction = (params.chronic_fraction + params.subacute_fraction if params.longitudinal
                else params.patient_fraction)
    share = np.clip(fraction + params.site_confound * tilt * 1.6, 0.1, 0.9)
    patient = np.zeros(n, bool)
    if exact:
        for s in range(k):
            idx = np.flatnonzero(site == s)
            n_pat = int(round(len(idx) * share[s]))
            n_pat = min(max(n_pat, 2), len(idx) - 2)
            patient[rng.permutation(idx)[:n_pat]] = True
    else:
        patient = rng.random(n) < share[site]
    age = np.clip(rng.normal(45, 12, n), 18, 78).round(0)
    sex = np.where(rng.random(n) < 0.6, "F", "M")
    pain = np.where(patient, np.clip(rng.normal(MEAN_PAIN, 1.6, n), 1, 10).round(1), 0.0)
    duration = np.where(patient, (rng.gamma(3.0, 24.0, n) + 6).round(0), 0.0)
    side = np.where(rng.random(n) < 0.5, "left", "right")
    diagnosis = np.where(patient, rng.choice(["chronic_back_pain", "fibromyalgia", "crps"], n, p=[0.5, 0.3, 0.2]), "n/a")
    burden = np.where(patient, rng.gamma(4.0, 0.25, n), 0.0)
    responder = np.zeros(n, bool)
    if exact:
        idx = np.flatnonzero(patient)
        responder[rng.permutation(idx)[: int(round(len(idx) * params.responder_fraction))]] = True
    else:
        responder = patient & (rng.random(n) < params.responder_fraction)
    deficit = params.scaled(params.modulation_capacity_deficit)
    capacity = rng.normal(0, 1, n) - deficit * patient
    modulation_score = (20 + 8 * (capacity + rng.normal(0, 0.8, n))).round(1)
    fd_mean = np.where(patient, 0.145, 0.12) * np.exp(rng.normal(0, 0.35, n))
    frame = pd.DataFrame({
        "site_index": site, "patient": patient, "age": age, "sex": sex,
        "pain_intensity": pain, "pain_duration_months": duration, "affected_side": side,
        "diagnosis": diagnosis, "burden": burden, "responder": responder,
        "capacity": capacity, "modulation_score": modulation_score, "mean_fd_target": fd_mean,
    })
    if params.longitudinal:
        frame = _longitudinal_clinical(params, frame, rng, exact)
    return frame


def _allocate(rng, eligible: np.ndarray, site: np.ndarray, share: float, exact: bool,
              floor: int = 0) -> np.ndarray:
    """A share of the eligible participants: exactly per site (``exact``) or drawn."""
    chosen = np.zeros(len(eligible), bool)
    if not exact:
        return eligible & (rng.random(len(eligible)) < share)
    for s in np.unique(site):
        idx = np.flatnonzero(eligible & (site == s))
        k = int(round(len(idx) * share))
        if len(idx) >= 2 * floor:
            k = min(max(k, floor), len(idx) - floor)
        chosen[rng.permutation(idx)[:k]] = True
    return chosen


def _longitudinal_clinical(params: SimulationParameters, clin: pd.DataFrame,
                           rng: np.random.Generator, exact: bool) -> pd.DataFrame:
    """Stage (chronic/subacute), treatment response, pain relief and outcome of a longitudinal
    cohort (drawn after, and from the same generator as, the cross-sectional variables).

    Chronic patients are treated between the sessions; responders (``responder_fraction`` of
    them) get 30-90% pain relief, non-responders -15-29%. Subacute patients (pain for 1-4
    months) are followed without treatment: those whose pain persists (``persisting_fraction``)
    get -15-29% relief, those who recover 60-100%. Subacute patients carry no chronic
    plasticity (no burden-, duration- or pain-driven shifts, no modulation deficit).
    """
    clin = clin.copy()
    n = len(clin)
    site = clin["site_index"].to_numpy()
    patient = clin["patient"].to_numpy()
    share = params.subacute_fraction / (params.chronic_fraction + params.subacute_fraction)
    subacute = _allocate(rng, patient, site, share, exact, floor=2)
    chronic = patient & ~subacute
    responder = _allocate(rng, chronic, site, params.responder_fraction, exact, floor=1)
    persisting = _allocate(rng, subacute, site, params.persisting_fraction, exact, floor=1)
    good = responder | (subacute & ~persisting)
    low, high = np.where(responder, 30.0, np.where(good, 60.0, -15.0)), np.where(responder, 90.0, np.where(good, 100.0, 29.0))
    relief = np.where(patient, (low + (high - low) * rng.random(n)).round(0), np.nan)
    subacute_duration = rng.uniform(1.0, 4.0, n).round(0)
    deficit = params.scaled(params.modulation_capacity_deficit)
    clin["stage"] = np.where(chronic, "chronic", np.where(subacute, "subacute", "n/a"))
    clin["chronic"] = chronic
    clin["subacute"] = subacute
    clin["responder"] = responder
    clin["persisting"] = persisting
    clin["pain_relief"] = relief
    clin["pain_duration_months"] = np.where(subacute, subacute_duration, clin["pain_duration_months"])
    clin["diagnosis"] = np.where(subacute, "subacute_back_pain", clin["diagnosis"])
    clin["burden"] = np.where(subacute, 0.0, clin["burden"])
    # subacute patients have no modulation deficit: their capacity is the controls' (the
    # behavioural score follows it)
    clin["capacity"] = clin["capacity"] + deficit * subacute
    clin["modulation_score"] = (clin["modulation_score"] + 8 * deficit * subacute).round(1)
    return clin


def plastic(clin: pd.DataFrame) -> np.ndarray:
    """1.0 for participants who carry chronic-pain plasticity (patients; chronic ones only in
    a longitudinal design), else 0.0."""
    col = "chronic" if "chronic" in clin else "patient"
    return clin[col].to_numpy(float)


def state_noise(params: SimulationParameters, n: int, rng: np.random.Generator) -> dict:
    """One session's within-person test-retest noise of every latent (z units unless said).

    The variance is ``(1 - icc) / icc`` of the between-person variance of controls, so that a
    latent's test-retest ICC among people who do not change is ``retest_icc_<kind>`` (site and
    nonlinear transforms move the realised value a little: ground_truth.json records it).
    """
    def sd(kind):
        icc = getattr(params, f"retest_icc_{kind}")
        return np.sqrt((1.0 - icc) / icc)

    out = {}
    for r in PAIN_REGIONS:
        out[f"resp_{r}"] = rng.normal(0, sd("response"), n)
        out[f"slope_{r}"] = rng.normal(0, sd("slope"), n)
        out[f"mi_{r}"] = rng.normal(0, sd("modulation"), n)
    out["ppi_pag_racc"] = rng.normal(0, sd("modulation"), n)
    out["coupling_mpfc_nacc"] = rng.normal(0, sd("coupling"), n)
    out["loading_dmn_insula"] = rng.normal(0, sd("coupling"), n)
    out["gm_global"] = rng.normal(0, sd("gm") * GM_GLOBAL_SD, n)      # fraction units
    for r in GM_REGIONS:
        out[f"gm_{r}"] = rng.normal(0, sd("gm"), n)
    out["hand_affected"] = rng.normal(0, sd("somatotopy") * HAND_JITTER_MM, (n, 3))  # mm
    out["hand_unaffected"] = rng.normal(0, sd("somatotopy") * HAND_JITTER_MM, (n, 3))
    out["width_affected"] = rng.normal(0, sd("somatotopy") * HAND_WIDTH_CV, n)      # log units
    out["width_unaffected"] = rng.normal(0, sd("somatotopy") * HAND_WIDTH_CV, n)
    out["rating_offset"] = rng.normal(0, sd("response") * 25.0, n)                  # 0-200 scale
    out["rating_slope"] = rng.normal(0, sd("slope") * 7.4, n)
    return out


def reversal(params: SimulationParameters, clin: pd.DataFrame) -> dict[str, np.ndarray]:
    """Share of each module's planted plasticity gone at follow-up, per participant.

    ``reversal_<module> * max(pain_relief, 0) / 100`` for treated (chronic) patients, capped at
    1; zero for everyone else (subacute patients and controls do not change).
    """
    relief = np.nan_to_num(clin["pain_relief"].to_numpy(float), nan=0.0)
    treated = clin["chronic"].to_numpy(bool)
    base = np.where(treated, np.clip(relief, 0, None) / 100.0, 0.0)
    return {m: np.clip((0.0 if params.null else getattr(params, f"reversal_{m}")) * base, 0.0, 1.0)
            for m in ("sensitization", "reorganization", "connectivity", "structure", "modulation")}


def latents(params: SimulationParameters, clin: pd.DataFrame, rng: np.random.Generator,
            sites: dict[str, np.ndarray], state: dict | None = None,
            change: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Per-participant latent truths in natural units (see the module constants).

    Parameters
    ----------
    state : dict, optional
        One session's test-retest noise (:func:`state_noise`); none: the trait.
    change : dict, optional
        Share of each module's plasticity reversed (:func:`reversal`); none: baseline.
        ``rng`` must be in the same state for every session of a cohort, so that the sessions
        share the trait draws.
    """
    n = len(clin)
    noise = state or {}

    def st(name):
        return noise.get(name, 0.0)

    def kept(module):
        return 1.0 - change[module] if change else 1.0

    s = clin["site_index"].to_numpy()
    pat = plastic(clin)
    burden = clin["burden"].to_numpy()
    resp_centered = np.where(pat > 0, clin["responder"].to_numpy(float) - params.responder_fraction, 0.0)
    sc = params.scaled
    gain = sites["task_gain"][s]
    out = {}
    slope_shift = {"insula_posterior": sc(params.sensitization_slope_insula_posterior),
                   "dacc": sc(params.sensitization_slope_dacc)}
    resp_shift = {"thalamus": sc(params.sensitization_response_thalamus)}
    k_sens = kept("sensitization")
    for r in PAIN_REGIONS:
        z = rng.normal(0, 1, n) + resp_shift.get(r, 0.0) * burden * pat * k_sens + st(f"resp_{r}")
        out[f"resp_{r}"] = (RESP_MEAN[r] + RESP_SD * z + sites["task_offset"][s]) * gain
        z = rng.normal(0, 1, n) + slope_shift.get(r, 0.0) * burden * pat * k_sens + st(f"slope_{r}")
        out[f"slope_{r}"] = (SLOPE_MEAN + SLOPE_SD * z) * gain
    # modulation: capacity drives the dACC and anterior-insula modulation index and PAG-rACC PPI;
    # treatment gives back part of the patients' capacity deficit
    cap = clin["capacity"].to_numpy()
    if change:
        cap = cap + sc(params.modulation_capacity_deficit) * pat * change["modulation"]
    eta = {"dacc": sc(1.0), "insula_anterior": sc(0.8)}
    for r in PAIN_REGIONS:
        z = rng.normal(0, 1, n) + eta.get(r, 0.0) * cap + st(f"mi_{r}")
        if r == "dacc":
            z = z + sc(params.responder_dacc_index) * np.sqrt(1 + eta["dacc"] ** 2) * resp_centered
        out[f"mi_{r}"] = (MI_MEAN + MI_SD * z) * gain
    out["ppi_pag_racc"] = (PPI_MEAN + PPI_SD * (rng.normal(0, 1, n) + sc(params.modulation_ppi_coupling) * cap
                                                + st("ppi_pag_racc"))) * gain
    # connectivity
    k_conn = kept("connectivity")
    z = (rng.normal(0, 1, n) + sc(params.connectivity_mpfc_nacc) * burden * pat * k_conn
         + sc(params.responder_mpfc_nacc) * resp_centered + st("coupling_mpfc_nacc"))
    if "persisting" in clin:
        # subacute patients whose pain will persist carry a coupling those who recover do not
        persisting = clin["persisting"].to_numpy(float) - 0.5
        z = z + sc(params.persisting_mpfc_nacc) * persisting * clin["subacute"].to_numpy(float)
    out["coupling_mpfc_nacc"] = np.clip(np.tanh(COUPLING_MEAN + COUPLING_SD * z), -0.75, 0.75)
    z = rng.normal(0, 1, n) + sc(params.connectivity_dmn_insula) * burden * pat * k_conn + st("loading_dmn_insula")
    out["loading_dmn_insula"] = np.clip(DMN_INSULA_MEAN + DMN_INSULA_SD * z, -0.75, 0.75)
    # gray matter: fraction of the (scaled) template in each region
    age_term = -params.gm_age_slope * (clin["age"].to_numpy() - 45.0)
    glob = rng.normal(0, GM_GLOBAL_SD, n)
    out["gm_global"] = 1.0 + glob + age_term + sites["gm_offset"][s] + st("gm_global")
    dur = clin["pain_duration_months"].to_numpy() / MEAN_DURATION
    loss = {"dlpfc": params.gm_loss_dlpfc, "insula_anterior": params.gm_loss_insula_anterior,
            "thalamus": params.gm_loss_thalamus, "dacc": params.gm_loss_dacc}
    k_gm = kept("structure")
    for r in GM_REGIONS:
        z = (rng.normal(0, 1, n) + st(f"gm_{r}")) * sites["gm_gain"][s] - sc(loss.get(r, 0.0)) * dur * pat * k_gm
        if r == "dlpfc":
            z = z + sc(params.responder_gm_dlpfc) * resp_centered
        out[f"gm_{r}"] = out["gm_global"] + GM_REGION_SD * z
    # somatotopy: map centres (mm) and widths of the affected and unaffected hand
    side = clin["affected_side"].to_numpy()
    affected_hemi = np.where(side == "left", 1.0, -1.0)  # left hand -> right hemisphere (x > 0)
    pain_rel = clin["pain_intensity"].to_numpy() / MEAN_PAIN
    k_som = kept("reorganization")
    magnitude = sc(params.reorganization_shift_mm) * pain_rel * np.clip(rng.normal(1, params.reorganization_shift_cv, n), 0, None) * pat * k_som
    direction = np.stack([0.6 * affected_hemi, np.full(n, 0.2), np.full(n, -0.77)], axis=1)
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    nominal_a = np.stack([38.0 * affected_hemi, np.full(n, -28.0), np.full(n, 56.0)], axis=1)
    center_a = nominal_a + rng.normal(0, HAND_JITTER_MM, (n, 3)) + magnitude[:, None] * direction + st("hand_affected")
    center_u = nominal_a * np.array([-1, 1, 1]) + rng.normal(0, HAND_JITTER_MM, (n, 3)) + st("hand_unaffected")
    width_u = HAND_WIDTH_MM * np.exp(rng.normal(0, HAND_WIDTH_CV, n) + st("width_unaffected"))
    width_a = HAND_WIDTH_MM * np.exp(rng.normal(0, HAND_WIDTH_CV, n) + st("width_affected")) * (1 - sc(params.reorganization_shrink) * pat * k_som)
    for i, axis in enumerate("xyz"):
        out[f"hand_affected_{axis}"] = center_a[:, i]
        out[f"hand_unaffected_{axis}"] = center_u[:, i]
    out["hand_affected_width"] = width_a
    out["hand_unaffected_width"] = width_u
    # ratings: BMRK3 curve, participant offset and slope, patients rate higher (hyperalgesia)
    out["rating_offset"] = rng.normal(0, 25, n) + sc(15.0) * clin["patient"].to_numpy(float) + st("rating_offset")
    out["rating_slope"] = 22.0 + rng.normal(0, 7.4, n) + st("rating_slope")
    return pd.DataFrame(out, index=clin.index)


def session_latents(params: SimulationParameters, clin: pd.DataFrame, rng: np.random.Generator,
                    sites: dict[str, np.ndarray], state_rng: np.random.Generator | None = None
                    ) -> list[pd.DataFrame]:
    """The latents of every session (one frame per :meth:`SimulationParameters.sessions`).

    One session: the trait, drawn from ``rng`` exactly as :func:`latents` draws it. Several:
    each session restarts ``rng`` from its current state (the same trait draws), adds its own
    test-retest noise from ``state_rng`` and, at a longitudinal follow-up, the reversal.
    ``rng`` ends where a single :func:`latents` call would leave it.
    """
    sessions = params.sessions()
    if not sessions:
        return [latents(params, clin, rng, sites)]
    start = rng.bit_generator.state
    change = reversal(params, clin) if params.longitudinal else None
    out = []
    for k in range(len(sessions)):
        rng.bit_generator.state = start
        state = state_noise(params, len(clin), state_rng)
        out.append(latents(params, clin, rng, sites, state, change if k == 1 and change else None))
    return out


def truth_features(lat: pd.DataFrame) -> pd.DataFrame:
    """The features a perfect measurement would give (names as in the findings tables)."""
    f = {}
    for r in PAIN_REGIONS:
        f[f"sensitization.{r}_response"] = lat[f"resp_{r}"]
        f[f"sensitization.{r}_slope"] = lat[f"slope_{r}"]
        f[f"modulation.{r}_index"] = lat[f"mi_{r}"]
    f["modulation.pag_racc_ppi"] = lat["ppi_pag_racc"]
    a = lat[[f"hand_affected_{a}" for a in "xyz"]].to_numpy()
    u = lat[[f"hand_unaffected_{a}" for a in "xyz"]].to_numpy() * np.array([-1, 1, 1])
    f["reorganization.shift_mm"] = np.linalg.norm(a - u, axis=1)
    va, vu = lat["hand_affected_width"] ** 3, lat["hand_unaffected_width"] ** 3
    f["reorganization.asymmetry"] = (vu - va) / (vu + va)
    f["connectivity.mpfc_nacc"] = np.arctanh(lat["coupling_mpfc_nacc"])
    w = lat["loading_dmn_insula"].to_numpy()
    f["connectivity.dmn_insula"] = np.mean([np.arctanh(v * w) for v in DMN_LOADINGS.values()], axis=0)
    for r in GM_REGIONS:
        f[f"structure.gm_{r}"] = lat[f"gm_{r}"]
    f["structure.gm_total"] = lat["gm_global"]
    return pd.DataFrame(f, index=lat.index)


def participants_frame(clin: pd.DataFrame, *, exact: bool = True) -> pd.DataFrame:
    """The participants table columns the contrasts read (for the Monte Carlo sample)."""
    frame = pd.DataFrame({
        "group": np.where(clin["patient"], "patient", "control"),
        "site": [f"s{i + 1}" for i in clin["site_index"]],
        "age": clin["age"], "sex": clin["sex"],
        "pain_intensity": np.where(clin["patient"], clin["pain_intensity"], np.nan),
        "pain_duration_months": np.where(clin["patient"], clin["pain_duration_months"], np.nan),
        "modulation_score": clin["modulation_score"],
        "treatment_response": np.where(clin["patient"], np.where(clin["responder"], "responder", "non-responder"), "n/a"),
        "mean_fd": clin["mean_fd_target"],
    }, index=clin.index)
    if "stage" in clin:
        chronic = clin["chronic"].to_numpy()
        frame["treatment_response"] = np.where(chronic, np.where(clin["responder"], "responder", "non-responder"), "n/a")
        frame["stage"] = clin["stage"].to_numpy()
        frame["pain_relief"] = clin["pain_relief"].to_numpy()
        frame["outcome"] = np.where(clin["subacute"], np.where(clin["persisting"], "persisting", "recovering"), "n/a")
    return frame


def rating_curve(temperature: np.ndarray, offset: float, slope: float) -> np.ndarray:
    """A participant's expected rating (0-200) at each temperature, shaped like BMRK3's."""
    t = np.asarray(BMRK3_TEMPERATURES)
    base = np.interp(temperature, t, BMRK3_MEAN_RATINGS)
    return np.clip(base + offset + (slope - 22.0) * (np.asarray(temperature) - t.mean()), 0, 200)
