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
import threading
import warnings
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping, Sequence

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from .. import atlas
from ..errors import InputError
from . import _buffers

__all__ = ["BoldData", "load_bold", "confounds", "design_matrix", "roi_timeseries", "fit_timeseries",
           "fit_roi", "fit_voxelwise", "region_masks", "percent_signal", "level_name",
           "DEFAULT_CONFOUNDS", "ContrastMaps", "contrast_maps", "fixed_effects", "fixed_effects_table",
           "task_runs", "glm_contrasts", "shared_runs"]

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

    def mean(self) -> np.ndarray:
        """Each voxel's temporal mean (V,), float64; computed once per run (smoothing and the
        unsmoothed GLM both need it)."""
        cache = self.__dict__
        if "_mean" not in cache:
            cache["_mean"] = self.data.mean(axis=0, dtype=np.float64)
        return cache["_mean"]

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
    key = (str(run.bold), str(run.mask), id(mask_img) if mask_img is not None else None)
    shared = getattr(_SHARED, "runs", None)
    if shared is not None and key in shared:
        return shared[key]
    try:
        img = nib.load(str(run.bold))
        shape = tuple(int(s) for s in img.shape)
    except Exception as error:  # nibabel raises several types for broken files
        raise InputError(f"cannot read the BOLD image ({error})", path=run.bold,
                         fix="re-run fMRIPrep or replace the file") from None
    if len(shape) != 4 or shape[3] < 10:
        raise InputError(f"the BOLD image has shape {shape}, not a 4-D series of at least 10 volumes",
                         path=run.bold, fix="give the 4-D desc-preproc_bold series")
    if mask_img is None and run.mask is not None:
        mask_img = nib.load(str(run.mask))
    try:
        if mask_img is not None:
            mask = np.asarray(mask_img.dataobj) > 0.5
            if mask.shape[:3] != shape[:3]:
                from nilearn.image import resample_to_img
                mask = resample_to_img(mask_img, nib.Nifti1Image(np.zeros(shape[:3], np.uint8), img.affine),
                                       interpolation="nearest", force_resample=True,
                                       copy_header=True).get_fdata() > 0.5
            mask = mask.reshape(shape[:3])
            data = _read_masked(img, str(run.bold), mask)
        else:
            arr = np.asarray(img.dataobj, dtype=np.float32)
            mean = arr.mean(axis=3)
            mask = mean > 0.2 * np.percentile(mean[mean > 0], 98) if (mean > 0).any() else mean != 0
            data = np.ascontiguousarray(arr[mask].T)
            del arr, mean
    except InputError:
        raise
    except Exception as error:
        raise InputError(f"cannot read the BOLD image ({error})", path=run.bold,
                         fix="re-run fMRIPrep or replace the file") from None
    finite = _finite_columns(img, data)
    if finite is not None:  # voxels with NaN or inf at any time are left out of the mask
        inside = mask.copy()
        mask[inside] = finite
        data = np.ascontiguousarray(data[:, finite])
    tr = run.repetition_time or float(img.header.get_zooms()[3])
    if not tr or tr <= 0:
        raise InputError("the repetition time is unknown", path=run.bold,
                         fix="add RepetitionTime to the BOLD JSON sidecar")
    data.flags.writeable = False       # shared between the stages of one engine task: never changed
    bold = BoldData(data, mask, np.asarray(img.affine, float), float(tr), str(run.bold))
    if shared is not None:
        shared[key] = bold
    return bold


def _finite_columns(img, data: np.ndarray) -> np.ndarray | None:
    """Which columns of ``data`` are finite at every volume; None when all are (the usual case).

    Integer images scaled by a finite slope and intercept cannot hold NaN or inf, so their data
    are not scanned.
    """
    try:
        dtype = np.dtype(img.get_data_dtype())
        slope, inter = (np.asanyarray(getattr(img.dataobj, name, 0.0), np.float64) for name in ("slope", "inter"))
        if dtype.kind in "iub" and np.all(np.isfinite(slope)) and np.all(np.isfinite(inter)):
            return None
    except (TypeError, ValueError):
        pass
    finite = np.isfinite(data).all(axis=0)
    return None if finite.all() else finite


#: Runs loaded inside :func:`shared_runs`, per thread (``runs`` is None outside a block): the
#: engine may run the tasks of one participant on threads (engine._run_threads), each its own.
_SHARED = threading.local()


@contextlib.contextmanager
def shared_runs():
    """Keep every run :func:`load_bold` reads (and its smoothed copies) until the block ends.

    The engine runs the modules of one participant-session that read the same BOLD file inside
    one such block, so each 4-D image is decompressed and masked once however many modules use
    it; outside a block every call reads the file. Blocks do not nest (an inner block shares the
    outer one's runs).

    Examples
    --------
    >>> from painplast.cohort import Cohort
    >>> run = Cohort.from_bids(bids_dir).subject("sub-001").run("pain")
    >>> with shared_runs():
    ...     load_bold(run) is load_bold(run)
    True
    >>> load_bold(run) is load_bold(run)
    False
    """
    if getattr(_SHARED, "runs", None) is not None:
        yield
        return
    _SHARED.runs = {}
    try:
        yield
    finally:
        _SHARED.runs = None


def _read_masked(img, path: str, mask: np.ndarray, chunk_bytes: int = 1 << 23) -> np.ndarray:
    """The in-mask voxels of every volume of a 4-D NIfTI image as a (T, V) float32 array.

    The file is streamed a few volumes at a time (each volume is contiguous on disk: NIfTI data
    are in Fortran order) and only the mask's voxels are kept, so memory holds the (T, V) result
    and one chunk, never the whole 4-D array; the chunk is small enough (a few MiB) to be still in
    the processor's cache when its voxels are gathered; values are scaled with the header's slope and
    intercept exactly as nibabel scales them (``img.dataobj``). Images nibabel reads another
    way (other compressions, non-NIfTI formats) go through nibabel.
    """
    from nibabel.arrayproxy import ArrayProxy
    from nibabel.volumeutils import apply_read_scaling

    proxy = img.dataobj
    shape = tuple(int(s) for s in img.shape)
    index = np.ravel_multi_index(np.nonzero(mask), shape[:3], order="F")   # voxels in C order, as mask indexing
    n_t = shape[3]
    out = _buffers.empty((n_t, index.size), np.float32)
    with open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
    simple = (isinstance(proxy, ArrayProxy) and getattr(proxy, "order", "F") == "F"
              and isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)) and (gz or not path.endswith((".bz2", ".zst"))))
    if not simple:
        arr = np.asarray(proxy, dtype=np.float32)
        return np.ascontiguousarray(arr.reshape(-1, n_t, order="F")[index].T)
    dtype = np.dtype(proxy.dtype)
    n_vox = int(np.prod(shape[:3]))
    per_chunk = max(1, chunk_bytes // (n_vox * dtype.itemsize))
    buf = bytearray(per_chunk * n_vox * dtype.itemsize)
    view = memoryview(buf)
    slope, inter = np.asanyarray(proxy.slope), np.asanyarray(proxy.inter)   # as ArrayProxy._get_scaled
    slope = slope.astype(np.float32) if np.can_cast(slope, np.float32) else slope
    inter = inter.astype(np.float32) if np.can_cast(inter, np.float32) else inter
    with open(path, "rb") as raw:
        handle = _Inflate(raw) if gz else raw
        if proxy.offset:
            _read_exactly(handle, memoryview(bytearray(int(proxy.offset))), path)
        for t0 in range(0, n_t, per_chunk):
            k = min(per_chunk, n_t - t0)
            _read_exactly(handle, view[:k * n_vox * dtype.itemsize], path)
            vols = np.frombuffer(buf, dtype, count=k * n_vox).reshape(k, n_vox)
            values = np.take(vols, index, axis=1)      # in C order (one volume is in cache)
            out[t0:t0 + k] = apply_read_scaling(values, slope, inter)
    return out


class _Inflate:
    """``readinto`` over a gzip file (one or more members), inflated with zlib.

    The file is read ``block`` bytes at a time and each call of zlib inflates at most ``most``
    bytes: inputs and outputs stay in the processor's cache. A 2 mm run of 300 volumes inflates
    so in 0.64 CPU s, against 0.80 s with 4 MiB reads inflated 8 MiB at a time (each such output
    is fresh memory, and its copy holds the interpreter lock: the other engine thread waits).
    """

    def __init__(self, handle, block: int = 1 << 17, most: int = 1 << 20):
        self.handle, self.block, self.most = handle, block, most
        self.inflater = zlib.decompressobj(31)
        self.tail = b""

    def readinto(self, view: memoryview) -> int:
        n, want = 0, len(view)
        while n < want:
            if self.inflater.eof:                     # next gzip member, if any
                rest = self.inflater.unused_data or self.handle.read(self.block)
                if not rest:
                    break
                self.inflater = zlib.decompressobj(31)
                self.tail = rest
            if not self.tail:
                self.tail = self.handle.read(self.block)
                if not self.tail:
                    break
            out = self.inflater.decompress(self.tail, min(want - n, self.most))
            self.tail = self.inflater.unconsumed_tail
            view[n:n + len(out)] = out
            n += len(out)
        return n


def _read_exactly(handle, view: memoryview, path: str) -> None:
    got = 0
    while got < len(view):
        n = handle.readinto(view[got:])
        if not n:
            raise InputError("the BOLD image is shorter than its header says", path=path,
                             fix="re-run fMRIPrep or replace the file (it may be truncated)")
        got += n


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
    affine = np.asarray(bold.affine, np.float64).tobytes()
    return {r: _region_mask(r, bold.shape, affine, float(radius)) & bold.mask for r in regions}


@lru_cache(maxsize=256)
def _region_mask(region: str, shape: tuple, affine_bytes: bytes, radius: float) -> np.ndarray:
    """:func:`painplast.atlas.region_mask` on a grid, computed once per process (read-only).

    Every run of a study is usually on one grid, and each mask scans the whole grid's voxel
    coordinates, so the modules and participants of a process share them (about 1 MiB each).
    """
    mask = atlas.region_mask(region, (shape, np.frombuffer(affine_bytes).reshape(4, 4)), radius)
    mask.flags.writeable = False
    return mask


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
    regressors, names = _event_regressors(all_events, config.hrf_model, frame_times)
    if add.shape[1]:
        regressors = np.hstack([regressors, add.to_numpy(float)])
        names += list(add.columns)
    return make_first_level_design_matrix(
        frame_times, None, drift_model="cosine", high_pass=config.high_pass,
        add_regs=regressors if names else None, add_reg_names=names or None)


def _event_regressors(events: pd.DataFrame, hrf_model, frame_times: np.ndarray) -> tuple[np.ndarray, list]:
    """The HRF-convolved event regressors of nilearn's ``make_first_level_design_matrix``.

    The same steps as nilearn's (``handle_modulation_of_duplicate_events``, then
    ``compute_regressor`` per condition in sorted order, at its default oversampling and minimal
    onset), on events :func:`_clean_events` has already checked. Built here so that nilearn's
    event check, which inspects the call stack to log that a ``modulation`` column is used (a
    tenth of a second per design), is not run; the design matrix is then nilearn's with these
    regressors added first (tests/test_first_level_speed.py checks it equals
    ``make_first_level_design_matrix`` with the events, to the bit).
    """
    from nilearn.glm.first_level import compute_regressor
    from nilearn.glm.first_level.experimental_paradigm import handle_modulation_of_duplicate_events

    if isinstance(hrf_model, str):
        hrf_model = hrf_model.lower()
    if not len(events):
        return np.zeros((len(frame_times), 0)), []
    events = handle_modulation_of_duplicate_events(events.copy())   # warns if there are any
    trial_type = events["trial_type"].to_numpy()
    onset, duration = events["onset"].to_numpy(), events["duration"].to_numpy()
    modulation = events["modulation"].to_numpy()
    columns, names = [], []
    for condition in np.unique(trial_type):
        sel = trial_type == condition
        reg, reg_names = compute_regressor((onset[sel], duration[sel], modulation[sel]), hrf_model, frame_times,
                                           con_id=condition, fir_delays=[0], oversampling=50, min_onset=-24)
        columns.append(reg)
        names += list(reg_names)
    return np.hstack(columns), names


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


def _smooth(bold: BoldData, fwhm: float | None) -> tuple[np.ndarray, np.ndarray | None]:
    """In-mask data after Gaussian smoothing of each volume (FWHM in mm), as ``(values, offset)``.

    The smoothed series are ``values + offset``: ``offset`` (V,), float64, is the smoothed
    temporal mean image and ``values`` (T, V), float32, the smoothed deviations from each voxel's
    mean. Deviations are a few percent of the signal, so float32 products lose nothing that
    matters (the sum is as close to the exact smoothing as nilearn's float32 smoothing is), at
    half the cost of float64. Without smoothing: ``(bold.data, None)``.

    The kernel is nilearn's (``nilearn.image.smooth_img``: a Gaussian of ``fwhm`` per axis,
    truncated at 4 standard deviations, image borders reflected), applied as
    :class:`_Smoother` does. Voxels outside the brain mask count as zero (no non-brain signal
    is smoothed into edge voxels; nilearn smooths the whole image, so on images with signal
    outside the mask the edge voxels differ by design). The result is kept with the run's
    :class:`BoldData`, so two designs fitted to one run smooth it once.
    """
    if not fwhm:
        return bold.data, None
    cache = bold.__dict__.setdefault("_smoothed", {})       # lives (and dies) with the run's data
    if float(fwhm) not in cache:
        smoother = _smoother(bold.mask.tobytes(), bold.shape, bold.affine.tobytes(), float(fwhm))
        level = bold.mean().astype(np.float32)
        values = smoother(bold.data, subtract=level)
        values.flags.writeable = False
        offset = smoother(level[None], dtype=np.float64)[0]
        cache[float(fwhm)] = (values, offset)
    return cache[float(fwhm)]


@lru_cache(maxsize=8)
def _smoother(mask_bytes: bytes, shape: tuple, affine_bytes: bytes, fwhm: float) -> "_Smoother":
    mask = np.frombuffer(mask_bytes, bool).reshape(shape)
    return _Smoother(mask, np.frombuffer(affine_bytes).reshape(4, 4), fwhm)


class _Smoother:
    """Gaussian smoothing of in-mask (T, V) data as banded matrix products on tiles of each volume.

    Smoothing is separable: along each axis it multiplies every line of voxels by the same
    banded matrix, whose columns are ``scipy.ndimage.gaussian_filter1d`` of unit impulses (so
    the weights, the 4-standard-deviation truncation and the reflected image borders are
    nilearn's). Voxels outside the mask are zero, so each pass is computed only where its result
    can be non-zero *and* can still reach a mask voxel through the passes after it: along axis
    ``a`` the data reach at most the kernel's radius, so after the first pass only the mask
    dilated along that axis can be non-zero, and the last pass is needed only on the mask, the
    one before it only on the mask dilated along the last axis, and so on. Each pass is cut into
    tiles (``block`` rows of the band along its axis, ``group`` lines across it, and the
    contiguous range of the third axis that holds such voxels) and each tile is one batched
    matrix product over views of a volume buffer; on a brain mask this is about half of the
    products of the whole bounding box. Every needed value is the same weighted sum as on the
    whole box (a value outside the tiles is either zero or never reaches the mask).
    In float64 it equals ndimage's double-precision filter to rounding; :func:`_smooth` runs it
    in float32 on deviations from each voxel's mean.

    Examples
    --------
    >>> mask = np.zeros((9, 9, 9), bool); mask[2:7, 2:7, 2:7] = True
    >>> data = np.zeros((1, int(mask.sum())), np.float32); data[0, 62] = 1.0    # the centre voxel
    >>> smooth = _Smoother(mask, np.diag([2.0, 2.0, 2.0, 1.0]), 6.0)(data, dtype=np.float64)
    >>> vol = np.zeros(mask.shape); vol[mask] = data[0]
    >>> ref = ndimage.gaussian_filter(vol, 6.0 / np.sqrt(8 * np.log(2)) / 2.0, truncate=4.0)[mask]
    >>> bool(np.allclose(smooth[0], ref, atol=1e-12))
    True
    """

    def __init__(self, mask: np.ndarray, affine: np.ndarray, fwhm: float, block: int = 24, group: int = 8):
        vox = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
        sigma = fwhm / np.sqrt(8 * np.log(2)) / vox
        reach = [int(4.0 * s + 0.5) for s in sigma]          # ndimage's kernel radius
        where = np.argwhere(mask)
        lo = np.maximum(where.min(axis=0) - reach, 0) if len(where) else np.zeros(3, int)
        hi = np.minimum(where.max(axis=0) + 1 + np.asarray(reach), mask.shape) if len(where) else np.ones(3, int)
        self.box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        self.shape = tuple(int(b - a) for a, b in zip(lo, hi))
        inside = mask[self.box] if len(where) else np.zeros(self.shape, bool)
        self.index = np.flatnonzero(inside)                   # mask voxels, C order, in the box
        passes = [ax for ax in range(3) if sigma[ax] > 0]

        def dilate(region, ax):
            line = [1, 1, 1]
            line[ax] = 2 * reach[ax] + 1
            return ndimage.binary_dilation(region, structure=np.ones(line, bool)) if reach[ax] else region

        support = [inside]                                    # where a pass's output can be non-zero
        for ax in passes:
            support.append(dilate(support[-1], ax))
        need = [inside]                                       # where a pass's output is used
        for ax in reversed(passes[1:]):
            need.insert(0, dilate(need[0], ax))
        self.n_buffers = len(passes) + 1
        self.tiles = []                 # (pass, axis, kernel, input slices, output slices)
        for step, ax in enumerate(passes):
            region = support[step + 1] & need[step]
            n = self.shape[ax]
            K = ndimage.gaussian_filter1d(np.eye(n), sigma[ax], axis=0, mode="reflect", truncate=4.0)
            g_ax, f_ax = [a for a in range(3) if a != ax]
            for i0 in range(0, n, block):
                i1 = min(i0 + block, n)
                cols = np.flatnonzero(np.any(K[i0:i1] != 0, axis=0))
                j0, j1 = int(cols[0]), int(cols[-1]) + 1
                rows = np.take(region, np.arange(i0, i1), axis=ax)
                across = rows.any(axis=tuple(a for a in range(3) if a != g_ax))
                for g0 in range(0, self.shape[g_ax], group):
                    hit = np.flatnonzero(across[g0:g0 + group])
                    if not len(hit):
                        continue
                    a0, a1 = g0 + int(hit[0]), g0 + int(hit[-1]) + 1
                    part = np.take(rows, np.arange(a0, a1), axis=g_ax)
                    span = np.flatnonzero(part.any(axis=tuple(a for a in range(3) if a != f_ax)))
                    f0, f1 = int(span[0]), int(span[-1]) + 1
                    src, dst = [slice(None)] * 3, [slice(None)] * 3
                    src[g_ax] = dst[g_ax] = slice(a0, a1)
                    src[f_ax] = dst[f_ax] = slice(f0, f1)
                    src[ax], dst[ax] = slice(j0, j1), slice(i0, i1)
                    self.tiles.append((step, ax, K[i0:i1, j0:j1], tuple(src), tuple(dst)))

    def _plan(self, buffers: list, dtype) -> list:
        """The tiles as (left, right, out) operands of ``np.matmul`` on views of ``buffers``."""
        plan = []
        for step, ax, kern, src, dst in self.tiles:
            kern = np.ascontiguousarray(kern, dtype)
            vin, vout = buffers[step][(slice(None),) + src], buffers[step + 1][(slice(None),) + dst]
            if ax == 2:                                       # lines along the contiguous axis
                plan.append((vin, kern.T, vout))
            else:                                             # the pass's axis next to last, z last
                perm = (0, 2, 1, 3) if ax == 0 else (0, 1, 2, 3)
                plan.append((kern, vin.transpose(perm), vout.transpose(perm)))
        return plan

    def __call__(self, data: np.ndarray, subtract: np.ndarray | None = None, dtype=np.float32,
                 chunk: int = 1) -> np.ndarray:
        """Smooth ``data - subtract`` (rows: volumes, columns: mask voxels), in ``dtype``.

        ``chunk`` volumes share each product (one keeps a volume's buffers in cache).
        """
        data = np.asarray(data)
        out = _buffers.empty(data.shape, dtype)
        # fresh zeroed buffers per call (a smoother is shared by threads): values outside the
        # tiles stay zero, and a tile's stale values are finite, so they never reach the mask
        buffers = [np.zeros((chunk,) + self.shape, dtype) for _ in range(self.n_buffers)]
        plan = self._plan(buffers, dtype)
        first, last = buffers[0].reshape(chunk, -1), buffers[-1].reshape(chunk, -1)
        for t0 in range(0, data.shape[0], chunk):
            k = min(chunk, data.shape[0] - t0)
            for i in range(k):
                first[i][self.index] = data[t0 + i] if subtract is None else data[t0 + i] - subtract
            for left, right, result in plan:
                np.matmul(left, right, out=result)
            np.take(last[:k], self.index, axis=1, out=out[t0:t0 + k])
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


def glm_contrasts(Y: np.ndarray, X: np.ndarray, C: np.ndarray, noise_model: str = "ar1",
                  chunk: int = 2048, offset: np.ndarray | None = None,
                  mean: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Effects and variances of t contrasts of nilearn's first-level GLM, for every column of ``Y``.

    The model is :func:`nilearn.glm.first_level.run_glm` followed by
    :func:`nilearn.glm.contrasts.compute_contrast`, computed from one pass over the data:

    * each column is scaled to percent signal change of its own mean (:func:`percent_signal`)
      and reduced to a few products with the design (:func:`_series_products`: ``X'y`` and the
      design shifted by one volume, ``N'y``, and sums of squares and lagged products);
    * ``"ar1"``: from those, every voxel's OLS residual sums and its Yule-Walker AR(1)
      coefficient exactly as run_glm computes it (residuals centred on their grand mean over
      all voxels and volumes, the same normalisation), truncated to run_glm's 0.01-wide bins
      (:func:`_ar1_bins`);
    * per bin: one SVD of the pre-whitened design (the pseudo-inverse run_glm's ``ARModel``
      uses, same cut-off); ``U' W y`` of every voxel of the bin follows from its products, and
      gives every contrast's effect (``c' pinv(WX) W y``) and the dispersion
      (``(|Wy|^2 - |U' W y|^2) / (T - p)``, run_glm's normalisation); the variance is
      ``c' pinv(WX) pinv(WX)' c`` times the dispersion (:func:`_binned_contrasts`);
    * ``"ols"``: the same with no whitening (one bin).

    The data pass works on ``chunk`` contiguous columns at a time in float64 (``Y`` itself may
    be float32); it costs two design-sized matrix products per voxel, a third less than an OLS
    pass followed by a whitened pass.

    Parameters
    ----------
    Y : ndarray, shape (T, V)
        Raw (unscaled) intensities, e.g. :func:`load_bold`'s data, smoothed or not.
    X : ndarray, shape (T, p)
        Design matrix.
    C : ndarray, shape (k, p)
        One t contrast per row.
    noise_model : {"ar1", "ols"}
        Other noise models (``"ar2"`` ...) are passed to nilearn's ``run_glm``.
    chunk : int
        Voxels per matrix product.
    offset : ndarray, shape (V,), optional
        Added to every row of ``Y`` (the data are ``Y + offset``; see :func:`_smooth`).
    mean : ndarray, shape (V,), optional
        ``Y``'s column means in float64 when already known (:meth:`BoldData.mean`).

    Returns
    -------
    effect, variance : ndarray, shape (k, V), float64

    Examples
    --------
    >>> from nilearn.glm.first_level import run_glm
    >>> from nilearn.glm.contrasts import compute_contrast
    >>> rng = np.random.default_rng(0)
    >>> X = np.c_[rng.normal(size=(80, 2)), np.ones(80)]
    >>> Y = 100 + X[:, :2] @ rng.normal(size=(2, 50)) + rng.normal(size=(80, 50))
    >>> effect, variance = glm_contrasts(Y, X, np.array([[1.0, -1.0, 0.0]]))
    >>> labels, results = run_glm(percent_signal(Y), X, noise_model="ar1")
    >>> ref = compute_contrast(labels, results, [1.0, -1.0, 0.0], stat_type="t")
    >>> bool(np.allclose(effect[0], ref.effect_size()) and np.allclose(variance[0], ref.effect_variance()))
    True
    """
    Y = np.asarray(Y)
    X = np.asarray(X, np.float64)
    C = np.atleast_2d(np.asarray(C, np.float64))
    n_v = Y.shape[1]
    if noise_model not in ("ar1", "ols"):
        from nilearn.glm.contrasts import compute_contrast
        data = Y if offset is None else np.asarray(Y, np.float64) + offset
        labels, results = _glm(percent_signal(data), X, noise_model)
        cons = [compute_contrast(labels, results, c, stat_type="t") for c in C]
        return (np.array([np.ravel(c.effect_size()) for c in cons]),
                np.array([np.ravel(c.effect_variance()) for c in cons]))
    products = _series_products(Y, X, offset, chunk, mean)
    bins = _ar1_bins(products, X) if noise_model == "ar1" else np.zeros(n_v, int)
    return _binned_contrasts(products, X, C, bins)


def _rank(sv: np.ndarray, shape) -> int:
    """Singular values kept by a pseudo-inverse (numpy's and scipy's default cut-off)."""
    return int(np.sum(sv > max(shape) * np.finfo(float).eps * sv.max()))


def _series_products(Y: np.ndarray, X: np.ndarray, offset: np.ndarray | None = None,
                     chunk: int = 2048, mean: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One pass over the data: every product of a voxel's series that the AR(1) GLM needs.

    Each column ``y`` of ``Y (+ offset)`` is scaled to percent signal change of its own mean (as
    :func:`percent_signal`), then reduced to ``X' y``, ``N' y`` with ``N`` the design shifted one
    volume down plus one volume up (``N_t = x_t+1 + x_t-1``, missing neighbours 0), ``sum y``,
    ``y' y``, ``sum y_t y_t+1``, ``y_0`` and ``y_T-1``. OLS residuals, their AR(1) sums and the
    pre-whitened fit of any AR coefficient are functions of these (:func:`_ar1_bins`,
    :func:`_binned_contrasts`), so the (T, V) data are read and scaled once, in contiguous
    blocks of ``chunk`` columns, with one matrix product ``[X, N]' y`` per block. ``X'y`` and
    ``N'y`` are stored voxel by voxel (``XN``, (V, 2p): a voxel's products are contiguous, so the
    AR(1) bins gather each voxel's in one piece). ``mean``: ``Y``'s column means, when known.
    """
    Y = np.asarray(Y)
    n_t, n_v = Y.shape
    p = X.shape[1]
    N = np.zeros_like(X)
    N[:-1] += X[1:]
    N[1:] += X[:-1]
    D = np.ascontiguousarray(np.concatenate([X, N], axis=1).T)
    mean = Y.mean(axis=0, dtype=np.float64) if mean is None else np.array(mean, np.float64)
    if offset is not None:
        mean += offset
    ok = np.abs(mean) > 1e-6 * max(float(np.abs(mean).max(initial=0.0)), 1e-12)
    scale = np.where(ok, 100.0 / np.where(ok, mean, 1.0), 0.0)
    shift = np.where(ok, (0.0 if offset is None else offset) * scale - 100.0, 0.0)   # y = Y scale + shift
    out = {"XN": _buffers.empty((n_v, 2 * p)), "s": np.empty(n_v), "yy": np.empty(n_v),
           "lag": np.empty(n_v), "first": np.empty(n_v), "last": np.empty(n_v)}
    block = np.empty((n_t, min(chunk, n_v)))            # reused: no fresh pages per block
    for start in range(0, n_v, chunk):
        cols = slice(start, min(start + chunk, n_v))
        y = block[:, :cols.stop - start]
        np.multiply(Y[:, cols], scale[cols], out=y)
        y += shift[cols]
        np.matmul(y.T, D.T, out=out["XN"][cols])
        out["s"][cols] = y.sum(axis=0)
        out["yy"][cols] = np.einsum("tv,tv->v", y, y)
        out["lag"][cols] = np.einsum("tv,tv->v", y[1:], y[:-1])
        out["first"][cols], out["last"][cols] = y[0], y[-1]
    return out


def _ar1_bins(products: dict, X: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """run_glm's AR(1) bin of every voxel (``int(rho * 100)``) from :func:`_series_products`.

    The OLS coefficients are ``b = pinv(X) y = pinv(X'X) X'y``; the residuals ``e = y - X b``
    enter through ``sum e``, ``e'e``, ``sum e_t e_t+1``, ``e_0`` and ``e_T-1``, each written with
    the products (``e'e = y'y - 2 b'X'y + b'X'X b``, ``sum e_t e_t+1 = sum y_t y_t+1 - b'N'y +
    b' X[:-1]'X[1:] b``). As run_glm does, residuals are centred on their grand mean over all
    voxels and volumes, and the Yule-Walker coefficient is truncated to 0.01-wide bins. The
    residual sums are formed ``chunk`` voxels at a time (each voxel's arithmetic is the same;
    the (chunk, p) temporaries stay in cache instead of costing fresh pages of memory).
    """
    n_t, p = X.shape
    XN = products["XN"]
    n_v = XN.shape[0]
    _, sv, vt = np.linalg.svd(X, full_matrices=False)
    r = _rank(sv, X.shape)
    Pt, XX, XL = vt[:r] / sv[:r, None] ** 2, X.T @ X, X[:-1].T @ X[1:]
    s_e, s_ee, s_lag, first, last = (np.empty(n_v) for _ in range(5))
    for start in range(0, n_v, chunk):
        cols = slice(start, min(start + chunk, n_v))
        xy, ny = XN[cols, :p], XN[cols, p:]
        b = (xy @ vt[:r].T) @ Pt                                       # pinv(X) y, voxel by voxel
        s_e[cols] = products["s"][cols] - b @ X.sum(axis=0)
        s_ee[cols] = products["yy"][cols] - 2 * np.einsum("vp,vp->v", b, xy) + np.einsum("vp,vp->v", b, b @ XX)
        s_lag[cols] = products["lag"][cols] - np.einsum("vp,vp->v", b, ny) + np.einsum("vp,vp->v", b, b @ XL.T)
        first[cols] = products["first"][cols] - b @ X[0]
        last[cols] = products["last"][cols] - b @ X[-1]
    g = s_e.sum() / (n_t * n_v)                     # run_glm centres on the grand mean
    r0 = (s_ee - 2 * g * s_e + n_t * g * g) / (n_t * n_t)
    r1 = (s_lag - g * (2 * s_e - first - last) + (n_t - 1) * g * g) / ((n_t - 1) * n_t)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(r0 > 0, r1 / r0, 0.0)
    return (rho * 100).astype(int)                 # run_glm: (rho * bins).astype(int) / bins


def _binned_contrasts(products: dict, X: np.ndarray, C: np.ndarray, bins: np.ndarray,
                      chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Effects and variances of the t contrasts ``C`` of the pre-whitened fit, bin by bin.

    For AR coefficient ``a`` (``W``: ``(Wy)_0 = y_0``, ``(Wy)_t = y_t - a y_t-1``, run_glm's
    ``ARModel.whiten``), with ``WX = U S V'`` (the pseudo-inverse's SVD and cut-off):
    ``U'Wy = S^-1 V' (WX)'Wy`` and ``(WX)'Wy = (1 + a^2) X'y - a N'y - a^2 x_T-1 y_T-1``;
    ``|Wy|^2 = (1 + a^2) y'y - 2 a sum y_t y_t+1 - a^2 y_T-1^2``. The effect is
    ``c' pinv(WX) Wy``, the dispersion ``(|Wy|^2 - |U'Wy|^2) / (T - p)`` and the variance
    ``c' pinv(WX) pinv(WX)' c`` times the dispersion, as compute_contrast gives them.
    """
    n_t, p = X.shape
    XN, yy, lag, last = (products[k] for k in ("XN", "yy", "lag", "last"))
    n_v = XN.shape[0]
    effect = np.zeros((n_v, len(C)))
    variance = np.zeros((n_v, len(C)))
    order = np.argsort(bins, kind="stable")
    edges = np.flatnonzero(np.diff(bins[order])) + 1
    for members in np.split(order, edges):
        if not len(members):
            continue
        a = bins[members[0]] * 1.0 / 100
        wX = X.copy()
        wX[1:] = wX[1:] - a * X[:-1]                   # ARModel.whiten
        _, sv, vt = np.linalg.svd(wX, full_matrices=False)
        r = _rank(sv, wX.shape)
        Rt = (vt[:r] / sv[:r, None]).T                  # U' W y = R (WX)' W y
        Ft = ((C @ vt[:r].T) / sv[:r]).T                # contrasts of pinv(WX), through U
        q = np.einsum("rk,rk->k", Ft, Ft)               # c' pinv(WX) pinv(WX)' c
        for start in range(0, len(members), chunk):     # (chunk, p) temporaries stay in cache
            m = members[start:start + chunk]
            g = XN[m]                                   # each voxel's X'y and N'y, in one piece
            h = (1 + a * a) * g[:, :p] - a * g[:, p:] - np.outer(last[m], a * a * X[-1])
            z = h @ Rt
            wyy = (1 + a * a) * yy[m] - 2 * a * lag[m] - a * a * last[m] ** 2
            rss = np.maximum(wyy - np.einsum("vr,vr->v", z, z), 0.0)
            effect[m] = z @ Ft
            variance[m] = np.outer(rss / (n_t - p), q)
    return np.ascontiguousarray(effect.T), np.ascontiguousarray(variance.T)


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
    bold = load_bold(run)
    if len(design) != bold.n_volumes:
        raise InputError(f"the design has {len(design)} rows, the BOLD series {bold.n_volumes} volumes",
                         path=bold.source, fix="build the design with the run's number of volumes")
    X = design.to_numpy(float)
    names = list(contrasts)
    C = np.array([_contrast_vector(contrasts[name], design.columns) for name in names]).reshape(len(names), -1)
    smoothed, offset = _smooth(bold, smoothing_fwhm)
    values = glm_contrasts(smoothed, X, C, noise_model, offset=offset,
                           mean=bold.mean() if smoothed is bold.data else None)
    effect, variance = {}, {}
    dof = float(len(design) - np.linalg.matrix_rank(X))
    for i, name in enumerate(names):
        for store, v in ((effect, values[0][i]), (variance, values[1][i])):
            full = np.zeros(bold.shape, np.float64)
            full[bold.mask] = v
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
