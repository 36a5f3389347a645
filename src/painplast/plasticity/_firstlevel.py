"""First-level (single-run) GLM shared by the task modules (sensitization, reorganization, modulation).

The design is nilearn's (:func:`nilearn.glm.first_level.make_first_level_design_matrix`: HRF
convolution with ``config.hrf_model``, cosine drift at ``config.high_pass``), the fit is nilearn's
(:func:`nilearn.glm.first_level.run_glm`, AR(1) by default, and
:func:`nilearn.glm.contrasts.compute_contrast`). What this module adds is the plumbing a task
module needs, done once and cheaply:

* :func:`load_bold` reads a run's preprocessed BOLD once into a (T, V) array inside its brain mask;
  every other function takes either a :class:`~painplast.cohort.Run` or that :class:`BoldData`.
* :func:`confounds` picks fMRIPrep confounds by a strategy string (``"motion24+wm_csf+spikes"``).
* :func:`design_matrix` builds conditions, centred parametric modulators (``<condition>_x_<column>``),
  confounds and drifts.
* :func:`roi_timeseries` / :func:`fit_roi`: ROI-mean percent-signal time series of *unsmoothed*
  data, then the GLM on those few columns (the ROI-mean beta; for OLS it equals the mean of the
  voxel betas exactly). Milliseconds per run.
* :func:`fit_voxelwise`: smoothed voxel-wise beta / t / z maps of named contrasts as NIfTI images.

Scaling: every voxel (or ROI) time series is expressed in percent signal change of its own mean,
``100 * (y / mean(y) - 1)`` (nilearn's ``signal_scaling=0``), so betas are in % signal per unit of
the regressor (per event of unit amplitude for a condition; per unit of the modulator, e.g. per
degC, for a parametric modulator).
"""
from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from .. import atlas
from ..errors import InputError

__all__ = ["BoldData", "load_bold", "confounds", "design_matrix", "roi_timeseries", "fit_timeseries",
           "fit_roi", "fit_voxelwise", "region_masks", "percent_signal", "level_name",
           "DEFAULT_CONFOUNDS", "ContrastMaps", "contrast_maps", "fixed_effects", "fixed_effects_table",
           "task_runs"]

#: Default confound strategy: Friston-24 motion, mean white-matter and CSF signals, and one spike
#: regressor per volume with framewise displacement above 0.5 mm (scrubbing).
DEFAULT_CONFOUNDS = "motion24+wm_csf+spikes"
from ._confounds import confound_regressors, parse_strategy


# ----------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class BoldData:
    """One run's BOLD series inside its brain mask, loaded once.

    Attributes
    ----------
    data : ndarray, shape (T, V), float32
        Raw intensities (not yet scaled) of the V in-mask voxels.
    mask : ndarray of bool, shape (X, Y, Z)
        The brain mask on the image grid.
    affine : ndarray, shape (4, 4)
    repetition_time : float
        Seconds.
    source : str
        The file it came from (for messages).

    Examples
    --------
    >>> mask = np.zeros((3, 3, 3), bool); mask[1, 1, :] = True
    >>> bold = BoldData(np.ones((10, 3), np.float32), mask, np.eye(4), 2.0, "example")
    >>> bold.n_volumes, bold.shape
    (10, (3, 3, 3))
    """

    data: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    repetition_time: float
    source: str = ""

    @property
    def n_volumes(self) -> int:
        return int(self.data.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.mask.shape)

    def to_image(self, values: np.ndarray) -> nib.Nifti1Image:
        """(V,) values -> float32 NIfTI image on the run's grid (0 outside the mask)."""
        out = np.zeros(self.shape, np.float32)
        out[self.mask] = np.asarray(values, np.float32)
        return nib.Nifti1Image(out, self.affine)


def load_bold(run, mask_img=None) -> BoldData:
    """Read a run's preprocessed BOLD series into a (T, V) array inside the brain mask.

    Parameters
    ----------
    run : painplast.cohort.Run
        A run with ``bold`` (fMRIPrep ``desc-preproc_bold``); ``mask`` is used when present.
    mask_img : nibabel image, optional
        Brain mask on the same grid; default ``run.mask``, else voxels whose mean is above 20 %
        of the robust maximum of the mean image.

    Returns
    -------
    BoldData

    Examples
    --------
    >>> from painplast.cohort import Cohort
    >>> bold = load_bold(Cohort.from_bids(bids_dir).subject("sub-001").run("pain"))
    >>> bold.data.shape      # volumes x in-mask voxels
    (120, 29398)
    """
    if isinstance(run, BoldData):
        return run
    if run.bold is None:
        raise InputError(f"run {run.name} has no preprocessed BOLD image",
                         fix="give the fMRIPrep derivatives folder with desc-preproc_bold images")
    try:
        img = nib.load(str(run.bold))
        arr = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as error:  # nibabel raises several types for broken files
        raise InputError(f"cannot read the BOLD image ({error})", path=run.bold,
                         fix="re-run fMRIPrep or replace the file") from None
    if arr.ndim != 4 or arr.shape[3] < 10:
        raise InputError(f"the BOLD image has shape {arr.shape}, not a 4-D series of at least 10 volumes",
                         path=run.bold, fix="give the 4-D desc-preproc_bold series")
    if mask_img is None and run.mask is not None:
        mask_img = nib.load(str(run.mask))
    if mask_img is not None:
        mask = np.asarray(mask_img.dataobj) > 0.5
        if mask.shape[:3] != arr.shape[:3]:
            from nilearn.image import resample_to_img
            mask = resample_to_img(mask_img, nib.Nifti1Image(arr[..., 0], img.affine),
                                   interpolation="nearest", force_resample=True,
                                   copy_header=True).get_fdata() > 0.5
        mask = mask.reshape(arr.shape[:3])
    else:
        mean = arr.mean(axis=3)
        mask = mean > 0.2 * np.percentile(mean[mean > 0], 98) if (mean > 0).any() else mean != 0
    mask &= np.all(np.isfinite(arr), axis=3) if not np.isfinite(arr).all() else True
    tr = run.repetition_time or float(img.header.get_zooms()[3])
    if not tr or tr <= 0:
        raise InputError("the repetition time is unknown", path=run.bold,
                         fix="add RepetitionTime to the BOLD JSON sidecar")
    data = np.ascontiguousarray(arr[mask].T)
    return BoldData(data, mask, np.asarray(img.affine, float), float(tr), str(run.bold))


def task_runs(subject, task: str, module: str) -> tuple:
    """Every run of ``task`` with a preprocessed BOLD image, in session and run order.

    A module's subject stage fits each run and combines them (:func:`fixed_effects`), so no run
    is dropped; the engine gives it one participant and session at a time.

    Raises
    ------
    InputError
        The participant-session has no such run (the engine records the reason).

    Examples
    --------
    >>> from painplast.cohort import Cohort
    >>> [run.name for run in task_runs(Cohort.from_bids(bids_dir).subject("sub-001"), "pain", "sensitization")]
    ['task-pain']
    """
    runs = tuple(r for r in subject.runs_for(task) if r.bold is not None)
    if not runs:
        raise InputError(f"{subject.participant_id} has no preprocessed '{task}' run"
                         + (f" in session {subject.session}" if getattr(subject, "session", None) else ""),
                         fix=f"add the {task} task (BOLD, events, fMRIPrep outputs), map it with "
                             f"--task-map {task}=<label>, or leave out {module} with --modules")
    return runs


def percent_signal(y: np.ndarray) -> np.ndarray:
    """Percent signal change of each column of ``y`` around its own mean.

    Parameters
    ----------
    y : ndarray, shape (T, V)

    Returns
    -------
    ndarray, shape (T, V), float64; columns whose mean is ~0 are set to 0.

    Examples
    --------
    >>> percent_signal(np.array([[99.0], [101.0]])).ravel().round(6).tolist()
    [-1.0, 1.0]
    """
    y = np.asarray(y, np.float64)
    mean = y.mean(axis=0)
    ok = np.abs(mean) > 1e-6 * max(np.abs(mean).max(), 1e-12)
    out = np.zeros_like(y)
    out[:, ok] = 100.0 * (y[:, ok] / mean[ok] - 1.0)
    return out


def region_masks(regions: Sequence[str], bold: BoldData, radius: float = 6.0) -> dict[str, np.ndarray]:
    """Boolean masks of pain-system regions (union of their spheres) on a run's grid, within its brain mask.

    Parameters
    ----------
    regions : sequence of str
        Region or ROI names of :mod:`painplast.atlas` (``"thalamus"``, ``"pag"``, ``"s1_hand_l"``).
    bold : BoldData
    radius : float
        Sphere radius (mm).

    Returns
    -------
    dict of str to ndarray of bool, shape bold.shape

    Examples
    --------
    >>> from painplast.cohort import Cohort
    >>> bold = load_bold(Cohort.from_bids(bids_dir).subject("sub-001").run("pain"))
    >>> masks = region_masks(["pag", "thalamus"], bold)
    >>> {name: int(m.sum()) > 0 for name, m in masks.items()}   # voxels in each region
    {'pag': True, 'thalamus': True}
    """
    return {r: atlas.region_mask(r, (bold.shape, bold.affine), radius) & bold.mask for r in regions}


# ----------------------------------------------------------------------------------- design


def confounds(run, strategy: str = DEFAULT_CONFOUNDS, n_volumes: int | None = None,
              fd_threshold: float = 0.5, dvars_threshold: float | None = None) -> pd.DataFrame:
    """fMRIPrep confound regressors chosen by a strategy string.

    Parameters
    ----------
    run : painplast.cohort.Run
        A run with a ``confounds`` file (``desc-confounds_timeseries.tsv``).
    strategy : str
        ``"+"``-joined parts: ``motion6`` (6 realignment parameters) or ``motion24`` (with
        derivatives and squares), ``wm_csf`` (mean white-matter and CSF signals), ``global``,
        ``acompcor`` (first 5 anatomical CompCor components), ``spikes`` (one regressor per
        volume with framewise displacement above ``fd_threshold``, or ``std_dvars`` above
        ``dvars_threshold``). ``""`` or ``"none"``: no confounds.
    n_volumes : int, optional
        Expected number of rows (checked).
    fd_threshold : float
        Scrubbing threshold (mm).
    dvars_threshold : float, optional
        Scrubbing threshold on standardized DVARS (off by default).

    Returns
    -------
    DataFrame, shape (T, n_confounds)
        Finite values (fMRIPrep's ``n/a`` in the first row of derivatives becomes 0).

    Examples
    --------
    >>> from painplast.cohort import Cohort
    >>> confounds(Cohort.from_bids(bids_dir).subject("sub-001").run("pain"), "motion6").shape
    (120, 6)
    """
    parts = parse_strategy(strategy)
    if not parts:
        return pd.DataFrame(index=range(n_volumes or 0))
    table = run.load_confounds()
    if n_volumes is not None and len(table) != n_volumes:
        raise InputError(f"the confounds file has {len(table)} rows but the BOLD series {n_volumes} volumes",
                         path=run.confounds, fix="use the confounds file of the same fMRIPrep run")
    values, names = confound_regressors(table, strategy, path=run.confounds)
    out = pd.DataFrame(values, columns=names)
    if "spikes" in parts:
        bad = np.zeros(len(table), bool)
        if "framewise_displacement" in table:
            bad |= pd.to_numeric(table["framewise_displacement"], errors="coerce").fillna(0).to_numpy() > fd_threshold
        if dvars_threshold is not None and "std_dvars" in table:
            bad |= pd.to_numeric(table["std_dvars"], errors="coerce").fillna(0).to_numpy() > dvars_threshold
        for t in np.flatnonzero(bad):
            spike = np.zeros(len(table))
            spike[t] = 1.0
            out[f"spike_{t:04d}"] = spike
    return out


def level_name(value) -> str:
    """A number as a name part (BIDS-safe: ``.`` as ``p``, ``-`` as ``m``).

    Examples
    --------
    >>> level_name(44.5), level_name(-2)
    ('44p5', 'm2')
    """
    return f"{float(value):g}".replace(".", "p").replace("-", "m")


def design_matrix(run, events: pd.DataFrame, config, n_volumes: int | None = None,
                  modulators: Sequence[str] = ("intensity",), extra_regressors: pd.DataFrame | None = None,
                  confounds_strategy: str = DEFAULT_CONFOUNDS, split_by: str | None = None,
                  fd_threshold: float = 0.5) -> pd.DataFrame:
    """First-level design matrix: conditions, centred parametric modulators, confounds, drifts.

    Parameters
    ----------
    run : painplast.cohort.Run or BoldData
        The run (its repetition time, confounds and number of volumes). A :class:`BoldData`
        carries no confounds: pass ``confounds_strategy="none"`` or ``extra_regressors``.
    events : DataFrame
        BIDS events: ``onset``, ``duration``, optional ``trial_type`` and modulator columns.
    config : painplast.config.Config
        Uses ``hrf_model`` and ``high_pass``.
    n_volumes : int, optional
        Default: from the BOLD header.
    modulators : sequence of str
        Events columns entered as parametric modulators: for each condition and column that
        varies within it, a regressor ``<condition>_x_<column>`` whose amplitudes are the column
        centred within the condition (so the condition's beta is its response at the mean value).
    extra_regressors : DataFrame, optional
        Further regressors (T rows), e.g. a seed time series; appended as they are.
    confounds_strategy : str
        See :func:`confounds`.
    split_by : str, optional
        An events column (e.g. ``"intensity"``): one condition per level, named
        ``<condition>_<level>`` (``pain_44``, ``pain_46p5``), instead of one per trial type.
    fd_threshold : float
        Scrubbing threshold (mm) for the ``spikes`` confounds.

    Returns
    -------
    DataFrame, shape (T, n_regressors)
        Index: frame times (s). Columns: conditions, modulators, extra regressors, confounds,
        ``drift_*`` cosines and ``constant``.

    Examples
    --------
    >>> from painplast.cohort import Cohort
    >>> from painplast.config import Config
    >>> run = Cohort.from_bids(bids_dir).subject("sub-001").run("pain")
    >>> X = design_matrix(run, run.load_events(), Config())
    >>> [c for c in X.columns if c.startswith("pain")]
    ['pain', 'pain_x_intensity']
    """
    from nilearn.glm.first_level import make_first_level_design_matrix

    if isinstance(run, BoldData):
        tr, n = run.repetition_time, n_volumes or run.n_volumes
        conf = pd.DataFrame(index=range(n))
        if str(confounds_strategy or "none") != "none":
            raise InputError("confounds need the run's confounds file, not loaded BOLD data",
                             fix="pass the Run, or confounds_strategy='none'")
    else:
        tr = run.repetition_time
        if n_volumes is None:
            if run.bold is None:
                raise InputError(f"run {run.name} has no preprocessed BOLD image",
                                 fix="give the fMRIPrep derivatives folder")
            n_volumes = int(nib.load(str(run.bold)).shape[3])
        n = n_volumes
        conf = confounds(run, confounds_strategy, n, fd_threshold=fd_threshold)
    if not tr:
        raise InputError(f"run {getattr(run, 'name', '')} has no repetition time",
                         fix="add RepetitionTime to the BOLD JSON sidecar")
    ev = _clean_events(events, getattr(run, "events", None))
    frame_times = np.arange(n) * float(tr)
    if split_by is not None:
        if split_by not in ev:
            raise InputError(f"the events have no '{split_by}' column", path=getattr(run, "events", None),
                             fix=f"add a '{split_by}' column or drop split_by")
        ok = ev[split_by].notna()
        ev.loc[ok, "trial_type"] = [f"{t}_{level_name(v)}" for t, v in zip(ev.loc[ok, "trial_type"], ev.loc[ok, split_by])]
    rows = [ev[["onset", "duration", "trial_type"]].assign(modulation=1.0)]
    for column in modulators:
        if column not in ev:
            continue
        for condition, part in ev.groupby("trial_type", sort=True):
            values = pd.to_numeric(part[column], errors="coerce")
            if values.notna().sum() < 3 or values.std() < 1e-9:
                continue  # absent or constant within the condition: not estimable
            centred = (values - values.mean()).fillna(0.0)
            rows.append(pd.DataFrame({"onset": part["onset"], "duration": part["duration"],
                                      "trial_type": f"{condition}_x_{column}", "modulation": centred}))
    all_events = pd.concat(rows, ignore_index=True)
    add = conf
    if extra_regressors is not None:
        extra = pd.DataFrame(extra_regressors).reset_index(drop=True)
        if len(extra) != n:
            raise InputError(f"extra regressors have {len(extra)} rows, the run {n} volumes",
                             fix="give one row per volume")
        add = pd.concat([extra, conf], axis=1)
    with contextlib.redirect_stdout(io.StringIO()):  # nilearn prints a note about 'modulation'
        design = make_first_level_design_matrix(
            frame_times, all_events, hrf_model=config.hrf_model, drift_model="cosine",
            high_pass=config.high_pass, add_regs=add.to_numpy(float) if add.shape[1] else None,
            add_reg_names=list(add.columns) if add.shape[1] else None)
    return design


def _clean_events(events: pd.DataFrame, path=None) -> pd.DataFrame:
    ev = pd.DataFrame(events).copy()
    for column in ("onset", "duration"):
        if column not in ev:
            raise InputError(f"the events have no '{column}' column", path=path,
                             fix="give BIDS events with onset and duration")
        ev[column] = pd.to_numeric(ev[column], errors="coerce")
    if "trial_type" not in ev:
        ev["trial_type"] = "task"
    ev = ev[ev["onset"].notna() & ev["duration"].notna() & ev["trial_type"].notna()]
    ev["trial_type"] = ev["trial_type"].astype(str)
    return ev.reset_index(drop=True)


# ----------------------------------------------------------------------------------- fitting


def roi_timeseries(run, masks: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Mean percent-signal time series of each ROI (unsmoothed data).

    Each voxel is scaled to percent signal change of its own mean, then averaged over the ROI.

    Parameters
    ----------
    run : painplast.cohort.Run or BoldData
    masks : mapping of str to ndarray of bool, shape (X, Y, Z)
        ROI masks on the run's grid (e.g. from :func:`region_masks`). Empty ROIs give NaN.

    Returns
    -------
    DataFrame, shape (T, n_rois)

    Examples
    --------
    >>> from painplast.cohort import Cohort
    >>> bold = load_bold(Cohort.from_bids(bids_dir).subject("sub-001").run("modulation"))
    >>> ts = roi_timeseries(bold, region_masks(["pag", "racc"], bold))
    >>> ts.shape, list(ts.columns)
    ((112, 2), ['pag', 'racc'])
    """
    bold = load_bold(run)
    index = np.full(bold.shape, -1, np.int64)
    index[bold.mask] = np.arange(bold.data.shape[1])
    out = {}
    for name, mask in masks.items():
        mask = np.asarray(mask, bool)
        if mask.shape != bold.shape:
            raise InputError(f"ROI mask '{name}' has shape {mask.shape}, the run's grid {bold.shape}",
                             path=bold.source, fix="make the mask on the run's grid (region_masks)")
        cols = index[mask & bold.mask]
        out[name] = (percent_signal(bold.data[:, cols]).mean(axis=1) if len(cols)
                     else np.full(bold.n_volumes, np.nan))
    return pd.DataFrame(out)


def _glm(Y: np.ndarray, X: np.ndarray, noise_model: str):
    from nilearn.glm.first_level import run_glm
    return run_glm(np.asarray(Y, np.float64), np.asarray(X, np.float64), noise_model=noise_model)


def _betas(labels, results, p: int, n: int, columns=None):
    """Betas (p, n) and their t values from run_glm's grouped results."""
    beta = np.zeros((p, n))
    t = np.zeros((p, n))
    for label, res in results.items():
        sel = labels == label
        theta = res.theta
        se = np.sqrt(np.outer(np.diag(res.cov), np.atleast_1d(res.dispersion)))
        beta[:, sel] = theta
        with np.errstate(divide="ignore", invalid="ignore"):
            t[:, sel] = np.where(se > 0, theta / se, 0.0)
    return beta, t


def fit_timeseries(Y: pd.DataFrame, design: pd.DataFrame, noise_model: str = "ar1",
                   stat: str = "beta") -> pd.DataFrame:
    """Fit the first-level GLM to a few time series (ROI means) and return betas or t values.

    Parameters
    ----------
    Y : DataFrame, shape (T, n_series)
        Time series (e.g. :func:`roi_timeseries`); columns with NaN give NaN.
    design : DataFrame, shape (T, p)
        From :func:`design_matrix`.
    noise_model : str
        ``"ar1"`` (nilearn's default, pre-whitening) or ``"ols"``.
    stat : {"beta", "t"}

    Returns
    -------
    DataFrame, shape (p, n_series)
        Index: regressor names; columns: the series.

    Examples
    --------
    >>> from painplast.cohort import Cohort
    >>> from painplast.config import Config
    >>> run = Cohort.from_bids(bids_dir).subject("sub-001").run("pain")
    >>> bold = load_bold(run)
    >>> X = design_matrix(run, run.load_events(), Config(), n_volumes=bold.n_volumes)
    >>> ts = roi_timeseries(bold, region_masks(["thalamus"], bold))
    >>> bool(fit_timeseries(ts, X).loc["pain", "thalamus"] > 0)   # % signal per unit regressor
    True
    """
    Y = pd.DataFrame(Y)
    if len(Y) != len(design):
        raise InputError(f"the time series have {len(Y)} rows, the design {len(design)}",
                         fix="build the design with the run's number of volumes")
    out = pd.DataFrame(np.nan, index=design.columns, columns=Y.columns)
    ok = [c for c in Y.columns if np.all(np.isfinite(Y[c].to_numpy(float)))]
    if ok:
        labels, results = _glm(Y[ok].to_numpy(float), design.to_numpy(float), noise_model)
        beta, t = _betas(labels, results, design.shape[1], len(ok))
        out.loc[:, ok] = beta if stat == "beta" else t
    return out


def fit_roi(run, design: pd.DataFrame, masks: Mapping[str, np.ndarray], noise_model: str = "ar1",
            stat: str = "beta") -> pd.DataFrame:
    """ROI-mean first-level betas (or t values) of every regressor, on unsmoothed data.

    Parameters
    ----------
    run : painplast.cohort.Run or BoldData
    design : DataFrame, shape (T, p)
        From :func:`design_matrix` (any design with one row per volume of the run).
    masks : mapping of str to ndarray of bool
        ROI masks on the run's grid.
    noise_model : str
        ``"ar1"`` or ``"ols"``.
    stat : {"beta", "t"}

    Returns
    -------
    DataFrame, shape (p, n_rois)
        Regressor x ROI, in percent signal change per unit regressor.

    Examples
    --------
    >>> from painplast.cohort import Cohort
    >>> from painplast.config import Config
    >>> run = Cohort.from_bids(bids_dir).subject("sub-001").run("pain")
    >>> masks = region_masks(["thalamus"], load_bold(run))
    >>> betas = fit_roi(run, design_matrix(run, run.load_events(), Config()), masks)
    >>> betas.loc[["pain", "pain_x_intensity"]].shape
    (2, 1)
    """
    return fit_timeseries(roi_timeseries(run, masks), design, noise_model, stat)


def _smooth(bold: BoldData, fwhm: float | None) -> np.ndarray:
    """(T, V) in-mask data after Gaussian smoothing of each volume (FWHM in mm), float32.

    Voxels outside the brain mask count as zero (no non-brain signal is smoothed into edge
    voxels; nilearn smooths the whole image, so on images with signal outside the mask the edge
    voxels differ by design); the image borders are reflected as in nilearn's smoothing. With
    zero outside the mask the maps equal nilearn FirstLevelModel's to ~3e-6 (relative), except
    the odd voxel whose AR(1) coefficient lies at the edge of one of run_glm's 0.01-wide bins,
    where rounding (float32 here) puts it in the neighbouring bin (~2e-3).
    """
    if not fwhm:
        return bold.data
    vox = np.sqrt((bold.affine[:3, :3] ** 2).sum(axis=0))
    sigma = fwhm / np.sqrt(8 * np.log(2)) / vox
    out = np.empty_like(bold.data)
    vol = np.zeros(bold.shape, np.float32)
    for t in range(bold.n_volumes):
        vol[bold.mask] = bold.data[t]
        out[t] = ndimage.gaussian_filter(vol, sigma, mode="reflect", truncate=4.0)[bold.mask]
    return out


def _contrast_vector(contrast, columns: Sequence[str]) -> np.ndarray:
    from nilearn.glm.contrasts import expression_to_contrast_vector
    if isinstance(contrast, str):
        try:
            return np.asarray(expression_to_contrast_vector(contrast, list(columns)), float)
        except Exception as error:
            raise InputError(f"cannot read the contrast '{contrast}' ({error})",
                             fix=f"use design columns: {', '.join(list(columns)[:8])}") from None
    vec = np.asarray(contrast, float).ravel()
    if len(vec) > len(columns):
        raise InputError(f"contrast has {len(vec)} weights, the design {len(columns)} columns",
                         fix="give one weight per design column (trailing zeros may be omitted)")
    return np.r_[vec, np.zeros(len(columns) - len(vec))]


@dataclass(frozen=True)
class ContrastMaps:
    """Effect, variance and degrees of freedom of named t contrasts on one grid (one run, or several
    runs combined with :func:`fixed_effects`).

    Attributes
    ----------
    effect, variance : mapping of str to ndarray, shape (X, Y, Z)
        Per contrast; 0 outside ``mask``.
    dof : float
        Residual degrees of freedom (summed over runs).
    mask : ndarray of bool, shape (X, Y, Z)
        Voxels where every run has data.
    affine : ndarray, shape (4, 4)

    Examples
    --------
    >>> m = np.ones((1, 1, 1), bool)
    >>> maps = ContrastMaps({"c": np.full((1, 1, 1), 2.0)}, {"c": np.full((1, 1, 1), 4.0)}, 30, m, np.eye(4))
    >>> float(maps.images(("t",))["c_t"].get_fdata()[0, 0, 0])
    1.0
    """

    effect: Mapping[str, np.ndarray]
    variance: Mapping[str, np.ndarray]
    dof: float
    mask: np.ndarray
    affine: np.ndarray

    def images(self, stats: Sequence[str] = ("beta", "t")) -> dict[str, nib.Nifti1Image]:
        """``"<contrast>_<stat>"`` -> float32 image (``beta``, ``t``, ``z``, ``variance``)."""
        from scipy import stats as sps

        unknown = [s for s in stats if s not in ("beta", "t", "z", "variance")]
        if unknown:
            raise InputError(f"unknown statistic(s) {unknown}", fix="use beta, t, z or variance")
        out = {}
        for name, effect in self.effect.items():
            var = self.variance[name]
            with np.errstate(divide="ignore", invalid="ignore"):
                t = np.where(self.mask & (var > 0), effect / np.sqrt(var), 0.0)
            values = {"beta": effect, "variance": var, "t": t}
            for stat in stats:
                if stat == "z":
                    z = sps.norm.isf(np.clip(sps.t.sf(t, self.dof), 1e-300, 1.0))
                    values["z"] = np.where(self.mask, z, 0.0)
                data = np.where(self.mask, np.nan_to_num(values[stat]), 0.0).astype(np.float32)
                out[f"{name}_{stat}"] = nib.Nifti1Image(data, self.affine)
        return out


def contrast_maps(run, design: pd.DataFrame, contrasts: Mapping[str, object], smoothing_fwhm: float | None,
                  noise_model: str = "ar1") -> ContrastMaps:
    """Effect and variance maps of named t contrasts for one run (nilearn's GLM and contrasts).

    Parameters
    ----------
    run : painplast.cohort.Run or BoldData
    design : DataFrame, shape (T, p)
        From :func:`design_matrix`.
    contrasts : mapping of str to str or array
        ``{name: expression}`` in nilearn's syntax over the design columns, or a weight vector.
    smoothing_fwhm : float or None
        Gaussian smoothing (mm) of each volume before the fit.
    noise_model : str
        ``"ar1"`` or ``"ols"``.

    Returns
    -------
    ContrastMaps

    Examples
    --------
    >>> from painplast.cohort import Cohort
    >>> from painplast.config import Config
    >>> run = Cohort.from_bids(bids_dir).subject("sub-001").run("pain")
    >>> bold = load_bold(run)
    >>> X = design_matrix(run, run.load_events(), Config(), n_volumes=bold.n_volumes)
    >>> maps = contrast_maps(bold, X, {"pain": "pain"}, smoothing_fwhm=None)
    >>> maps.effect["pain"].shape == bold.shape, maps.dof > 0
    (True, True)
    """
    from nilearn.glm.contrasts import compute_contrast

    bold = load_bold(run)
    if len(design) != bold.n_volumes:
        raise InputError(f"the design has {len(design)} rows, the BOLD series {bold.n_volumes} volumes",
                         path=bold.source, fix="build the design with the run's number of volumes")
    Y = percent_signal(_smooth(bold, smoothing_fwhm))
    labels, results = _glm(Y, design.to_numpy(float), noise_model)
    effect, variance = {}, {}
    dof = float(len(design) - np.linalg.matrix_rank(design.to_numpy(float)))
    for name, spec in contrasts.items():
        con = compute_contrast(labels, results, _contrast_vector(spec, design.columns), stat_type="t")
        for store, values in ((effect, con.effect_size()), (variance, con.effect_variance())):
            full = np.zeros(bold.shape, np.float64)
            full[bold.mask] = np.asarray(values, np.float64).ravel()
            store[name] = full
    return ContrastMaps(effect, variance, dof, bold.mask.copy(), bold.affine)


def fixed_effects(runs: Sequence[ContrastMaps]) -> ContrastMaps:
    """Combine runs as nilearn's ``FirstLevelModel`` does for a list of runs.

    The effect is the mean of the runs' effects, its variance the sum of their variances over
    the squared number of runs (``compute_fixed_effect_contrast``); degrees of freedom add up.
    Voxels are kept where every run has data. One run is returned as it is.

    Parameters
    ----------
    runs : sequence of ContrastMaps
        On the same grid, with the same contrasts.

    Returns
    -------
    ContrastMaps

    Examples
    --------
    >>> m = np.ones((1, 1, 2), bool)
    >>> a = ContrastMaps({"c": np.full((1, 1, 2), 1.0)}, {"c": np.full((1, 1, 2), 4.0)}, 10, m, np.eye(4))
    >>> b = ContrastMaps({"c": np.full((1, 1, 2), 3.0)}, {"c": np.full((1, 1, 2), 4.0)}, 10, m, np.eye(4))
    >>> both = fixed_effects([a, b])
    >>> float(both.effect["c"][0, 0, 0]), float(both.variance["c"][0, 0, 0]), both.dof
    (2.0, 2.0, 20)
    """
    runs = list(runs)
    if not runs:
        raise ValueError("no run to combine")
    if len(runs) == 1:
        return runs[0]
    shapes = {r.mask.shape for r in runs}
    if len(shapes) > 1 or any(not np.allclose(r.affine, runs[0].affine, atol=1e-3) for r in runs):
        raise InputError("the runs of one task lie on different grids",
                         fix="give every run in the same --space (fMRIPrep resamples them alike)")
    n = len(runs)
    mask = np.logical_and.reduce([r.mask for r in runs])
    effect = {k: sum(r.effect[k] for r in runs) / n for k in runs[0].effect}
    variance = {k: sum(r.variance[k] for r in runs) / n ** 2 for k in runs[0].variance}
    return ContrastMaps(effect, variance, sum(r.dof for r in runs), mask, runs[0].affine)


def fixed_effects_table(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Mean over runs of per-run ROI estimates (regressor x ROI), as :func:`fixed_effects` does for
    effects; a regressor that only some runs have (an intensity level) is the mean of those runs.

    Examples
    --------
    >>> a = pd.DataFrame({"r": [1.0, 2.0]}, index=["pain", "pain_44"])
    >>> b = pd.DataFrame({"r": [3.0]}, index=["pain"])
    >>> fixed_effects_table([a, b])["r"].tolist()
    [2.0, 2.0]
    """
    tables = list(tables)
    if len(tables) == 1:
        return tables[0]
    order = list(dict.fromkeys(i for t in tables for i in t.index))
    columns = list(dict.fromkeys(c for t in tables for c in t.columns))
    stacked = np.stack([t.reindex(index=order, columns=columns).to_numpy(float) for t in tables])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN cells stay NaN
        return pd.DataFrame(np.nanmean(stacked, axis=0), index=order, columns=columns)


def fit_voxelwise(run, design: pd.DataFrame, contrasts: Mapping[str, object], smoothing_fwhm: float | None,
                  stats: Sequence[str] = ("beta", "t"), noise_model: str = "ar1") -> dict[str, nib.Nifti1Image]:
    """Voxel-wise first-level maps of named t contrasts.

    Parameters
    ----------
    run : painplast.cohort.Run or BoldData
    design : DataFrame, shape (T, p)
        From :func:`design_matrix`.
    contrasts : mapping of str to str or array
        ``{name: expression}`` in nilearn's syntax over the design columns
        (``"pain_unmodulated - pain_modulated"``), or a weight vector.
    smoothing_fwhm : float or None
        Gaussian smoothing (mm) of each volume before the fit.
    stats : sequence of {"beta", "t", "z", "variance"}
        Which maps to return per contrast (``beta`` is nilearn's effect size).
    noise_model : str
        ``"ar1"`` or ``"ols"``.

    Returns
    -------
    dict of str to Nifti1Image
        ``"<contrast>_<stat>"`` -> float32 3-D image on the run's grid (0 outside the mask).

    Examples
    --------
    >>> from painplast.cohort import Cohort
    >>> from painplast.config import Config
    >>> run = Cohort.from_bids(bids_dir).subject("sub-001").run("pain")
    >>> maps = fit_voxelwise(run, design_matrix(run, run.load_events(), Config()), {"pain": "pain"},
    ...                      smoothing_fwhm=6.0)
    >>> sorted(maps), maps["pain_t"].shape
    (['pain_beta', 'pain_t'], (50, 59, 48))
    """
    return contrast_maps(run, design, contrasts, smoothing_fwhm, noise_model).images(stats)
