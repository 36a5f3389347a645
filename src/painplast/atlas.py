"""Pain-system regions of interest and the network atlases that ship offline.

The pain-system ROIs are spheres around representative MNI152 coordinates (mm). Each coordinate
was checked to lie in gray matter of nilearn's MNI152 template (the GM probability within a 6 mm
sphere is 0.4-0.94) and the spheres do not overlap at the default radius (closest pair: rACC and
mPFC, 17 mm apart). The ``reference`` column names literature that motivates each region's role
in pain; the coordinates are rounded representative locations in those regions, not copied peak
coordinates of one paper. The simulator (:mod:`painplast.simulate`) plants its effects in these
same regions, by name, so recovery is checked region by region.

Regions (``REGIONS``) group bilateral spheres; named couplings (``COUPLINGS``) are the a-priori
connectivity features, e.g. ``mpfc_nacc``: the mean Fisher-z correlation over the edges between
the two sets of ROIs.

Network atlases: the Power (2011), Dosenbach (2010) and Seitzman (2018) coordinate sets are read
from nilearn's package data, offline; no atlas is ever downloaded.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

import nibabel as nib
import numpy as np
import pandas as pd

from .errors import InputError


@dataclass(frozen=True)
class ROI:
    """One pain-system region of interest: a sphere around an MNI coordinate (mm)."""

    name: str
    x: float
    y: float
    z: float
    region: str
    hemisphere: str  # 'L', 'R' or 'M' (midline)
    network: str
    structure: str
    reference: str

    @property
    def center(self) -> tuple[float, float, float]:
        return (self.x, self.y, self.z)


_R = ROI
PAIN_ROIS: tuple[ROI, ...] = (
    _R("s1_hand_l", -38, -28, 56, "s1_hand", "L", "sensorimotor", "postcentral gyrus, hand area", "Penfield & Boldrey 1937; Flor et al. 1997"),
    _R("s1_hand_r", 38, -28, 56, "s1_hand", "R", "sensorimotor", "postcentral gyrus, hand area", "Penfield & Boldrey 1937; Maihofner et al. 2003"),
    _R("s2_l", -52, -24, 20, "s2", "L", "sensorimotor", "parietal operculum (S2)", "Apkarian et al. 2005"),
    _R("s2_r", 52, -24, 20, "s2", "R", "sensorimotor", "parietal operculum (S2)", "Apkarian et al. 2005"),
    _R("insula_anterior_l", -36, 16, 2, "insula_anterior", "L", "salience", "anterior insula", "Wager et al. 2013; Baliki et al. 2006"),
    _R("insula_anterior_r", 36, 16, 2, "insula_anterior", "R", "salience", "anterior insula", "Wager et al. 2013; Baliki et al. 2006"),
    _R("insula_posterior_l", -38, -16, 8, "insula_posterior", "L", "salience", "dorsal posterior insula", "Segerdahl et al. 2015; Wager et al. 2013"),
    _R("insula_posterior_r", 38, -16, 8, "insula_posterior", "R", "salience", "dorsal posterior insula", "Segerdahl et al. 2015; Wager et al. 2013"),
    _R("dacc", 0, 20, 36, "dacc", "M", "salience", "dorsal anterior / anterior mid-cingulate cortex", "Vogt 2005; Wager et al. 2013"),
    _R("racc", 0, 40, 4, "racc", "M", "modulatory", "rostral (pregenual) anterior cingulate cortex", "Petrovic et al. 2002; Eippert et al. 2009"),
    _R("mpfc", 0, 54, -6, "mpfc", "M", "default", "medial prefrontal cortex", "Baliki et al. 2012; Hashmi et al. 2013"),
    _R("pcc", 0, -52, 28, "pcc", "M", "default", "posterior cingulate / precuneus", "Baliki et al. 2008; Napadow et al. 2010"),
    _R("angular_l", -46, -66, 32, "angular", "L", "default", "angular gyrus", "Buckner et al. 2008"),
    _R("angular_r", 46, -66, 32, "angular", "R", "default", "angular gyrus", "Buckner et al. 2008"),
    _R("thalamus_l", -12, -18, 6, "thalamus", "L", "ascending", "thalamus (ventral posterior / medial)", "Apkarian et al. 2005; Apkarian et al. 2004"),
    _R("thalamus_r", 12, -18, 6, "thalamus", "R", "ascending", "thalamus (ventral posterior / medial)", "Apkarian et al. 2005; Apkarian et al. 2004"),
    _R("dlpfc_l", -42, 36, 28, "dlpfc", "L", "modulatory", "dorsolateral prefrontal cortex", "Apkarian et al. 2004; Seminowicz et al. 2011"),
    _R("dlpfc_r", 42, 36, 28, "dlpfc", "R", "modulatory", "dorsolateral prefrontal cortex", "Apkarian et al. 2004; Seminowicz et al. 2011"),
    _R("nacc_l", -10, 12, -8, "nacc", "L", "reward", "nucleus accumbens", "Baliki et al. 2012"),
    _R("nacc_r", 10, 12, -8, "nacc", "R", "reward", "nucleus accumbens", "Baliki et al. 2012"),
    _R("amygdala_l", -22, -4, -18, "amygdala", "L", "limbic", "amygdala", "Neugebauer et al. 2004; Vachon-Presseau et al. 2016"),
    _R("amygdala_r", 22, -4, -18, "amygdala", "R", "limbic", "amygdala", "Neugebauer et al. 2004; Vachon-Presseau et al. 2016"),
    _R("pag", 0, -30, -10, "pag", "M", "modulatory", "periaqueductal gray", "Tracey et al. 2002; Eippert et al. 2009"),
    _R("rvm", 0, -38, -48, "rvm", "M", "modulatory", "rostral ventromedial medulla", "Fields 2004; Eippert et al. 2009"),
)

#: Region name -> names of its ROI spheres (bilateral regions have two).
REGIONS: dict[str, tuple[str, ...]] = {}
for _roi in PAIN_ROIS:
    REGIONS.setdefault(_roi.region, ())
    REGIONS[_roi.region] += (_roi.name,)

#: Pain-processing regions whose task responses the sensitization and modulation modules test.
PAIN_PROCESSING_REGIONS: tuple[str, ...] = (
    "s1_hand", "s2", "insula_anterior", "insula_posterior", "dacc", "thalamus", "amygdala", "pag",
)
#: Regions whose gray matter the structure module tests a priori.
STRUCTURE_REGIONS: tuple[str, ...] = (
    "dlpfc", "insula_anterior", "insula_posterior", "thalamus", "dacc", "racc", "mpfc", "pcc",
    "s1_hand", "amygdala", "nacc",
)
#: Default-mode ROIs (for the named coupling ``dmn_insula``).
DMN_ROIS: tuple[str, ...] = ("mpfc", "pcc", "angular_l", "angular_r")

#: Named a-priori couplings: name -> (ROIs on one side, ROIs on the other side).
COUPLINGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "mpfc_nacc": (("mpfc",), ("nacc_l", "nacc_r")),
    "dmn_insula": (DMN_ROIS, ("insula_anterior_l", "insula_anterior_r", "insula_posterior_l", "insula_posterior_r")),
    "pag_racc": (("pag",), ("racc",)),
    "dlpfc_pag": (("dlpfc_l", "dlpfc_r"), ("pag",)),
    "insula_dacc": (("insula_anterior_l", "insula_anterior_r"), ("dacc",)),
    "s1_s1": (("s1_hand_l",), ("s1_hand_r",)),
    "thalamus_s1": (("thalamus_l", "thalamus_r"), ("s1_hand_l", "s1_hand_r")),
    "amygdala_mpfc": (("amygdala_l", "amygdala_r"), ("mpfc",)),
}

ROI_NAMES: tuple[str, ...] = tuple(r.name for r in PAIN_ROIS)
_BY_NAME = {r.name: r for r in PAIN_ROIS}


def roi(name: str) -> ROI:
    """The pain-system ROI called ``name`` (see :data:`PAIN_ROIS`)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise InputError(f"unknown ROI '{name}'", fix=f"use one of {', '.join(ROI_NAMES)}") from None


def region_rois(region: str) -> tuple[ROI, ...]:
    """The ROI spheres of a region (one for midline regions, two for bilateral ones)."""
    if region in _BY_NAME:
        return (_BY_NAME[region],)
    try:
        return tuple(_BY_NAME[n] for n in REGIONS[region])
    except KeyError:
        raise InputError(f"unknown region '{region}'", fix=f"use one of {', '.join(REGIONS)}") from None


def roi_table() -> pd.DataFrame:
    """The pain-system ROIs as a table (one row per sphere).

    Examples
    --------
    >>> table = roi_table()
    >>> table.loc[table.name == "pag", ["x", "y", "z"]].values.tolist()
    [[0.0, -30.0, -10.0]]
    """
    return pd.DataFrame([r.__dict__ for r in PAIN_ROIS]).astype({"x": float, "y": float, "z": float})


# --------------------------------------------------------------------------- grids and templates

def template(resolution: int = 2) -> nib.Nifti1Image:
    """nilearn's MNI152 T1 template at ``resolution`` mm (shipped with nilearn, offline)."""
    from nilearn.datasets import load_mni152_template
    return load_mni152_template(resolution=resolution)


def brain_mask(resolution: int = 2) -> nib.Nifti1Image:
    """nilearn's MNI152 brain mask at ``resolution`` mm (offline)."""
    from nilearn.datasets import load_mni152_brain_mask
    return load_mni152_brain_mask(resolution=resolution)


def gm_template(resolution: int = 2) -> nib.Nifti1Image:
    """nilearn's MNI152 gray-matter probability template at ``resolution`` mm (offline)."""
    from nilearn.datasets import load_mni152_gm_template
    return load_mni152_gm_template(resolution=resolution)


def voxel_coordinates(shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """MNI (mm) coordinates of every voxel centre.

    Returns
    -------
    ndarray, shape (*shape[:3], 3)
    """
    return voxel_coordinates_of(np.indices(tuple(shape[:3]), dtype=np.float64), affine)


def voxel_coordinates_of(ijk, affine: np.ndarray) -> np.ndarray:
    """MNI (mm) coordinates of the voxel centres ``ijk``: three index arrays of any one shape
    (as ``np.nonzero`` or ``np.indices`` give them); the result has that shape plus a last axis 3.

    Examples
    --------
    >>> affine = np.diag([2.0, 2.0, 2.0, 1.0]); affine[:3, 3] = -10
    >>> voxel_coordinates_of((np.array([0, 5]), np.array([0, 1]), np.array([0, 2])), affine).tolist()
    [[-10.0, -10.0, -10.0], [0.0, -8.0, -6.0]]
    """
    idx = np.asarray(ijk, dtype=np.float64)
    return np.moveaxis(np.tensordot(affine[:3, :3], idx, axes=1), 0, -1) + affine[:3, 3]


def grid(target) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape (3-D) and affine of a grid given as an image or as ``(shape, affine)``.

    Examples
    --------
    >>> grid(((10, 12, 8, 100), np.eye(4)))[0]
    (10, 12, 8)
    """
    if isinstance(target, tuple) and len(target) == 2:
        shape, affine = target
        return tuple(int(s) for s in shape[:3]), np.asarray(affine, float)
    return tuple(int(s) for s in target.shape[:3]), np.asarray(target.affine, float)


def sphere_mask(center: Sequence[float], target, radius: float = 6.0) -> np.ndarray:
    """Boolean mask of the voxels whose centres lie within ``radius`` mm of ``center``.

    The voxel nearest the centre is always included, so a sphere smaller than a voxel still
    holds one voxel (as nilearn's ``NiftiSpheresMasker`` does).

    Parameters
    ----------
    center : sequence of 3 floats
        MNI coordinate in mm.
    target : nibabel image or (shape, affine)
        The grid.
    radius : float
        Radius in mm.

    Returns
    -------
    ndarray of bool, shape target.shape[:3]
    """
    shape, affine = grid(target)
    center = np.asarray(center, float)
    # only the voxels of the sphere's bounding box in voxel space are measured: voxel axis i of
    # a point x is row i of inv(A) applied to x - t, which varies by at most radius * |row i|
    inverse = np.linalg.inv(affine[:3, :3])
    middle = inverse @ (center - affine[:3, 3])
    reach = abs(float(radius)) * np.linalg.norm(inverse, axis=1) + 1.0
    lo = np.clip(np.floor(middle - reach).astype(int), 0, shape)
    hi = np.clip(np.ceil(middle + reach).astype(int) + 1, 0, shape)
    mask = np.zeros(shape, bool)
    if np.all(hi > lo):
        xyz = voxel_coordinates_of(np.indices(tuple(hi - lo), dtype=np.float64) + lo.reshape(3, 1, 1, 1), affine)
        mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = np.linalg.norm(xyz - center, axis=-1) <= radius
    ijk = np.round(np.linalg.solve(affine, np.r_[center, 1.0])[:3]).astype(int)
    if np.all((ijk >= 0) & (ijk < np.array(shape))):
        mask[tuple(ijk)] = True
    return mask


def region_mask(region: str, target, radius: float = 6.0) -> np.ndarray:
    """Union of the spheres of a region (or a single ROI name) on the target grid."""
    out = np.zeros(grid(target)[0], bool)
    for r in region_rois(region):
        out |= sphere_mask(r.center, target, radius)
    return out


def pain_label_image(target, radius: float = 6.0, names: Iterable[str] | None = None) -> tuple[nib.Nifti1Image, list[str]]:
    """Integer label image of the pain-system ROI spheres on a grid.

    Returns
    -------
    img : Nifti1Image
        Label ``k`` (1-based) marks ROI ``labels[k - 1]``; 0 is background.
    labels : list of str
    """
    shape, affine = grid(target)
    names = list(names) if names is not None else list(ROI_NAMES)
    data = np.zeros(shape, np.int16)
    for k, name in enumerate(names, start=1):
        data[sphere_mask(roi(name).center, (shape, affine), radius) & (data == 0)] = k
    return nib.Nifti1Image(data, affine), names


# --------------------------------------------------------------------------- network atlases

_COORD_ATLASES = ("power", "dosenbach", "seitzman")


@lru_cache(maxsize=None)
def _coords_atlas(name: str) -> pd.DataFrame:
    from nilearn import datasets
    if name == "power":
        d = datasets.fetch_coords_power_2011(legacy_format=False) if "legacy_format" in datasets.fetch_coords_power_2011.__code__.co_varnames else datasets.fetch_coords_power_2011()
        rois = d.rois
        table = pd.DataFrame({"x": rois["x"].astype(float), "y": rois["y"].astype(float),
                              "z": rois["z"].astype(float)})
        table["network"] = "unlabelled"
        table["name"] = [f"power_{int(i):03d}" for i in rois["roi"]]
        radius = 5.0
    elif name == "dosenbach":
        d = datasets.fetch_coords_dosenbach_2010()
        table = pd.DataFrame({"x": d.rois["x"].astype(float), "y": d.rois["y"].astype(float),
                              "z": d.rois["z"].astype(float)})
        table["network"] = np.asarray(d.networks, dtype=str)
        table["name"] = [f"dosenbach_{i:03d}_{str(lab).replace(' ', '')}" for i, lab in enumerate(np.asarray(d.labels, dtype=str), start=1)]
        radius = 5.0
    elif name == "seitzman":
        d = datasets.fetch_coords_seitzman_2018()
        table = pd.DataFrame({"x": d.rois["x"].astype(float), "y": d.rois["y"].astype(float),
                              "z": d.rois["z"].astype(float)})
        table["network"] = np.asarray(d.networks, dtype=str)
        table["name"] = [f"seitzman_{i:03d}" for i in range(1, len(table) + 1)]
        radius = np.asarray(d.radius, float) if "radius" in d else 4.0
    else:  # pragma: no cover - guarded by coords_atlas
        raise AssertionError(name)
    table = table.reset_index(drop=True)
    table["radius"] = radius
    return table[["name", "x", "y", "z", "network", "radius"]]


def coords_atlas(name: str) -> pd.DataFrame:
    """A coordinate atlas shipped with nilearn: ``power``, ``dosenbach`` or ``seitzman``.

    Returns
    -------
    DataFrame
        Columns ``name, x, y, z, network, radius`` (mm), one row per ROI.

    Examples
    --------
    >>> len(coords_atlas("dosenbach"))
    160
    """
    key = name.lower()
    if key == "pain":
        table = roi_table().rename(columns={})[["name", "x", "y", "z", "network"]]
        table["radius"] = 6.0
        return table
    if key not in _COORD_ATLASES:
        raise InputError(f"unknown atlas '{name}'",
                         fix="use pain, power, dosenbach, seitzman, or the path of a label image")
    return _coords_atlas(key).copy()


def resample_labels(label_img, target) -> nib.Nifti1Image:
    """Resample a label (integer) image to a target grid with nearest-neighbour interpolation."""
    from nilearn.image import resample_to_img
    img = nib.load(label_img) if not hasattr(label_img, "affine") else label_img
    try:
        return resample_to_img(img, target, interpolation="nearest", force_resample=True, copy_header=True)
    except TypeError:  # older nilearn without force_resample/copy_header
        return resample_to_img(img, target, interpolation="nearest")
