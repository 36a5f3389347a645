"""Tiny images on the grids the real pipelines write, with content painplast can analyse.

Grids: the template grids of TemplateFlow (origin of voxel 0 and extent of the 1 mm image:
``tpl-MNI152NLin2009cAsym`` 193 x 229 x 193 from (-96, -132, -78), ``tpl-MNI152NLin6Asym``
182 x 218 x 182 from (-91, -126, -72); fMRIPrep's ``res-2`` outputs keep that origin) and CAT12's
SPM-style output grid (x flipped, bounding box [-84 -120 -72; 84 84 96] mm), all sampled at
8 mm (:data:`VOXEL_MM`) so that a whole BOLD run is a few hundred kilobytes. At 8 mm every
voxel centre is within 4 * sqrt(3) = 6.9 mm of any point, and painplast's ROI spheres always
hold their nearest voxel, so every pain-system ROI lands in the brain
(``tests/test_layouts.py`` checks it on every grid).

Content: a brain (an ellipsoid covering the MNI brain, brainstem and cerebellum included) whose
voxels carry a few shared slow signals plus noise, so that ROI time series correlate as real
ones do; gray-matter probabilities that vary smoothly between 0.1 and 0.9. No file is all zero.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

#: Voxel size (mm) of every template-space image in the corpus.
VOXEL_MM = 8.0
#: TemplateFlow templates: origin (mm) of voxel (0, 0, 0) and shape of the 1 mm image.
TEMPLATES = {
    "MNI152NLin2009cAsym": ((-96.0, -132.0, -78.0), (193, 229, 193)),
    "MNI152NLin6Asym": ((-91.0, -126.0, -72.0), (182, 218, 182)),
}
#: CAT12 output bounding box (mm), SPM convention: voxel 0 at +x (left-right flipped).
CAT12_BOX = ((-84.0, -120.0, -72.0), (84.0, 84.0, 96.0))
#: The brain: an ellipsoid (centre, radii in mm) holding every painplast ROI with a margin.
BRAIN_CENTER = np.array([0.0, -18.0, 10.0])
BRAIN_RADII = np.array([76.0, 96.0, 84.0])


@dataclass(frozen=True, eq=False)
class Grid:
    """Shape and affine (voxel indices to MNI mm) of an image."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    def coordinates(self) -> np.ndarray:
        """MNI mm of every voxel centre, shape (*shape, 3)."""
        idx = np.indices(self.shape, dtype=float)
        return np.moveaxis(np.tensordot(self.affine[:3, :3], idx, axes=1), 0, -1) + self.affine[:3, 3]


def template_grid(space: str, voxel: float = VOXEL_MM) -> Grid:
    """The grid of a TemplateFlow template (same origin and extent) at ``voxel`` mm."""
    origin, extent = TEMPLATES[space]
    shape = tuple(int((n - 1) // voxel) + 1 for n in extent)
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = origin
    return Grid(shape, affine)


def cat12_grid(voxel: float = VOXEL_MM) -> Grid:
    """CAT12's normalised output grid (x flipped, as SPM writes it) at ``voxel`` mm."""
    low, high = np.array(CAT12_BOX[0]), np.array(CAT12_BOX[1])
    shape = tuple(int((h - lo) // voxel) + 1 for lo, h in zip(low, high))
    affine = np.diag([-voxel, voxel, voxel, 1.0])
    affine[:3, 3] = [high[0], low[1], low[2]]
    return Grid(shape, affine)


def native_grid(shape=(12, 14, 10), voxel=(3.5, 3.5, 4.0)) -> Grid:
    """A small scanner-space grid for raw images (centred on the head)."""
    affine = np.diag(list(voxel) + [1.0])
    affine[:3, 3] = -np.array(voxel) * (np.array(shape) - 1) / 2
    return Grid(tuple(shape), affine)


def brain(grid: Grid) -> np.ndarray:
    """Boolean brain of the grid (the ellipsoid of :data:`BRAIN_RADII`); a read-only array."""
    return _brain(grid.shape, grid.affine.tobytes())


@lru_cache(maxsize=32)
def _brain(shape, affine_bytes) -> np.ndarray:
    grid = Grid(shape, np.frombuffer(affine_bytes).reshape(4, 4))
    xyz = (grid.coordinates() - BRAIN_CENTER) / BRAIN_RADII
    inside = (xyz ** 2).sum(-1) <= 1.0
    inside.flags.writeable = False
    return inside


def _smooth_field(rng: np.random.Generator, shape, sigma: float = 1.2) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return field / (field.std() + 1e-12)


def bold(grid: Grid, n_volumes: int, rng: np.random.Generator, n_nonsteady: int = 0) -> np.ndarray:
    """A preprocessed BOLD series (int16, like fMRIPrep's): shared slow signals plus noise.

    The first ``n_nonsteady`` volumes are brighter, as volumes before the steady state are.
    Outside the brain the series is dim and static, not zero (fMRIPrep does not mask its output).
    """
    inside = brain(grid)
    n_in = int(inside.sum())
    k = 5
    latent = np.cumsum(rng.standard_normal((n_volumes, k)), axis=0)
    latent = ndimage.gaussian_filter1d(latent, 1.5, axis=0)
    latent = (latent - latent.mean(0)) / (latent.std(0) + 1e-12)
    weights = rng.standard_normal((k, n_in), dtype=np.float32)
    signal = 12.0 * latent.astype(np.float32) @ weights
    signal += 8.0 * rng.standard_normal((n_volumes, n_in), dtype=np.float32)
    signal += 1000.0
    if n_nonsteady:
        signal[:n_nonsteady] *= 1.6
    head = np.clip(60 + 6 * rng.standard_normal(grid.shape, dtype=np.float32), 1, None).astype(np.int16)
    data = np.repeat(head[..., None], n_volumes, axis=-1)      # static, dim, not zero
    data[inside] = np.round(signal.T).astype(np.int16)
    return data


def probability(grid: Grid, rng: np.random.Generator, low: float = 0.1, high: float = 0.9) -> np.ndarray:
    """A tissue probability map (float32): smooth values in [low, high] in the brain, 0 outside."""
    field = _smooth_field(rng, grid.shape)
    values = low + (high - low) / (1.0 + np.exp(-1.5 * field))
    return np.where(brain(grid), values, 0.0).astype(np.float32)


def mask(grid: Grid) -> np.ndarray:
    """A brain mask (uint8), as fMRIPrep writes ``desc-brain_mask``."""
    return brain(grid).astype(np.uint8)


def dseg(grid: Grid, rng: np.random.Generator) -> np.ndarray:
    """A tissue segmentation (uint8: 0 background, 1 GM, 2 WM, 3 CSF)."""
    labels = 1 + (np.abs(_smooth_field(rng, grid.shape)) * 1.5).astype(np.uint8).clip(0, 2)
    return np.where(brain(grid), labels, 0).astype(np.uint8)


def anatomy(grid: Grid, rng: np.random.Generator) -> np.ndarray:
    """A T1w-like image (int16) or a BOLD reference: bright brain, dim head."""
    values = np.where(brain(grid), 600 + 200 * _smooth_field(rng, grid.shape), 80)
    return np.round(values + 10 * rng.standard_normal(grid.shape)).astype(np.int16)


def raw_bold(n_volumes: int, rng: np.random.Generator) -> np.ndarray:
    """A raw (scanner-space) BOLD series on :func:`native_grid`."""
    grid = native_grid()
    base = anatomy(grid, rng).astype(np.float32)
    return np.round(base[..., None] + 5 * rng.standard_normal(grid.shape + (n_volumes,))).astype(np.int16)
