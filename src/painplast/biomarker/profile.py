"""Plasticity profiles: each patient's deviation from a normative model of the controls.

For every feature a normative model is fitted on the controls only, with age, sex and site as
covariates (ordinary least squares; site as indicators, a site without controls falls back to the
average site). A patient's z-score is their deviation from the model's prediction, divided by the
controls' residual standard deviation (with the model's prediction uncertainty for that patient
added, so small control groups do not inflate z). Features are then summarized on the five axes
of pain-induced plasticity, the modules (``sensitization``, ``reorganization``, ``connectivity``,
``structure``, ``modulation``): an axis score is the root mean square of the patient's z over
the module's features, so 1 is what a typical control scores and larger values mean a larger
deviation, whatever its direction.

:func:`plasticity_profiles` computes; :func:`write_profiles` writes, per participant,
``sub-*/sub-*_desc-plasticity_profile.tsv`` (every feature's z) and
``..._desc-plasticity_axes.tsv`` (the five axes), and :func:`radar_chart` draws the axes
(``..._desc-plasticity_radar.png``).

Examples
--------
>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> ids = [f"sub-{i:02d}" for i in range(40)]
>>> parts = pd.DataFrame({"participant_id": ids, "group": ["control"] * 30 + ["patient"] * 10,
...                       "age": rng.uniform(20, 60, 40), "sex": ["F", "M"] * 20})
>>> feats = pd.DataFrame({"structure.gm_dacc": rng.normal(size=40)}, index=ids)
>>> feats.iloc[30:] -= 2.0
>>> profiles = plasticity_profiles(feats, parts)
>>> bool(profiles.zscores.loc["sub-35", "structure.gm_dacc"] < -0.5)
True
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from painplast import plasticity
from painplast.errors import InputError, MissingColumnError

__all__ = ["Profiles", "normative_zscores", "plasticity_profiles", "radar_chart",
           "write_profiles"]

COVARIATES = ("age", "sex", "site")


@dataclass(frozen=True)
class Profiles:
    """Normative z-scores and axis summaries.

    Attributes
    ----------
    zscores : DataFrame, shape (n_patients, n_features)
        Each patient's z per feature.
    axes : DataFrame, shape (n_patients, n_axes)
        Root mean square z per module (columns in :func:`painplast.plasticity.names` order, only
        the modules with features).
    provenance : dict
        Feature -> module.
    control_zscores : DataFrame, shape (n_controls, n_features)
        Leave-one-out z of the controls (their distribution is the reference: about N(0, 1)).
    covariates : list of str
        Covariates used.
    """

    zscores: pd.DataFrame
    axes: pd.DataFrame
    provenance: dict
    control_zscores: pd.DataFrame
    covariates: list


def _covariates(parts: pd.DataFrame, names: Sequence[str], sites: list[str]) -> tuple[np.ndarray,
                                                                                     list[str]]:
    columns, used = [np.ones(len(parts))], []
    for name in names:
        if name not in parts.columns:
            continue
        if name == "site":
            for level in sites[1:]:
                columns.append((parts["site"].astype(str) == level).to_numpy(float))
            if len(sites) > 1:
                used.append("site")
        elif name == "sex":
            columns.append(parts["sex"].astype("string").str.upper().str[:1]
                           .map({"F": 1.0, "M": 0.0}).to_numpy(float))
            used.append("sex")
        else:
            columns.append(pd.to_numeric(parts[name], errors="coerce").to_numpy(float))
            used.append(name)
    return np.column_stack(columns), used


def normative_zscores(features: pd.DataFrame, participants: pd.DataFrame, reference,
                      covariates: Sequence[str] = COVARIATES) -> tuple[pd.DataFrame, pd.DataFrame,
                                                                       list[str]]:
    """z-scores of every participant against a normative model fitted on ``reference`` rows.

    Parameters
    ----------
    features : DataFrame, shape (n_participants, n_features)
        Index ``participant_id``.
    participants : DataFrame
        Index (or column) ``participant_id``; covariate columns.
    reference : array_like of bool, shape (n_participants,)
        Rows forming the normative sample (the controls).
    covariates : sequence of str

    Returns
    -------
    z_others : DataFrame
        z of the non-reference rows: ``(y - X b) / sqrt(s^2 (1 + x (X'X)^-1 x'))``.
    z_reference : DataFrame
        Leave-one-out z of the reference rows (the same formula with the row left out).
    used : list of str
        Covariates used.
    """
    reference = np.asarray(reference, bool)
    parts = participants.reindex(features.index)
    ref_sites = sorted(parts.loc[reference, "site"].astype(str).unique()) \
        if "site" in parts.columns else []
    X, used = _covariates(parts, covariates, ref_sites)
    keep_cols = np.isfinite(X).all(axis=0)
    X = X[:, keep_cols]
    if not np.isfinite(X).all():
        raise InputError("covariates have missing values for some participants",
                         path="participants.tsv", fix="fill age/sex/site for every participant")
    Y = features.to_numpy(np.float64)
    Xr, Yr = X[reference], Y[reference]
    n, p = Xr.shape
    if n - p < 3:
        raise InputError(f"{n} reference participants are too few for a normative model with "
                         f"{p} parameters", fix="add controls or use fewer covariates")
    pinv = np.linalg.pinv(Xr.T @ Xr)
    beta = pinv @ Xr.T @ Yr
    residual = Yr - Xr @ beta
    s2 = (residual ** 2).sum(axis=0) / (n - p)
    other = ~reference
    lever = np.einsum("ij,jk,ik->i", X[other], pinv, X[other])
    z_other = (Y[other] - X[other] @ beta) / np.sqrt(s2 * (1 + lever[:, None]))
    # leave-one-out for the reference rows (closed form through the hat matrix)
    h = np.einsum("ij,jk,ik->i", Xr, pinv, Xr)
    loo_residual = residual / (1 - h)[:, None]
    s2_loo = ((n - p) * s2 - residual ** 2 / (1 - h)[:, None]) / (n - p - 1)
    z_ref = loo_residual / np.sqrt(s2_loo * (1 / (1 - h))[:, None])
    columns = features.columns
    return (pd.DataFrame(z_other, index=features.index[other], columns=columns),
            pd.DataFrame(z_ref, index=features.index[reference], columns=columns), used)


def _axes(z: pd.DataFrame, provenance: dict) -> pd.DataFrame:
    modules = [m for m in plasticity.names() if m in set(provenance.values())]
    modules += [m for m in dict.fromkeys(provenance.values()) if m not in modules]
    return pd.DataFrame({m: np.sqrt((z[[c for c in z.columns if provenance[c] == m]] ** 2)
                                    .mean(axis=1)) for m in modules}, index=z.index)


def plasticity_profiles(features, participants: pd.DataFrame,
                        covariates: Sequence[str] = COVARIATES) -> Profiles:
    """Every patient's z-scores against the controls, and their five-axis summary.

    Parameters
    ----------
    features : FeatureTable or DataFrame
        Participants by features (index ``participant_id``; provenance from the FeatureTable or
        the ``<module>.`` prefix of each column). Incomplete rows are left out.
    participants : DataFrame
        participants.tsv with ``group`` (patient/control) and the covariates.
    covariates : sequence of str
        Normative-model covariates (those absent are left out).

    Returns
    -------
    Profiles

    Raises
    ------
    MissingColumnError
        Without a ``group`` column.
    """
    data = getattr(features, "data", features)
    provenance = dict(getattr(features, "provenance", {}))
    for column in data.columns:
        provenance.setdefault(column, str(column).split(".", 1)[0] if "." in str(column)
                              else "other")
    parts = participants.set_index("participant_id") if "participant_id" in \
        participants.columns else participants
    parts = parts.copy()
    parts.index = parts.index.astype(str)
    if "group" not in parts.columns:
        raise MissingColumnError("plasticity profiles need a 'group' column (patient/control)",
                                 path="participants.tsv", fix="add group to participants.tsv")
    data = data.loc[[i for i in data.index if i in parts.index]].dropna()
    group = parts.loc[data.index, "group"].astype(str).str.lower()
    keep = group.isin(["patient", "control"]).to_numpy()
    data, group = data[keep], group[keep]
    if (group == "control").sum() < 5 or (group == "patient").sum() < 1:
        raise InputError("plasticity profiles need at least 5 controls and 1 patient with "
                         "complete features", path="participants.tsv",
                         fix="check the group column and which modules ran")
    z_patients, z_controls, used = normative_zscores(data, parts, (group == "control").to_numpy(),
                                                     covariates)
    return Profiles(z_patients, _axes(z_patients, provenance), provenance,
                    z_controls, used)


def radar_chart(axes: pd.Series, title: str = "") -> bytes:
    """A radar chart of one participant's axis scores, as PNG bytes.

    Parameters
    ----------
    axes : Series
        Axis name -> score (root mean square z); a dashed circle marks 1 (typical control).
    title : str

    Returns
    -------
    bytes
        PNG image.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = list(axes.index)
    values = np.asarray(axes.to_numpy(float))
    angles = np.linspace(0, 2 * np.pi, len(names), endpoint=False)
    closed = np.concatenate([angles, angles[:1]])
    fig = plt.figure(figsize=(4, 4), dpi=100)
    ax = fig.add_subplot(projection="polar")
    ax.plot(closed, np.concatenate([values, values[:1]]), color="C3", lw=2)
    ax.fill(closed, np.concatenate([values, values[:1]]), color="C3", alpha=0.25)
    ax.plot(np.linspace(0, 2 * np.pi, 100), np.ones(100), "k--", lw=0.8)
    ax.set_xticks(angles)
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylim(0, max(2.0, float(np.nanmax(values)) * 1.1 if len(values) else 2.0))
    ax.set_title(title, fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _atomic(path: Path, data: bytes) -> None:
    from painplast.derivatives import atomic_write_bytes
    atomic_write_bytes(path, data)


def write_profiles(profiles: Profiles, out_dir, figures: bool = True) -> list[Path]:
    """Write every patient's profile (TSVs and radar PNG) under ``sub-*/`` (atomic writes).

    Parameters
    ----------
    profiles : Profiles
    out_dir : path
        The painplast output folder.
    figures : bool
        Also draw the radar charts.

    Returns
    -------
    list of Path
        Files written.
    """
    out_dir = Path(out_dir)
    written = []
    for pid in profiles.zscores.index:
        folder = out_dir / pid
        z = profiles.zscores.loc[pid]
        table = pd.DataFrame({"feature": z.index, "module": [profiles.provenance[c] for c in
                                                             z.index], "z": z.to_numpy()})
        path = folder / f"{pid}_desc-plasticity_profile.tsv"
        _atomic(path, table.to_csv(sep="\t", index=False, na_rep="n/a").encode())
        written.append(path)
        axes = profiles.axes.loc[pid]
        path = folder / f"{pid}_desc-plasticity_axes.tsv"
        _atomic(path, pd.DataFrame({"axis": axes.index, "rms_z": axes.to_numpy()})
                .to_csv(sep="\t", index=False, na_rep="n/a").encode())
        written.append(path)
        if figures:
            path = folder / f"{pid}_desc-plasticity_radar.png"
            _atomic(path, radar_chart(axes, title=pid))
            written.append(path)
    return written
