"""Sensitization: how strongly, and how steeply with stimulus intensity, the pain system responds.

Subject stage (``pain`` task, one run; see :mod:`painplast.plasticity._firstlevel`):

* voxel-wise maps (smoothed by ``config.smoothing_fwhm``): ``pain_beta``/``pain_t`` (the condition,
  at the participant's mean intensity) and ``pain_x_intensity_beta``/``_t`` (the centred intensity
  modulator, % signal per degC);
* per region of :data:`painplast.atlas.PAIN_PROCESSING_REGIONS`, on unsmoothed ROI-mean data:
  ``<region>_response`` (condition beta, % signal) and ``<region>_slope`` (modulator beta,
  % per degC) -- the a-priori features; ``<region>_threshold_intensity`` (degC at which the
  fitted linear stimulus-response line crosses ``response_threshold`` % signal; NaN when the
  slope is not positive) and ``<region>_rating_coupling`` (beta of the centred trial-rating
  modulator, % signal per 10 rating points, in a separate model with rating as the only
  modulator) -- subject features only, not tested;
* per weight map in ``config.signatures`` (a path, or ``name=path``): its pattern response on
  the condition beta map, ``signature_<name>_dot`` and ``signature_<name>_cosine``, and per
  intensity level (one regressor per level) ``signature_<name>_dot_<level>``.

Group stage: findings (patient-control) for ``<region>_response``, ``<region>_slope`` and
``signature_<name>_dot``; a voxel-wise patient-control t map of ``pain_beta`` (OLS with
covariates age/sex/site; TFCE with family-wise error from ``config.n_permutations`` Freedman-Lane
permutations, :mod:`painplast.stats.permutation`) -> ``clusters``; tables ``roi_by_level`` (stimulus-response curves),
``signature_by_level``, ``forced_choice`` and ``roc``; figure ``stimulus_response``.

Signature responses follow CANlab's ``apply_mask``: the weight map is resampled to the data grid
(continuous interpolation, NaN as 0), so dot products depend on the grid (at 4 mm a sum over
~1/8 the voxels of 2 mm); cosine similarity does not.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
import pandas as pd

from .. import atlas, contrasts
from ..cohort import Cohort, Subject
from ..config import Config
from ..errors import InputError
from ..results import GroupResult, SubjectResult, empty_clusters, figure_png
from . import _firstlevel as fl

NAME = "sensitization"
TASK = "pain"
DEFAULTS = {
    "condition": "pain",                       # trial_type of the painful stimuli
    "confounds_strategy": fl.DEFAULT_CONFOUNDS,
    "fd_threshold": 0.5,                       # scrubbing threshold (mm)
    "noise_model": "ar1",
    "response_threshold": 0.5,                 # % signal, for <region>_threshold_intensity
    "voxelwise": True,                         # voxel-wise maps (subject) and clusters (group)
}


# ----------------------------------------------------------------------------- signatures


def signature_name(spec: str) -> tuple[str, Path]:
    """Name and path of a signature given as ``path`` or ``name=path``.

    The default name is the file name without extensions and a trailing ``_weights``, in lower
    case with non-alphanumerics as ``_``.

    Examples
    --------
    >>> signature_name("/data/siips1_woo2017_weights.nii.gz")[0]
    'siips1_woo2017'
    >>> signature_name("nps=/data/weights_NSF_grouppred_cvpcr.nii")[0]
    'nps'
    """
    text = str(spec)
    if "=" in text and not Path(text).exists():
        name, path = text.split("=", 1)
        return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_"), Path(path)
    path = Path(text)
    stem = re.sub(r"\.nii(\.gz)?$|\.img$|\.hdr$", "", path.name)
    stem = re.sub(r"_weights$", "", stem)
    return re.sub(r"[^a-z0-9]+", "_", stem.lower()).strip("_"), path


def load_weights(path, target=None) -> nib.Nifti1Image:
    """A weight map as a 3-D float64 image, NaN set to 0, optionally resampled onto ``target``.

    Parameters
    ----------
    path : str, Path or nibabel image
        3-D map, or 4-D with a single volume.
    target : nibabel image or (shape, affine), optional
        Grid to resample to (continuous interpolation); NaN from the resampling is set to 0.

    Returns
    -------
    Nifti1Image, 3-D float64

    Examples
    --------
    >>> weights = nib.Nifti1Image(np.random.default_rng(0).normal(size=(91, 109, 91)),
    ...                           np.array([[-2., 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]]))
    >>> load_weights(weights, atlas.brain_mask(4)).shape     # a 2 mm map on the 4 mm grid
    (50, 59, 48)
    """
    from nilearn.image import resample_img

    where = None if isinstance(path, nib.spatialimages.SpatialImage) else path
    try:
        img = path if where is None else nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float64)
    except Exception as error:
        raise InputError(f"cannot read the signature weight map ({error})", path=where,
                         fix="give a NIfTI (or Analyze) weight map in MNI space") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"the weight map has shape {data.shape}; a signature is one 3-D map", path=where,
                         fix="give a 3-D map or a 4-D file with a single volume")
    data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    if not np.any(data):
        raise InputError("the weight map is all zero", path=where, fix="give a non-empty weight map")
    out = nib.Nifti1Image(data, img.affine)
    if target is None:
        return out
    shape, affine = atlas._grid(target)
    if shape == data.shape and np.allclose(affine, img.affine, atol=1e-3):
        return out
    res = resample_img(out, target_affine=affine, target_shape=shape, interpolation="continuous",
                       force_resample=True, copy_header=True)
    return nib.Nifti1Image(np.nan_to_num(np.asarray(res.dataobj, np.float64)), affine)


@lru_cache(maxsize=8)
def _weights_on_grid(path: str, shape: tuple, affine: bytes) -> nib.Nifti1Image:
    return load_weights(path, (shape, np.frombuffer(affine, np.float64).reshape(4, 4)))


def pattern_similarity(img_a, img_b, target) -> float:
    """Cosine similarity of two weight maps after resampling both onto ``target``.

    Parameters
    ----------
    img_a, img_b : str, Path or nibabel image
        Weight maps (3-D, or 4-D with one volume; NaN counts as 0).
    target : str, Path, nibabel image or (shape, affine)
        The common grid (e.g. the 91x109x91 MNI 2 mm grid); continuous interpolation.

    Returns
    -------
    float
        ``<a, b> / (|a| |b|)`` over all voxels of the target grid.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a = nib.Nifti1Image(rng.normal(size=(20, 20, 20)), np.eye(4))
    >>> b = nib.Nifti1Image(-2.0 * a.get_fdata(), np.eye(4))
    >>> round(pattern_similarity(a, b, a), 6)
    -1.0
    """
    if isinstance(target, (str, Path)):
        target = nib.load(str(target))
    a = load_weights(img_a, target).get_fdata()
    b = load_weights(img_b, target).get_fdata()
    return _cosine(a.ravel(), b.ravel())


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else float("nan")


def signature_response(weights: nib.Nifti1Image, beta_img, mask: np.ndarray | None = None) -> tuple[float, float]:
    """Pattern expression of a weight map in a beta map: dot product and cosine similarity.

    Parameters
    ----------
    weights : nibabel image
        Weight map already on the beta map's grid (:func:`load_weights` with ``target``).
    beta_img : nibabel image
        Beta (or contrast) map.
    mask : ndarray of bool, optional
        Voxels to use (default: where the beta map is finite and non-zero).

    Returns
    -------
    dot : float
        ``sum(w * beta)`` over the voxels.
    cosine : float
        ``dot / (|w| |beta|)`` over the same voxels.

    Examples
    --------
    >>> beta = nib.Nifti1Image(np.arange(1.0, 9.0).reshape(2, 2, 2), np.eye(4))
    >>> weights = nib.Nifti1Image(np.ones((2, 2, 2)), np.eye(4))
    >>> dot, cos = signature_response(load_weights(weights, beta), beta)
    >>> float(dot), round(cos, 3)
    (36.0, 0.891)
    """
    w = np.asarray(weights.dataobj, np.float64)
    b = np.asarray(beta_img.dataobj, np.float64)
    if w.shape != b.shape:
        raise InputError(f"weights {w.shape} and beta map {b.shape} are on different grids",
                         fix="resample the weights with load_weights(path, target=beta_img)")
    sel = np.isfinite(b) & (b != 0) if mask is None else (np.asarray(mask, bool) & np.isfinite(b))
    w, b = w[sel], b[sel]
    return float(w @ b), _cosine(w, b)


# ----------------------------------------------------------------------------- subject stage


def subject(subject: Subject, config: Config) -> SubjectResult:
    """Pain-task first level of one participant: maps and sensitization features.

    Parameters
    ----------
    subject : Subject
        Needs a ``pain`` run with BOLD, confounds and events (``intensity``; ``rating`` optional).
    config : Config
        ``hrf_model``, ``high_pass``, ``smoothing_fwhm``, ``roi_radius_mm``, ``signatures`` and
        ``options["sensitization"]`` (see :data:`DEFAULTS`).

    Returns
    -------
    SubjectResult
        ``features``: ``sensitization.<region>_response|_slope|_threshold_intensity|_rating_coupling``,
        ``sensitization.signature_<name>_dot|_cosine|_dot_<level>``; ``maps``: ``pain_beta``,
        ``pain_t``, ``pain_x_intensity_beta``, ``pain_x_intensity_t``; ``arrays``:
        ``roi_by_level`` (regions x levels, % signal) and ``intensity_levels``.

    Examples
    --------
    >>> res = subject(Cohort.from_bids(bids_dir).subject("sub-001"), Config())
    >>> sorted(res.maps)
    ['pain_beta', 'pain_t', 'pain_x_intensity_beta', 'pain_x_intensity_t']
    >>> bool(res.features["sensitization.thalamus_response"] > 0)
    True
    """
    opts = config.module(NAME, DEFAULTS)
    cond = opts["condition"]
    regions = atlas.PAIN_PROCESSING_REGIONS
    slope_col = f"{cond}_x_intensity"
    fits: dict[str, list] = {"B": [], "Br": [], "Bl": [], "maps": [], "levels": []}
    all_events, n_scrubbed = [], 0
    runs = fl.task_runs(subject, TASK, NAME)
    for run in runs:
        events = _pain_events(run, cond)
        all_events.append(events)
        bold = fl.load_bold(run)
        kw = dict(n_volumes=bold.n_volumes, confounds_strategy=opts["confounds_strategy"],
                  fd_threshold=opts["fd_threshold"])
        roi_ts = fl.roi_timeseries(bold, fl.region_masks(regions, bold, config.roi_radius_mm))
        # 1. condition + centred intensity modulator
        X = fl.design_matrix(run, events, config, modulators=("intensity",), **kw)
        n_scrubbed += int(sum(c.startswith("spike_") for c in X.columns))
        fits["B"].append(fl.fit_timeseries(roi_ts, X, opts["noise_model"]))
        # 2. trial ratings as the modulator (coupling of BOLD to perceived pain)
        ratings = pd.to_numeric(events.get("rating", pd.Series(dtype=float)), errors="coerce")
        if ratings.notna().sum() >= 3 and ratings.std() > 0:
            Xr = fl.design_matrix(run, events.assign(rating=ratings / 10.0), config, modulators=("rating",), **kw)
            fits["Br"].append(fl.fit_timeseries(roi_ts, Xr, opts["noise_model"]))
        # 3. one regressor per intensity level (stimulus-response curve, signature per level)
        Xl = fl.design_matrix(run, events, config, modulators=(), split_by="intensity", **kw)
        fits["Bl"].append(fl.fit_timeseries(roi_ts, Xl, opts["noise_model"]))
        # 4. voxel-wise maps (smoothed)
        if opts["voxelwise"] or config.signatures:
            fits["maps"].append(fl.contrast_maps(bold, X, {cond: cond, slope_col: slope_col},
                                                 config.smoothing_fwhm, opts["noise_model"]))
        if config.signatures:
            fits["levels"].append(fl.contrast_maps(bold, Xl, {c: c for c in _level_columns(events, cond)},
                                                   config.smoothing_fwhm, opts["noise_model"]))
        del bold
    events = pd.concat(all_events, ignore_index=True)
    features: dict[str, float] = {}
    B = fl.fixed_effects_table(fits["B"])
    mean_intensity = float(pd.to_numeric(events["intensity"], errors="coerce").mean())
    for r in regions:
        resp, slope = float(B.loc[cond, r]), float(B.loc[slope_col, r])
        features[f"{NAME}.{r}_response"] = resp
        features[f"{NAME}.{r}_slope"] = slope
        features[f"{NAME}.{r}_threshold_intensity"] = (
            mean_intensity + (opts["response_threshold"] - resp) / slope if slope > 0 else float("nan"))
    if fits["Br"]:
        Br = fl.fixed_effects_table(fits["Br"])
        for r in regions:
            features[f"{NAME}.{r}_rating_coupling"] = float(Br.loc[f"{cond}_x_rating", r])
    level_cols = _level_columns(events, cond)
    levels = np.array(sorted(pd.to_numeric(events["intensity"], errors="coerce").dropna().unique()), float)
    Bl = fl.fixed_effects_table(fits["Bl"])
    roi_by_level = Bl.loc[level_cols, list(regions)].to_numpy(float).T
    maps = {}
    if fits["maps"]:
        maps = fl.fixed_effects(fits["maps"]).images(("beta", "t"))
        maps = {k.replace(cond, "pain", 1) if cond != "pain" else k: v for k, v in maps.items()}
    if config.signatures:
        mask = fl.fixed_effects(fits["maps"]).mask
        level_maps = _level_maps(fits["levels"], level_cols)
        for spec in config.signatures:
            name, path = signature_name(spec)
            w = _weights_on_grid(str(path), mask.shape, fits["maps"][0].affine.tobytes())
            dot, cos = signature_response(w, maps["pain_beta"], mask)
            features[f"{NAME}.signature_{name}_dot"] = dot
            features[f"{NAME}.signature_{name}_cosine"] = cos
            for col, lev in zip(level_cols, levels):
                if col in level_maps:
                    d, _ = signature_response(w, level_maps[col], mask)
                    features[f"{NAME}.signature_{name}_dot_{fl._level_name(lev)}"] = d
    info = {"n_trials": int(len(events)), "mean_intensity": mean_intensity, "n_scrubbed": n_scrubbed,
            "levels": [float(v) for v in levels], "runs": [r.name for r in runs]}
    return SubjectResult(NAME, subject.participant_id, features, maps,
                         {"roi_by_level": roi_by_level, "intensity_levels": levels}, info)


def _pain_events(run, cond: str) -> pd.DataFrame:
    """The painful trials of one run, checked (intensity with at least two levels)."""
    events = run.load_events()
    if "trial_type" in events:
        events = events[events["trial_type"].astype(str) == cond]
    else:
        events = events.assign(trial_type=cond)
    if len(events) < 3:
        raise InputError(f"the events have fewer than 3 '{cond}' trials", path=run.events,
                         fix="name the painful trials' trial_type in options['sensitization']['condition']")
    if "intensity" not in events or pd.to_numeric(events["intensity"], errors="coerce").nunique() < 2:
        raise InputError("the pain events need an 'intensity' column with at least two levels", path=run.events,
                         fix="add the stimulus intensity (e.g. temperature in degC) per trial")
    return events


def _level_maps(runs: Sequence[fl.ContrastMaps], level_cols: Sequence[str]) -> dict:
    """Fixed-effects beta map of each intensity level over the runs that have it."""
    out = {}
    for col in level_cols:
        having = [fl.ContrastMaps({col: r.effect[col]}, {col: r.variance[col]}, r.dof, r.mask, r.affine)
                  for r in runs if col in r.effect]
        if having:
            out[col] = fl.fixed_effects(having).images(("beta",))[f"{col}_beta"]
    return out


def _level_columns(events: pd.DataFrame, cond: str) -> list[str]:
    levels = sorted(pd.to_numeric(events["intensity"], errors="coerce").dropna().unique())
    return [f"{cond}_{fl._level_name(v)}" for v in levels]


# ----------------------------------------------------------------------------- group stage


def _feature_table(results: Sequence[SubjectResult]) -> pd.DataFrame:
    return pd.DataFrame({r.participant_id: dict(r.features) for r in results}).T.rename_axis("participant_id")


def forced_choice(high: np.ndarray, low: np.ndarray, alpha: float = 0.05) -> dict:
    """Two-alternative forced choice within participants: is ``high`` > ``low``?

    Parameters
    ----------
    high, low : ndarray, shape (n,)
        Each participant's response to the two conditions.
    alpha : float
        1 - confidence level of the Clopper-Pearson interval.

    Returns
    -------
    dict
        ``n``, ``n_correct``, ``accuracy``, ``ci_low``, ``ci_high`` (exact binomial), ``p``
        (two-sided binomial test against 0.5).

    Examples
    --------
    >>> forced_choice(np.array([2.0, 3, 4, 5]), np.array([1.0, 1, 1, 6]))["n_correct"]
    3
    """
    from scipy.stats import binomtest

    ok = np.isfinite(high) & np.isfinite(low) & (high != low)
    n, k = int(ok.sum()), int(np.sum(high[ok] > low[ok]))
    if n == 0:
        return {"n": 0, "n_correct": 0, "accuracy": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan}
    test = binomtest(k, n, 0.5)
    ci = test.proportion_ci(confidence_level=1 - alpha, method="exact")
    return {"n": n, "n_correct": k, "accuracy": k / n, "ci_low": ci.low, "ci_high": ci.high, "p": test.pvalue}


def single_interval_roc(high: np.ndarray, low: np.ndarray) -> dict:
    """Single-interval classification of ``high`` vs ``low`` responses pooled over participants.

    Returns
    -------
    dict
        ``auc``, ``threshold`` (Youden's J optimum), ``sensitivity``, ``specificity``, ``n``.

    Examples
    --------
    >>> round(single_interval_roc(np.array([2.0, 3, 4]), np.array([0.0, 1, 2.5]))["auc"], 4)
    0.8889
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    high, low = high[np.isfinite(high)], low[np.isfinite(low)]
    if len(high) == 0 or len(low) == 0:
        return {"auc": np.nan, "threshold": np.nan, "sensitivity": np.nan, "specificity": np.nan, "n": 0}
    y = np.r_[np.ones(len(high)), np.zeros(len(low))]
    s = np.r_[high, low]
    fpr, tpr, thr = roc_curve(y, s)
    j = int(np.argmax(tpr - fpr))
    return {"auc": float(roc_auc_score(y, s)), "threshold": float(thr[j]), "sensitivity": float(tpr[j]),
            "specificity": float(1 - fpr[j]), "n": int(len(s))}


def _nearest_label(xyz: np.ndarray) -> str:
    table = atlas.roi_table()
    d = np.linalg.norm(table[["x", "y", "z"]].to_numpy(float) - xyz, axis=1)
    i = int(np.argmin(d))
    name = table.name.iloc[i]
    return name if d[i] <= 12 else f"near {name} ({d[i]:.0f} mm)"


def _second_level(results, parts: pd.DataFrame, config: Config, opts) -> tuple[dict, pd.DataFrame, list[str]]:
    """Patient-control t map of pain_beta with TFCE family-wise inference and its clusters."""
    from ..stats.permutation import permutation_test
    from .structure import cluster_table

    notes = []
    imgs = [r.maps.get("pain_beta") for r in results]
    if any(i is None for i in imgs) or "group" not in parts:
        return {}, empty_clusters(), ["voxel-wise patient-control map skipped (no group column or no maps)"]
    spec = contrasts.CONTRASTS["patient-control"]
    x = contrasts.regressor(parts, spec)
    cov, names = contrasts.covariate_matrix(parts, spec.covariates)
    design = pd.DataFrame({"patient_minus_control": x - np.nanmean(x)})
    for j, n in enumerate(names):
        design[n] = cov[:, j] - np.nanmean(cov[:, j])
    design["intercept"] = 1.0
    ok = design.notna().all(axis=1).to_numpy()
    design = design[ok].reset_index(drop=True)
    imgs = [i for i, keep in zip(imgs, ok) if keep]
    if design.shape[0] - np.linalg.matrix_rank(design.to_numpy()) < 3 or design["patient_minus_control"].std() == 0:
        return {}, empty_clusters(), ["voxel-wise patient-control map skipped (too few participants)"]
    affine = imgs[0].affine
    mask_data = np.all([np.asarray(i.dataobj) != 0 for i in imgs], axis=0)
    Y = np.stack([np.asarray(i.dataobj, np.float64)[mask_data] for i in imgs])
    X = design.to_numpy(float)
    contrast = np.zeros(X.shape[1])
    contrast[list(design.columns).index("patient_minus_control")] = 1.0
    n_perm = int(config.n_permutations)
    res = permutation_test(Y, X, contrast, n_permutations=max(n_perm, 1), tfce=True, mask=mask_data,
                           two_sided=True, random_state=config.random_state)
    tmap = np.zeros(mask_data.shape, np.float64)
    tmap[mask_data] = res.t
    pmap = np.ones(mask_data.shape, np.float64)
    pmap[mask_data] = res.p_fwe_tfce
    maps = {"patient-control_t": nib.Nifti1Image(tmap.astype(np.float32), affine),
            "patient-control_logp_fwe": nib.Nifti1Image((-np.log10(pmap)).astype(np.float32), affine)}
    clusters = cluster_table(tmap, pmap, affine, "patient-control", alpha=config.alpha)
    if len(clusters) == 0:
        clusters = empty_clusters()
    notes.append(f"voxel-wise patient-control: OLS with age, sex, site; TFCE (E=0.5, H=2) with "
                 f"family-wise error from the maximum TFCE over {n_perm} Freedman-Lane permutations")
    return maps, clusters, notes


def _curve_figure(curves: pd.DataFrame) -> bytes:
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    regions = list(dict.fromkeys(curves["region"]))
    ncol = 4
    nrow = int(np.ceil(len(regions) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.0 * ncol, 2.4 * nrow), sharex=True, squeeze=False)
    for ax, region in zip(axes.ravel(), regions):
        part = curves[curves.region == region]
        for group, g in part.groupby("group"):
            ax.errorbar(g["intensity"], g["mean"], yerr=g["sem"], marker="o", ms=3, capsize=2, label=group)
        ax.set_title(region, fontsize=9)
        ax.axhline(0, color="0.7", lw=0.5)
    for ax in axes.ravel()[len(regions):]:
        ax.set_visible(False)
    axes[0, 0].legend(fontsize=7)
    fig.supxlabel("stimulus intensity")
    fig.supylabel("ROI response (% signal)")
    fig.tight_layout()
    return figure_png(fig)


def group(results: list[SubjectResult], cohort: Cohort, config: Config) -> GroupResult:
    """Group statistics of sensitization: findings, voxel-wise map and clusters, signature tests.

    Parameters
    ----------
    results : list of SubjectResult
        Subject-stage results; excluded participants are left out and listed.
    cohort : Cohort
        Participants table (``group``, ``age``, ``sex``, ``site``).
    config : Config

    Returns
    -------
    GroupResult
        ``findings`` (patient-control for the a-priori features), ``clusters``, ``maps``
        (``patient-control_t``), ``tables`` (``features``, ``roi_by_level``, ``signature_by_level``,
        ``forced_choice``, ``roc``, ``excluded``), ``figures`` (``stimulus_response``).

    Examples
    --------
    >>> cohort, cfg = Cohort.from_bids(bids_dir), Config()
    >>> res = group([subject(s, cfg) for s in cohort], cohort, cfg)
    >>> len(res.findings), res.findings["contrast"].unique().tolist()   # 8 regions x (response, slope)
    (16, ['patient-control'])
    """
    opts = config.module(NAME, DEFAULTS)
    excluded = [r for r in results if r.excluded]
    results = [r for r in results if not r.excluded]
    tables: dict[str, pd.DataFrame] = {}
    notes: list[str] = []
    if excluded:
        tables["excluded"] = pd.DataFrame({"participant_id": [r.participant_id for r in excluded],
                                           "reason": [r.excluded for r in excluded]})
    features = _feature_table(results)
    parts = cohort.participants.reindex(features.index)
    signatures = [signature_name(s)[0] for s in config.signatures]
    tested = [f"{NAME}.{r}_{k}" for r in atlas.PAIN_PROCESSING_REGIONS for k in ("response", "slope")]
    tested += [f"{NAME}.signature_{n}_dot" for n in signatures]
    tests = [(f, "patient-control") for f in tested]
    findings = contrasts.findings_table(features, cohort.participants, tests, alpha=config.alpha)
    if "group" not in cohort.participants:
        notes.append("no group column: patient-control findings not computed")
    tables["features"] = features.reset_index()

    # stimulus-response curves
    groups = parts["group"].fillna("all") if "group" in parts else pd.Series("all", index=parts.index)
    rows = []
    for r in results:
        levels = r.arrays.get("intensity_levels")
        curve = r.arrays.get("roi_by_level")
        if levels is None or curve is None:
            continue
        for i, region in enumerate(atlas.PAIN_PROCESSING_REGIONS):
            for lev, val in zip(levels, curve[i]):
                rows.append({"participant_id": r.participant_id, "group": groups[r.participant_id],
                             "region": region, "intensity": float(lev), "response": float(val)})
    figures = {}
    if rows:
        long = pd.DataFrame(rows)
        curves = (long.groupby(["region", "group", "intensity"], sort=False)["response"]
                  .agg(mean="mean", sem=lambda v: v.std(ddof=1) / np.sqrt(len(v)), n="count").reset_index())
        tables["roi_by_level"] = curves
        figures["stimulus_response"] = _curve_figure(curves)

    # signatures by level, forced choice, ROC
    sig_rows, fc_rows, roc_rows = [], [], []
    for name in signatures:
        prefix = f"{NAME}.signature_{name}_dot_"
        cols = [c for c in features.columns if c.startswith(prefix)]
        if not cols:
            continue
        lev = {c: float(c[len(prefix):].replace("p", ".").replace("m", "-")) for c in cols}
        cols = sorted(cols, key=lev.get)
        for c in cols:
            for g, v in features[c].groupby(groups):
                sig_rows.append({"signature": name, "intensity": lev[c], "group": g, "mean": v.mean(),
                                 "sem": v.std(ddof=1) / np.sqrt(v.count()), "n": int(v.count())})
        high, low = features[cols[-1]].to_numpy(float), features[cols[0]].to_numpy(float)
        fc_rows.append({"signature": name, "high": lev[cols[-1]], "low": lev[cols[0]],
                        **forced_choice(high, low, config.alpha)})
        roc_rows.append({"signature": name, "high": lev[cols[-1]], "low": lev[cols[0]], **single_interval_roc(high, low)})
    if sig_rows:
        tables["signature_by_level"] = pd.DataFrame(sig_rows)
        tables["forced_choice"] = pd.DataFrame(fc_rows)
        tables["roc"] = pd.DataFrame(roc_rows)

    maps, clusters = {}, None
    if opts["voxelwise"] and len(results) >= 4:
        maps, clusters, more = _second_level(results, parts, config, opts)
        notes += more
    return GroupResult(NAME, findings, clusters, tables, maps, figures, tuple(notes))
