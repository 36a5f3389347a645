"""The contrasts every findings table uses, and the one function that fills such a table.

A contrast says which participants enter, what the regressor of interest is and which
covariates are adjusted for; :func:`findings_table` turns a table of per-participant features
into ``group/<module>_findings.tsv`` rows (contract columns, see ``docs/architecture.md``).
The simulator computes the "true size" of each planted effect with the same definitions, so a
recovered estimate and its planted size are the same quantity.

========================  ======================  ==========  ==================================
contrast                  regressor               who         covariates (when present)
========================  ======================  ==========  ==================================
patient-control           group (patient=1)       everyone    age, sex, site
responder-nonresponder    treatment_response      patients    age, sex, site
pain_intensity            pain_intensity          patients    age, sex, site
pain_duration             pain_duration_months    patients    age, sex, site
modulation_score          modulation_score        everyone    group, age, sex, site
age                       age                     everyone    group, sex, site
========================  ======================  ==========  ==================================

Modules add their own covariates (connectivity: ``mean_fd``; structure: ``gm_total`` for
regional gray matter), as their declarations say (:func:`module_covariates`). Group contrasts report Cohen's d, continuous ones the partial r;
``p_corrected`` is Holm's family-wise correction over all rows of one module's table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .results import FINDINGS_COLUMNS
from .stats.effects import continuous_effect, group_effect, holm


@dataclass(frozen=True)
class Contrast:
    name: str
    kind: str            # "group" or "continuous"
    column: str          # participants column holding the regressor
    subset: str          # "all" or "patients"
    covariates: tuple[str, ...]


CONTRASTS: dict[str, Contrast] = {
    "patient-control": Contrast("patient-control", "group", "group", "all", ("age", "sex", "site")),
    "responder-nonresponder": Contrast("responder-nonresponder", "group", "treatment_response", "patients", ("age", "sex", "site")),
    "pain_intensity": Contrast("pain_intensity", "continuous", "pain_intensity", "patients", ("age", "sex", "site")),
    "pain_duration": Contrast("pain_duration", "continuous", "pain_duration_months", "patients", ("age", "sex", "site")),
    "modulation_score": Contrast("modulation_score", "continuous", "modulation_score", "all", ("group", "age", "sex", "site")),
    "age": Contrast("age", "continuous", "age", "all", ("group", "sex", "site")),
}


def for_column(column: str) -> str | None:
    """The contrast that tests a participants column (``group`` -> ``patient-control``), or None.

    Examples
    --------
    >>> for_column("treatment_response"), for_column("pain_sensitivity")
    ('responder-nonresponder', None)
    """
    return next((c.name for c in CONTRASTS.values() if c.column == column), None)


_RESPONDER = {"responder": 1.0, "non-responder": 0.0, "nonresponder": 0.0, "non_responder": 0.0}


def regressor(participants: pd.DataFrame, contrast: Contrast) -> np.ndarray:
    """The regressor of interest (NaN where a participant does not enter the contrast)."""
    n = len(participants)
    if contrast.column not in participants:
        return np.full(n, np.nan)
    col = participants[contrast.column]
    if contrast.name == "patient-control":
        x = col.astype(str).str.lower().map({"patient": 1.0, "control": 0.0}).to_numpy(float)
    elif contrast.name == "responder-nonresponder":
        text = col.astype(str).str.lower()
        x = text.map(_RESPONDER).to_numpy(float)
        numeric = pd.to_numeric(col, errors="coerce").to_numpy(float)
        if np.all(np.isnan(x)) and np.isfinite(numeric).sum() > 0:
            # numeric response (e.g. % pain relief): split at 30% / 0.3, the usual responder cut-off
            cut = 30.0 if np.nanmax(np.abs(numeric)) > 1.5 else 0.3
            x = np.where(np.isfinite(numeric), (numeric >= cut).astype(float), np.nan)
    else:
        x = pd.to_numeric(col, errors="coerce").to_numpy(float)
    if contrast.subset == "patients":
        if "group" not in participants:
            return np.full(n, np.nan)
        x = np.where(participants["group"].astype(str).str.lower().to_numpy() == "patient", x, np.nan)
    return x


def covariate_matrix(participants: pd.DataFrame, names: Sequence[str],
                     extra: pd.DataFrame | None = None) -> tuple[np.ndarray, list[str]]:
    """Numeric covariates (site one-hot without its first level; sex F=1; group patient=1).

    Covariates that are absent are left out (and returned names say which were used).
    """
    cols, used = [], []
    for name in names:
        source = extra if extra is not None and name in extra else participants
        if name not in source:
            continue
        col = source[name]
        if name == "site":
            levels = sorted(col.astype(str).unique())
            for lev in levels[1:]:
                cols.append((col.astype(str) == lev).to_numpy(float))
                used.append(f"site[{lev}]")
        elif name == "sex":
            cols.append(col.astype(str).str.upper().str[:1].map({"F": 1.0, "M": 0.0}).to_numpy(float))
            used.append("sex")
        elif name == "group":
            cols.append(col.astype(str).str.lower().map({"patient": 1.0, "control": 0.0}).to_numpy(float))
            used.append("group")
        else:
            cols.append(pd.to_numeric(col, errors="coerce").to_numpy(float))
            used.append(name)
    if not cols:
        return np.empty((len(participants), 0)), used
    return np.column_stack(cols), used


def estimate(y: np.ndarray, participants: pd.DataFrame, contrast: str | Contrast,
             extra_covariates: Sequence[str] = (), extra: pd.DataFrame | None = None,
             alpha: float = 0.05):
    """Standardized effect of one feature for one contrast (see the module docstring)."""
    spec = CONTRASTS[contrast] if isinstance(contrast, str) else contrast
    x = regressor(participants, spec)
    cov, _ = covariate_matrix(participants, tuple(spec.covariates) + tuple(extra_covariates), extra)
    y = np.asarray(y, float)
    ok = np.isfinite(x)
    fn = group_effect if spec.kind == "group" else continuous_effect
    return fn(y[ok], x[ok], cov[ok] if cov.size else None, alpha=alpha)


def findings_table(features: pd.DataFrame, participants: pd.DataFrame,
                   tests: Iterable[tuple[str, str]],
                   extra_covariates: Mapping[str, Sequence[str]] | None = None,
                   extra: pd.DataFrame | None = None, alpha: float = 0.05) -> pd.DataFrame:
    """A findings table (contract columns) for a set of (feature, contrast) tests.

    Parameters
    ----------
    features : DataFrame
        Index ``participant_id``; one column per feature (``module.feature``).
    participants : DataFrame
        Index ``participant_id``; the participants table.
    tests : iterable of (feature, contrast)
        What to test. Contrasts whose column is absent, or with too few participants, are left
        out (the table says what was tested, no more).
    extra_covariates : mapping, optional
        ``{feature or "*": [covariate, ...]}``: module covariates, e.g. ``{"*": ["mean_fd"]}``.
    extra : DataFrame, optional
        Per-participant values of covariates not in ``participants`` (e.g. ``mean_fd``).

    Returns
    -------
    DataFrame
        Columns ``feature, contrast, estimate, ci_low, ci_high, p, p_corrected, n``;
        ``p_corrected`` is Holm's correction over all rows.
    """
    extra_covariates = extra_covariates or {}
    common = features.index.intersection(participants.index)
    feats = features.loc[common]
    parts = participants.loc[common]
    ext = extra.reindex(common) if extra is not None else None
    rows = []
    for feature, contrast in tests:
        if feature not in feats:
            continue
        spec = CONTRASTS[contrast]
        if spec.column not in parts or (spec.subset == "patients" and "group" not in parts):
            continue
        covs = tuple(extra_covariates.get("*", ())) + tuple(extra_covariates.get(feature, ()))
        eff = estimate(feats[feature].to_numpy(float), parts, spec, covs, ext, alpha)
        if not np.isfinite(eff.estimate):
            continue
        rows.append({"feature": feature, "contrast": contrast, "estimate": eff.estimate,
                     "ci_low": eff.ci_low, "ci_high": eff.ci_high, "p": eff.p, "n": eff.n})
    table = pd.DataFrame(rows, columns=[c for c in FINDINGS_COLUMNS if c != "p_corrected"])
    table["p_corrected"] = holm(table["p"].to_numpy(float)) if len(table) else []
    return table[list(FINDINGS_COLUMNS)]


def module_covariates(module: str, feature: str) -> tuple[str, ...]:
    """The covariates ``module`` adds when testing ``feature``, as the module declares them.

    Examples
    --------
    >>> module_covariates("structure", "structure.gm_dacc"), module_covariates("structure", "structure.gm_total")
    (('gm_total',), ())
    """
    from . import plasticity  # here: the modules import this file

    return plasticity.get(module).covariates_of(feature)
