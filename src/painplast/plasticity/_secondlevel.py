"""The voxel-wise second level every module with participant maps uses (sensitization, structure).

For each contrast of :data:`painplast.contrasts.CONTRASTS`, :func:`second_level` builds the GLM
``map ~ 1 + regressor + covariates`` (:func:`voxelwise_design`: the contrast's covariates plus a
module's global one, centred; constant or collinear covariates are dropped), tests the
regressor with :func:`painplast.stats.permutation.permutation_test` (Freedman-Lane permutations,
optionally within site, two-sided, TFCE with family-wise error from the maximum ``|TFCE|``) and
lists the clusters of significant voxels (:func:`cluster_table`).

One naming rule for the maps: ``<contrast>_<statistic>`` with the contrast's ``-`` written
``_`` (:func:`map_name`): ``patient_control_t``, ``patient_control_tfce``,
``patient_control_logp_fwe_tfce`` (-log10 of the FWE p of TFCE). The engine writes them as
``group/<module>_<name>.nii.gz``.

Each contrast draws its permutations from its own stream, ``numpy.random.default_rng([seed,
k])`` with ``k`` the contrast's position in the list, so adding a contrast does not change the
others' p-values.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from .. import atlas, contrasts
from ..errors import InputError
from ..results import CLUSTERS_COLUMNS, empty_clusters

__all__ = ["SecondLevel", "cluster_table", "map_name", "nearest_label", "second_level",
           "voxelwise_design"]


def map_name(contrast: str, statistic: str) -> str:
    """Name of a group map: ``<contrast>_<statistic>``, ``-`` written ``_``.

    Examples
    --------
    >>> map_name("patient-control", "logp_fwe_tfce")
    'patient_control_logp_fwe_tfce'
    """
    return f"{contrast.replace('-', '_')}_{statistic}"


def nearest_label(xyz: Sequence[float], within_mm: float = 12.0) -> str:
    """Name of the pain-system ROI nearest an MNI coordinate, with its structure.

    Examples
    --------
    >>> nearest_label([-40, 34, 30])
    'dlpfc_l (dorsolateral prefrontal cortex)'
    """
    table = atlas.roi_table()
    d = np.linalg.norm(table[["x", "y", "z"]].to_numpy(float) - np.asarray(xyz, float), axis=1)
    i = int(np.argmin(d))
    text = f"{table.name.iloc[i]} ({table.structure.iloc[i]})"
    return text if d[i] <= within_mm else f"near {text}, {d[i]:.0f} mm"


def _local_maxima(values: np.ndarray, cluster: np.ndarray, xyz: np.ndarray, min_distance: float,
                  max_peaks: int) -> list[tuple[int, int, int]]:
    """Peak and local maxima (voxel indices) of ``values`` inside one cluster, strongest first."""
    inside = np.where(cluster, values, -np.inf)
    is_max = (inside == ndimage.maximum_filter(inside, size=3, mode="constant", cval=-np.inf)) & cluster
    candidates = np.argwhere(is_max)
    order = np.argsort(-values[tuple(candidates.T)], kind="stable")
    kept: list[tuple[int, int, int]] = []
    for idx in candidates[order]:
        idx = tuple(int(i) for i in idx)
        if all(np.linalg.norm(xyz[idx] - xyz[k]) >= min_distance for k in kept):
            kept.append(idx)
        if len(kept) >= max_peaks:
            break
    return kept


def cluster_table(t_map: np.ndarray, p_map: np.ndarray, affine: np.ndarray, contrast: str, *,
                  alpha: float = 0.05, min_peak_distance: float = 8.0,
                  max_subpeaks: int = 3) -> pd.DataFrame:
    """Clusters of significant voxels, one row per peak and local maximum (contract columns).

    Parameters
    ----------
    t_map : ndarray, shape (X, Y, Z)
        Signed statistic.
    p_map : ndarray, shape (X, Y, Z)
        FWE-corrected p per voxel (1 outside the mask).
    affine : ndarray, shape (4, 4)
    contrast : str
    alpha : float
        Voxels with ``p < alpha`` form clusters (26-neighbourhood, positive and negative apart).
    min_peak_distance : float
        Minimum distance (mm) of a reported local maximum from a stronger one of its cluster.
    max_subpeaks : int
        Local maxima reported per cluster besides its peak.

    Returns
    -------
    DataFrame
        :data:`painplast.results.CLUSTERS_COLUMNS` plus ``cluster`` (number within the contrast)
        and ``peak`` (``"peak"`` or ``"subpeak"``).

    Examples
    --------
    >>> t = np.zeros((9, 9, 9)); t[2:5, 2:5, 2:5] = -4.0; t[3, 3, 3] = -5.0
    >>> p = np.where(t != 0, 0.01, 1.0)
    >>> cluster_table(t, p, np.diag([4.0, 4, 4, 1]), "age")[["peak_x", "peak_stat", "size_mm3"]].round(3).values.tolist()
    [[12.0, -5.0, 1728.0]]
    """
    xyz = atlas.voxel_coordinates(t_map.shape, affine)
    voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3])))
    rows = []
    number = 0
    structure = np.ones((3, 3, 3), bool)
    for sign in (-1.0, 1.0):
        significant = (p_map < alpha) & (sign * t_map > 0)
        labels, n = ndimage.label(significant, structure=structure)
        for k in range(1, n + 1):
            cluster = labels == k
            number += 1
            peaks = _local_maxima(sign * t_map, cluster, xyz, min_peak_distance, 1 + max_subpeaks)
            for j, idx in enumerate(peaks):
                rows.append({"contrast": contrast, "peak_x": float(xyz[idx][0]), "peak_y": float(xyz[idx][1]),
                             "peak_z": float(xyz[idx][2]), "peak_stat": float(t_map[idx]),
                             "size_mm3": float(cluster.sum() * voxel_mm3),
                             "p_fwe": float(p_map[cluster].min() if j == 0 else p_map[idx]),
                             "label": nearest_label(xyz[idx]), "cluster": number,
                             "peak": "peak" if j == 0 else "subpeak"})
    columns = list(CLUSTERS_COLUMNS) + ["cluster", "peak"]
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in columns}).astype(
            {"contrast": object, "label": object, "peak": object})
    table = pd.DataFrame(rows, columns=columns)
    # clusters by significance, then size; peaks within a cluster strongest first
    first = table[table.peak == "peak"].sort_values(["p_fwe", "size_mm3"], ascending=[True, False])
    rank = {c: i for i, c in enumerate(first.cluster)}
    table["_rank"] = table.cluster.map(rank)
    table = table.sort_values(["_rank"], kind="stable").drop(columns="_rank").reset_index(drop=True)
    table["cluster"] = table.cluster.map(lambda c: rank[c] + 1)
    return table


def _independent_columns(columns: list[np.ndarray], names: list[str]) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Keep the columns that add rank (constant or collinear covariates are dropped)."""
    kept, kept_names, dropped = [], [], []
    for col, name in zip(columns, names):
        trial = np.column_stack(kept + [col])
        if np.linalg.matrix_rank(trial) == trial.shape[1]:
            kept.append(col)
            kept_names.append(name)
        else:
            dropped.append(name)
    return kept, kept_names, dropped


def voxelwise_design(participants: pd.DataFrame, contrast: str, extra: pd.DataFrame | None = None,
                     global_covariate: str | None = None) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Design of the voxel-wise GLM of one contrast.

    Parameters
    ----------
    participants : DataFrame
        Participants table (index ``participant_id``), in the data's row order.
    contrast : str
        A name of :data:`painplast.contrasts.CONTRASTS`.
    extra : DataFrame, optional
        Per-participant covariates not in ``participants`` (``gm_total``), same index.
    global_covariate : str or None
        A global covariate (structure: ``"tiv"`` or ``"gm_total"``) added to the contrast's
        covariates, except ``gm_total`` for ``age``, whose effect is global.

    Returns
    -------
    design : ndarray, shape (n_used, p)
        Intercept, the regressor of interest, the covariates that add rank.
    rows : ndarray of bool, shape (n,)
        Participants entering (in the contrast's subset, no missing value).
    names : list of str
        Column names of ``design``.
    dropped : list of str
        Covariates left out (constant in the subset or collinear).

    Examples
    --------
    >>> parts = pd.DataFrame({"group": ["patient", "control"] * 4, "age": np.arange(8.0) * 3 + 20},
    ...                      index=[f"sub-{i}" for i in range(8)])
    >>> X, rows, names, dropped = voxelwise_design(parts, "patient-control")
    >>> X.shape, names
    ((8, 3), ['intercept', 'patient-control', 'age'])
    """
    spec = contrasts.CONTRASTS[contrast]
    x = contrasts.regressor(participants, spec)
    covariates = list(spec.covariates)
    if global_covariate and (contrast != "age" or global_covariate == "tiv"):
        covariates.append(global_covariate)
    cov, used = contrasts.covariate_matrix(participants, covariates, extra)
    rows = np.isfinite(x)
    if cov.size:
        rows &= np.all(np.isfinite(cov), axis=1)
    n = int(rows.sum())
    if n < 3:
        raise InputError(f"{n} participant(s) enter the {contrast} contrast",
                         fix=f"the {spec.column} column needs values for more participants")
    columns = [np.ones(n), x[rows]] + [cov[rows, j] - cov[rows, j].mean() for j in range(cov.shape[1])]
    kept, names, dropped = _independent_columns(columns, ["intercept", contrast] + used)
    if names[:2] != ["intercept", contrast]:
        raise InputError(f"the {contrast} regressor is constant among the participants who enter it",
                         fix=f"the {spec.column} column needs at least two different values")
    return np.column_stack(kept), rows, names, dropped


@dataclass
class SecondLevel:
    """What :func:`second_level` found: maps, clusters, one summary row per contrast, notes."""

    maps: dict[str, Any] = field(default_factory=dict)
    clusters: pd.DataFrame = field(default_factory=empty_clusters)
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    notes: list[str] = field(default_factory=list)


def second_level(Y: np.ndarray, mask: np.ndarray, affine: np.ndarray, participants: pd.DataFrame,
                 contrast_names: Sequence[str], *, extra: pd.DataFrame | None = None,
                 global_covariate: str | None = None, site_blocks: bool = False,
                 n_permutations: int = 1000, alpha: float = 0.05, random_state: int = 0,
                 connectivity: int = 26, min_peak_distance: float = 8.0,
                 max_subpeaks: int = 3) -> SecondLevel:
    """Voxel-wise GLMs with TFCE permutation inference, one per contrast.

    Parameters
    ----------
    Y : ndarray, shape (n_participants, n_voxels)
        One row per participant (the rows of ``participants``), the voxels of ``mask`` in C
        order.
    mask : ndarray of bool, shape (X, Y, Z)
    affine : ndarray, shape (4, 4)
    participants : DataFrame
        Participants table in the order of ``Y``'s rows.
    contrast_names : sequence of str
        Names of :data:`painplast.contrasts.CONTRASTS`; one whose column is missing, or whose
        design leaves fewer than 3 residual degrees of freedom, is skipped with a note.
    extra : DataFrame, optional
        Covariates not in ``participants`` (same index).
    global_covariate : str, optional
        See :func:`voxelwise_design`.
    site_blocks : bool
        Permute within site (exchangeability blocks) when there are several sites.
    n_permutations, alpha, random_state
        Permutations per contrast, family-wise alpha of the clusters, seed (contrast ``k``
        draws from ``default_rng([random_state, k])``).
    connectivity : {6, 18, 26}
        TFCE neighbourhood.
    min_peak_distance, max_subpeaks
        See :func:`cluster_table`.

    Returns
    -------
    SecondLevel
        ``maps``: per contrast :func:`map_name` ``t``, ``tfce``, ``logp_fwe_tfce``;
        ``clusters``: all contrasts; ``summary``: ``contrast, n, design, dropped, blocks,
        n_voxels, n_permutations, scheme, min_t, max_t, min_p_fwe_tfce, min_p_fwe_t,
        n_significant_voxels``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> mask = np.ones((4, 4, 4), bool)
    >>> parts = pd.DataFrame({"group": ["patient", "control"] * 6}, index=[f"sub-{i}" for i in range(12)])
    >>> Y = rng.normal(size=(12, 64)) + 3.0 * (parts["group"] == "patient").to_numpy()[:, None]
    >>> out = second_level(Y, mask, np.eye(4), parts, ["patient-control", "age"], n_permutations=50)
    >>> sorted(out.maps), out.notes[-1]
    (['patient_control_logp_fwe_tfce', 'patient_control_t', 'patient_control_tfce'], 'voxel-wise age skipped: no age column')
    """
    from ..stats.permutation import permutation_test

    out = SecondLevel()
    out.notes.append(f"voxel-wise GLM in {int(mask.sum())} voxels: TFCE (E=0.5, H=2, "
                     f"{connectivity}-connectivity), {n_permutations} Freedman-Lane permutations"
                     f"{' within site' if site_blocks else ''}, two-sided, FWE from max |TFCE|")
    tables, summary = [], []
    for k, contrast in enumerate(contrast_names):
        if contrast not in contrasts.CONTRASTS:
            raise InputError(f"unknown voxel-wise contrast {contrast!r}",
                             fix=f"use some of {', '.join(contrasts.CONTRASTS)}")
        spec = contrasts.CONTRASTS[contrast]
        if spec.column not in participants or (spec.subset == "patients" and "group" not in participants):
            out.notes.append(f"voxel-wise {contrast} skipped: no {spec.column} column")
            continue
        try:
            design, rows, names, dropped = voxelwise_design(participants, contrast, extra, global_covariate)
        except InputError as error:
            out.notes.append(f"voxel-wise {contrast} skipped: {error}")
            continue
        n, p = design.shape
        if n - p < 3:
            out.notes.append(f"voxel-wise {contrast} skipped: {n} participants for {p} design columns")
            continue
        blocks = None
        if site_blocks and "site" in participants:
            site = participants["site"].astype(str).to_numpy()[rows]
            if len(np.unique(site)) > 1:
                blocks = site
        vector = np.zeros(p)
        vector[1] = 1.0
        res = permutation_test(Y[rows], design, vector, n_permutations=int(n_permutations),
                               tfce=True, mask=mask, two_sided=True, blocks=blocks,
                               random_state=np.random.default_rng([int(random_state), k]),
                               connectivity=int(connectivity), column_names=names)
        t_map = np.zeros(mask.shape, np.float32)
        t_map[mask] = res.t
        tfce_map = np.zeros(mask.shape, np.float32)
        tfce_map[mask] = res.tfce
        p_map = np.ones(mask.shape, np.float64)
        p_map[mask] = res.p_fwe_tfce
        out.maps[map_name(contrast, "t")] = nib.Nifti1Image(t_map, affine)
        out.maps[map_name(contrast, "tfce")] = nib.Nifti1Image(tfce_map, affine)
        out.maps[map_name(contrast, "logp_fwe_tfce")] = nib.Nifti1Image(
            (-np.log10(p_map)).astype(np.float32), affine)
        tables.append(cluster_table(t_map.astype(np.float64), p_map, affine, contrast, alpha=alpha,
                                    min_peak_distance=min_peak_distance, max_subpeaks=max_subpeaks))
        summary.append({"contrast": contrast, "n": n, "design": ", ".join(names[2:]),
                        "dropped": ", ".join(dropped), "blocks": "site" if blocks is not None else "",
                        "n_voxels": int(mask.sum()), "n_permutations": res.n_permutations,
                        "scheme": res.scheme, "min_t": float(res.t.min()), "max_t": float(res.t.max()),
                        "min_p_fwe_tfce": float(res.p_fwe_tfce.min()),
                        "min_p_fwe_t": float(res.p_fwe.min()),
                        "n_significant_voxels": int((res.p_fwe_tfce < alpha).sum())})
    tables = [t for t in tables if len(t)]
    if tables:
        out.clusters = pd.concat(tables, ignore_index=True)
    out.summary = pd.DataFrame(summary)
    return out
