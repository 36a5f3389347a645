"""Structure: gray-matter change, regional and voxel-wise (voxel-based morphometry).

Subject stage (one gray-matter map per participant: fMRIPrep ``label-GM_probseg`` in the template
space, or CAT12's modulated ``mwp1``):

* ``structure.gm_<region>`` for :data:`painplast.atlas.STRUCTURE_REGIONS`: the mean GM
  probability in the region's spheres (``config.roi_radius_mm``, both spheres of a bilateral
  region) on the **unsmoothed** map, on the map's own grid (the simulator's definition);
* ``structure.gm_total``: total gray-matter volume in mL, ``sum(GM) * voxel volume``. For a
  modulated map (CAT12 ``mwp1``) this is the native GM volume; for an unmodulated probability map
  in template space (fMRIPrep) it is the GM volume of the normalised brain, which is what the
  group covariate needs (a global GM scale), not a native volume;
* optionally ``structure.atlas_<label>``: mean GM in each label of a user's integer label image
  (option ``atlas``, names from ``atlas_labels`` or a BIDS ``dseg.tsv`` beside the image);
* map ``gm_smoothed``: the map smoothed with a Gaussian of ``fwhm`` mm (default
  ``config.smoothing_fwhm``, 6 mm; on the map's own grid), then
  put on the common analysis grid (nilearn's MNI152 grid at ``resolution`` mm; linear
  interpolation) -- the input of the voxel-wise group stage.

Group stage:

* ``findings`` (the contract table, a-priori rows only): ``gm_<region>`` with patient-control,
  pain_duration and responder-nonresponder, adjusted for ``gm_total``
  (:func:`painplast.contrasts.module_covariates`), and ``gm_total`` with age;
  Holm-corrected across the table.
* voxel-wise GLM inside a GM mask (mean smoothed GM > ``mask_threshold``) for each contrast of
  ``voxelwise_contrasts`` (patient-control, pain_duration and pain_intensity within patients, and
  age), with the contrast's covariates (age, sex, site; group for age) plus a global one: ``tiv``
  when ``participants.tsv`` has that column, else ``gm_total`` (not for the age contrast, whose
  effect on gray matter is global: adjusting for total GM would remove it). Inference by
  :func:`painplast.stats.permutation.permutation_test`: Freedman-Lane permutations within site
  blocks (``site_blocks``), two-sided, ``config.n_permutations``, TFCE with family-wise error
  from the maximum ``|TFCE|``. Maps ``<contrast>_t``, ``<contrast>_tfce``,
  ``<contrast>_logp_fwe_tfce`` (-log10 FWE p) and ``gm_mask``; ``clusters``: connected
  components (26-neighbourhood) of voxels with TFCE FWE p < ``config.alpha``, one row per
  cluster peak and per local maximum at least ``min_peak_distance`` mm from a stronger one (up
  to ``max_subpeaks``), as SPM lists them; ``peak_stat`` is the signed t (negative: less gray
  matter in patients / with longer pain / with age); ``p_fwe`` the smallest TFCE FWE p of the
  cluster (for a peak row) or of the local maximum's voxel (sub-peak rows).
* figures ``glass_brain_patient_control`` (t where TFCE FWE p < alpha) and ``regional_effects``
  (bar chart of the findings with confidence intervals).
"""
from __future__ import annotations

import csv
import re
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from .. import atlas, contrasts
from ..cohort import Cohort, Subject
from ..config import Config
from ..errors import InputError
from ..results import GroupResult, SubjectResult, figure_png
from . import Declaration, _group, _secondlevel
from ._images import load_volume

__all__ = ["DECLARATION", "DEFAULTS", "REGIONAL_CONTRASTS", "TOTAL_CONTRASTS", "a_priori_tests",
           "analysis_grid", "atlas_gm", "glass_brain_png", "group", "load_gm",
           "regional_effects_png", "regional_gm", "smooth_to_grid", "subject", "voxel_volume_ml",
           "voxelwise"]

NAME = "structure"
DEFAULTS: dict[str, Any] = {
    "fwhm": None,                # mm, smoothing for the voxel-wise stage; None: config.smoothing_fwhm
    "resolution": "auto",        # analysis grid: "auto" (max(2, map voxel size)), "native" or mm
    "atlas": None,               # optional integer label image (MNI) for extra regional GM
    "atlas_labels": None,        # optional TSV (index, name) naming its labels
    "mask": None,                # optional analysis mask (MNI image), intersected with the GM mask
    "mask_threshold": 0.2,       # GM mask: mean smoothed GM probability above this
    "voxelwise": True,
    "voxelwise_contrasts": ("patient-control", "pain_duration", "pain_intensity", "age"),
    "site_blocks": True,         # permute within site (exchangeability blocks)
    "tfce_connectivity": 26,
    "min_peak_distance": 8.0,    # mm between reported local maxima of one cluster
    "max_subpeaks": 3,
}

#: Contrasts of the a-priori findings rows: regional GM and total GM.
REGIONAL_CONTRASTS = ("patient-control", "pain_duration", "responder-nonresponder")
TOTAL_CONTRASTS = ("age",)
_FWHM_TO_SIGMA = 1.0 / np.sqrt(8.0 * np.log(2.0))


# ----------------------------------------------------------------------------- images

def load_gm(path: str | Path) -> nib.Nifti1Image:
    """A gray-matter map as a 3-D float32 image (NaN as 0, negative values clipped to 0).

    Parameters
    ----------
    path : str or Path
        NIfTI file: a GM probability map or a modulated GM map (3-D, or 4-D with one volume).

    Returns
    -------
    Nifti1Image, 3-D float32

    Examples
    --------
    >>> img = load_gm(Cohort.from_bids(bids_dir).subject("sub-001").gm)  # label-GM_probseg
    >>> img.shape
    (50, 59, 48)
    """
    img, data = load_volume(path, "gray-matter map", dtype=np.float32,
                            fix="give a NIfTI GM map (fMRIPrep label-GM_probseg or CAT12 mwp1)")
    data = np.where(np.isfinite(data), data, 0.0).astype(np.float32)
    np.maximum(data, 0.0, out=data)
    if not data.any():
        raise InputError("the gray-matter map is empty (all zero)", path=path,
                         fix="check the segmentation output of this participant")
    if float(data.max()) > 5.0:
        raise InputError(f"the gray-matter map has values up to {float(data.max()):.3g}; a GM "
                         "probability (or modulated GM) map lies between 0 and about 1",
                         path=path, fix="give the GM segment (label-GM_probseg, mwp1), not a T1w image")
    return nib.Nifti1Image(data, img.affine)


def voxel_volume_ml(img) -> float:
    """Volume of one voxel of ``img`` in mL.

    Examples
    --------
    >>> round(voxel_volume_ml(nib.Nifti1Image(np.zeros((2, 2, 2)), np.diag([2.0, 2.0, 2.0, 1.0]))), 9)
    0.008
    """
    return float(abs(np.linalg.det(np.asarray(img.affine, float)[:3, :3]))) / 1000.0


@lru_cache(maxsize=8)
def _template_grid(resolution: int) -> tuple[tuple[int, int, int], np.ndarray]:
    mask = atlas.brain_mask(resolution)
    return tuple(int(s) for s in mask.shape[:3]), np.asarray(mask.affine, float)


def analysis_grid(img, resolution: str | int | float = "auto") -> tuple[tuple[int, int, int], np.ndarray]:
    """The common grid of the voxel-wise analysis for a map.

    Parameters
    ----------
    img : nibabel image
        A participant's GM map.
    resolution : "auto", "native" or number
        ``"native"``: the map's own grid (every participant must then share it); a number: nilearn's
        MNI152 grid at that voxel size (mm); ``"auto"``: that grid at ``max(2, voxel size)`` mm.

    Returns
    -------
    shape : tuple of 3 int
    affine : ndarray, shape (4, 4)

    Examples
    --------
    >>> img = nib.Nifti1Image(np.zeros((10, 10, 10), np.float32), np.diag([4.0, 4, 4, 1]))
    >>> analysis_grid(img, "native")[0]
    (10, 10, 10)
    """
    if resolution == "native":
        return tuple(int(s) for s in img.shape[:3]), np.asarray(img.affine, float)
    if resolution == "auto":
        size = float(np.mean(np.sqrt(np.sum(np.asarray(img.affine, float)[:3, :3] ** 2, axis=0))))
        res = max(2, int(round(size)))
    else:
        try:
            res = int(round(float(resolution)))
        except (TypeError, ValueError):
            res = 0
        if res < 1:
            raise InputError(f"structure option resolution={resolution!r} is not valid",
                             fix='use "auto", "native" or a voxel size in mm (e.g. 2)')
    return _template_grid(res)


def _same_grid(shape_a, affine_a, shape_b, affine_b) -> bool:
    return tuple(shape_a[:3]) == tuple(shape_b[:3]) and np.allclose(affine_a, affine_b, atol=1e-3)


def smooth_to_grid(img, fwhm: float | None, grid: tuple[tuple[int, int, int], np.ndarray]) -> nib.Nifti1Image:
    """Smooth a map (Gaussian, ``fwhm`` mm, on its own grid) and put it on ``grid``.

    Parameters
    ----------
    img : Nifti1Image, 3-D
    fwhm : float or None
        Full width at half maximum in mm; None or 0: no smoothing.
    grid : (shape, affine)
        Target grid; linear interpolation when it differs from the map's.

    Returns
    -------
    Nifti1Image, 3-D float32 on ``grid``

    Examples
    --------
    >>> img = nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.diag([2.0, 2, 2, 1]))
    >>> smooth_to_grid(img, 6.0, (img.shape, img.affine)).shape
    (8, 8, 8)
    """
    data = np.asarray(img.dataobj, dtype=np.float32)
    if fwhm:
        zooms = np.sqrt(np.sum(np.asarray(img.affine, float)[:3, :3] ** 2, axis=0))
        data = ndimage.gaussian_filter(data, float(fwhm) * _FWHM_TO_SIGMA / zooms, mode="constant")
    shape, affine = grid
    if _same_grid(img.shape, img.affine, shape, affine):
        return nib.Nifti1Image(data.astype(np.float32), np.asarray(affine, float))
    from nilearn.image import resample_img
    out = resample_img(nib.Nifti1Image(data, img.affine), target_affine=affine, target_shape=shape,
                       interpolation="linear", force_resample=True, copy_header=True)
    values = np.asarray(out.dataobj, dtype=np.float32)
    return nib.Nifti1Image(np.where(np.isfinite(values), values, 0.0).astype(np.float32), affine)


def regional_gm(img, radius: float = 6.0, regions: Sequence[str] = atlas.STRUCTURE_REGIONS) -> dict[str, float]:
    """Mean GM in each region's spheres (unsmoothed map, the map's own grid).

    Parameters
    ----------
    img : Nifti1Image, 3-D
        GM probability map in MNI space.
    radius : float
        Sphere radius in mm.
    regions : sequence of str
        Region names of :data:`painplast.atlas.REGIONS`.

    Returns
    -------
    dict
        ``{region: mean GM}`` (NaN when a sphere falls outside the image).

    Examples
    --------
    >>> img = nib.Nifti1Image(np.full((46, 55, 46), 0.5, np.float32), atlas.brain_mask(4).affine)
    >>> regional_gm(img, regions=["dacc"])
    {'dacc': 0.5}
    """
    data = np.asarray(img.dataobj, dtype=np.float64)
    masks = _region_masks(tuple(int(s) for s in img.shape[:3]), np.asarray(img.affine, float).tobytes(),
                          float(radius), tuple(regions))
    return {region: float(data[m].mean()) if m.any() else float("nan") for region, m in masks.items()}


@lru_cache(maxsize=8)
def _region_masks(shape: tuple[int, int, int], affine_bytes: bytes, radius: float,
                  regions: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Boolean sphere masks of the regions on a grid (cached: one grid serves every participant)."""
    affine = np.frombuffer(affine_bytes, dtype=np.float64).reshape(4, 4)
    return {region: atlas.region_mask(region, (shape, affine), radius) for region in regions}


def _safe_name(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(text).lower()).strip("_") or "unnamed"


def _label_names(path: Path, labels_path: str | None, values: np.ndarray) -> dict[int, str]:
    """Names of the labels of an atlas image: from a TSV (index, name) or ``label_<k>``."""
    candidates = [Path(labels_path)] if labels_path else []
    stem = re.sub(r"\.nii(\.gz)?$", "", path.name)
    candidates += [path.with_name(stem + ".tsv"), path.with_name(re.sub(r"_dseg$", "", stem) + "_dseg.tsv")]
    names: dict[int, str] = {}
    for tsv in candidates:
        if not tsv.exists():
            continue
        with open(tsv, newline="") as handle:
            rows = list(csv.reader(handle, delimiter="\t"))
        if not rows:
            continue
        header = [h.strip().lower() for h in rows[0]]
        i_col = header.index("index") if "index" in header else 0
        n_col = header.index("name") if "name" in header else 1
        start = 1 if ("index" in header or "name" in header) else 0
        for row in rows[start:]:
            try:
                names[int(float(row[i_col]))] = _safe_name(row[n_col])
            except (ValueError, IndexError):
                raise InputError(f"cannot read atlas label row {row!r}", path=tsv,
                                 fix="give a TSV with columns index and name") from None
        break
    else:
        if labels_path:
            raise InputError("the atlas label file does not exist", path=labels_path,
                             fix="give a TSV with columns index and name, or leave atlas_labels unset")
    return {int(v): names.get(int(v), f"label_{int(v)}") for v in values}


def atlas_gm(img, atlas_path: str, labels_path: str | None = None) -> dict[str, float]:
    """Mean GM in each label of a user's integer label image (resampled to the GM map's grid).

    Parameters
    ----------
    img : Nifti1Image, 3-D
        GM map.
    atlas_path : str
        Integer label image in the same template space (0 = background).
    labels_path : str, optional
        TSV with columns ``index`` and ``name``; default: a ``.tsv`` beside the image, else
        ``label_<k>``.

    Returns
    -------
    dict
        ``{label name: mean GM}``.

    Examples
    --------
    >>> gm = load_gm(Cohort.from_bids(bids_dir).subject("sub-001").gm)
    >>> halves = np.where(atlas.voxel_coordinates(gm.shape, gm.affine)[..., 0] < 0, 1, 2)
    >>> nib.save(nib.Nifti1Image(halves.astype(np.int16), gm.affine), "hemispheres.nii.gz")
    >>> sorted(atlas_gm(gm, "hemispheres.nii.gz"))           # no label table: label_<k>
    ['label_1', 'label_2']
    """
    path = Path(atlas_path)
    if not path.exists():
        raise InputError("the structure atlas does not exist", path=path,
                         fix="give an integer label image (NIfTI) in the template space")
    try:
        labels = atlas.resample_labels(str(path), img)
        lab = np.rint(np.asarray(labels.dataobj, dtype=np.float64)).astype(np.int64)
    except InputError:
        raise
    except Exception as error:
        raise InputError(f"cannot read the structure atlas ({error})", path=path,
                         fix="give an integer label image (NIfTI) in the template space") from None
    if lab.ndim == 4 and lab.shape[3] == 1:
        lab = lab[..., 0]
    values = np.unique(lab[lab > 0])
    if values.size == 0:
        raise InputError("the structure atlas has no label inside the GM map's field of view",
                         path=path, fix="give a label image in the same template space")
    names = _label_names(path, labels_path, values)
    data = np.asarray(img.dataobj, dtype=np.float64)
    sums = ndimage.sum_labels(data, lab, values)
    counts = ndimage.sum_labels(np.ones_like(data), lab, values)
    return {names[int(v)]: float(s / c) for v, s, c in zip(values, sums, counts)}


# ----------------------------------------------------------------------------- subject stage

def _fwhm(opts: dict, config: Config) -> float | None:
    return config.smoothing_fwhm if opts["fwhm"] is None else float(opts["fwhm"])


def subject(subject: Subject, config: Config) -> SubjectResult:
    """Regional and total gray matter of one participant, and the smoothed map for the group.

    Parameters
    ----------
    subject : Subject
        Needs ``subject.gm`` (fMRIPrep ``label-GM_probseg`` or CAT12 ``mwp1``, in MNI space).
    config : Config
        ``roi_radius_mm`` and the module options (:data:`DEFAULTS`).

    Returns
    -------
    SubjectResult
        ``features``: ``structure.gm_<region>`` (mean GM probability, unsmoothed),
        ``structure.gm_total`` (mL), ``structure.atlas_<label>`` with the ``atlas`` option;
        ``maps``: ``gm_smoothed`` (float32, on the analysis grid).

    Examples
    --------
    >>> res = subject(Cohort.from_bids(bids_dir).subject("sub-001"), Config(modules=("structure",)))
    >>> bool(res.features["structure.gm_total"] > 100), sorted(res.maps)   # mL; the group's input
    (True, ['gm_smoothed'])
    """
    opts = config.module(NAME, DEFAULTS)
    if subject.gm is None:
        raise InputError(f"{subject.participant_id} has no gray-matter map",
                         fix="give fMRIPrep anatomical derivatives (label-GM_probseg) or CAT12 mwp1 maps")
    img = load_gm(subject.gm)
    features = {f"{NAME}.gm_{r}": v for r, v in regional_gm(img, config.roi_radius_mm).items()}
    features[f"{NAME}.gm_total"] = float(np.asarray(img.dataobj, np.float64).sum() * voxel_volume_ml(img))
    if opts["atlas"]:
        for name, value in atlas_gm(img, opts["atlas"], opts["atlas_labels"]).items():
            features[f"{NAME}.atlas_{name}"] = value
    grid = analysis_grid(img, opts["resolution"])
    fwhm = _fwhm(opts, config)
    smoothed = smooth_to_grid(img, fwhm, grid)
    info = {"gm_file": str(subject.gm), "fwhm_mm": fwhm,
            "resampled": not _same_grid(img.shape, img.affine, *grid),
            "voxel_size_mm": [float(v) for v in np.sqrt(np.sum(grid[1][:3, :3] ** 2, axis=0))]}
    return SubjectResult(NAME, subject.participant_id, features, {"gm_smoothed": smoothed}, {}, info)


# ----------------------------------------------------------------------------- voxel-wise group GLM

def _global_covariate(participants: pd.DataFrame) -> str:
    return "tiv" if "tiv" in participants.columns else "gm_total"


def _load_stack(results: Sequence[SubjectResult], threshold: float, user_mask: str | None):
    """(n, v) smoothed GM inside the GM mask, the 3-D mask, and the grid's affine."""
    first = results[0].maps.get("gm_smoothed")
    shape, affine = first.shape[:3], np.asarray(first.affine, float)
    total = np.zeros(shape, np.float64)
    for r in results:
        img = r.maps.get("gm_smoothed")
        if img is None or not _same_grid(img.shape, img.affine, shape, affine):
            raise InputError(f"{r.participant_id}'s smoothed GM map is missing or on another grid "
                             "than the first participant's",
                             fix='rerun the structure subject stage with the same resolution option for '
                                 'everyone (e.g. resolution="auto" or 2)')
        total += np.asarray(img.dataobj, np.float64)
    mask = total / len(results) > threshold
    if user_mask:
        try:
            resampled = atlas.resample_labels(str(user_mask), nib.Nifti1Image(np.zeros(shape, np.uint8), affine))
        except Exception as error:
            raise InputError(f"cannot read the analysis mask ({error})", path=user_mask,
                             fix="give a 3-D mask image in the template space") from None
        mask &= np.asarray(resampled.dataobj) > 0
    if mask.sum() < 10:
        raise InputError(f"the gray-matter mask has {int(mask.sum())} voxels",
                         fix="lower the structure option mask_threshold or check the GM maps")
    Y = np.empty((len(results), int(mask.sum())), np.float64)
    for i, r in enumerate(results):
        Y[i] = np.asarray(r.maps["gm_smoothed"].dataobj, np.float64)[mask]
    return Y, mask, affine


def voxelwise(results: Sequence[SubjectResult], participants: pd.DataFrame, extra: pd.DataFrame,
              config: Config, opts: dict) -> tuple[dict, pd.DataFrame, pd.DataFrame, list[str]]:
    """Voxel-wise GLMs with TFCE permutation inference, one per contrast.

    Parameters
    ----------
    results : sequence of SubjectResult
        Included participants, each with map ``gm_smoothed`` on one common grid.
    participants : DataFrame
        Participants table in the order of ``results``.
    extra : DataFrame
        ``gm_total`` per participant, same index.
    config : Config
        ``n_permutations``, ``alpha``, ``random_state``.
    opts : dict
        Module options (:data:`DEFAULTS`).

    Returns
    -------
    maps : dict
        ``gm_mask`` and per contrast ``<key>_t``, ``<key>_tfce``, ``<key>_logp_fwe_tfce``.
    clusters : DataFrame
        See :func:`painplast.plasticity._secondlevel.cluster_table` (all contrasts).
    summary : DataFrame
        One row per contrast: ``n``, covariates, voxels, permutations, peak t, smallest FWE p.
    notes : list of str

    Examples
    --------
    >>> cohort, cfg = Cohort.from_bids(bids_dir), Config(n_permutations=20)
    >>> results = [subject(s, cfg) for s in cohort]
    >>> parts = cohort.participants.loc[[r.participant_id for r in results]]
    >>> extra = pd.DataFrame({"gm_total": [r.features["structure.gm_total"] for r in results]},
    ...                      index=parts.index)
    >>> maps, clusters, summary, notes = voxelwise(results, parts, extra, cfg, DEFAULTS)
    >>> sorted(maps)      # 8 participants: only the age contrast has enough (see notes)
    ['age_logp_fwe_tfce', 'age_t', 'age_tfce', 'gm_mask']
    """
    Y, mask, affine = _load_stack(results, float(opts["mask_threshold"]), opts["mask"])
    second = _secondlevel.second_level(
        Y, mask, affine, participants, opts["voxelwise_contrasts"], extra=extra,
        global_covariate=_global_covariate(participants), site_blocks=bool(opts["site_blocks"]),
        n_permutations=int(config.n_permutations), alpha=config.alpha,
        random_state=config.random_state, connectivity=int(opts["tfce_connectivity"]),
        min_peak_distance=float(opts["min_peak_distance"]), max_subpeaks=int(opts["max_subpeaks"]))
    maps = {"gm_mask": nib.Nifti1Image(mask.astype(np.uint8), affine), **second.maps}
    notes = [f"GM mask: mean smoothed GM > {opts['mask_threshold']}, fwhm {_fwhm(opts, config)} mm",
             *second.notes]
    return maps, second.clusters, second.summary, notes


# ----------------------------------------------------------------------------- figures

def _png(fig) -> bytes:
    return figure_png(fig)


def glass_brain_png(t_img, logp_img=None, alpha: float = 0.05, title: str = "") -> bytes:
    """PNG of a glass-brain view of a t map, showing voxels with FWE p < alpha when given.

    Parameters
    ----------
    t_img : Nifti1Image
        t map.
    logp_img : Nifti1Image, optional
        -log10 FWE p map; voxels not significant are hidden.
    alpha : float
    title : str

    Returns
    -------
    bytes
        The figure as PNG.

    Examples
    --------
    >>> mask = atlas.brain_mask(4)
    >>> t = nib.Nifti1Image(4.0 * mask.get_fdata(), mask.affine)
    >>> glass_brain_png(t)[:4]
    b'\\x89PNG'
    """
    from matplotlib.figure import Figure
    from nilearn import plotting

    t = np.asarray(t_img.dataobj, np.float32)
    shown = t
    if logp_img is not None:
        significant = np.asarray(logp_img.dataobj, np.float64) > -np.log10(alpha)
        shown = np.where(significant, t, 0.0).astype(np.float32)
        if not significant.any():
            title = f"{title} (no voxel with FWE p < {alpha})"
    vmax = float(np.abs(t).max()) or 1.0
    fig = Figure(figsize=(9, 3.2))
    with warnings.catch_warnings():   # nilearn warns about an empty map: the title says so
        warnings.simplefilter("ignore", UserWarning)
        display = plotting.plot_glass_brain(nib.Nifti1Image(shown, t_img.affine), figure=fig,
                                            display_mode="lzry", plot_abs=False, threshold=1e-6,
                                            colorbar=True, cmap="RdBu_r", vmin=-vmax, vmax=vmax,
                                            symmetric_cbar=True, title=title or None)
    del display  # the figure is not registered with pyplot: nothing to close
    return _png(fig)


def regional_effects_png(findings: pd.DataFrame, alpha: float = 0.05) -> bytes:
    """PNG bar chart of the regional findings: estimate and interval per region and contrast.

    Parameters
    ----------
    findings : DataFrame
        Contract columns; one panel per regional contrast, bars drawn dark where
        ``p_corrected < alpha`` (and the PNG's bytes returned).
    alpha : float

    Examples
    --------
    >>> findings = pd.DataFrame({"feature": ["structure.gm_dlpfc", "structure.gm_thalamus"],
    ...                          "contrast": "patient-control", "estimate": [-0.9, -0.2],
    ...                          "ci_low": [-1.3, -0.6], "ci_high": [-0.5, 0.2],
    ...                          "p_corrected": [0.001, 0.4]})
    >>> regional_effects_png(findings)[:4]
    b'\\x89PNG'
    """
    from matplotlib.figure import Figure

    panels = [c for c in REGIONAL_CONTRASTS if (findings.contrast == c).any()]
    fig = Figure(figsize=(4.2 * max(len(panels), 1), 4.0), layout="constrained")
    if not panels:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no regional finding was computed", ha="center", va="center")
        ax.set_axis_off()
        return _png(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, contrast in zip(axes, panels):
        rows = findings[(findings.contrast == contrast) & findings.feature.str.startswith(f"{NAME}.gm_")
                        & (findings.feature != f"{NAME}.gm_total")]
        names = [f.split(".gm_", 1)[1] for f in rows.feature]
        est = rows.estimate.to_numpy(float)
        err = np.vstack([est - rows.ci_low.to_numpy(float), rows.ci_high.to_numpy(float) - est])
        colours = ["#b2182b" if p < alpha else "#bbbbbb" for p in rows.p_corrected.to_numpy(float)]
        y = np.arange(len(names))
        ax.barh(y, est, xerr=err, color=colours, capsize=2)
        ax.set_yticks(y, names, fontsize=8)
        ax.invert_yaxis()
        ax.axvline(0, color="k", lw=0.8)
        unit = "Cohen's d" if contrasts.CONTRASTS[contrast].kind == "group" else "partial r"
        ax.set_xlabel(unit)
        ax.set_title(f"GM ~ {contrast}", fontsize=10)
    fig.suptitle(f"regional gray matter (dark: Holm p < {alpha})", fontsize=10)
    return _png(fig)


# ----------------------------------------------------------------------------- group stage

def a_priori_tests(config: Config | None = None) -> list[tuple[str, str]]:
    """The (feature, contrast) rows of the structure findings table.

    Examples
    --------
    >>> len(a_priori_tests()), a_priori_tests()[-1]
    (34, ('structure.gm_total', 'age'))
    """
    tests = [(f"{NAME}.gm_{r}", c) for r in atlas.STRUCTURE_REGIONS for c in REGIONAL_CONTRASTS]
    return tests + [(f"{NAME}.gm_total", c) for c in TOTAL_CONTRASTS]


def group(results: list[SubjectResult], cohort: Cohort, config: Config) -> GroupResult:
    """Group statistics of gray matter: regional findings, voxel-wise maps and clusters.

    Regional findings are the shared stage's (:func:`painplast.plasticity._group.run`; regional
    GM adjusted for ``gm_total``); the voxel-wise GLMs are :func:`voxelwise`'s.

    Returns
    -------
    GroupResult
        ``findings`` (a-priori rows, see :func:`a_priori_tests`), ``clusters`` (all voxel-wise
        contrasts), ``maps`` (``gm_mask``, ``<contrast>_t``, ``<contrast>_tfce``,
        ``<contrast>_logp_fwe_tfce``), ``tables`` (``voxelwise``, ``atlas_effects`` with the
        ``atlas`` option), ``figures`` (``glass_brain_patient_control``, ``regional_effects``).

    Examples
    --------
    >>> cohort, cfg = Cohort.from_bids(bids_dir), Config(n_permutations=20)
    >>> res = group([subject(s, cfg) for s in cohort], cohort, cfg)
    >>> "structure.gm_dlpfc" in set(res.findings["feature"]), "clusters" in dir(res)
    (True, True)
    """
    return _group.run(DECLARATION, results, cohort, config, _group_specific)


def _group_specific(data: _group.GroupData) -> _group.Specific:
    """Regional-effects figure, exploratory atlas effects and the voxel-wise GLMs."""
    out = _group.Specific()
    features, config = data.features, data.config
    if len(data.findings):
        out.figures["regional_effects"] = regional_effects_png(data.findings, config.alpha)
    atlas_features = [c for c in features.columns if c.startswith(f"{NAME}.atlas_")]
    if atlas_features:
        atlas_tests = [(f, c) for f in atlas_features for c in ("patient-control", "pain_duration")]
        out.tables["atlas_effects"] = contrasts.findings_table(
            features, data.participants, atlas_tests, alpha=config.alpha, extra=data.extra,
            extra_covariates={f: ("gm_total",) for f in atlas_features})
        out.notes.append("atlas_effects: exploratory (Holm within that table), not a-priori findings")
    if data.options["voxelwise"]:
        out.maps, out.clusters, out.tables["voxelwise"], more = voxelwise(
            data.results, data.participants, data.extra, config, data.options)
        out.notes += more
        if _secondlevel.map_name("patient-control", "t") in out.maps:
            out.figures["glass_brain_patient_control"] = glass_brain_png(
                out.maps["patient_control_t"], out.maps["patient_control_logp_fwe_tfce"],
                config.alpha, f"GM patient - control, t (TFCE FWE p < {config.alpha})")
    return out


DECLARATION = Declaration(
    name=NAME, title="Gray-matter structure", task=None, bold=False, subject=subject,
    group=group, defaults=DEFAULTS, tests=a_priori_tests,
    covariates={"*": ("gm_total",), f"{NAME}.gm_total": ()},
    group_options=("mask", "mask_threshold", "voxelwise", "voxelwise_contrasts", "site_blocks",
                   "tfce_connectivity", "min_peak_distance", "max_subpeaks"),
    description="Regional gray-matter change (voxel-wise GLM with age, sex and total intracranial "
    "volume, TFCE with family-wise error control) and regional gray matter in pain-system regions.")
