"""Permutation inference for a t contrast: max-statistic FWE and TFCE.

:func:`permutation_test` tests one t contrast of a mass-univariate GLM by permutation:

* **Freedman–Lane** (Freedman & Lane 1983; Winkler et al. 2014) with nuisance covariates: the
  design is split into the tested regressor and the nuisance space (the part of the design that
  the contrast does not test), the data are reduced to their residuals under the nuisance model,
  and those residuals are permuted (rows reordered) before the full model is refitted.
* **Sign flipping** when the tested effect is the intercept (a one-sample design, possibly with
  covariates): the nuisance residuals' signs are flipped at random instead.
* **Exchangeability blocks** (e.g. site): rows are only permuted within their block.
* **Family-wise error** from the distribution of the maximum statistic over voxels, two-sided by
  default (the maximum of ``|t|``), and uncorrected voxel-wise permutation p-values.
* **TFCE** (Smith & Nichols 2009) of the t map inside a 3-D mask, with FWE p-values from the
  permutation distribution of the maximum ``|TFCE|``.

p-values count the unpermuted data as one of the permutations (``p = (1 + #{null >= obs}) /
(1 + n_permutations)``), as nilearn and FSL randomise do, so they are never 0.

Speed
-----
Permutations are processed in chunks: for each chunk the permuted designs are stacked and
multiplied with the residual data in one BLAS call (``(chunk * p, n) @ (n, v)``), so memory is
bounded by ``chunk_size``. Chunks are grouped into tasks (:class:`PermutationChunk`) processed by
the pure, picklable :func:`permutation_chunk`; ``executor`` sends tasks elsewhere (a process
pool, dask). All permutations are drawn up front from ``random_state``, so results do not depend
on ``chunk_size``, ``n_jobs`` or the executor.

TFCE is computed exactly, not by labelling the map once per height step. Voxels are assigned the
index of the highest height step they reach; each edge of the mask's neighbourhood graph (between
two voxels of the same sign) becomes active at the lower of its two voxels' steps. Going down the
steps, the clusters of step ``k`` are the connected components of the clusters of step ``k + 1``
plus the voxels entering at ``k``, joined by the edges that become active at ``k``, so each step
is a small graph (one :func:`scipy.sparse.csgraph.connected_components` call). This builds the
cluster tree; a voxel's TFCE is the sum of ``extent**E * height**H`` along its path to the root.
The total work is proportional to the number of mask edges plus the number of voxel-steps.

Height steps follow nilearn (and fslmaths): ``dh="auto"`` uses 100 steps, the heights are
``linspace(0, max, n_steps + 1)[1:]`` where ``max`` is the largest ``|stat|`` (two-sided) or the
largest positive ``stat`` of *that* map, and the sum is not multiplied by ``dh``. A voxel is in a
cluster at height ``h`` when its value is ``>= h``. Two-sided TFCE clusters positive and negative
values separately with the same heights and gives negative clusters negative TFCE.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy.linalg import null_space
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from painplast.errors import InputError
from painplast.stats.glm import check_design

__all__ = [
    "PermutationResult",
    "PermutationChunk",
    "ChunkResult",
    "permutation_test",
    "permutation_chunk",
    "draw_permutations",
    "check_random_state",
    "tfce",
    "permutation_executor",
    "current_executor",
    "split_aligned",
]

#: relative tolerance under which a permuted statistic counts as a tie with the observed one
#: (the unpermuted and a re-drawn identity permutation may differ in the last bits)
_TIE_RTOL = 1e-9
#: bytes of float64 work space per chunk when ``chunk_size`` is not given
_CHUNK_BYTES = 1 << 27


# --------------------------------------------------------------------------------------------
# TFCE
# --------------------------------------------------------------------------------------------

def _neighbour_offsets(connectivity: int) -> list[tuple[int, int, int]]:
    """Half of the 3-D neighbour offsets (one of each +/- pair) for 6-, 18- or 26-connectivity."""
    if connectivity not in (6, 18, 26):
        raise InputError(f"connectivity must be 6, 18 or 26, got {connectivity!r}",
                         fix="use 6 (faces), 18 (faces and edges) or 26 (faces, edges, corners)")
    max_order = {6: 1, 18: 2, 26: 3}[connectivity]
    offsets = []
    for offset in np.ndindex(3, 3, 3):
        offset = tuple(int(o) - 1 for o in offset)
        if offset > (0, 0, 0) and sum(map(abs, offset)) <= max_order:
            offsets.append(offset)
    return offsets


def _mask_edges(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, np.ndarray]:
    """Neighbouring pairs of mask voxels.

    Parameters
    ----------
    mask : ndarray of bool, shape (X, Y, Z)
    connectivity : {6, 18, 26}

    Returns
    -------
    first, second : ndarray of intp, shape (n_edges,)
        Indices of the two voxels of each edge, into ``mask``'s True voxels in C order
        (the order of ``data[mask]``).
    """
    index = np.full(mask.shape, -1, dtype=np.intp)
    index[mask] = np.arange(int(mask.sum()))
    first, second = [], []
    for offset in _neighbour_offsets(connectivity):
        lower = tuple(slice(max(0, -o), n - max(0, o)) for o, n in zip(offset, mask.shape))
        upper = tuple(slice(max(0, o), n - max(0, -o)) for o, n in zip(offset, mask.shape))
        a, b = index[lower], index[upper]
        both = (a >= 0) & (b >= 0)
        first.append(a[both])
        second.append(b[both])
    return np.concatenate(first), np.concatenate(second)


def _tfce_heights(max_value: float, dh: float | str) -> np.ndarray | None:
    """Height steps ``linspace(0, max, n_steps + 1)[1:]`` (nilearn's convention), or None."""
    if not max_value > 0 or not np.isfinite(max_value):
        return None
    if isinstance(dh, str):
        if dh != "auto":
            raise InputError(f"dh must be 'auto' or a positive number, got {dh!r}")
        n_steps = 100
    else:
        if not dh > 0:
            raise InputError(f"dh must be 'auto' or a positive number, got {dh!r}")
        n_steps = int(round(max_value / dh))
        if not 10 <= n_steps <= 1000:
            warnings.warn(f"TFCE step dh={dh} gives {n_steps} steps; using "
                          f"{min(max(n_steps, 10), 1000)}", RuntimeWarning, stacklevel=3)
            n_steps = min(max(n_steps, 10), 1000)
    return np.linspace(0.0, max_value, n_steps + 1)[1:]


def _height_index(magnitude: np.ndarray, heights: np.ndarray) -> np.ndarray:
    """Number of heights ``<= magnitude`` per voxel (0 = below the first step), as int16."""
    n_steps = heights.size
    guess = np.minimum(magnitude * (n_steps / heights[-1]), n_steps).astype(np.int16)
    padded = np.concatenate([[-np.inf], heights, [np.inf]])
    # the guess is off by at most one step from rounding; correct it exactly
    guess -= magnitude < padded[guess]
    guess += magnitude >= padded[guess + 1]
    return guess


def _stable_argsort_nonnegative(key: np.ndarray, max_value: int) -> np.ndarray:
    """Stable argsort of non-negative integers by 15-bit radix passes (numpy radix-sorts int16)."""
    if max_value < (1 << 15):
        return np.argsort(key.astype(np.int16), kind="stable")
    order = np.argsort((key & 0x7FFF).astype(np.int16), kind="stable")
    shift = 15
    while max_value >> shift:
        digit = ((key[order] >> shift) & 0x7FFF).astype(np.int16)
        order = order[np.argsort(digit, kind="stable")]
        shift += 15
    return order


def _tfce_on_graph(values: np.ndarray, edges: tuple[np.ndarray, np.ndarray], *,
                   E: float = 0.5, H: float = 2.0, dh: float | str = "auto",
                   two_sided: bool = True) -> np.ndarray:
    """TFCE of a statistic defined on the nodes of a neighbourhood graph.

    Parameters
    ----------
    values : ndarray, shape (v,)
        Statistic per voxel (non-finite values count as 0).
    edges : tuple of two ndarray of intp, shape (n_edges,)
        Neighbouring voxel pairs (see :func:`_mask_edges`).
    E, H, dh, two_sided
        As in :func:`tfce`.

    Returns
    -------
    ndarray, shape (v,)
        TFCE values, float64; negative where the two-sided statistic is negative.
    """
    values = np.where(np.isfinite(values), values, 0.0)
    n_voxels = values.size
    magnitude = np.abs(values) if two_sided else np.maximum(values, 0.0)
    out = np.zeros(n_voxels)
    heights = _tfce_heights(float(magnitude.max()) if n_voxels else 0.0, dh)
    if heights is None:
        return out
    n_steps = heights.size
    step = _height_index(magnitude, heights)            # 0..n_steps
    signed_step = np.where(values < 0, -step, step)

    # an edge is active from the lower step of its two voxels down, if they have the same sign
    first, second = edges
    a, b = signed_step[first], signed_step[second]
    edge_step = np.where(a > 0, np.minimum(a, b), -np.maximum(a, b))
    active = np.flatnonzero(edge_step > 0)
    edge_step = edge_step[active]
    # the voxel entering at the edge's step is its "new" end; the other end entered at or above
    first_is_new = np.abs(a[active]) == edge_step
    new_end = np.where(first_is_new, first[active], second[active])
    old_end = np.where(first_is_new, second[active], first[active])

    # rank voxels by step, highest first: step k has ranks start[k] .. start[k] + n_per_step[k]
    n_per_step = np.bincount(step, minlength=n_steps + 1)
    n_in = n_voxels - int(n_per_step[0])
    order = np.argsort((n_steps - step).astype(np.int16), kind="stable")[:n_in]
    rank = np.empty(n_voxels, dtype=np.intp)
    rank[order] = np.arange(n_in)
    start = np.append(np.cumsum(n_per_step[::-1])[::-1][1:], 0)    # voxels above step k
    # sort edges by the rank of their new end: grouped by step, and by new voxel within a step
    new_rank = rank[new_end]
    edge_order = _stable_argsort_nonnegative(new_rank, n_in)
    new_rank = new_rank[edge_order]
    old_rank = rank[old_end][edge_order]
    bounds = np.searchsorted(new_rank, start[1:n_steps + 1])           # first edge of step k
    ends = np.searchsorted(new_rank, start[1:n_steps + 1] + n_per_step[1:])

    node = np.empty(n_in, dtype=np.intp)    # cluster (at the current step) of each ranked voxel
    weights = np.ones(max(int(active.size), 1))
    n_clusters = 0
    sizes = np.zeros(0)
    parent: list[np.ndarray] = [np.zeros(0, np.int32)] * (n_steps + 2)
    entry: list[np.ndarray] = [np.zeros(0, np.int32)] * (n_steps + 1)
    contribution: list[np.ndarray] = [np.zeros(0)] * (n_steps + 1)
    for k in range(n_steps, 0, -1):
        first_new, n_new = int(start[k]), int(n_per_step[k])
        n_old = n_clusters
        n_nodes = n_old + n_new
        node[first_new:first_new + n_new] = np.arange(n_old, n_nodes)
        e0, e1 = int(bounds[k - 1]), int(ends[k - 1])
        if e1 > e0:
            # rows: the new voxels (already sorted); only they have edges at this step
            indptr = np.zeros(n_nodes + 1, dtype=np.int32)
            np.cumsum(np.bincount(new_rank[e0:e1] - first_new, minlength=n_new),
                      out=indptr[n_old + 1:])
            cols = node[old_rank[e0:e1]].astype(np.int32)
            graph = csr_matrix((weights[:e1 - e0], cols, indptr), shape=(n_nodes, n_nodes))
            n_clusters, labels = connected_components(graph, directed=True, connection="weak")
            labels = labels.astype(np.intp)
            node[:first_new + n_new] = labels[node[:first_new + n_new]]
            sizes = np.bincount(labels, weights=np.concatenate([sizes, np.ones(n_new)]),
                                minlength=n_clusters)
        else:
            labels = np.arange(n_nodes)
            n_clusters = n_nodes
            sizes = np.concatenate([sizes, np.ones(n_new)])
        parent[k + 1] = labels[:n_old]      # clusters of step k+1 -> their cluster at step k
        entry[k] = labels[n_old:]           # voxels entering at step k -> their cluster
        contribution[k] = sizes**E * heights[k - 1] ** H

    # sum the contributions from the lowest step up each voxel's path in the cluster tree
    total = contribution[1]
    out[order[start[1]:start[1] + n_per_step[1]]] = total[entry[1]]
    for k in range(2, n_steps + 1):
        total = contribution[k] + total[parent[k]]
        out[order[start[k]:start[k] + n_per_step[k]]] = total[entry[k]]
    if two_sided:
        np.negative(out, out=out, where=values < 0)
    return out


def tfce(stat_3d: np.ndarray, *, E: float = 0.5, H: float = 2.0, dh: float | str = "auto",
         connectivity: int = 26, two_sided: bool = True,
         mask: np.ndarray | None = None) -> np.ndarray:
    """Threshold-free cluster enhancement of a 3-D statistic map (Smith & Nichols 2009).

    ``TFCE(v) = sum over heights h <= stat(v) of extent(v, h)**E * h**H``, where
    ``extent(v, h)`` is the number of voxels in the cluster (``stat >= h``, connected) that holds
    ``v``. The heights are ``linspace(0, max, n_steps + 1)[1:]`` and the sum is not multiplied by
    ``dh``, as in nilearn and fslmaths, so results equal nilearn's ``calculate_tfce`` given the
    same connectivity (nilearn uses 6-connectivity; FSL and this function default to 26).

    Parameters
    ----------
    stat_3d : ndarray, shape (X, Y, Z)
        Statistic map (e.g. t); zeros and non-finite values are background.
    E, H : float
        Extent and height exponents.
    dh : "auto" or float
        ``"auto"`` uses 100 height steps up to the map's maximum; a number gives
        ``round(max / dh)`` steps (clipped to 10..1000).
    connectivity : {6, 18, 26}
        Voxel neighbourhood defining clusters.
    two_sided : bool
        Enhance negative clusters too (with negative TFCE); otherwise only positive values.
    mask : ndarray of bool, shape (X, Y, Z), optional
        Voxels to consider; default: the non-zero finite voxels.

    Returns
    -------
    ndarray, shape (X, Y, Z)
        TFCE map, float64.

    Examples
    --------
    >>> stat = np.zeros((5, 5, 5))
    >>> stat[1:3, 1:3, 1] = 2.0          # a 4-voxel cluster
    >>> stat[4, 4, 4] = -2.0             # a single negative voxel
    >>> out = tfce(stat, connectivity=6)
    >>> float(out[1, 1, 1].round(3)), float(out[4, 4, 4].round(3))
    (270.68, -135.34)
    """
    stat_3d = np.asarray(stat_3d, dtype=np.float64)
    if stat_3d.ndim != 3:
        raise InputError(f"tfce needs a 3-D map, got shape {stat_3d.shape}")
    usable = np.isfinite(stat_3d) & (stat_3d != 0)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != stat_3d.shape:
            raise InputError(f"the mask has shape {mask.shape} but the map has {stat_3d.shape}")
        usable &= mask
    out = np.zeros(stat_3d.shape)
    out[usable] = _tfce_on_graph(stat_3d[usable], _mask_edges(usable, connectivity), E=E, H=H,
                                 dh=dh, two_sided=two_sided)
    return out


# --------------------------------------------------------------------------------------------
# permutations
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PermutationResult:
    """Permutation inference for one t contrast.

    Attributes
    ----------
    t : ndarray, shape (v,)
        t statistic of the contrast (unpermuted data).
    df : int
        Residual degrees of freedom.
    p_uncorrected : ndarray, shape (v,)
        Voxel-wise permutation p-values.
    p_fwe : ndarray, shape (v,)
        Family-wise-error corrected p-values from the maximum statistic.
    null_max : ndarray, shape (n_permutations,)
        Maximum statistic (``|t|`` if two-sided) of each permutation.
    n_permutations : int
        Permutations drawn (the unpermuted data are counted in addition).
    scheme : str
        ``"permutation"`` (Freedman–Lane, rows permuted) or ``"sign-flip"``.
    two_sided : bool
        Whether the statistic is ``|t|`` (both tails) or ``t`` (effect > 0).
    tfce : ndarray, shape (v,) or None
        TFCE of ``t`` (only with ``tfce=True``).
    p_uncorrected_tfce, p_fwe_tfce : ndarray, shape (v,) or None
        Voxel-wise and FWE-corrected p-values of the TFCE map.
    null_max_tfce : ndarray, shape (n_permutations,) or None
        Maximum ``|TFCE|`` of each permutation.
    """

    t: np.ndarray
    df: int
    p_uncorrected: np.ndarray
    p_fwe: np.ndarray
    null_max: np.ndarray
    n_permutations: int
    scheme: str
    two_sided: bool
    tfce: np.ndarray | None = None
    p_uncorrected_tfce: np.ndarray | None = None
    p_fwe_tfce: np.ndarray | None = None
    null_max_tfce: np.ndarray | None = None


@dataclass(frozen=True)
class PermutationChunk:
    """One task of permutations: everything :func:`permutation_chunk` needs, picklable.

    Attributes
    ----------
    residuals : ndarray, shape (n, v)
        Data residualized on the nuisance space (Freedman–Lane).
    basis : ndarray, shape (n, p)
        Orthonormal basis of the design; column 0 is the tested regressor orthogonalized
        against the nuisance columns 1..p-1.
    df : int
        Residual degrees of freedom of the full model.
    rows : ndarray of intp, shape (b, n) or None
        Row ``i`` of permuted data ``j`` is row ``rows[j, i]`` of ``residuals`` (None: identity).
    signs : ndarray, shape (b, n) or None
        Signs multiplied into the rows (sign flipping); None: all +1.
    observed : ndarray, shape (v,)
        Observed statistic (``|t|`` if two-sided, else ``t``) for the uncorrected counts.
    two_sided : bool
        Use ``|t|`` (and ``|TFCE|``).
    batch_size : int
        Permutations per BLAS call.
    edges : tuple of two ndarray, optional
        Mask neighbourhood graph for TFCE (see ``_mask_edges``); None: no TFCE.
    observed_tfce : ndarray, shape (v,), optional
        Observed ``|TFCE|`` (or TFCE if one-sided).
    E, H, dh
        TFCE parameters.
    """

    residuals: np.ndarray
    basis: np.ndarray
    df: int
    rows: np.ndarray | None
    signs: np.ndarray | None
    observed: np.ndarray
    two_sided: bool = True
    batch_size: int = 16
    edges: tuple[np.ndarray, np.ndarray] | None = None
    observed_tfce: np.ndarray | None = None
    E: float = 0.5
    H: float = 2.0
    dh: float | str = "auto"


@dataclass(frozen=True)
class ChunkResult:
    """What a task returns: null maxima and per-voxel exceedance counts.

    Attributes
    ----------
    null_max : ndarray, shape (b,)
        Maximum statistic of each permutation.
    exceedances : ndarray of int64, shape (v,)
        Number of permutations whose statistic reached the observed one, per voxel.
    null_max_tfce, exceedances_tfce : ndarray or None
        The same for TFCE.
    """

    null_max: np.ndarray
    exceedances: np.ndarray
    null_max_tfce: np.ndarray | None = None
    exceedances_tfce: np.ndarray | None = None


def _t_from_projections(projections: np.ndarray, sum_squares: np.ndarray,
                        df: int) -> np.ndarray:
    """t statistics from projections onto an orthonormal design basis.

    Parameters
    ----------
    projections : ndarray, shape (b, p, v)
        ``basis_j' y`` for each permuted basis ``j``; row 0 is the tested regressor.
    sum_squares : ndarray, shape (v,)
        ``y' y`` per voxel.
    df : int

    Returns
    -------
    ndarray, shape (b, v)
    """
    rss = sum_squares - np.einsum("bpv,bpv->bv", projections, projections)
    floor = 1e-12 * sum_squares
    t = np.zeros(rss.shape)
    np.divide(projections[:, 0, :], np.sqrt(np.maximum(rss, floor) / df), out=t,
              where=rss > floor)
    return t


def _tie_threshold(observed: np.ndarray) -> np.ndarray:
    return observed - _TIE_RTOL * np.abs(observed)


def permutation_chunk(task: PermutationChunk) -> ChunkResult:
    """Run one task of permutations (pure function; picklable for process pools or dask).

    Parameters
    ----------
    task : PermutationChunk

    Returns
    -------
    ChunkResult
        ``null_max`` (b,) and ``exceedances`` (v,), plus their TFCE counterparts.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> data = rng.standard_normal((8, 3))
    >>> basis = np.linalg.qr(np.ones((8, 1)))[0]
    >>> rows = np.tile(np.arange(8), (4, 1))
    >>> signs = np.array([[1.0] * 8, [-1.0] * 8, [1.0] * 8, [-1.0] * 8])
    >>> out = permutation_chunk(PermutationChunk(data, basis, 7, rows, signs,
    ...                                          observed=np.full(3, 100.0)))
    >>> out.null_max.shape, out.exceedances.tolist()
    ((4,), [0, 0, 0])
    """
    residuals, basis = task.residuals, task.basis
    n, p = basis.shape
    n_voxels = residuals.shape[1]
    rows = task.rows
    signs = task.signs
    n_perm = (rows if rows is not None else signs).shape[0]
    sum_squares = np.einsum("nv,nv->v", residuals, residuals)
    threshold = _tie_threshold(task.observed)
    null_max = np.empty(n_perm)
    exceedances = np.zeros(n_voxels, dtype=np.int64)
    use_tfce = task.edges is not None
    if use_tfce:
        null_max_tfce = np.empty(n_perm)
        exceedances_tfce = np.zeros(n_voxels, dtype=np.int64)
        threshold_tfce = _tie_threshold(task.observed_tfce)
    for begin in range(0, n_perm, task.batch_size):
        batch = slice(begin, min(begin + task.batch_size, n_perm))
        b = batch.stop - batch.start
        # permuting the data rows by `rows` equals permuting the design rows by its inverse
        permuted = np.broadcast_to(basis, (b, n, p)).copy()
        if signs is not None:
            permuted *= signs[batch][:, :, None]
        if rows is not None:
            inverse = np.argsort(rows[batch], axis=1)
            permuted = np.take_along_axis(permuted, inverse[:, :, None], axis=1)
        stacked = permuted.transpose(0, 2, 1).reshape(b * p, n)
        projections = (stacked @ residuals).reshape(b, p, n_voxels)   # one BLAS call
        t = _t_from_projections(projections, sum_squares, task.df)
        del projections
        stat = np.abs(t) if task.two_sided else t
        null_max[batch] = stat.max(axis=1)
        exceedances += np.count_nonzero(stat >= threshold, axis=0)
        if use_tfce:
            for j in range(b):
                enhanced = _tfce_on_graph(t[j], task.edges, E=task.E, H=task.H, dh=task.dh,
                                          two_sided=task.two_sided)
                if task.two_sided:
                    np.abs(enhanced, out=enhanced)
                null_max_tfce[batch.start + j] = enhanced.max()
                exceedances_tfce += enhanced >= threshold_tfce
    if not use_tfce:
        return ChunkResult(null_max, exceedances)
    return ChunkResult(null_max, exceedances, null_max_tfce, exceedances_tfce)


def _validate_blocks(blocks, n: int) -> np.ndarray | None:
    if blocks is None:
        return None
    blocks = np.asarray(blocks)
    if blocks.shape != (n,):
        raise InputError(f"blocks has shape {blocks.shape} but there are {n} participants",
                         fix="give one exchangeability-block label (e.g. site) per participant")
    return np.unique(blocks, return_inverse=True)[1].reshape(n)


def check_random_state(random_state) -> np.random.Generator:
    """The one seeding rule of painplast's permutations: a :class:`numpy.random.Generator`.

    Parameters
    ----------
    random_state : None, int, sequence of int, SeedSequence or Generator
        A seed (``[seed, k]`` gives the k-th independent stream of a seed) or a generator,
        used as it is.

    Returns
    -------
    numpy.random.Generator

    Raises
    ------
    InputError
        Anything else, e.g. the legacy ``numpy.random.RandomState``.

    Examples
    --------
    >>> rng = check_random_state(0)
    >>> check_random_state(rng) is rng, type(rng).__name__
    (True, 'Generator')
    """
    if isinstance(random_state, np.random.RandomState):
        raise InputError("random_state is a legacy numpy RandomState",
                         fix="give an int seed or a numpy.random.Generator")
    try:
        return np.random.default_rng(random_state)
    except (TypeError, ValueError) as error:
        raise InputError(f"random_state {random_state!r} is not a seed ({error})",
                         fix="give an int seed or a numpy.random.Generator") from None


def draw_permutations(n: int, n_permutations: int, *, sign_flip: bool = False,
                      blocks: Sequence | np.ndarray | None = None,
                      random_state: int | np.random.Generator | None = 0,
                      ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Draw random row permutations (within blocks) or sign flips: the one drawer of painplast.

    Voxel-wise inference (:func:`permutation_test`), the network-based statistic
    (:func:`painplast.stats.nbs.nbs`) and the biomarker's label permutations all draw here, from
    :func:`check_random_state`'s generator.

    Parameters
    ----------
    n : int
        Number of participants (rows).
    n_permutations : int
        Number of draws.
    sign_flip : bool
        Draw independent random signs instead of permutations.
    blocks : array-like, shape (n,), optional
        Exchangeability-block label per participant; rows are only permuted within a block.
        Sign flips are independent per participant, so they never cross blocks either.
    random_state : int, sequence of int, Generator or None
        See :func:`check_random_state`.

    Returns
    -------
    rows : ndarray of intp, shape (n_permutations, n) or None
        Permuted row order (None when sign flipping).
    signs : ndarray, shape (n_permutations, n) or None
        +1/-1 per participant (None when permuting).

    Examples
    --------
    >>> rows, signs = draw_permutations(4, 2, blocks=["a", "a", "b", "b"], random_state=1)
    >>> signs is None, sorted(rows[0, :2].tolist()), sorted(rows[0, 2:].tolist())
    (True, [0, 1], [2, 3])
    """
    rng = check_random_state(random_state)
    codes = _validate_blocks(blocks, n)
    if sign_flip:
        return None, rng.integers(0, 2, size=(n_permutations, n)).astype(np.float64) * 2 - 1
    rows = np.empty((n_permutations, n), dtype=np.intp)
    groups = [np.arange(n)] if codes is None else [np.flatnonzero(codes == g)
                                                   for g in range(codes.max() + 1)]
    for members in groups:
        rows[:, members] = rng.permuted(np.tile(members, (n_permutations, 1)), axis=1)
    return rows, None


def _partition(design: np.ndarray, contrast: np.ndarray) -> tuple[np.ndarray, bool]:
    """Split the design into the tested regressor and the nuisance space.

    Returns
    -------
    basis : ndarray, shape (n, p)
        Orthonormal; column 0 spans the tested regressor ``design @ pinv(c')`` made orthogonal
        to the nuisance space ``design @ null(c')`` spanned by columns 1..p-1.
    intercept_test : bool
        Whether the tested regressor is constant (the effect tested is the intercept).
    """
    tested = design @ (contrast / (contrast @ contrast))
    nuisance = design @ null_space(contrast[None, :])
    if nuisance.shape[1]:
        nuisance_basis = np.linalg.qr(nuisance)[0]
        tested_orth = tested - nuisance_basis @ (nuisance_basis.T @ tested)
    else:
        nuisance_basis = np.zeros((design.shape[0], 0))
        tested_orth = tested
    tested_orth = tested_orth / np.linalg.norm(tested_orth)
    basis = np.column_stack([tested_orth, nuisance_basis])
    constant = np.ptp(tested) <= 1e-10 * np.max(np.abs(tested))
    return basis, bool(constant)


def _auto_chunk_size(n_params: int, n_voxels: int) -> int:
    return int(max(1, min(256, _CHUNK_BYTES // (3 * 8 * n_params * max(n_voxels, 1)))))


def _p_values(exceedances: np.ndarray, n_permutations: int) -> np.ndarray:
    return (1.0 + exceedances) / (1.0 + n_permutations)


def _p_fwe(observed: np.ndarray, null_max: np.ndarray) -> np.ndarray:
    null_sorted = np.sort(null_max)
    at_least = null_sorted.size - np.searchsorted(null_sorted, _tie_threshold(observed),
                                                  side="left")
    return _p_values(at_least, null_max.size)


#: ``(executor, n_tasks)`` set by :func:`permutation_executor` (None: in this process).
_EXECUTOR: tuple[Callable[[Callable, Iterable], Iterable], int] | None = None


@contextlib.contextmanager
def permutation_executor(executor: Callable[[Callable, Iterable], Iterable], n_tasks: int) -> Iterator[None]:
    """Send the permutation batches of every test inside the block to ``executor``.

    :func:`permutation_test` (voxel-wise max-statistic and TFCE inference) and
    :func:`painplast.stats.nbs.nbs` split their permutations into ``n_tasks`` tasks and map a pure
    function over them with ``executor`` when they are not given one. All permutations are drawn
    before they are split, so every result is the same as in one process. The engine uses this to
    spread a group level's permutations over a dask cluster (``--scheduler`` at group level).

    Parameters
    ----------
    executor : callable
        ``executor(function, tasks) -> results`` in task order (a ``map``).
    n_tasks : int
        How many tasks each test is split into (e.g. the number of worker threads).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> Y, X = rng.standard_normal((20, 30)), np.c_[np.ones(20), np.repeat([0.0, 1.0], 10)]
    >>> with permutation_executor(map, 4):
    ...     split = permutation_test(Y, X, [0, 1], n_permutations=100, random_state=1)
    >>> bool(np.array_equal(split.p_fwe, permutation_test(Y, X, [0, 1], n_permutations=100, random_state=1).p_fwe))
    True
    """
    global _EXECUTOR
    previous = _EXECUTOR
    _EXECUTOR = (executor, max(1, int(n_tasks)))
    try:
        yield
    finally:
        _EXECUTOR = previous


def split_aligned(n: int, n_tasks: int, chunk: int) -> list[np.ndarray]:
    """Indices ``0..n-1`` in at most ``n_tasks`` consecutive parts made of whole chunks of ``chunk``.

    Every part starts at a multiple of ``chunk``, so the batches a task computes are the ones one
    process computes: the results are the same bits however the work is split.

    Examples
    --------
    >>> [part.tolist() for part in split_aligned(7, 2, 2)]
    [[0, 1, 2, 3], [4, 5, 6]]
    """
    starts = np.arange(0, n, max(1, int(chunk)))
    groups = np.array_split(starts, max(1, min(int(n_tasks), len(starts))))
    ends = [int(g[-1]) + int(chunk) for g in groups]
    return [np.arange(int(g[0]), min(e, n)) for g, e in zip(groups, ends)]


def current_executor() -> tuple[Callable[[Callable, Iterable], Iterable], int] | None:
    """The ``(executor, n_tasks)`` of the innermost :func:`permutation_executor` block, or None."""
    return _EXECUTOR


def permutation_test(Y: np.ndarray, design: np.ndarray, contrast: np.ndarray, *,
                     n_permutations: int = 1000, tfce: bool = False,
                     mask: np.ndarray | None = None, two_sided: bool = True,
                     blocks: Sequence | np.ndarray | None = None,
                     random_state: int | np.random.Generator | None = 0,
                     chunk_size: int | None = None, n_jobs: int = 1,
                     executor: Callable[[Callable, Iterable], Iterable] | None = None,
                     scheme: str = "auto", connectivity: int = 26, E: float = 0.5,
                     H: float = 2.0, dh: float | str = "auto",
                     column_names: Sequence[str] | None = None) -> PermutationResult:
    """Permutation test of a t contrast with max-statistic FWE and optional TFCE.

    Parameters
    ----------
    Y : array-like, shape (n_subjects, n_voxels)
        Data, one row per participant. With ``tfce=True`` column ``j`` is the ``j``-th True
        voxel of ``mask`` in C order (``image[mask]``, as nilearn's maskers order them).
    design : array-like, shape (n_subjects, p)
        Full design matrix (tested regressors and nuisance covariates, usually an intercept).
    contrast : array-like, shape (p,)
        t contrast; the nuisance space is the part of the design the contrast does not test.
    n_permutations : int
        Number of random permutations (or sign flips).
    tfce : bool
        Also compute TFCE of the t map and its permutation p-values (needs ``mask``).
    mask : ndarray of bool, shape (X, Y, Z), optional
        Brain mask with ``n_voxels`` True voxels; required for TFCE.
    two_sided : bool
        Test both tails (statistic ``|t|``); otherwise the effect > 0 (statistic ``t``).
    blocks : array-like, shape (n_subjects,), optional
        Exchangeability blocks (e.g. site): permutations never move a participant's data to
        another block.
    random_state : int, Generator or None
        Seed of the permutations; same seed, same result.
    chunk_size : int, optional
        Permutations per BLAS call (memory is about ``3 * 8 * chunk_size * p * n_voxels``
        bytes); default: about 128 MB of work space.
    n_jobs : int
        Number of tasks the permutations are split into. Without ``executor`` and with
        ``n_jobs > 1`` they run in a local process pool of that size.
    executor : callable, optional
        A ``map``-like callable ``executor(permutation_chunk, tasks) -> results``, e.g.
        ``ProcessPoolExecutor().map`` or a function that submits the tasks to dask and gathers
        their results in order. Each task carries the residual data; scatter it in advance on
        a cluster if that matters. Default: the one set by :func:`permutation_executor`, if any.
    scheme : {"auto", "permutation", "sign-flip"}
        ``"auto"`` flips signs when the tested regressor is constant (the intercept, e.g. a
        one-sample design) and permutes rows (Freedman–Lane) otherwise.
    connectivity : {6, 18, 26}
        TFCE neighbourhood (nilearn uses 6, FSL 26).
    E, H, dh
        TFCE parameters (see :func:`tfce`).
    column_names : sequence of str, optional
        Design column names for error messages.

    Returns
    -------
    PermutationResult

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> group = np.repeat([0.0, 1.0], 10)
    >>> Y = rng.standard_normal((20, 50))
    >>> Y[:, :5] += 3.0 * group[:, None]                   # five voxels with an effect
    >>> design = np.column_stack([np.ones(20), group])
    >>> res = permutation_test(Y, design, [0, 1], n_permutations=200, random_state=0)
    >>> res.scheme, bool(np.all(res.p_fwe[:5] < 0.05)), bool(np.mean(res.p_fwe[5:] < 0.05) < 0.1)
    ('permutation', True, True)
    """
    design = check_design(design, column_names)
    n, p = design.shape
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.ndim != 2 or Y.shape[0] != n:
        raise InputError(f"the data have shape {Y.shape} but the design has {n} rows",
                         fix="pass Y as (n_subjects, n_voxels) in the design's row order")
    if not np.all(np.isfinite(Y)):
        bad = int(np.count_nonzero(~np.all(np.isfinite(Y), axis=0)))
        raise InputError(f"the data have missing or infinite values in {bad} voxels",
                         fix="mask those voxels out before testing")
    contrast = np.asarray(contrast, dtype=np.float64).ravel()
    if contrast.shape != (p,) or not np.any(contrast) or not np.all(np.isfinite(contrast)):
        raise InputError(f"the contrast {contrast.tolist()} does not fit a design with {p} "
                         "columns", fix="give one finite weight per design column, not all 0")
    if int(n_permutations) < 1:
        raise InputError("n_permutations must be at least 1")
    n_permutations = int(n_permutations)
    n_voxels = Y.shape[1]
    edges = None
    if tfce:
        if mask is None:
            raise InputError("TFCE needs the 3-D brain mask that maps voxels to space",
                             fix="pass mask=<3-D boolean array with n_voxels True voxels>")
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim != 3 or int(mask.sum()) != n_voxels:
            raise InputError(f"the mask has {int(mask.sum())} voxels (shape {mask.shape}) but "
                             f"the data have {n_voxels}",
                             fix="pass the 3-D mask the data were extracted with")
        edges = _mask_edges(mask, connectivity)

    basis, intercept_test = _partition(design, contrast)
    if scheme == "auto":
        scheme = "sign-flip" if intercept_test else "permutation"
    if scheme not in ("permutation", "sign-flip"):
        raise InputError(f"unknown permutation scheme {scheme!r}",
                         fix="use 'auto', 'permutation' or 'sign-flip'")
    df = n - p
    nuisance = basis[:, 1:]
    residuals = np.ascontiguousarray(Y - nuisance @ (nuisance.T @ Y))

    projections = (basis.T @ residuals)[None]
    t = _t_from_projections(projections, np.einsum("nv,nv->v", residuals, residuals), df)[0]
    observed = np.abs(t) if two_sided else t
    t_tfce = observed_tfce = None
    if tfce:
        t_tfce = _tfce_on_graph(t, edges, E=E, H=H, dh=dh, two_sided=two_sided)
        observed_tfce = np.abs(t_tfce) if two_sided else t_tfce

    rows, signs = draw_permutations(n, n_permutations, sign_flip=scheme == "sign-flip",
                                    blocks=blocks, random_state=random_state)
    batch = int(chunk_size) if chunk_size else _auto_chunk_size(p, n_voxels)
    if executor is None and _EXECUTOR is not None:
        executor, n_jobs = _EXECUTOR[0], max(int(n_jobs), _EXECUTOR[1])
    n_tasks = max(1, min(int(n_jobs), n_permutations))
    tasks = [PermutationChunk(residuals, basis, df,
                              None if rows is None else rows[part],
                              None if signs is None else signs[part],
                              observed, two_sided, batch, edges, observed_tfce, E, H, dh)
             for part in split_aligned(n_permutations, n_tasks, batch)]
    if executor is not None:
        results = list(executor(permutation_chunk, tasks))
    elif n_tasks > 1:
        with ProcessPoolExecutor(max_workers=n_tasks) as pool:
            results = list(pool.map(permutation_chunk, tasks))
    else:
        results = [permutation_chunk(task) for task in tasks]

    null_max = np.concatenate([r.null_max for r in results])
    exceedances = np.sum([r.exceedances for r in results], axis=0)
    out = dict(t=t, df=df, p_uncorrected=_p_values(exceedances, n_permutations),
               p_fwe=_p_fwe(observed, null_max), null_max=null_max,
               n_permutations=n_permutations, scheme=scheme, two_sided=two_sided)
    if tfce:
        null_max_tfce = np.concatenate([r.null_max_tfce for r in results])
        exceedances_tfce = np.sum([r.exceedances_tfce for r in results], axis=0)
        out.update(tfce=t_tfce, null_max_tfce=null_max_tfce,
                   p_uncorrected_tfce=_p_values(exceedances_tfce, n_permutations),
                   p_fwe_tfce=_p_fwe(observed_tfce, null_max_tfce))
    return PermutationResult(**out)
