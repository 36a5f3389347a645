"""Reorganization: where, and how large, the affected body part's map in S1/M1 is.

Subject stage (``somatotopy`` task, conditions ``affected_hand`` and ``unaffected_hand``; see
:mod:`painplast.plasticity._firstlevel` for the GLM):

* voxel-wise maps of both conditions, smoothed by ``config.smoothing_fwhm``: ``affected_hand_beta``,
  ``affected_hand_t``, ``unaffected_hand_beta``, ``unaffected_hand_t``; and the *unsmoothed* betas
  used for localisation, ``affected_hand_beta_unsmoothed``, ``unaffected_hand_beta_unsmoothed``
  (smoothing would widen every map by the kernel and dilute a shrinkage);
* per hand, in the hemisphere contralateral to it (left hand -> right hemisphere, x > 0), inside a
  search sphere of ``search_radius_mm`` around the atlas S1 hand area (``s1_hand_l``/``_r``):

  - the *peak*: the voxel of largest t in the smoothed t map (unsmoothed when
    ``config.smoothing_fwhm`` is None), MNI mm, and that t (``peak_t_*``);
  - the *cluster*: grown from the largest unsmoothed beta within 8 mm of the peak, the voxels above
    ``threshold_fraction`` x that beta, connected (26-neighbour) to it; a relative threshold, so
    the extent does not depend on the amplitude;
  - the *centroid* (sub-voxel, MNI mm). ``localization="gaussian"`` (default): the centre of an
    isotropic 3-D Gaussian ``A exp(-|x - c|^2 / (2 w^2))`` fitted by bounded least squares to the
    unsmoothed betas within ``fit_radius_mm`` of the cluster's centroid; the extent is the volume
    where the fitted Gaussian exceeds ``threshold_fraction`` of its height,
    ``4/3 pi (w sqrt(2 ln(1/f)))^3`` mm^3. ``localization="centroid"``: the centroid of the
    cluster weighted by ``beta - threshold``, and the extent is the cluster's volume (voxel
    count x voxel volume). The fit is used because at 4 mm voxels the thresholded cluster of a
    5 mm map holds ~15 voxels: its voxel count is coarse and its centroid is pulled towards the
    grid. When the fit does not converge inside the search sphere, the centroid estimate is used
    and ``info["fallback"]`` says so.

* features (``reorganization.`` prefix): ``shift_mm`` -- distance between the affected centroid
  and the mirror image (x -> -x) of the unaffected centroid; ``asymmetry`` --
  ``(V_unaffected - V_affected) / (V_unaffected + V_affected)``, V the extent (mm^3);
  ``extent_affected_mm3``, ``extent_unaffected_mm3``; ``width_affected_mm``/``_unaffected_mm``
  (fitted Gaussian SD; NaN for ``"centroid"``); ``centroid_affected_{x,y,z}``,
  ``centroid_unaffected_{x,y,z}``, ``peak_affected_{x,y,z}``, ``peak_unaffected_{x,y,z}`` (MNI mm);
  ``peak_t_affected``, ``peak_t_unaffected``; ``laterality_affected``, ``laterality_unaffected`` --
  hemispheric asymmetry of activation, ``(C - I) / (C + I)`` with C and I the summed unsmoothed
  t above ``laterality_t`` in the contralateral and the ipsilateral search sphere (+1: entirely
  contralateral; NaN when neither side has such a voxel).

The affected side comes from the participants' ``affected_side`` (``left``/``right``). Where it is
n/a (controls) or ``bilateral``, ``unknown_side="data"`` (default) reads it from the maps: the side
whose contralateral S1 holds the ``affected_condition`` map (and ipsilateral S1 the
``unaffected_condition`` map) by a peak-t margin of at least ``min_peak_t``; without such evidence,
and with ``unknown_side="hash"``, it is a fixed pseudo-random side derived from the participant
ID: ``left`` if the first byte of ``sha256(participant_id)`` is even, else ``right``.
``info["affected_side_source"]`` says which (``participants.tsv``, ``data``, ``pseudo-random``).
The data are needed because the condition labels name a stimulated hand: a pseudo-random side
that disagrees with the hand that was stimulated puts the search sphere over the wrong
hemisphere, where that condition has no map. ``shift_mm`` does not depend on a consistent side
choice (mirroring is an isometry); ``asymmetry`` changes sign with it. A patient whose listed side
contradicts the maps gets ``info["side_warning"]``.

``maps="s1"`` fits only the two S1 search spheres (plus a margin for the smoothing kernel): the
same features in a fraction of the time, but the output maps are zero elsewhere.

A participant whose map is not found (peak t below ``min_peak_t`` in a search sphere) is excluded
(``info["excluded"]``); one without a somatotopy run raises :class:`~painplast.errors.InputError`.

Group stage: findings for ``shift_mm`` and ``asymmetry`` with the ``patient-control`` and
``pain_intensity`` contrasts (:func:`painplast.contrasts.findings_table`); table ``correlations``
(Pearson and Spearman correlation of each a-priori feature with pain intensity in patients, with
95% Fisher-z intervals; Spearman's with the Bonett & Wright 2000 standard error); tables
``features`` and ``excluded``; figures ``shift_vs_pain`` and ``centroids``.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage, optimize
from scipy import stats as _st

from .. import atlas
from ..cohort import Cohort, Subject
from ..config import Config
from ..errors import InputError
from ..results import GroupResult, SubjectResult, figure_png
from . import Declaration, _group
from . import _firstlevel as fl

__all__ = ["A_PRIORI", "CONTRASTS", "DECLARATION", "DEFAULTS", "a_priori_tests",
           "correlation_table", "group", "subject"]

NAME = "reorganization"
TASK = "somatotopy"
DEFAULTS = {
    "affected_condition": "affected_hand",      # trial_type of stimulation of the affected side
    "unaffected_condition": "unaffected_hand",  # trial_type of stimulation of the other side
    "confounds_strategy": fl.DEFAULT_CONFOUNDS,
    "fd_threshold": 0.5,                        # scrubbing threshold (mm)
    "noise_model": "ar1",
    "search_radius_mm": 20.0,                   # search sphere around the atlas S1 hand area
    "threshold_fraction": 0.5,                  # cluster threshold, fraction of the peak beta
    "localization": "gaussian",                 # "gaussian" (fit) or "centroid" (weighted)
    "fit_radius_mm": 10.0,                      # Gaussian fit: voxels this close to the centroid
    "min_peak_t": 3.1,                          # below this in a search sphere: map not found
    "laterality_t": 3.1,                        # t threshold of the laterality index
    "unknown_side": "data",                     # side when affected_side is n/a: "data" or "hash"
    "maps": "whole_brain",                      # "whole_brain" maps, or "s1": fit the S1 spheres only
}
#: A-priori features (findings rows) and their contrasts.
A_PRIORI = ("reorganization.shift_mm", "reorganization.asymmetry")
CONTRASTS = ("patient-control", "pain_intensity")
_HANDS = ("affected", "unaffected")
_MIRROR = np.array([-1.0, 1.0, 1.0])


# ----------------------------------------------------------------------------------- sides


def _pseudo_random_side(participant_id: str) -> str:
    """``left`` or ``right``, fixed by the participant ID (first byte of its SHA-256 even: left)."""
    return "left" if hashlib.sha256(str(participant_id).encode()).digest()[0] % 2 == 0 else "right"


def _affected_side(subject: Subject) -> tuple[str, str]:
    """(side, source): the affected side and whether it came from participants.tsv."""
    value = subject.info.get("affected_side")
    text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip().lower()
    if text in ("left", "l"):
        return "left", "participants.tsv"
    if text in ("right", "r"):
        return "right", "participants.tsv"
    if text in ("", "n/a", "na", "nan", "none", "bilateral", "both"):
        return _pseudo_random_side(subject.participant_id), "pseudo-random"
    raise InputError(f"affected_side of {subject.participant_id} is '{value}'", path="participants.tsv",
                     fix="use left, right or n/a in the affected_side column")


def _hemisphere_sign(side: str) -> float:
    """x sign of the hemisphere contralateral to a body side (left hand -> right hemisphere, +1)."""
    return 1.0 if side == "left" else -1.0


# ----------------------------------------------------------------------------------- localisation


def _s1_hand(hemisphere: float) -> atlas.ROI:
    return atlas.roi("s1_hand_r" if hemisphere > 0 else "s1_hand_l")


def _search_mask(hemisphere: float, mask: np.ndarray, affine: np.ndarray, radius: float) -> np.ndarray:
    """(X, Y, Z) bool: brain voxels within ``radius`` mm of the S1 hand area of one hemisphere."""
    return atlas.sphere_mask(_s1_hand(hemisphere).center, (mask.shape, affine), radius) & mask


def _gaussian_fit(xyz: np.ndarray, y: np.ndarray, start: np.ndarray, bound_center: np.ndarray,
                  bound_radius: float) -> np.ndarray | None:
    """Least-squares isotropic Gaussian ``A exp(-|x-c|^2/(2 w^2))`` (no baseline: GLM betas are 0 off-map).

    Parameters
    ----------
    xyz : ndarray, shape (n, 3)
        Voxel centres (mm).
    y : ndarray, shape (n,)
        Betas.
    start : ndarray, shape (3,)
        Initial centre (mm).
    bound_center, bound_radius
        The centre is kept in the box ``bound_center +- bound_radius``.

    Returns
    -------
    ndarray, shape (5,) ``(A, cx, cy, cz, w)``, or None when the fit fails.
    """
    if len(y) < 6:
        return None

    def residual(p):
        return p[0] * np.exp(-np.sum((xyz - p[1:4]) ** 2, axis=1) / (2.0 * np.exp(2.0 * p[4]))) - y

    def jacobian(p):
        w2 = np.exp(2.0 * p[4])
        diff = xyz - p[1:4]
        r2 = np.sum(diff**2, axis=1)
        g = np.exp(-r2 / (2.0 * w2))
        return np.column_stack([g, p[0] * g[:, None] * diff / w2, p[0] * g * r2 / w2])

    start = np.clip(start, bound_center - bound_radius + 1e-6, bound_center + bound_radius - 1e-6)
    amp = max(float(np.max(y)), 1e-3)
    lo = np.r_[0.0, bound_center - bound_radius, np.log(1.0)]
    hi = np.r_[10.0 * amp, bound_center + bound_radius, np.log(20.0)]
    p0 = np.clip(np.r_[amp, start, np.log(4.0)], lo + 1e-9, hi - 1e-9)
    try:
        fit = optimize.least_squares(residual, p0, jac=jacobian, bounds=(lo, hi), x_scale="jac")
    except (ValueError, np.linalg.LinAlgError):
        return None
    if not fit.success or not np.all(np.isfinite(fit.x)):
        return None
    return np.r_[fit.x[:4], np.exp(fit.x[4])]


def _locate(beta: np.ndarray, peak_map: np.ndarray, mask: np.ndarray, affine: np.ndarray, hemisphere: float,
            opts: dict) -> dict:
    """Peak, cluster, centroid and extent of one hand's map in one hemisphere.

    Parameters
    ----------
    beta : ndarray, shape (X, Y, Z)
        Unsmoothed beta map (localisation).
    peak_map : ndarray, shape (X, Y, Z)
        t map whose maximum in the search sphere is the peak (the smoothed t map when there is one).
    mask : ndarray of bool, shape (X, Y, Z)
        Brain mask.
    affine : ndarray, shape (4, 4)
    hemisphere : float
        +1 (right, x > 0) or -1 (left).
    opts : dict
        Module options (``search_radius_mm``, ``threshold_fraction``, ``localization``,
        ``fit_radius_mm``).

    Returns
    -------
    dict
        ``peak`` (3,) MNI mm and ``peak_t``: the maximum of ``peak_map`` in the search sphere;
        ``centroid`` (3,) MNI mm, ``extent_mm3``, ``width_mm`` (NaN for ``"centroid"``),
        ``cluster_voxels``, ``cluster_centroid`` (3,), ``fallback`` (bool), ``search`` (mask).
        The cluster grows from the largest unsmoothed beta within 8 mm of the peak.
    """
    roi = _s1_hand(hemisphere)
    radius = float(opts["search_radius_mm"])
    search = _search_mask(hemisphere, mask, affine, radius)
    if not search.any():
        raise InputError("the S1 hand search region lies outside the brain mask",
                         fix="give images in MNI space (fMRIPrep space-MNI152NLin2009cAsym)")
    # coordinates of the search sphere's voxels only (every voxel used below lies in it), in C
    # order as boolean indexing of the full grid gives them
    inside = np.flatnonzero(search)
    xyz = atlas.voxel_coordinates_of(np.unravel_index(inside, mask.shape), affine)
    voxel_volume = float(abs(np.linalg.det(affine[:3, :3])))
    top = int(np.argmax(peak_map.flat[inside]))          # the first maximum in C order, as on the grid
    peak_xyz = xyz[top]
    out = {"search": search, "peak": peak_xyz, "peak_t": float(peak_map.flat[inside[top]])}
    near_peak = np.linalg.norm(xyz - peak_xyz, axis=-1) <= 8.0
    seed = inside[int(np.argmax(np.where(near_peak, beta.flat[inside], -np.inf)))]
    nothing = {"centroid": np.full(3, np.nan), "extent_mm3": np.nan, "width_mm": np.nan,
               "cluster_voxels": 0, "cluster_centroid": np.full(3, np.nan), "fallback": True}
    if not beta.flat[seed] > 0:
        return {**out, **nothing}
    frac = float(opts["threshold_fraction"])
    threshold = frac * beta.flat[seed]
    labels, _ = ndimage.label(search & (beta >= threshold), structure=np.ones((3, 3, 3)))
    cluster = labels.flat[inside] == labels.flat[seed]
    weights = beta.flat[inside[cluster]] - threshold
    if weights.sum() <= 0:
        weights = np.ones(int(cluster.sum()))
    centroid = (weights[:, None] * xyz[cluster]).sum(axis=0) / weights.sum()
    out.update(cluster_voxels=int(cluster.sum()), cluster_centroid=centroid)
    by_count = {"centroid": centroid, "extent_mm3": cluster.sum() * voxel_volume, "width_mm": np.nan}
    if opts["localization"] == "centroid":
        return {**out, **by_count, "fallback": False}
    near = np.linalg.norm(xyz - centroid, axis=-1) <= float(opts["fit_radius_mm"])
    fit = _gaussian_fit(xyz[near], beta.flat[inside[near]], centroid, np.asarray(roi.center, float), radius)
    if fit is None or np.linalg.norm(fit[1:4] - np.asarray(roi.center)) > radius:
        return {**out, **by_count, "fallback": True}
    half = fit[4] * np.sqrt(2.0 * np.log(1.0 / frac))
    return {**out, "centroid": fit[1:4], "extent_mm3": 4.0 / 3.0 * np.pi * half**3,
            "width_mm": float(fit[4]), "fallback": False}


def _side_evidence(peak_maps: dict, spheres: dict) -> float:
    """How much better "affected side = left" explains the maps than "right" (difference of peak t).

    Left affected side: the affected-hand map peaks in the right S1 and the unaffected-hand map
    in the left S1. Returns ``(max t_aff[R] + max t_unaff[L]) - (max t_aff[L] + max t_unaff[R])``,
    halved; positive favours ``left``.
    """
    def peak(hand, hemisphere):
        values = peak_maps[hand][spheres[hemisphere]]
        return float(values.max()) if values.size else 0.0
    return 0.5 * ((peak("affected", 1.0) + peak("unaffected", -1.0))
                  - (peak("affected", -1.0) + peak("unaffected", 1.0)))


def _laterality(tmap: np.ndarray, contra: np.ndarray, ipsi: np.ndarray, t_threshold: float) -> float:
    """``(C - I) / (C + I)`` of summed supra-threshold t in two masks (NaN if both are empty)."""
    c = float(np.sum(tmap[contra][tmap[contra] > t_threshold]))
    i = float(np.sum(tmap[ipsi][tmap[ipsi] > t_threshold]))
    return (c - i) / (c + i) if c + i > 0 else np.nan


def _check_options(opts: dict) -> None:
    if opts["localization"] not in ("gaussian", "centroid"):
        raise InputError(f"unknown localization '{opts['localization']}' for module reorganization",
                         fix="use 'gaussian' or 'centroid'")
    if not 0 < float(opts["threshold_fraction"]) < 1:
        raise InputError("threshold_fraction must lie between 0 and 1 (exclusive)",
                         fix="use e.g. 0.5 (half of the peak beta)")
    if opts["unknown_side"] not in ("data", "hash"):
        raise InputError(f"unknown_side must be 'data' or 'hash', not '{opts['unknown_side']}'",
                         fix="use 'data' (infer from the maps) or 'hash' (pseudo-random from the ID)")
    if opts["maps"] not in ("whole_brain", "s1"):
        raise InputError(f"maps must be 'whole_brain' or 's1', not '{opts['maps']}'",
                         fix="use 'whole_brain' (default) or 's1' (faster: fit only the S1 hand regions)")
    if float(opts["search_radius_mm"]) <= 0 or float(opts["fit_radius_mm"]) <= 0:
        raise InputError("search_radius_mm and fit_radius_mm must be positive", fix="use e.g. 20 and 10")


# ----------------------------------------------------------------------------------- subject


def subject(subject: Subject, config: Config) -> SubjectResult:
    """Somatotopic maps of the affected and unaffected hand, their centroids, shift and extents.

    Parameters
    ----------
    subject : painplast.cohort.Subject
        A participant with a ``somatotopy`` run (fMRIPrep BOLD, confounds, events with the
        ``affected_condition`` and ``unaffected_condition`` trial types).
    config : painplast.config.Config
        ``smoothing_fwhm`` (output maps), ``hrf_model``, ``high_pass``; module options
        :data:`DEFAULTS` under ``options["reorganization"]``.

    Returns
    -------
    SubjectResult
        ``features``: see the module docstring (``reorganization.shift_mm``, ...); ``maps``:
        ``{affected,unaffected}_hand_{beta,t}`` (smoothed) and ``..._beta_unsmoothed``, 3-D float32
        images on the run's grid; ``info``: affected side and its source, cluster sizes (voxels),
        the t thresholds used, whether the fit fell back to the centroid.

    Raises
    ------
    InputError
        No somatotopy run, an events file without the two conditions, or bad options.

    Examples
    --------
    >>> cohort = Cohort.from_bids(bids_dir)
    >>> res = subject(cohort.subject("sub-001"), Config(options={"reorganization": {"maps": "s1"}}))
    >>> bool(0 <= res.features["reorganization.shift_mm"] < 20)   # mm
    True
    """
    opts = config.module(NAME, DEFAULTS)
    _check_options(opts)
    conditions = {hand: str(opts[f"{hand}_condition"]) for hand in _HANDS}
    spec = {f"{hand}_hand": conditions[hand] for hand in _HANDS}
    radius = float(opts["search_radius_mm"])
    fwhm = config.smoothing_fwhm
    runs = fl.task_runs(subject, TASK, NAME)
    raw_runs, smooth_runs, brains = [], [], []
    for run in runs:
        events = run.load_events()
        present = set(events["trial_type"].astype(str)) if "trial_type" in events else set()
        missing = [c for c in conditions.values() if c not in present]
        if missing:
            raise InputError(f"the events have no '{missing[0]}' trials", path=run.events,
                             fix="name the conditions affected_hand/unaffected_hand, or set the module options "
                                 "affected_condition/unaffected_condition")
        bold = fl.load_bold(run)
        brains.append(bold.mask)
        design = fl.design_matrix(run, events, config, n_volumes=bold.n_volumes, modulators=(),
                                  confounds_strategy=opts["confounds_strategy"],
                                  fd_threshold=float(opts["fd_threshold"]))
        if opts["maps"] == "s1":
            # fit only the two S1 search spheres, with a margin that holds the smoothing kernel
            margin = 4.0 * (fwhm or 0.0) / np.sqrt(8 * np.log(2)) + 2.0
            keep = (_search_mask(-1.0, bold.mask, bold.affine, radius + margin)
                    | _search_mask(1.0, bold.mask, bold.affine, radius + margin))
            bold = fl.BoldData(np.ascontiguousarray(bold.data[:, keep[bold.mask]]), keep, bold.affine,
                               bold.repetition_time, bold.source)
        raw_runs.append(fl.contrast_maps(bold, design, spec, None, opts["noise_model"]))
        if fwhm:
            smooth_runs.append(fl.contrast_maps(bold, design, spec, fwhm, opts["noise_model"]))
        del bold
    combined = fl.fixed_effects(raw_runs)
    mask, affine = combined.mask, combined.affine
    brain = np.logical_and.reduce(brains)
    spheres = {h: _search_mask(h, brain, affine, radius) for h in (-1.0, 1.0)}
    raw = combined.images(("beta", "t"))
    smooth = fl.fixed_effects(smooth_runs).images(("beta", "t")) if fwhm else raw
    maps = {**smooth, **{f"{k}_unsmoothed": img for k, img in raw.items() if k.endswith("_beta")}}
    arrays = {k: np.asarray(img.dataobj, float) for k, img in raw.items()}
    peak_maps = {h: np.asarray(smooth[f"{h}_hand_t"].dataobj, float) for h in _HANDS}

    side, source = _affected_side(subject)
    evidence = _side_evidence(peak_maps, spheres)
    info = {"localization": opts["localization"], "side_evidence_t": round(evidence, 3),
            "runs": [r.name for r in runs]}
    if source == "pseudo-random" and opts["unknown_side"] == "data" and abs(evidence) >= float(opts["min_peak_t"]):
        side, source = ("left" if evidence > 0 else "right"), "data"
    elif source == "participants.tsv" and evidence * _hemisphere_sign(side) < -float(opts["min_peak_t"]):
        info["side_warning"] = (f"affected_side is {side}, but the {conditions['affected']} map lies in the "
                                f"{'left' if side == 'left' else 'right'} hemisphere (ipsilateral)")
    info.update(affected_side=side, affected_side_source=source)
    hemi = {"affected": _hemisphere_sign(side)}
    hemi["unaffected"] = -hemi["affected"]
    found, feats = {}, {}
    for hand in _HANDS:
        loc = _locate(arrays[f"{hand}_hand_beta"], peak_maps[hand], mask, affine, hemi[hand], opts)
        found[hand] = loc
        feats[f"laterality_{hand}"] = _laterality(arrays[f"{hand}_hand_t"], spheres[hemi[hand]],
                                                  spheres[-hemi[hand]], float(opts["laterality_t"]))
        info[f"cluster_voxels_{hand}"] = loc["cluster_voxels"]
        info[f"fallback_{hand}"] = bool(loc["fallback"])
    for hand in _HANDS:
        loc = found[hand]
        feats[f"extent_{hand}_mm3"] = float(loc["extent_mm3"])
        feats[f"width_{hand}_mm"] = float(loc["width_mm"])
        feats[f"peak_t_{hand}"] = loc["peak_t"]
        for i, axis in enumerate("xyz"):
            feats[f"centroid_{hand}_{axis}"] = float(loc["centroid"][i])
            feats[f"peak_{hand}_{axis}"] = float(loc["peak"][i])
    a, u = found["affected"]["centroid"], found["unaffected"]["centroid"] * _MIRROR
    feats["shift_mm"] = float(np.linalg.norm(a - u))
    va, vu = feats["extent_affected_mm3"], feats["extent_unaffected_mm3"]
    feats["asymmetry"] = float((vu - va) / (vu + va)) if np.isfinite(va + vu) and va + vu > 0 else np.nan
    weak = [h for h in _HANDS if not found[h]["peak_t"] >= float(opts["min_peak_t"])]
    if weak:
        peaks = ", ".join("%.1f" % found[h]["peak_t"] for h in weak)
        info["excluded"] = (f"no {' or '.join(weak)}-hand activation in S1 "
                            f"(peak t {peaks} < {opts['min_peak_t']})")
    features = {f"{NAME}.{k}": v for k, v in feats.items()}
    return SubjectResult(NAME, subject.participant_id, features=features, maps=maps, info=info)


# ----------------------------------------------------------------------------------- group


def a_priori_tests(config: Config | None = None) -> list[tuple[str, str]]:
    """The findings rows: :data:`A_PRIORI` features x :data:`CONTRASTS`.

    Examples
    --------
    >>> a_priori_tests()[:2]
    [('reorganization.shift_mm', 'patient-control'), ('reorganization.shift_mm', 'pain_intensity')]
    """
    return [(f, c) for f in A_PRIORI for c in CONTRASTS]


def correlation_table(features: pd.DataFrame, participants: pd.DataFrame,
                      columns: Sequence[str] = A_PRIORI, alpha: float = 0.05) -> pd.DataFrame:
    """Pearson and Spearman correlation of features with pain intensity in patients, with CIs.

    Parameters
    ----------
    features : DataFrame, shape (n_participants, n_features)
        Index ``participant_id``.
    participants : DataFrame
        Index ``participant_id``; needs ``pain_intensity`` (and ``group``: only patients enter
        when it is present).
    columns : sequence of str
        Features to correlate.
    alpha : float
        1 - confidence level.

    Returns
    -------
    DataFrame
        Columns ``feature, method, r, ci_low, ci_high, p, n``; one row per feature and method
        (``pearson``: Fisher-z interval, SE ``1/sqrt(n-3)``; ``spearman``: Fisher-z interval with
        the Bonett & Wright (2000) SE ``sqrt((1 + r^2/2)/(n-3))``). Empty without ``pain_intensity``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ids = [f"sub-{i:02d}" for i in range(60)]
    >>> parts = pd.DataFrame({"group": "patient", "pain_intensity": rng.normal(5, 2, 60)}, index=ids)
    >>> feats = pd.DataFrame({"reorganization.shift_mm": parts["pain_intensity"] + rng.normal(0, 1, 60)})
    >>> table = correlation_table(feats, parts, ["reorganization.shift_mm"])
    >>> table["method"].tolist(), bool((table["r"] > 0.7).all())
    (['pearson', 'spearman'], True)
    """
    out_cols = ["feature", "method", "r", "ci_low", "ci_high", "p", "n"]
    if "pain_intensity" not in participants:
        return pd.DataFrame(columns=out_cols)
    common = features.index.intersection(participants.index)
    parts = participants.loc[common]
    pain = pd.to_numeric(parts["pain_intensity"], errors="coerce").to_numpy(float)
    keep = np.isfinite(pain)
    if "group" in parts:
        keep &= parts["group"].astype(str).str.lower().to_numpy() == "patient"
    q = _st.norm.ppf(1 - alpha / 2)
    rows = []
    for column in columns:
        if column not in features:
            continue
        y = pd.to_numeric(features.loc[common, column], errors="coerce").to_numpy(float)
        ok = keep & np.isfinite(y)
        n = int(ok.sum())
        for method in ("pearson", "spearman"):
            if n < 4 or np.ptp(pain[ok]) == 0 or np.ptp(y[ok]) == 0:
                r, p = np.nan, np.nan
            elif method == "pearson":
                r, p = _st.pearsonr(y[ok], pain[ok])
            else:
                r, p = _st.spearmanr(y[ok], pain[ok])
            r, p = float(r), float(p)
            se = (1.0 if method == "pearson" else np.sqrt(1 + r**2 / 2)) / np.sqrt(max(n - 3, 1))
            z = np.arctanh(np.clip(r, -0.999999, 0.999999))
            rows.append({"feature": column, "method": method, "r": r, "ci_low": float(np.tanh(z - q * se)),
                         "ci_high": float(np.tanh(z + q * se)), "p": p, "n": n})
    return pd.DataFrame(rows, columns=out_cols)


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(fig)
    return figure_png(fig)


def _is_patient(participants: pd.DataFrame, index) -> np.ndarray:
    if "group" not in participants:
        return np.zeros(len(index), bool)
    return participants.reindex(index)["group"].astype(str).str.lower().to_numpy() == "patient"


def _shift_figure(features: pd.DataFrame, participants: pd.DataFrame, corr: pd.DataFrame) -> bytes | None:
    """Scatter of shift (mm) against pain intensity (patients), controls' shifts as a strip."""
    from matplotlib.figure import Figure

    feature = "reorganization.shift_mm"
    if feature not in features or "pain_intensity" not in participants:
        return None
    pain = pd.to_numeric(participants.reindex(features.index)["pain_intensity"], errors="coerce").to_numpy(float)
    shift = features[feature].to_numpy(float)
    patient = _is_patient(participants, features.index)
    fig = Figure(figsize=(5.2, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    ok = patient & np.isfinite(pain) & np.isfinite(shift)
    ax.scatter(pain[ok], shift[ok], s=22, color="#c0392b", label="patients")
    if ok.sum() >= 3 and np.ptp(pain[ok]) > 0:
        slope, intercept = np.polyfit(pain[ok], shift[ok], 1)
        xs = np.linspace(pain[ok].min(), pain[ok].max(), 2)
        ax.plot(xs, intercept + slope * xs, color="#c0392b", lw=1)
    ctrl = ~patient & np.isfinite(shift)
    if ctrl.any():
        rng = np.random.default_rng(0)
        left = np.nanmin(pain[ok]) - 1.0 if ok.any() else 0.0
        ax.scatter(left + rng.uniform(-0.2, 0.2, ctrl.sum()), shift[ctrl], s=18, color="#2c7fb8", label="controls")
    row = corr[(corr["feature"] == feature) & (corr["method"] == "pearson")] if len(corr) else corr
    if len(row):
        r = row.iloc[0]
        ax.set_title(f"patients: r = {r.r:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}], n = {int(r.n)}", fontsize=9)
    ax.set_xlabel("pain intensity (0-10)")
    ax.set_ylabel("shift of the affected-hand map (mm)")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return _png(fig)


def _centroid_figure(features: pd.DataFrame, participants: pd.DataFrame) -> bytes | None:
    """Affected centroids and mirrored unaffected centroids, in the affected hemisphere's frame.

    Participants whose affected map lies in the left hemisphere are mirrored (x -> -x), so that
    every affected map is drawn in the right hemisphere next to the mirror image of its
    unaffected map; a line joins the two (its length is ``shift_mm``).
    """
    from matplotlib.figure import Figure

    cols = [f"reorganization.centroid_{h}_{a}" for h in _HANDS for a in "xyz"]
    if any(c not in features for c in cols):
        return None
    a = features[cols[:3]].to_numpy(float)
    u = features[cols[3:]].to_numpy(float) * _MIRROR
    flip = np.where(a[:, 0] < 0, -1.0, 1.0)[:, None] * np.array([[1.0, 0.0, 0.0]]) + np.array([[0.0, 1.0, 1.0]])
    a, u = a * flip, u * flip
    patient = _is_patient(participants, features.index)
    fig = Figure(figsize=(8.0, 3.8))
    for k, (i, j, title) in enumerate(((0, 2, "coronal (x, z)"), (1, 2, "sagittal (y, z)"))):
        ax = fig.add_subplot(1, 2, k + 1)
        for sel, color, label in ((~patient, "#2c7fb8", "controls"), (patient, "#c0392b", "patients")):
            if not sel.any():
                continue
            for p, q in zip(u[sel], a[sel]):
                ax.plot([p[i], q[i]], [p[j], q[j]], color=color, lw=0.6, alpha=0.6)
            ax.scatter(u[sel, i], u[sel, j], s=14, facecolors="none", edgecolors=color,
                       label=f"{label}: unaffected (mirrored)")
            ax.scatter(a[sel, i], a[sel, j], s=14, color=color, label=f"{label}: affected")
        s1 = atlas.roi("s1_hand_r")
        ax.plot(s1.center[i], s1.center[j], "k+", ms=10)
        ax.set_xlabel("xyz"[i] + " (mm)")
        ax.set_ylabel("z (mm)")
        ax.set_title(title, fontsize=9)
        ax.set_aspect("equal", adjustable="datalim")
    fig.axes[0].legend(fontsize=6, frameon=False, loc="best")
    fig.tight_layout()
    return _png(fig)


def group(results: list[SubjectResult], cohort: Cohort, config: Config) -> GroupResult:
    """Group findings for the shift and asymmetry of the affected-hand map, and their link to pain.

    After the shared part (:func:`painplast.plasticity._group.run`), the correlation of each
    a-priori feature with pain intensity in patients, and two figures.

    Returns
    -------
    GroupResult
        ``findings``: ``reorganization.shift_mm`` and ``reorganization.asymmetry`` x
        ``patient-control`` (Cohen's d) and ``pain_intensity`` (partial r, patients), Holm-corrected
        over the table; ``tables``: ``correlations`` (:func:`correlation_table`); ``figures``:
        ``shift_vs_pain`` and ``centroids`` (PNG bytes, when the data allow).

    Examples
    --------
    >>> cohort, cfg = Cohort.from_bids(bids_dir), Config(options={"reorganization": {"maps": "s1"}})
    >>> out = group([subject(s, cfg) for s in cohort], cohort, cfg)
    >>> out.findings["feature"].unique().tolist()
    ['reorganization.shift_mm', 'reorganization.asymmetry']
    """
    return _group.run(DECLARATION, results, cohort, config, _group_specific)


def _group_specific(data: _group.GroupData) -> _group.Specific:
    """Correlations with pain intensity, and the shift and centroid figures."""
    features, participants = data.features, data.participants
    corr = correlation_table(features, participants, A_PRIORI, alpha=data.config.alpha)
    out = _group.Specific(tables={"correlations": corr})
    if "affected_side" not in participants:
        out.notes.append("participants.tsv has no affected_side: every side was assigned "
                         "pseudo-randomly from the participant ID, so asymmetry is not interpretable")
    for name, png in (("shift_vs_pain", _shift_figure(features, participants, corr)),
                      ("centroids", _centroid_figure(features, participants))):
        if png is not None:
            out.figures[name] = png
    return out


DECLARATION = Declaration(
    name=NAME, cost=1.6, title="Somatotopic reorganization", task=TASK, bold=True, subject=subject,
    group=group, defaults=DEFAULTS, tests=a_priori_tests,
    description="Maladaptive reorganization of the S1/M1 maps: the affected body part's "
    "representation shifts and shrinks. Measured as the centroid shift (mm) against the mirrored "
    "unaffected side, and the extent asymmetry.")
