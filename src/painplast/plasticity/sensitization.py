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

from .. import atlas
from ..cohort import Cohort, Subject
from ..config import Config
from ..errors import InputError
from ..results import GroupResult, SubjectResult
from . import Declaration, _figures, _group, _secondlevel
from ._images import load_volume
from . import _firstlevel as fl

__all__ = ["DECLARATION", "DEFAULTS", "a_priori_tests", "forced_choice", "group", "load_weights",
           "pattern_similarity", "signature_name", "signature_response", "single_interval_roc",
           "subject"]

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
    img, data = load_volume(path, "signature weight map",
                            fix="give a NIfTI (or Analyze) weight map in MNI space")
    data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    if not np.any(data):
        raise InputError("the weight map is all zero", path=where, fix="give a non-empty weight map")
    out = nib.Nifti1Image(data, img.affine)
    if target is None:
        return out
    shape, affine = atlas.grid(target)
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
                    features[f"{NAME}.signature_{name}_dot_{fl.level_name(lev)}"] = d
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
    return [f"{cond}_{fl.level_name(v)}" for v in levels]


# ----------------------------------------------------------------------------- group stage


def a_priori_tests(config: Config | None = None) -> list[tuple[str, str]]:
    """The findings rows: each region's response and slope, and each signature's response.

    Examples
    --------
    >>> len(a_priori_tests()), a_priori_tests()[0]
    (16, ('sensitization.s1_hand_response', 'patient-control'))
    """
    signatures = [signature_name(s)[0] for s in (config.signatures if config else ())]
    tested = [f"{NAME}.{r}_{k}" for r in atlas.PAIN_PROCESSING_REGIONS for k in ("response", "slope")]
    tested += [f"{NAME}.signature_{n}_dot" for n in signatures]
    return [(f, "patient-control") for f in tested]


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


def _voxelwise(results: Sequence[SubjectResult], participants: pd.DataFrame,
               config: Config) -> _secondlevel.SecondLevel:
    """Patient-control second level of ``pain_beta`` in the voxels every map covers."""
    imgs = [r.maps.get("pain_beta") for r in results]
    if any(i is None for i in imgs):
        return _secondlevel.SecondLevel(notes=["voxel-wise patient-control map skipped (no maps)"])
    mask = np.all([np.asarray(i.dataobj) != 0 for i in imgs], axis=0)
    Y = np.stack([np.asarray(i.dataobj, np.float64)[mask] for i in imgs])
    return _secondlevel.second_level(Y, mask, imgs[0].affine, participants, ["patient-control"],
                                     n_permutations=max(int(config.n_permutations), 1),
                                     alpha=config.alpha, random_state=config.random_state)


def _curve_figure(curves: pd.DataFrame) -> bytes:
    """Each region's mean stimulus-response curve per group, with standard errors."""
    def draw(ax, region):
        for name, g in curves[curves.region == region].groupby("group"):
            ax.errorbar(g["intensity"], g["mean"], yerr=g["sem"], marker="o", ms=3, capsize=2, label=name)
        ax.set_title(region, fontsize=9)
        ax.axhline(0, color="0.7", lw=0.5)

    return _figures.small_multiples(list(dict.fromkeys(curves["region"])), draw, "stimulus intensity",
                                    "ROI response (% signal)", sharex=True)


def group(results: list[SubjectResult], cohort: Cohort, config: Config) -> GroupResult:
    """Group statistics of sensitization: findings, voxel-wise map and clusters, signature tests.

    The shared group stage (:func:`painplast.plasticity._group.run`: the feature table, the
    excluded participants, the a-priori findings with Holm's correction), then this module's
    own results.

    Returns
    -------
    GroupResult
        ``findings`` (patient-control for the a-priori features); the voxel-wise patient-control
        GLM of ``pain_beta`` (:func:`painplast.plasticity._secondlevel.second_level`): ``clusters``,
        ``maps`` ``patient_control_t``, ``_tfce``, ``_logp_fwe_tfce`` and the table
        ``voxelwise``; tables ``roi_by_level`` (stimulus-response curves), ``signature_by_level``,
        ``forced_choice``, ``roc``; figure ``stimulus_response``.

    Examples
    --------
    >>> cohort, cfg = Cohort.from_bids(bids_dir), Config()
    >>> res = group([subject(s, cfg) for s in cohort], cohort, cfg)
    >>> len(res.findings), res.findings["contrast"].unique().tolist()   # 8 regions x (response, slope)
    (16, ['patient-control'])
    """
    return _group.run(DECLARATION, results, cohort, config, _group_specific)


def _response_curves(results: Sequence[SubjectResult], groups: pd.Series) -> pd.DataFrame:
    """Mean, SEM and n of each region's response per group and intensity level."""
    rows = []
    for r in results:
        levels, curve = r.arrays.get("intensity_levels"), r.arrays.get("roi_by_level")
        if levels is None or curve is None:
            continue
        for i, region in enumerate(atlas.PAIN_PROCESSING_REGIONS):
            for lev, val in zip(levels, curve[i]):
                rows.append({"participant_id": r.participant_id, "group": groups[r.participant_id],
                             "region": region, "intensity": float(lev), "response": float(val)})
    if not rows:
        return pd.DataFrame()
    return (pd.DataFrame(rows).groupby(["region", "group", "intensity"], sort=False)["response"]
            .agg(mean="mean", sem=lambda v: v.std(ddof=1) / np.sqrt(len(v)), n="count").reset_index())


def _signature_tables(features: pd.DataFrame, groups: pd.Series, config: Config) -> dict[str, pd.DataFrame]:
    """Signature response by intensity level and group, forced choice and ROC (high vs low)."""
    sig_rows, fc_rows, roc_rows = [], [], []
    for name in (signature_name(s)[0] for s in config.signatures):
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
        pair = {"signature": name, "high": lev[cols[-1]], "low": lev[cols[0]]}
        fc_rows.append({**pair, **forced_choice(high, low, config.alpha)})
        roc_rows.append({**pair, **single_interval_roc(high, low)})
    if not sig_rows:
        return {}
    return {"signature_by_level": pd.DataFrame(sig_rows), "forced_choice": pd.DataFrame(fc_rows),
            "roc": pd.DataFrame(roc_rows)}


def _group_specific(data: _group.GroupData) -> _group.Specific:
    """Stimulus-response curves, signature tests and the voxel-wise patient-control map."""
    parts = data.participants
    groups = parts["group"].fillna("all") if "group" in parts else pd.Series("all", index=parts.index)
    out = _group.Specific(tables=_signature_tables(data.features, groups, data.config))
    curves = _response_curves(data.results, groups)
    if len(curves):
        out.tables["roi_by_level"] = curves
        out.figures["stimulus_response"] = _curve_figure(curves)
    if data.options["voxelwise"]:
        second = _voxelwise(data.results, parts, data.config)
        out.maps, out.notes = second.maps, second.notes
        if second.maps:
            out.clusters, out.tables["voxelwise"] = second.clusters, second.summary
    return out


DECLARATION = Declaration(
    name=NAME, cost=1.3, title="Sensitization", task=TASK, bold=True, subject=subject, group=group,
    defaults=DEFAULTS, tests=a_priori_tests,
    description="Peripheral and central sensitization: amplified responses to graded noxious "
    "stimuli. Measured per participant as the pain-task response and the stimulus-response slope "
    "in each pain-processing region, and as the expression of pain signatures.")
