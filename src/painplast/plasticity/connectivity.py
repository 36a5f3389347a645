"""Connectivity: altered large-scale network connectivity at rest.

Subject stage (``rest`` task, first run; one participant's 4-D image in memory at a time):

1. Denoising. Confound regressors are built from fMRIPrep's ``desc-confounds_timeseries.tsv`` by
   a strategy string (``confounds_strategy``: ``+``-joined ``motion6`` | ``motion24``,
   ``wm_csf``, ``acompcor`` (the first five ``a_comp_cor_*`` columns *where present*),
   ``global``). Volumes whose framewise displacement exceeds ``fd_threshold`` mm are censored
   (scrubbing), together with kept segments shorter than ``min_segment`` volumes (as nilearn's
   ``load_confounds(scrub=...)``). :func:`nilearn.signal.clean` then detrends, filters
   (Butterworth, ``high_pass`` Hz and, if set, ``low_pass`` Hz; censored volumes are interpolated
   before filtering and dropped after), regresses the (equally filtered) confounds and z-scores.
   The default is high-pass only (0.01 Hz), as nilearn's ``load_confounds_strategy`` presets:
   a 0.1 Hz low-pass halves the degrees of freedom of a short run and removes the part of the
   resting signal above 0.1 Hz that couplings carry too (set ``low_pass`` for a classic
   band-pass; its cost on the simulated couplings is in benchmarks/RESULTS.md). These steps are
   linear, so they are applied as one (T_kept, T) matrix obtained by cleaning the identity
   (:func:`cleaning_operator`): one matrix product per brain instead of one filter call per
   voxel, as nilearn does.
   ROI means are taken from the raw voxels *before* cleaning; cleaning is linear, so this equals
   cleaning every voxel and then averaging, and it is exactly what nilearn's
   ``NiftiSpheresMasker`` / ``NiftiLabelsMasker`` with ``confounds=`` and ``sample_mask=`` do
   (the tests compare the two). Mean framewise displacement and the fraction of censored
   volumes are features (``connectivity.mean_fd``, ``connectivity.scrubbed_fraction``); a
   participant above ``max_mean_fd`` or ``max_scrubbed_fraction``, or left with fewer than
   ``min_volumes`` volumes, is excluded (``info["excluded"]``) and the group stage lists them.
   ROI time series from another pipeline, which painplast cannot denoise further, are held to
   the stringent criteria of Parkes et al. 2018 (``timeseries_motion_exclusion``: mean FD >
   0.25 mm, more than 20% of volumes with FD > 0.2 mm, or any FD > 5 mm).
2. ROI time series: the pain-system ROIs (:data:`painplast.atlas.PAIN_ROIS`, spheres of
   ``config.roi_radius_mm``), and optionally a network atlas (``atlas``): ``power``,
   ``dosenbach``, ``seitzman`` (coordinate spheres, :func:`painplast.atlas.coords_atlas`) or the
   path of a label image (resampled to the BOLD grid, nearest neighbour; region names and
   networks from a TSV next to it with the same stem, columns ``index, name[, network]``).
3. Connectomes: Pearson correlation -> Fisher z (``arrays["pain_connectome"]``, and
   ``"atlas_connectome"``), partial correlation (nilearn ``ConnectivityMeasure``, Ledoit-Wolf;
   ``"pain_partial"``), and the cleaned time series (``"pain_timeseries"``) for the group's
   tangent-space embedding.
4. Features: the named couplings ``connectivity.<name>`` of :data:`painplast.atlas.COUPLINGS`
   (mean Fisher z over the edges between the two ROI sets; the a-priori features); within- and
   between-network mean Fisher z (``pain_within_<net>``, ``pain_between_<a>_<b>``); graph metrics
   (``<level>_graph_*`` for the whole graph, ``<level>_<net>_<metric>`` per network; see
   :func:`graph_metrics` for thresholding and weighting).
5. Seed-to-voxel maps (Fisher z) of the ``seeds`` regions (default mPFC, NAcc, PAG, anterior and
   posterior insula): ``maps["seed_<region>_z"]``. The voxels are cleaned in chunks of
   ``voxel_chunk`` columns, so memory stays at one 4-D image plus one chunk.

ROI time series extracted by another pipeline (``Run.timeseries``: one column per region, kept
by position because names may repeat) are used without images: a first column called
``GlobSig``/``global_signal`` is the global signal (a confound with ``global`` in
``timeseries_confounds_strategy``, never a node). Such series are taken as denoised and filtered
by the pipeline that made them, as their confounds are: they are scrubbed, detrended (linear)
and z-scored, with no confounds regressed and no second temporal filter unless asked
(``timeseries_confounds_strategy``, ``timeseries_high_pass``, ``timeseries_low_pass``; a second
0.01 Hz high-pass of already filtered 200-volume series removed predictive signal on the RPN
study's real series, benchmarks/RESULTS.md); ``framewise_displacement`` comes from the
confounds file beside it when there is one; the repetition time from the run, else the
``repetition_time`` option; networks from an ``atlas-<label>_dseg.tsv`` (``name``, ``network``,
in column order) found in the folders above the file, or the ``network_labels`` option. Their
connectome is the ``atlas`` level; if the columns include pain ROI names, the couplings use them.

Group stage: ``findings`` = the couplings x (patient-control, responder-nonresponder,
pain_intensity, pain_duration), covariates of :mod:`painplast.contrasts` plus ``mean_fd``.
Exploratory tables: ``edges`` (edge-wise GLM, regressor + age, sex, site, mean FD, for
correlation, partial correlation and tangent connectomes, Benjamini-Hochberg FDR within each
level/kind/contrast), ``graph`` (graph and network features, same contrasts, FDR over the table),
``nbs`` (network-based statistic on the pain connectome, :func:`painplast.stats.nbs.nbs` with the
covariates in the design), ``excluded``; maps: second-level t maps of the seed maps per contrast
and their mean; figures ``connectome`` and ``nbs_component`` (PNG bytes).
"""
from __future__ import annotations

import re
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import sparse
from scipy import stats as sps

from .. import atlas, contrasts
from ..cohort import Cohort, Run, Subject
from ..config import Config
from ..errors import InputError
from ..results import GroupResult, SubjectResult, figure_png
from ..stats import effects
from ..stats.nbs import nbs as _nbs
from . import Declaration, _group
from ._confounds import confound_regressors

__all__ = ["DECLARATION", "DEFAULTS", "EXPLORATORY_CONTRASTS", "FINDINGS_CONTRASTS", "Parcellation",
           "a_priori_tests", "clean", "cleaning_operator", "confound_regressors",
           "correlation_matrix", "coupling", "edgewise_glm", "fisher_z", "global_efficiency",
           "graph_metrics", "group", "local_efficiency", "network_blocks", "network_parcellation",
           "non_steady_state",
           "pain_parcellation", "partial_correlation", "scrub_mask", "seed_parcellation",
           "subject", "zscore"]

NAME = "connectivity"
TASK = "rest"
DEFAULTS = {
    "task": TASK,
    "confounds_strategy": "motion24+wm_csf",   # nilearn's "simple" strategy; add +acompcor/+global
    "timeseries_confounds_strategy": "",       # ROI time series from elsewhere: assumed denoised
    "timeseries_high_pass": None,              # Hz; ROI series from elsewhere: assumed filtered
    "timeseries_low_pass": None,               # Hz
    "scrub": True,                             # censor volumes with FD > fd_threshold
    "fd_threshold": 0.5,                       # mm
    "min_segment": 5,                          # censor kept segments shorter than this (volumes)
    "high_pass": 0.01,                         # Hz
    "low_pass": None,                          # Hz; None: high-pass only (see the module notes)
    "max_mean_fd": 0.5,                        # mm; exclusion threshold
    "max_scrubbed_fraction": 0.3,              # exclusion threshold
    "min_volumes": 50,                         # exclusion threshold (volumes left after scrubbing)
    "timeseries_motion_exclusion": "stringent",  # ROI series from elsewhere: Parkes et al. 2018
    "atlas": None,                             # None, power, dosenbach, seitzman or a label image path
    "seeds": ("mpfc", "nacc", "pag", "insula_anterior", "insula_posterior"),
    "seed_maps": True,
    "repetition_time": None,                   # s; used when the run has none
    "network_labels": None,                    # TSV (name, network) for time series from elsewhere
    "graph_density": 0.2,                      # proportion of strongest positive edges kept
    "nbs_threshold": 3.0,                      # |t| forming supra-threshold edges
    "nbs_tail": "both",
    "nbs_contrasts": ("patient-control",),
    "voxel_chunk": 20000,
}

#: Contrasts of the findings table (the a-priori couplings).
FINDINGS_CONTRASTS = ("patient-control", "responder-nonresponder", "pain_intensity", "pain_duration")
#: Contrasts of the exploratory tables (edges, graph, seed maps).
EXPLORATORY_CONTRASTS = ("patient-control", "pain_intensity", "pain_duration")
_GLOBAL_NAMES = ("globsig", "global_signal", "global")


# =============================================================================== denoising


def scrub_mask(fd: np.ndarray | None, n_volumes: int, threshold: float, min_segment: int = 5,
               enabled: bool = True) -> np.ndarray:
    """Volumes kept after scrubbing by framewise displacement.

    Parameters
    ----------
    fd : ndarray, shape (T,) or None
        Framewise displacement (mm); NaN (the first volume) counts as 0.
    n_volumes : int
    threshold : float
        Volumes with ``fd > threshold`` are censored.
    min_segment : int
        Runs of kept volumes shorter than this are censored too.
    enabled : bool
        False keeps every volume.

    Returns
    -------
    ndarray of bool, shape (T,)

    Examples
    --------
    >>> scrub_mask(np.array([np.nan, 0.1, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1]), 8, 0.5, 3).astype(int).tolist()
    [0, 0, 0, 1, 1, 1, 1, 1]
    """
    keep = np.ones(n_volumes, bool)
    if fd is None or not enabled:
        return keep
    keep &= ~(np.nan_to_num(np.asarray(fd, float), nan=0.0) > threshold)
    if min_segment > 1:
        edges = np.flatnonzero(np.diff(np.r_[0, keep.astype(int), 0]))
        for start, stop in zip(edges[::2], edges[1::2]):
            if stop - start < min_segment:
                keep[start:stop] = False
    return keep


def cleaning_operator(n_volumes: int, confounds: np.ndarray | None, keep: np.ndarray, t_r: float,
                      high_pass: float | None, low_pass: float | None) -> np.ndarray:
    """The linear map that :func:`nilearn.signal.clean` applies to every column, as a matrix.

    Detrending, Butterworth band-pass (censored volumes interpolated before filtering and dropped
    after) and confound regression are linear in the signal, so ``nilearn.signal.clean(Y) ==
    M @ Y`` (before standardization) with ``M = nilearn.signal.clean(I_T)``. Cleaning a whole
    brain then costs one matrix product instead of one filter call per voxel. (nilearn filters
    column by column unless asked to copy; the copy filters all T columns at once, 9x faster, with
    the same bits.)

    Parameters
    ----------
    n_volumes : int
        T.
    confounds : ndarray, shape (T, k) or None
    keep : ndarray of bool, shape (T,)
        Volumes kept after scrubbing.
    t_r : float
        Repetition time (s).
    high_pass, low_pass : float or None
        Band edges (Hz); a ``low_pass`` at or above Nyquist is dropped.

    Returns
    -------
    ndarray, shape (keep.sum(), T), float64

    Examples
    --------
    >>> M = cleaning_operator(100, None, np.ones(100, bool), 2.0, 0.01, 0.1)
    >>> M.shape, bool(np.allclose(M @ np.ones(100), 0))
    ((100, 100), True)
    """
    from nilearn.signal import clean as nl_clean

    nyquist = 0.5 / t_r
    low = low_pass if low_pass and low_pass < nyquist else None
    high = high_pass if high_pass else None
    conf = confounds if confounds is not None and confounds.size else None
    sample_mask = None if keep.all() else np.flatnonzero(keep)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = nl_clean(np.eye(n_volumes), detrend=True, standardize=False, confounds=conf,
                       sample_mask=sample_mask, filter="butterworth", low_pass=low, high_pass=high,
                       t_r=t_r, butterworth__copy=True)   # all columns in one filter call, same bits
    return np.asarray(out, np.float64)


def zscore(x: np.ndarray) -> np.ndarray:
    """Columns z-scored with ``ddof=1`` (nilearn's ``zscore_sample``); flat columns become 0.

    Examples
    --------
    >>> zscore(np.array([[1.0, 5.0], [3.0, 5.0]])).round(4).tolist()
    [[-0.7071, 0.0], [0.7071, 0.0]]
    """
    x = np.asarray(x, np.float64)
    x = x - x.mean(0)
    sd = x.std(0, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sd > 1e-12 * max(float(np.max(sd, initial=0.0)), 1e-300), x / sd, 0.0)


def clean(signals: np.ndarray, confounds: np.ndarray | None, keep: np.ndarray, t_r: float,
          high_pass: float | None, low_pass: float | None) -> np.ndarray:
    """Detrend, band-pass, regress confounds and z-score, keeping the uncensored volumes.

    Same result as :func:`nilearn.signal.clean` with ``standardize="zscore_sample"``,
    ``filter="butterworth"``, ``confounds`` and ``sample_mask`` (see :func:`cleaning_operator`).

    Parameters
    ----------
    signals : ndarray, shape (T, n)
    confounds : ndarray, shape (T, k) or None
    keep : ndarray of bool, shape (T,)
    t_r : float
    high_pass, low_pass : float or None

    Returns
    -------
    ndarray, shape (keep.sum(), n), float64; columns z-scored (ddof=1).

    Examples
    --------
    >>> y = np.random.default_rng(0).normal(size=(60, 3))
    >>> clean(y, None, np.ones(60, bool), 2.0, 0.01, 0.1).std(0, ddof=1).round(6).tolist()
    [1.0, 1.0, 1.0]
    """
    op = cleaning_operator(len(signals), confounds, keep, t_r, high_pass, low_pass)
    return zscore(op @ np.asarray(signals, np.float64))


# =============================================================================== parcellations


class Parcellation:
    """Regions on one BOLD grid, as a sparse averaging matrix.

    Attributes
    ----------
    names : list of str, length R
    networks : list of str, length R
    coords : ndarray, shape (R, 3) or None
        Centres (MNI mm), for plots.
    weights : scipy.sparse.csr_matrix, shape (V, R)
        ``1 / n_r`` on the in-mask voxels of region r (a column of zeros for an empty region).

    Examples
    --------
    >>> parc = Parcellation(["a", "b"], ["n", "n"], None, [np.array([True, True, False]),
    ...                                                    np.array([False, False, True])])
    >>> parc.means(np.array([[1.0, 3.0, 5.0]])).tolist()      # one volume, three voxels
    [[2.0, 5.0]]
    """

    def __init__(self, names, networks, coords, masks: Sequence[np.ndarray]):
        self.names = list(names)
        self.networks = list(networks)
        self.coords = None if coords is None else np.asarray(coords, float)
        cols, rows, vals = [], [], []
        for r, m in enumerate(masks):
            idx = np.flatnonzero(m)
            rows.append(idx)
            cols.append(np.full(idx.size, r))
            vals.append(np.full(idx.size, 1.0 / max(idx.size, 1)))
        n_vox = masks[0].size if len(masks) else 0
        self.weights = sparse.csr_matrix((np.concatenate(vals) if vals else [],
                                          (np.concatenate(rows) if rows else [],
                                           np.concatenate(cols) if cols else [])),
                                         shape=(n_vox, len(masks)))
        self.empty = np.asarray([not np.any(m) for m in masks], bool)

    @classmethod
    def from_labels(cls, names, networks, coords, labels: np.ndarray, values: Sequence[int]) -> "Parcellation":
        """Regions of a label image: ``labels`` (V,) holds each in-mask voxel's label, region r is
        the voxels labelled ``values[r]`` (no full-grid mask per region is made).

        Examples
        --------
        >>> parc = Parcellation.from_labels(["a", "b"], ["n", "n"], None, np.array([1, 1, 2]), [1, 2])
        >>> parc.means(np.array([[1.0, 3.0, 5.0]])).tolist()
        [[2.0, 5.0]]
        """
        values = np.asarray(values)
        labels = np.asarray(labels)
        order = np.argsort(values)
        pos = np.searchsorted(values[order], labels)
        pos = np.clip(pos, 0, len(values) - 1)
        hit = values[order][pos] == labels
        voxels = np.flatnonzero(hit)
        regions = order[pos[hit]]
        counts = np.bincount(regions, minlength=len(values))
        self = cls.__new__(cls)
        self.names = list(names)
        self.networks = list(networks)
        self.coords = None if coords is None else np.asarray(coords, float)
        self.weights = sparse.csr_matrix((1.0 / counts[regions], (voxels, regions)), shape=(labels.size, len(values)))
        self.empty = counts == 0
        return self

    def means(self, data: np.ndarray, chunk: int = 4) -> np.ndarray:
        """(T, V) voxel data (float32 or float64) -> (T, R) region means, float64.

        ``chunk`` volumes at a time are converted to float64, so a float32 run is never copied
        whole (the sums are the same as on a float64 copy, whatever the chunk; a few volumes
        keep the copy in the processor's cache).
        """
        data = np.asarray(data)
        weights_t = self.weights.T.tocsr()
        used = np.unique(weights_t.indices)
        if used.size * 2 < data.shape[1]:
            # regions that cover a small part of the brain (spheres): only their voxels are read;
            # each row's sum runs over the same voxels in the same order, so the means are equal
            sub = np.asarray(data[:, used], np.float64)
            return np.asarray((weights_t[:, used] @ sub.T).T)
        out = np.empty((data.shape[0], self.weights.shape[1]), np.float64)
        for start in range(0, data.shape[0], chunk):
            block = np.asarray(data[start:start + chunk], np.float64)
            out[start:start + chunk] = (weights_t @ block.T).T
        return out


def _in_mask(masks_full: Sequence[np.ndarray], brain: np.ndarray) -> list[np.ndarray]:
    return [m[brain] for m in masks_full]


@lru_cache(maxsize=16)
def _sphere_masks(shape: tuple, affine_key: tuple, centers: tuple, radii: tuple) -> tuple[np.ndarray, ...]:
    """Full-grid sphere masks (:func:`painplast.atlas.sphere_mask`), cached per grid (every
    participant of a study shares one)."""
    affine = np.asarray(affine_key, float).reshape(4, 4)
    out = []
    for center, radius in zip(centers, radii):
        mask = atlas.sphere_mask(center, (shape, affine), radius)
        mask.setflags(write=False)
        out.append(mask)
    return tuple(out)


def _spheres(centers, radii, shape, affine) -> tuple[np.ndarray, ...]:
    return _sphere_masks(tuple(int(s) for s in shape), tuple(np.round(np.asarray(affine, float), 6).ravel()),
                         tuple(tuple(float(c) for c in center) for center in centers),
                         tuple(float(r) for r in radii))


def pain_parcellation(shape, affine, brain: np.ndarray, radius: float) -> Parcellation:
    """The pain-system ROI spheres (:data:`painplast.atlas.PAIN_ROIS`) on a grid, within ``brain``.

    Examples
    --------
    >>> mask = atlas.brain_mask(4)
    >>> parc = pain_parcellation(mask.shape, mask.affine, np.asarray(mask.dataobj) > 0, 6.0)
    >>> len(parc.names), parc.names[0]
    (24, 's1_hand_l')
    """
    masks = _spheres([r.center for r in atlas.PAIN_ROIS], [radius] * len(atlas.PAIN_ROIS), shape, affine)
    return Parcellation([r.name for r in atlas.PAIN_ROIS], [r.network for r in atlas.PAIN_ROIS],
                        [r.center for r in atlas.PAIN_ROIS], _in_mask(masks, brain))


def seed_parcellation(regions: Sequence[str], shape, affine, brain, radius) -> Parcellation:
    """One column per seed region (union of its spheres).

    Examples
    --------
    >>> mask = atlas.brain_mask(4)
    >>> seed_parcellation(["mpfc", "pag"], mask.shape, mask.affine, np.asarray(mask.dataobj) > 0, 6.0).names
    ['mpfc', 'pag']
    """
    masks = []
    for region in regions:
        rois = atlas.region_rois(region)
        spheres = _spheres([r.center for r in rois], [radius] * len(rois), shape, affine)
        masks.append(np.logical_or.reduce(spheres))
    return Parcellation(list(regions), ["seed"] * len(regions), None, _in_mask(masks, brain))


def network_parcellation(spec: str, shape, affine, brain) -> Parcellation:
    """A network atlas on a grid: ``power``, ``dosenbach``, ``seitzman`` or a label image path.

    Coordinate atlases become spheres of the atlas's radius (nilearn ``NiftiSpheresMasker``
    semantics: voxel centres within the radius, the nearest voxel always included; spheres may
    overlap). A label image is resampled to the grid (nearest neighbour).

    Examples
    --------
    >>> mask = atlas.brain_mask(4)
    >>> parc = network_parcellation("dosenbach", mask.shape, mask.affine, np.asarray(mask.dataobj) > 0)
    >>> len(parc.names), sorted(set(parc.networks))[:3]
    (160, ['cerebellum', 'cingulo_opercular', 'default'])
    """
    key = str(spec).lower()
    if key in ("power", "dosenbach", "seitzman"):
        table = atlas.coords_atlas(key)
        masks = _spheres(table[["x", "y", "z"]].to_numpy(), table["radius"].to_numpy(), shape, affine)
        return Parcellation(table["name"], [_clean_name(n) for n in table["network"]],
                            table[["x", "y", "z"]].to_numpy(), _in_mask(masks, brain))
    path = Path(spec)
    if not path.exists():
        raise InputError(f"atlas '{spec}' is neither a known coordinate atlas nor a file", path=path,
                         fix="use power, dosenbach, seitzman, or the path of a label image (NIfTI)")
    try:
        img = nib.load(str(path))
        if not (tuple(img.shape[:3]) == tuple(shape) and np.allclose(img.affine, affine, atol=1e-4)):
            img = atlas.resample_labels(img, (nib.Nifti1Image(np.zeros(shape, np.int8), affine)))
        labels = np.rint(np.asarray(img.dataobj)).astype(int).reshape(tuple(shape))
    except Exception as error:  # nibabel / nilearn raise several types
        raise InputError(f"cannot read the label image ({error})", path=path,
                         fix="give an integer label image in MNI space") from None
    values = [v for v in np.unique(labels) if v > 0]
    names = [f"label_{v:03d}" for v in values]
    networks = ["unlabelled"] * len(values)
    lookup = _label_table(path)
    if lookup is not None:
        for i, v in enumerate(values):
            if v in lookup.index:
                names[i] = str(lookup.loc[v, "name"])
                if "network" in lookup.columns:
                    networks[i] = _clean_name(lookup.loc[v, "network"])
    from scipy import ndimage
    centres = ndimage.center_of_mass(np.ones(shape), labels, values) if values else []
    coords = [tuple(affine[:3, :3] @ np.asarray(c) + affine[:3, 3]) for c in centres]
    if not values:
        raise InputError("the label image has no labels above 0 on the BOLD grid", path=path,
                         fix="give an integer label image that overlaps the brain")
    return Parcellation.from_labels(names, networks, coords, labels[brain], values)


def _label_table(path: Path) -> pd.DataFrame | None:
    stem = path.name.split(".")[0]
    for candidate in (path.with_name(stem + ".tsv"), path.with_name(stem + "_dseg.tsv")):
        if candidate.exists():
            table = pd.read_csv(candidate, sep="\t")
            if "index" in table.columns and "name" in table.columns:
                return table.set_index("index")
    return None


def _clean_name(text) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", str(text)).strip("_").lower() or "unlabelled"


# =============================================================================== connectomes


def fisher_z(corr: np.ndarray) -> np.ndarray:
    """Fisher z (arctanh) of a correlation matrix, diagonal set to 0.

    Examples
    --------
    >>> fisher_z(np.array([[1.0, 0.5], [0.5, 1.0]])).round(4).tolist()
    [[0.0, 0.5493], [0.5493, 0.0]]
    """
    z = np.arctanh(np.clip(np.asarray(corr, np.float64), -0.999999, 0.999999))
    np.fill_diagonal(z, 0.0)
    return z


def correlation_matrix(ts: np.ndarray) -> np.ndarray:
    """Pearson correlation of the columns of ``ts`` (T, R) -> (R, R); NaN rows/cols for flat columns.

    Examples
    --------
    >>> ts = np.column_stack([np.arange(5.0), np.arange(5.0) ** 2, np.ones(5)])
    >>> correlation_matrix(ts).round(2)[0].tolist()
    [1.0, 0.96, nan]
    """
    ts = np.asarray(ts, np.float64)
    ts = ts - ts.mean(0)
    norm = np.sqrt((ts * ts).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = ts / norm
        corr = z.T @ z
    bad = ~(norm > 0)
    corr[bad, :] = np.nan
    corr[:, bad] = np.nan
    return corr


def partial_correlation(ts: np.ndarray) -> np.ndarray:
    """Partial correlation (nilearn ``ConnectivityMeasure``, Ledoit-Wolf covariance), (R, R).

    Flat columns get NaN rows and columns; the diagonal is 0.

    Examples
    --------
    >>> ts = np.random.default_rng(0).normal(size=(50, 3))
    >>> partial_correlation(ts).shape, np.diag(partial_correlation(ts)).tolist()
    ((3, 3), [0.0, 0.0, 0.0])
    """
    from nilearn.connectome import ConnectivityMeasure

    good = np.asarray(ts).std(0) > 0
    out = np.full((ts.shape[1], ts.shape[1]), np.nan)
    if good.sum() >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pc = ConnectivityMeasure(kind="partial correlation").fit_transform([np.asarray(ts)[:, good]])[0]
        out[np.ix_(good, good)] = pc
    np.fill_diagonal(out, 0.0)
    return out


def coupling(z: np.ndarray, names: Sequence[str], side_a: Sequence[str], side_b: Sequence[str]) -> float:
    """Mean Fisher z over the edges between two sets of nodes (NaN if a side is absent).

    Examples
    --------
    >>> z = np.array([[0, .2, .4], [.2, 0, .1], [.4, .1, 0]])
    >>> round(coupling(z, ["a", "b", "c"], ["a"], ["b", "c"]), 3)
    0.3
    """
    index = {n: i for i, n in enumerate(names)}
    a = [index[n] for n in side_a if n in index]
    b = [index[n] for n in side_b if n in index]
    if len(a) < len(side_a) or len(b) < len(side_b):
        return float("nan")
    return float(np.nanmean(z[np.ix_(a, b)]))


def network_blocks(z: np.ndarray, networks: Sequence[str], prefix: str) -> dict[str, float]:
    """Within- and between-network mean Fisher z: ``<prefix>_within_<net>``, ``<prefix>_between_<a>_<b>``.

    Examples
    --------
    >>> z = np.array([[0, .2, .4], [.2, 0, .1], [.4, .1, 0]])
    >>> network_blocks(z, ["a", "a", "b"], "pain")
    {'pain_within_a': 0.2, 'pain_between_a_b': 0.25}
    """
    nets = sorted(set(networks))
    idx = {n: np.flatnonzero(np.asarray(networks) == n) for n in nets}
    out = {}
    for i, a in enumerate(nets):
        ia = idx[a]
        if ia.size > 1:
            block = z[np.ix_(ia, ia)][np.triu_indices(ia.size, 1)]
            out[f"{prefix}_within_{a}"] = float(np.nanmean(block))
        for b in nets[i + 1:]:
            out[f"{prefix}_between_{a}_{b}"] = float(np.nanmean(z[np.ix_(ia, idx[b])]))
    return out


def graph_metrics(z: np.ndarray, networks: Sequence[str], density: float = 0.2,
                  prefix: str = "pain") -> dict[str, float]:
    """Weighted graph metrics of a Fisher-z connectome, whole graph and per network.

    Thresholding and weighting: negative and NaN edges are set to 0; the ``density`` proportion
    of the strongest remaining edges is kept (``bct.threshold_proportional``); weights are
    divided by the largest weight (``[0, 1]``, as bctpy's weighted clustering and efficiency
    expect). Metrics (bctpy): strength (``strengths_und``), clustering (Onnela,
    ``clustering_coef_wu``), global and local efficiency (:func:`global_efficiency`,
    :func:`local_efficiency`: bctpy's ``efficiency_wei`` definitions, lengths are inverse
    weights, with scipy's compiled Dijkstra instead of bctpy's pure-Python one), modularity Q and communities (networkx's greedy modularity maximisation,
    Clauset-Newman-Moore, deterministic; bctpy's ``modularity_und`` fails under numpy 2),
    participation coefficient with those communities (``participation_coef``).

    Parameters
    ----------
    z : ndarray, shape (R, R)
    networks : sequence of str, length R
        Network of each node; node metrics are averaged within each network.
    density : float
        Proportion of edges kept, in (0, 1].
    prefix : str
        Level name put in front of every key.

    Returns
    -------
    dict
        ``<prefix>_graph_{mean_strength, mean_clustering, global_efficiency,
        mean_local_efficiency, modularity, mean_participation}`` and
        ``<prefix>_<net>_{strength, clustering, local_efficiency, participation}``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> c = np.corrcoef(rng.normal(size=(6, 50)))
    >>> m = graph_metrics(fisher_z(c), ["a", "a", "a", "b", "b", "b"], density=0.5)
    >>> sorted(k for k in m if k.startswith("pain_a_"))
    ['pain_a_clustering', 'pain_a_local_efficiency', 'pain_a_participation', 'pain_a_strength']
    """
    import bct

    W = np.nan_to_num(np.asarray(z, np.float64).copy(), nan=0.0)
    W[W < 0] = 0.0
    np.fill_diagonal(W, 0.0)
    W = bct.threshold_proportional(W, density, copy=True)
    if W.max() > 0:
        W = W / W.max()
    strength = bct.strengths_und(W)
    clustering = bct.clustering_coef_wu(W)
    global_eff = global_efficiency(W)
    local_eff = local_efficiency(W)
    if W.any():
        ci, q = _communities(W)
        with np.errstate(invalid="ignore", divide="ignore"):  # isolated nodes: 0/0, set to 0 below
            participation = bct.participation_coef(W, ci)
    else:
        q, participation = 0.0, np.zeros(len(W))
    node = {"strength": strength, "clustering": clustering, "local_efficiency": np.nan_to_num(local_eff),
            "participation": np.nan_to_num(participation)}
    out = {f"{prefix}_graph_mean_strength": float(strength.mean()),
           f"{prefix}_graph_mean_clustering": float(clustering.mean()),
           f"{prefix}_graph_global_efficiency": global_eff,
           f"{prefix}_graph_mean_local_efficiency": float(node["local_efficiency"].mean()),
           f"{prefix}_graph_modularity": float(q),
           f"{prefix}_graph_mean_participation": float(node["participation"].mean())}
    nets = np.asarray(networks)
    for net in sorted(set(networks)):
        sel = nets == net
        for metric, values in node.items():
            out[f"{prefix}_{net}_{metric}"] = float(np.mean(values[sel]))
    return out


def _inverse_distances(W: np.ndarray) -> np.ndarray:
    """1 / shortest-path length (lengths = 1 / weights); 0 on the diagonal and between components."""
    from scipy.sparse.csgraph import shortest_path

    with np.errstate(divide="ignore"):
        lengths = np.where(W > 0, 1.0 / np.where(W > 0, W, 1.0), 0.0)
    d = shortest_path(sparse.csr_matrix(lengths), method="D", directed=False)
    with np.errstate(divide="ignore"):
        inv = np.where(np.isfinite(d) & (d > 0), 1.0 / d, 0.0)
    np.fill_diagonal(inv, 0.0)
    return inv


def global_efficiency(W: np.ndarray) -> float:
    """Weighted global efficiency (bctpy ``efficiency_wei(W)``): mean inverse shortest path.

    Parameters
    ----------
    W : ndarray, shape (R, R)
        Symmetric non-negative weights in [0, 1].

    Returns
    -------
    float

    Examples
    --------
    >>> global_efficiency(np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0.]]))
    0.8333333333333334
    """
    n = len(W)
    return float(_inverse_distances(np.asarray(W, float)).sum() / (n * (n - 1))) if n > 1 else 0.0


def local_efficiency(W: np.ndarray) -> np.ndarray:
    """Weighted local efficiency of every node (bctpy ``efficiency_wei(W, local=True)``).

    Wang et al. (2016)'s version, as bctpy computes it: for node u with k neighbours V,
    ``sum_{j != h in V} (w_uj w_uh)^(1/3) / d_jh(V) / (k (k - 1))`` with ``d_jh(V)`` the shortest
    path within the neighbours' subgraph, edge lengths ``w^(-1/3)``. ``W`` as for
    :func:`global_efficiency`; returns one value per node, shape (R,).

    Examples
    --------
    >>> local_efficiency(np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0.]])).tolist()   # a triangle
    [1.0, 1.0, 1.0]
    """
    W = np.asarray(W, float)
    out = np.zeros(len(W))
    for u in range(len(W)):
        V = np.flatnonzero(W[u] > 0)
        if V.size < 2:
            continue
        sw = 2 * np.cbrt(W[u, V])
        se = 2 * _inverse_distances(np.cbrt(W[np.ix_(V, V)]))   # lengths w^(-1/3)
        numer = np.sum(np.outer(sw, sw) * se) / 2
        if numer != 0:
            sa = 2.0 * np.ones(V.size)
            out[u] = numer / (sa.sum() ** 2 - np.sum(sa * sa))
    return out


def _communities(W: np.ndarray) -> tuple[np.ndarray, float]:
    """Communities (1-based labels, shape (R,)) and modularity Q of a weighted undirected graph."""
    import networkx as nx

    graph = nx.from_numpy_array(W)
    parts = nx.community.greedy_modularity_communities(graph, weight="weight")
    ci = np.zeros(len(W), int)
    for k, members in enumerate(parts, start=1):
        ci[list(members)] = k
    return ci, float(nx.community.modularity(graph, parts, weight="weight"))


def _connectome_features(ts: np.ndarray, names, networks, prefix: str, density: float):
    """Correlation (Fisher z) and partial connectomes of cleaned time series, with their features."""
    z = fisher_z(correlation_matrix(ts))
    partial = partial_correlation(ts)
    feats = network_blocks(z, networks, prefix)
    feats.update(graph_metrics(z, networks, density, prefix))
    return z, partial, feats


# =============================================================================== subject stage


def _rest_runs(subject: Subject, task: str) -> tuple[Run, ...]:
    """Every resting run of the participant-session with an image or ROI time series.

    Runs with a preprocessed BOLD image are used when there are any (time series extracted
    elsewhere for the same runs are then ignored), else the runs with ROI time series.
    """
    runs = subject.runs_for(task)
    if not runs:
        raise InputError(f"{subject.unit} has no '{task}' run",
                         fix=f"add a task-{task} BOLD run or ROI time series, map the dataset's resting task "
                             f"with --task-map {task}=<label>, or leave out connectivity with --modules")
    images = tuple(r for r in runs if r.bold is not None)
    if images:
        return images
    series = tuple(r for r in runs if r.timeseries is not None)
    if not series:
        raise InputError(f"the {task} run(s) of {subject.unit} have neither a preprocessed BOLD image nor "
                         "ROI time series",
                         fix="give the fMRIPrep (desc-preproc_bold) or ROI time-series folder with --derivatives")
    return series


def _framewise_displacement(run: Run, table: pd.DataFrame, n_volumes: int) -> np.ndarray | None:
    if "framewise_displacement" not in table.columns:
        return None
    if len(table) != n_volumes:
        raise InputError(f"the confounds file has {len(table)} rows but the run has {n_volumes} volumes",
                         path=run.confounds, fix="use the confounds file of the same run")
    return pd.to_numeric(table["framewise_displacement"], errors="coerce").to_numpy(float)


def non_steady_state(table: pd.DataFrame) -> np.ndarray:
    """Volumes fMRIPrep flags as non-steady-state (``non_steady_state_outlier*`` columns), censored
    like scrubbed volumes (as nilearn's ``load_confounds`` includes them).

    Examples
    --------
    >>> non_steady_state(pd.DataFrame({"non_steady_state_outlier00": [1, 0, 0]})).tolist()
    [True, False, False]
    """
    columns = [c for c in table.columns if str(c).startswith("non_steady_state_outlier")]
    if not columns:
        return np.zeros(len(table), bool)
    return (table[columns].apply(pd.to_numeric, errors="coerce").fillna(0).to_numpy() > 0).any(axis=1)


def _scrub(fd, n: int, opts: dict, censor: np.ndarray | None = None):
    """Volumes kept (scrubbing, non-steady-state volumes) and why the run is unusable, if it is."""
    keep = scrub_mask(fd, n, opts["fd_threshold"], opts["min_segment"], opts["scrub"])
    if censor is not None and censor.any():
        keep &= ~censor
    _, excluded = _motion_summary(fd, keep, opts)
    return keep, excluded


#: The stringent motion exclusion of Parkes et al. 2018 (NeuroImage 171:415): mean FD > 0.25 mm,
#: more than 20% of volumes with FD > 0.2 mm, or any FD > 5 mm.
STRINGENT = {"max_mean_fd": 0.25, "high_motion_fd": 0.2, "max_high_motion_fraction": 0.2,
             "max_fd": 5.0}


def _timeseries_exclusion(opts) -> dict:
    """Options for ROI time series from another pipeline: with ``timeseries_motion_exclusion``
    ``"stringent"`` the exclusion thresholds become Parkes et al.'s (2018) stringent criteria
    (never looser than the options given). painplast cannot regress motion out of such series
    (their confounds are not known), and the stringent criteria are those under which
    motion-connectivity relationships stay small whatever the denoising (Parkes et al. 2018;
    Ciric et al. 2017, NeuroImage 154:174); ``"lenient"`` keeps the image path's thresholds."""
    mode = str(opts.get("timeseries_motion_exclusion") or "lenient").lower()
    if mode == "lenient":
        return opts
    if mode != "stringent":
        raise InputError(f"connectivity option timeseries_motion_exclusion={mode!r} is not known",
                         fix="use 'stringent' or 'lenient'")
    return {**opts, **STRINGENT, "max_mean_fd": min(opts["max_mean_fd"], STRINGENT["max_mean_fd"])}


def _motion_summary(fd, keep, opts) -> tuple[dict, str | None]:
    mean_fd = float(np.nanmean(fd)) if fd is not None and np.isfinite(fd).any() else float("nan")
    scrubbed = float(1.0 - keep.mean())
    reasons = []
    if np.isfinite(mean_fd) and mean_fd > opts["max_mean_fd"]:
        reasons.append(f"mean framewise displacement {mean_fd:.3f} mm > {opts['max_mean_fd']} mm")
    if fd is not None and np.isfinite(fd).any() and opts.get("max_high_motion_fraction") is not None:
        high = float(np.nanmean(fd > opts["high_motion_fd"]))
        if high > opts["max_high_motion_fraction"]:
            reasons.append(f"{100 * high:.0f}% of volumes with FD > {opts['high_motion_fd']} mm > "
                           f"{100 * opts['max_high_motion_fraction']:.0f}%")
    if fd is not None and np.isfinite(fd).any() and opts.get("max_fd") is not None \
            and np.nanmax(fd) > opts["max_fd"]:
        reasons.append(f"largest framewise displacement {np.nanmax(fd):.2f} mm > {opts['max_fd']} mm")
    if scrubbed > opts["max_scrubbed_fraction"]:
        reasons.append(f"{100 * scrubbed:.0f}% of volumes scrubbed (FD > {opts['fd_threshold']} mm) "
                       f"> {100 * opts['max_scrubbed_fraction']:.0f}%")
    if keep.sum() < opts["min_volumes"]:
        reasons.append(f"{int(keep.sum())} volumes left after scrubbing < {opts['min_volumes']}")
    feats = {f"{NAME}.mean_fd": mean_fd, f"{NAME}.scrubbed_fraction": scrubbed}
    return feats, ("; ".join(reasons) or None)


def _repetition_time(run: Run, opts) -> float:
    tr = run.repetition_time or opts["repetition_time"]
    if not tr or float(tr) <= 0:
        raise InputError(f"the repetition time of run {run.name} is unknown",
                         path=run.timeseries or run.bold,
                         fix="pass --repetition-time SECONDS, or add RepetitionTime to a JSON sidecar")
    return float(tr)


class _Runs:
    """The cleaned runs of one participant-session, combined.

    Each run is denoised on its own (its confounds, scrubbing, filter) and z-scored; the runs'
    cleaned series are then concatenated, so a connectome is the average of the runs'
    correlations weighted by their retained volumes (each run z-scored: the correlation of the
    concatenation is ``sum((T_i - 1) r_i) / sum(T_i - 1)``). A run whose motion fails the
    exclusion thresholds is left out (``info["runs_excluded"]``); the participant is excluded
    when no run is left. Motion features pool every volume of every run.
    """

    def __init__(self, opts):
        self.opts = opts
        self.used, self.excluded, self.series = [], {}, {}
        self.fd, self.n, self.kept, self.sources, self.confounds = [], 0, 0, [], []

    def add(self, run: Run, fd, keep, excluded, source, conf_names) -> bool:
        """Record a run's motion; False if it is excluded."""
        self.n += len(keep)
        if fd is not None:
            self.fd.append(np.asarray(fd, float))
        if excluded:
            self.excluded[run.name] = excluded
            return False
        self.kept += int(keep.sum())
        self.used.append(run.name)
        self.sources.append(str(source))
        self.confounds = conf_names
        return True

    def append(self, level: str, ts: np.ndarray) -> None:
        self.series.setdefault(level, []).append(ts)

    def motion(self) -> dict:
        fd = np.concatenate(self.fd) if self.fd else None
        mean_fd = float(np.nanmean(fd)) if fd is not None and np.isfinite(fd).any() else float("nan")
        return {f"{NAME}.mean_fd": mean_fd,
                f"{NAME}.scrubbed_fraction": float(1.0 - self.kept / self.n) if self.n else float("nan")}

    def info(self, tr) -> dict:
        motion = self.motion()
        info = {"source": self.sources[0] if len(self.sources) == 1 else self.sources,
                "repetition_time": tr, "n_volumes": self.n, "n_volumes_kept": self.kept,
                "confounds": self.confounds, "mean_fd": motion[f"{NAME}.mean_fd"],
                "scrubbed_fraction": motion[f"{NAME}.scrubbed_fraction"], "runs": self.used}
        if self.excluded:
            info["runs_excluded"] = dict(self.excluded)
        if not self.used:
            info["excluded"] = "; ".join(f"{name}: {why}" for name, why in self.excluded.items())
        return info

    def combined(self, level: str) -> np.ndarray:
        return np.concatenate(self.series[level], axis=0)


def subject(subject: Subject, config: Config) -> SubjectResult:
    """Denoise one participant-session's resting runs and measure connectivity.

    Parameters
    ----------
    subject : painplast.cohort.Subject
        A participant (one session) with ``rest`` runs: preprocessed BOLD images with their
        confounds, or ROI time series from another pipeline. Every run is used (see
        :class:`_Runs` for how runs are combined).
    config : painplast.config.Config
        ``roi_radius_mm``; module options :data:`DEFAULTS`.

    Returns
    -------
    SubjectResult
        ``features``: ``connectivity.<coupling>`` for :data:`painplast.atlas.COUPLINGS`,
        ``connectivity.mean_fd``, ``connectivity.scrubbed_fraction``, network blocks and graph
        metrics; ``arrays``: ``pain_connectome`` (24, 24) Fisher z, ``pain_partial`` (24, 24),
        ``pain_timeseries`` (T_kept, 24), and ``atlas_*`` likewise for a network atlas or
        time series from elsewhere; ``maps``: ``seed_<region>_z``; ``info``: node names,
        networks, motion, the runs used and the exclusion reason if any.

    Raises
    ------
    InputError
        No rest run, no image or time series, no repetition time, unreadable files.

    Examples
    --------
    >>> result = subject(Cohort.from_bids(bids_dir).subject("sub-001"), Config())
    >>> result.arrays["pain_connectome"].shape, result.info["runs"]
    ((24, 24), ['task-rest'])
    """
    opts = config.module(NAME, DEFAULTS)
    runs = _rest_runs(subject, opts["task"])
    if runs[0].bold is not None:
        return _subject_from_images(subject, runs, config, opts)
    return _subject_from_timeseries(subject, runs, opts)


def _subject_from_images(subject: Subject, runs: Sequence[Run], config: Config, opts) -> SubjectResult:
    from . import _firstlevel as fl

    done = _Runs(opts)
    seeds = list(opts["seeds"]) if opts["seed_maps"] else []
    seed_sum, seed_df, seed_empty, grid, parcels = None, 0, None, None, {}
    tr = None
    for run in runs:
        bold = fl.load_bold(run)                      # one 4-D image in memory at a time: (T, V) float32
        tr = float(run.repetition_time or opts["repetition_time"] or bold.repetition_time)
        n = bold.n_volumes
        table = run.load_confounds()
        if len(table) != n:
            raise InputError(f"the confounds file has {len(table)} rows but the BOLD series {n} volumes",
                             path=run.confounds, fix="use the confounds file of the same fMRIPrep run")
        conf, conf_names = confound_regressors(table, opts["confounds_strategy"], run.confounds)
        fd = _framewise_displacement(run, table, n)
        keep, excluded = _scrub(fd, n, opts, non_steady_state(table))
        if not done.add(run, fd, keep, excluded, run.bold, conf_names):
            continue
        operator = cleaning_operator(n, conf, keep, tr, opts["high_pass"], opts["low_pass"])

        def cleaned(raw):
            return zscore(operator @ np.asarray(raw, np.float64))

        shape, affine, brain = bold.shape, bold.affine, bold.mask
        grid = grid or (shape, affine)
        parcels["pain"] = pain_parcellation(shape, affine, brain, config.roi_radius_mm)
        if opts["atlas"]:
            parcels["atlas"] = network_parcellation(opts["atlas"], shape, affine, brain)
        for level, parc in parcels.items():
            ts = cleaned(parc.means(bold.data))
            ts[:, parc.empty] = 0.0
            done.append(level, ts)
        if seeds:
            sums, df, empty = _seed_sums(bold, operator, cleaned, seeds, config.roi_radius_mm,
                                         int(opts["voxel_chunk"]))
            seed_sum = sums if seed_sum is None else seed_sum + sums
            seed_empty = empty if seed_empty is None else seed_empty | empty
            seed_df += df
        del bold
    info = done.info(tr)
    features = done.motion()
    if "excluded" in info:
        return SubjectResult(NAME, subject.participant_id, features=features, info=info)
    arrays: dict[str, np.ndarray] = {}
    pain = parcels["pain"]
    ts = done.combined("pain")
    z, partial, extra = _connectome_features(ts, pain.names, pain.networks, "pain", opts["graph_density"])
    arrays.update(pain_connectome=z.astype(np.float32), pain_partial=partial.astype(np.float32),
                  pain_timeseries=ts.astype(np.float32))
    for name, (a, b) in atlas.COUPLINGS.items():
        features[f"{NAME}.{name}"] = coupling(z, pain.names, a, b)
    features.update({f"{NAME}.{k}": v for k, v in extra.items()})
    info.update(pain_nodes=pain.names, pain_networks=pain.networks,
                empty_rois=[n for n, e in zip(pain.names, pain.empty) if e])
    if "atlas" in parcels:
        parc = parcels["atlas"]
        ats = done.combined("atlas")
        za, pa, extra = _connectome_features(ats, parc.names, parc.networks, "atlas", opts["graph_density"])
        arrays.update(atlas_connectome=za.astype(np.float32), atlas_partial=pa.astype(np.float32),
                      atlas_timeseries=ats.astype(np.float32))
        features.update({f"{NAME}.{k}": v for k, v in extra.items()})
        info.update(atlas=str(opts["atlas"]), atlas_nodes=parc.names, atlas_networks=parc.networks,
                    atlas_coords=None if parc.coords is None else parc.coords.tolist())
    maps = {}
    if seed_sum is not None:
        inside = np.any(seed_sum != 0, axis=0)            # voxels of some run's mask (0 elsewhere)
        zmap = np.zeros(seed_sum.shape, np.float32)
        corr = seed_sum[:, inside] / max(seed_df, 1)
        zmap[:, inside] = np.arctanh(np.clip(corr, -0.999999, 0.999999))
        maps = {f"seed_{s}_z": nib.Nifti1Image(zmap[i], grid[1]) for i, s in enumerate(seeds)
                if not seed_empty[i]}
    return SubjectResult(NAME, subject.participant_id, features=features, maps=maps, arrays=arrays, info=info)


#: Voxels cleaned per block in :func:`_seed_sums` (a few MiB of float64 per temporary).
_CACHE_COLUMNS = 2048
#: Row bands of the triangular factor in :func:`_seed_sums`.
_BANDS = 8


def _seed_sums(bold, operator: np.ndarray, cleaned, seeds: Sequence[str], radius: float,
               chunk: int) -> tuple[np.ndarray, int, np.ndarray]:
    """Seed-to-voxel sums of products of z-scored series on the full grid, their ``T_kept - 1``,
    and which seeds fall outside the brain mask.

    Divided by the summed ``T_kept - 1`` of every run they give the correlation of the
    concatenated runs. A voxel's cleaned series is ``x = M y`` (``M``, ``operator``, is
    :func:`cleaning_operator`; ``cleaned`` is z-scoring after it), and the seeds' series ``s``
    are z-scored, so ``s' zscore(x) = (M' s)' y / sd(x)`` (``s`` sums to 0): the cleaned voxels
    are never formed. ``sd(x)`` needs ``|x|^2 = |R y|^2`` with ``M = Q R`` (QR: ``Q`` keeps
    lengths), a triangular product, about half the work of ``M y``, and ``mean(x) = (1'M / n) y``.
    ``R y`` is formed in bands of :data:`_BANDS` rows, each a dense product with the columns right
    of the band's first row (1/8 more than BLAS's triangular ``trmm``, which scipy calls with the
    interpreter lock held: the other engine thread would wait). A
    voxel is flat (0) as :func:`zscore` decides it, among ``chunk`` (at most
    :data:`_CACHE_COLUMNS`) voxels at a time. The sums equal those of the z-scored cleaned
    voxels to rounding (1e-13 of the largest).
    """
    from scipy.linalg import qr

    parc = seed_parcellation(seeds, bold.shape, bold.affine, bold.mask, radius)
    seed_ts = cleaned(parc.means(bold.data))                    # (T_kept, S), z-scored
    n, n_t = operator.shape
    _, r = qr(operator, mode="economic")                        # (n, T), upper trapezoidal
    edges = np.linspace(0, r.shape[0], _BANDS + 1).astype(int)
    bands = [(int(a), np.ascontiguousarray(r[a:b, a:])) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    weights = operator.T @ seed_ts                              # (T, S)
    mean_row = operator.sum(axis=0) / n                         # mean(x) = mean_row @ y
    seed_total = seed_ts.sum(axis=0)                            # 0 up to rounding
    n_v = bold.data.shape[1]
    sums = np.zeros((len(seeds), n_v), np.float64)
    step = max(1, min(int(chunk), _CACHE_COLUMNS))
    block = np.empty((n_t, min(step, n_v)))                     # reused: no fresh pages per block
    for start in range(0, n_v, step):
        y = block[:, :min(step, n_v - start)]
        np.copyto(y, bold.data[:, start:start + y.shape[1]])
        mean = mean_row @ y
        products = weights.T @ y - np.outer(seed_total, mean)
        squares = np.zeros(y.shape[1])
        for first, band in bands:                                # |R y|^2, band by band
            part = band @ y[first:]
            squares += np.einsum("rv,rv->v", part, part)
        var = (squares - n * mean * mean) / max(n - 1, 1)
        sd = np.sqrt(np.maximum(var, 0.0))
        flat = ~(sd > 1e-12 * max(float(np.max(sd, initial=0.0)), 1e-300))
        sums[:, start:start + y.shape[1]] = products / np.where(flat, 1.0, sd)
        sums[:, start:start + y.shape[1]][:, flat] = 0.0
    full = np.zeros((len(seeds),) + tuple(bold.shape), np.float64)
    full[:, bold.mask] = sums
    return full, seed_ts.shape[0] - 1, np.asarray(parc.empty, bool)


def _dseg_networks(path: Path, n_regions: int, override) -> list[str] | None:
    """Networks of the columns of a time-series file from an ``atlas-<label>_dseg.tsv`` above it."""
    candidates = []
    if override:
        candidates.append(Path(override))
    else:
        match = re.search(r"_atlas-([A-Za-z0-9]+)_", path.name)
        if match:
            name = f"atlas-{match.group(1)}_dseg.tsv"
            for folder in list(path.parents)[:8]:
                candidates.append(folder / name)
    for cand in candidates:
        if cand.is_file():
            table = pd.read_csv(cand, sep="\t")
            if "network" not in table.columns or len(table) != n_regions:
                raise InputError(f"the atlas table has {len(table)} rows (need {n_regions}, one per "
                                 "region column) or no 'network' column", path=cand,
                                 fix="list one row per time-series column, in column order, with a network column")
            return [_clean_name(v) for v in table["network"]]
    return None


def _subject_from_timeseries(subject: Subject, runs: Sequence[Run], opts) -> SubjectResult:
    opts = _timeseries_exclusion(opts)
    done = _Runs(opts)
    names = header = None
    tr = None
    for run in runs:
        tr = _repetition_time(run, opts)
        data = run.load_timeseries()
        this = [str(c) for c in data.columns]
        if header is not None and this != header:
            raise InputError("the ROI time series of this participant's runs name different regions",
                             path=run.timeseries, fix="extract every run with the same atlas")
        header = this
        is_global = np.array([h.lower() in _GLOBAL_NAMES for h in header])
        values = data.to_numpy(float)
        if not np.all(np.isfinite(values)):
            raise InputError("the ROI time series have missing values", path=run.timeseries,
                             fix="give finite values in every row and column")
        globsig = values[:, np.flatnonzero(is_global)[0]] if is_global.any() else None
        regions = values[:, ~is_global]
        names = _unique([h for h, g in zip(header, is_global) if not g])
        n = len(values)
        table = run.load_confounds() if run.confounds is not None else pd.DataFrame(index=range(n))
        fd = _framewise_displacement(run, table, n) if run.confounds is not None else None
        conf, conf_names = confound_regressors(table, opts["timeseries_confounds_strategy"],
                                               run.confounds or run.timeseries, global_column=globsig)
        keep, excluded = _scrub(fd, n, opts, non_steady_state(table))
        if done.add(run, fd, keep, excluded, run.timeseries, conf_names):
            done.append("atlas", clean(regions, conf, keep, tr, opts["timeseries_high_pass"],
                                       opts["timeseries_low_pass"]))
    info = done.info(tr)
    features = done.motion()
    if "excluded" in info:
        return SubjectResult(NAME, subject.participant_id, features=features, info=info)
    ts = done.combined("atlas")
    networks = _dseg_networks(runs[0].timeseries, len(names), opts["network_labels"]) or ["unlabelled"] * len(names)
    z, partial, extra = _connectome_features(ts, names, networks, "atlas", opts["graph_density"])
    features.update({f"{NAME}.{k}": v for k, v in extra.items()})
    arrays = {"atlas_connectome": z.astype(np.float32), "atlas_partial": partial.astype(np.float32),
              "atlas_timeseries": ts.astype(np.float32)}
    for name, (a, b) in atlas.COUPLINGS.items():
        value = coupling(z, names, a, b)
        if np.isfinite(value):
            features[f"{NAME}.{name}"] = value
    pain_idx = [names.index(r) for r in atlas.ROI_NAMES if r in names]
    if len(pain_idx) == len(atlas.ROI_NAMES):
        arrays.update(pain_connectome=z[np.ix_(pain_idx, pain_idx)].astype(np.float32),
                      pain_partial=partial_correlation(ts[:, pain_idx]).astype(np.float32),
                      pain_timeseries=ts[:, pain_idx].astype(np.float32))
        info.update(pain_nodes=list(atlas.ROI_NAMES), pain_networks=[atlas.roi(r).network for r in atlas.ROI_NAMES])
    info.update(atlas=runs[0].timeseries.name, atlas_nodes=names, atlas_networks=networks, atlas_coords=None)
    return SubjectResult(NAME, subject.participant_id, features=features, arrays=arrays, info=info)


def _unique(names: Sequence[str]) -> list[str]:
    """Repeated names get ``#2``, ``#3`` ... by position (they are different regions)."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return out


# =============================================================================== group stage


def a_priori_tests(config: Config | None = None) -> list[tuple[str, str]]:
    """The findings rows: the named couplings of :data:`painplast.atlas.COUPLINGS` x
    :data:`FINDINGS_CONTRASTS`.

    Examples
    --------
    >>> a_priori_tests()[0]
    ('connectivity.mpfc_nacc', 'patient-control')
    """
    return [(f"{NAME}.{c}", k) for c in atlas.COUPLINGS for k in FINDINGS_CONTRASTS]


def _design(participants: pd.DataFrame, contrast: str, extra: pd.DataFrame | None,
            covariates: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows entering a contrast, its regressor, and covariates (NaN-free)."""
    spec = contrasts.CONTRASTS[contrast]
    x = contrasts.regressor(participants, spec)
    cov, _ = contrasts.covariate_matrix(participants, tuple(spec.covariates) + tuple(covariates), extra)
    ok = np.isfinite(x)
    if cov.size:
        ok &= np.all(np.isfinite(cov), axis=1)
    return ok, x[ok], cov[ok] if cov.size else np.empty((int(ok.sum()), 0))


def _contrast_usable(participants: pd.DataFrame, contrast: str) -> bool:
    spec = contrasts.CONTRASTS[contrast]
    if spec.column not in participants or (spec.subset == "patients" and "group" not in participants):
        return False
    x = contrasts.regressor(participants, spec)
    x = x[np.isfinite(x)]
    return x.size >= 6 and np.ptp(x) > 0 if x.size else False


def edgewise_glm(stack: np.ndarray, names: Sequence[str], participants: pd.DataFrame, contrast: str,
                 extra: pd.DataFrame | None, covariates: Sequence[str]) -> pd.DataFrame:
    """Edge-wise GLM ``edge ~ 1 + regressor + covariates`` for one contrast.

    Parameters
    ----------
    stack : ndarray, shape (n_participants, R, R)
        Connectomes in the order of ``participants``.
    names : sequence of str, length R
    participants : DataFrame
    contrast : str
        A :data:`painplast.contrasts.CONTRASTS` name.
    extra : DataFrame, optional
        Per-participant covariates not in ``participants`` (``mean_fd``).
    covariates : sequence of str
        Covariates added to the contrast's own.

    Returns
    -------
    DataFrame
        One row per edge (upper triangle): ``contrast, node_a, node_b, beta, t, p, p_fdr, n``
        (Benjamini-Hochberg over the edges).

    Examples
    --------
    >>> parts = pd.DataFrame({"group": ["patient", "control"] * 10},
    ...                      index=[f"sub-{i:02d}" for i in range(20)])
    >>> stack = np.random.default_rng(0).normal(size=(20, 3, 3))
    >>> stack[::2, 0, 1] += 2.0                                   # patients: a stronger a-b edge
    >>> table = edgewise_glm(stack, ["a", "b", "c"], parts, "patient-control", None, ())
    >>> table.loc[table.p.idxmin(), ["node_a", "node_b"]].tolist()
    ['a', 'b']
    """
    ok, x, cov = _design(participants, contrast, extra, covariates)
    i, j = np.triu_indices(stack.shape[1], 1)
    y = stack[ok][:, i, j]
    finite = np.all(np.isfinite(y), axis=0)
    beta = np.full(len(i), np.nan)
    t = np.full(len(i), np.nan)
    df = 0
    if finite.any():
        b, tt, _, df = effects.ols_t(y[:, finite], x, cov if cov.size else None)
        beta[finite], t[finite] = b, tt
    p = 2 * sps.t.sf(np.abs(t), max(df, 1)) if df >= 1 else np.full(len(i), np.nan)
    return pd.DataFrame({"contrast": contrast, "node_a": np.asarray(names)[i], "node_b": np.asarray(names)[j],
                         "beta": beta, "t": t, "p": p, "p_fdr": effects.fdr_bh(p), "n": int(ok.sum())})


def _tangent(timeseries: Sequence[np.ndarray]) -> np.ndarray:
    """Tangent-space embedding (nilearn ``ConnectivityMeasure(kind="tangent")``), (n, R, R)."""
    from nilearn.connectome import ConnectivityMeasure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ConnectivityMeasure(kind="tangent").fit_transform([np.asarray(t, np.float64) for t in timeseries])


def group(results: Sequence[SubjectResult], cohort: Cohort, config: Config) -> GroupResult:
    """Group statistics of connectivity: the couplings' findings, then the exploratory tables.

    The findings come from the shared stage (:func:`painplast.plasticity._group.run`), with
    mean framewise displacement as a covariate when it is known for everyone. Exploratory
    results use the contrasts of :data:`EXPLORATORY_CONTRASTS` with enough participants.

    Returns
    -------
    GroupResult
        ``findings``: couplings x :data:`FINDINGS_CONTRASTS`; ``tables``: ``edges``, ``graph``,
        ``nbs``; ``maps``: ``seed_<region>_mean_z``, ``seed_<region>_<contrast>_t``;
        ``figures``: ``connectome``, ``nbs_component``.

    Examples
    --------
    >>> cohort, cfg = Cohort.from_bids(bids_dir), Config(n_permutations=20)
    >>> out = group([subject(s, cfg) for s in cohort], cohort, cfg)
    >>> out.findings.query("feature == 'connectivity.mpfc_nacc'")["contrast"].tolist()  # 4 patients: too few for the clinical contrasts
    ['patient-control']
    """
    return _group.run(DECLARATION, results, cohort, config, _group_specific)


def _group_specific(data: _group.GroupData) -> _group.Specific:
    """Exploratory tables (graph, edges, NBS), seed maps and figures."""
    opts, config, features, parts, extra = (data.options, data.config, data.features,
                                            data.participants, data.extra)
    kept = list(data.results)
    covs = tuple(c for c in ("mean_fd",) if c in data.covariates)
    notes: list[str] = []
    tables: dict[str, pd.DataFrame] = {}
    usable = [c for c in EXPLORATORY_CONTRASTS if _contrast_usable(parts, c)]
    if not usable:
        notes.append("no group or clinical column: only descriptive connectivity results")

    # -- graph and network features
    graph_feats = [c for c in features.columns if c.startswith(f"{NAME}.") and
                   re.search(r"_(graph_|within_|between_)|_(strength|clustering|local_efficiency|participation)$", c)]
    graph_tests = [(f, c) for f in graph_feats for c in usable]
    graph = contrasts.findings_table(features, parts, graph_tests,
                                     extra_covariates={"*": covs}, extra=extra, alpha=config.alpha)
    graph = graph.rename(columns={"p_corrected": "p_holm"})
    graph["p_fdr"] = effects.fdr_bh(graph["p"].to_numpy(float)) if len(graph) else []
    tables["graph"] = graph

    # -- edges: correlation, partial, tangent, per level
    edge_tables = []
    stacks = {}
    for level in ("pain", "atlas"):
        present = [r for r in kept if f"{level}_connectome" in r.arrays]
        if len(present) != len(kept):
            if present:
                notes.append(f"{level} connectome missing for some participants: level skipped")
            continue
        names = list(kept[0].info.get(f"{level}_nodes") or range(kept[0].arrays[f"{level}_connectome"].shape[0]))
        names = [str(n) for n in names]
        kinds = {"correlation": np.stack([r.arrays[f"{level}_connectome"] for r in kept]).astype(np.float64),
                 "partial": np.stack([r.arrays[f"{level}_partial"] for r in kept]).astype(np.float64)}
        try:
            kinds["tangent"] = _tangent([r.arrays[f"{level}_timeseries"] for r in kept])
        except Exception as error:  # e.g. fewer volumes than regions: not positive definite
            notes.append(f"tangent-space embedding of the {level} connectome failed ({error})")
        stacks[level] = (names, kinds["correlation"])
        for kind, stack in kinds.items():
            for contrast in usable:
                table = edgewise_glm(stack, names, parts, contrast, extra, covs)
                table.insert(0, "kind", kind)
                table.insert(0, "level", level)
                edge_tables.append(table)
    tables["edges"] = (pd.concat(edge_tables, ignore_index=True) if edge_tables else
                       pd.DataFrame(columns=["level", "kind", "contrast", "node_a", "node_b",
                                             "beta", "t", "p", "p_fdr", "n"]))

    # -- network-based statistic on the pain connectome
    nbs_rows = []
    nbs_best = None
    if "pain" in stacks:
        names, stack = stacks["pain"]
        for contrast in opts["nbs_contrasts"]:
            if contrast not in usable:
                continue
            result, ok_names = _run_nbs(stack, names, parts, contrast, extra, covs, opts, config)
            for k, comp in enumerate(result.components):
                nbs_rows.append({"contrast": contrast, "component": k + 1, "n_nodes": len(comp.nodes),
                                 "size": comp.size, "p_fwe": comp.p_fwe,
                                 "nodes": ",".join(ok_names[i] for i in comp.nodes),
                                 "edges": ";".join(f"{ok_names[a]}-{ok_names[b]}" for a, b in comp.edges)})
            if nbs_best is None and result.components:
                nbs_best = (contrast, result, ok_names)
    tables["nbs"] = pd.DataFrame(nbs_rows, columns=["contrast", "component", "n_nodes", "size",
                                                    "p_fwe", "nodes", "edges"])

    # -- second-level seed maps
    maps = _seed_group_maps(kept, parts, usable, extra, covs)

    # -- figures
    figures = {}
    try:
        if "pain" in stacks or "atlas" in stacks:
            level = "pain" if "pain" in stacks else "atlas"
            figures["connectome"] = _connectome_figure(*stacks[level], parts, level)
        if nbs_best is not None:
            figures["nbs_component"] = _nbs_figure(*nbs_best)
    except Exception as error:  # a figure must never sink the statistics
        notes.append(f"figure failed: {error}")
    return _group.Specific(tables=tables, maps=maps, figures=figures, notes=notes)


def _run_nbs(stack, names, parts, contrast, extra, covs, opts, config):
    """NBS of one contrast with covariates in the design (nodes with missing values left out)."""
    ok, x, cov = _design(parts, contrast, extra, covs)
    data = stack[ok]
    good_nodes = np.all(np.isfinite(data), axis=(0, 2)) & np.all(np.isfinite(data), axis=(0, 1))
    data = data[:, good_nodes][:, :, good_nodes]
    design = effects.design_matrix(x, cov if cov.size else None)
    vector = np.zeros(design.shape[1])
    vector[1] = 1.0
    result = _nbs(np.moveaxis(data, 0, -1), design=design, contrast=vector,
                  threshold=opts["nbs_threshold"], tail=opts["nbs_tail"],
                  n_permutations=config.n_permutations, random_state=config.random_state)
    return result, [n for n, g in zip(names, good_nodes) if g]


def _seed_group_maps(kept, parts, usable, extra, covs, chunk: int = 20000) -> dict:
    """Mean and second-level t maps of the seed maps.

    Only voxels inside every map are stacked (float32, (n, V_in)), and the GLM runs on chunks of
    ``chunk`` voxels in float64, so memory is ~4 bytes x participants x brain voxels.
    """
    seeds = sorted({k for r in kept for k in r.maps if k.startswith("seed_")})
    maps = {}
    for key in seeds:
        if not all(key in r.maps for r in kept):
            continue
        ref = kept[0].maps[key]
        inside = np.ones(ref.shape, bool)
        for r in kept:                                   # one map in memory at a time
            vol = np.asarray(r.maps[key].dataobj, np.float32)
            inside &= (vol != 0) & np.isfinite(vol)
        data = np.empty((len(kept), int(inside.sum())), np.float32)
        for i, r in enumerate(kept):
            data[i] = np.asarray(r.maps[key].dataobj, np.float32)[inside]
        base = key[: -len("_z")] if key.endswith("_z") else key

        def image(values):
            vol = np.zeros(ref.shape, np.float32)
            vol[inside] = values
            return nib.Nifti1Image(vol, ref.affine)

        maps[f"{base}_mean_z"] = image(data.mean(0, dtype=np.float64))
        for contrast in usable:
            ok, x, cov = _design(parts, contrast, extra, covs)
            t = np.zeros(data.shape[1])
            for start in range(0, data.shape[1], chunk):
                block = data[ok, start:start + chunk].astype(np.float64)
                t[start:start + chunk] = effects.ols_t(block, x, cov if cov.size else None)[1]
            maps[f"{base}_{contrast}_t"] = image(np.nan_to_num(t))
        del data
    return maps


def _png(fig) -> bytes:
    return figure_png(fig, tight=True)


def _connectome_figure(names, stack, parts, level) -> bytes:
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = [("all participants: mean Fisher z", np.nanmean(stack, 0), "RdBu_r")]
    if _contrast_usable(parts, "patient-control"):
        x = contrasts.regressor(parts, contrasts.CONTRASTS["patient-control"])
        panels.append(("patients - controls: mean Fisher z",
                       np.nanmean(stack[x == 1], 0) - np.nanmean(stack[x == 0], 0), "PuOr_r"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 6))
    axes = np.atleast_1d(axes)
    for ax, (title, mat, cmap) in zip(axes, panels):
        lim = float(np.nanmax(np.abs(mat))) or 1.0
        im = ax.imshow(mat, cmap=cmap, vmin=-lim, vmax=lim)
        if len(names) <= 40:
            ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
            ax.set_yticks(range(len(names)), names, fontsize=6)
        ax.set_title(f"{level} connectome, {title}", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.7)
    return _png(fig)


def _nbs_figure(contrast, result, names) -> bytes:
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    comp = result.components[0]
    n = len(names)
    adj = np.zeros((n, n))
    for (a, b) in comp.edges:
        k = np.flatnonzero((result.edge_index[:, 0] == a) & (result.edge_index[:, 1] == b))
        adj[a, b] = adj[b, a] = result.t_statistic[k[0]]
    coords = []
    for name in names:
        try:
            coords.append(atlas.roi(name).center)
        except InputError:
            coords = None
            break
    if coords is not None:
        from nilearn import plotting
        fig = plt.figure(figsize=(9, 3.5))
        plotting.plot_connectome(adj, np.asarray(coords), node_size=12, edge_cmap="RdBu_r",
                                 figure=fig, colorbar=True,
                                 title=f"NBS {contrast}: {len(comp.nodes)} nodes, p_FWE={comp.p_fwe:.3f}")
        return _png(fig)
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(adj, cmap="RdBu_r")
    ax.set_title(f"NBS {contrast}: p_FWE={comp.p_fwe:.3f}")
    return _png(fig)


DECLARATION = Declaration(
    name=NAME, cost=0.8, title="Large-scale connectivity", task=TASK, bold=True, subject=subject,
    group=group, defaults=DEFAULTS, tests=a_priori_tests, covariates={"*": ("mean_fd",)},
    group_options=("nbs_threshold", "nbs_tail", "nbs_contrasts"),
    # baseline mPFC-NAcc coupling predicted persisting vs recovering subacute back pain
    # (Baliki et al. 2012 Nat Neurosci 15:1117)
    prognostic=(f"{NAME}.mpfc_nacc",),
    description="Altered coupling of networks (e.g. mPFC-nucleus accumbens, default mode-insula) "
    "in resting-state fMRI after fMRIPrep-confound denoising, with network-based statistics "
    "between groups.")
