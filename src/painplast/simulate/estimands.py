"""The simulator's own estimators of planted sizes, independent of the code under test.

The recorded size of a planted effect is its population value: the estimand below, computed on a
large Monte Carlo sample of the latent model (:mod:`painplast.simulate.truth`). The estimands
follow the definitions of docs/architecture.md ("Outputs", "One definition of every contrast")
but are written here again in plain numpy, on purpose: the findings tables compute the same
quantities with :mod:`painplast.contrasts` and :mod:`painplast.stats`, and a "planted size inside
the interval" check can only catch a wrong definition or scale there if the planted size does
not come from that code.

Estimands (y a feature, C the contrast's covariates, coded as below, plus the module's own):

* group contrast (``patient-control``, ``responder-nonresponder``, ``persisting-recovering``):
  ``y ~ 1 + g + C`` by least squares among the participants the contrast takes; Cohen's d is
  the coefficient of ``g`` over the residual standard deviation of that model (sum of squared
  residuals over ``n - rank``).
* continuous contrast (``pain_intensity``, ``pain_duration``, ``modulation_score``, ``age``,
  ``change~pain_relief``): the partial correlation, i.e. Pearson's r between the residuals of
  ``y`` and of ``x`` after least squares on ``1 + C``.
* ``time``: within-person change (follow-up minus baseline) of treated chronic patients,
  d_z = mean change / standard deviation of the change (no covariates).
* ``group:time``: the group contrast above applied to change scores, treated chronic patients
  (1) against controls (0), covariates age, sex, site.

Covariate coding: ``site`` as indicators of every level but the first (sorted), ``sex`` F = 1,
M = 0, ``group`` patient = 1, control = 0; other covariates as numbers. The longitudinal
contrasts take only the covariates named above (no module covariates: a change score has no
single motion or total-GM value); the cross-sectional ones add the module's (connectivity:
``mean_fd``; structure: ``gm_total`` except for ``structure.gm_total`` itself).

Examples
--------
>>> rng = np.random.default_rng(0)
>>> g = np.repeat([0.0, 1.0], 5000)
>>> round(adjusted_d(rng.normal(size=10000) + 0.8 * g, g), 1)
0.8
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Estimand:
    """Who enters a contrast, the regressor of interest and the covariates."""

    kind: str                       # "group", "continuous", "paired"
    column: str                     # participants column of the regressor
    who: str                        # "all", "patients", "chronic", "subacute", "chronic+controls"
    covariates: tuple[str, ...]
    uses_change: bool = False       # on change scores (follow-up minus baseline)


BASIC = ("age", "sex", "site")
ESTIMANDS: dict[str, Estimand] = {
    "patient-control": Estimand("group", "group", "all", BASIC),
    "responder-nonresponder": Estimand("group", "treatment_response", "patients", BASIC),
    "pain_intensity": Estimand("continuous", "pain_intensity", "patients", BASIC),
    "pain_duration": Estimand("continuous", "pain_duration_months", "patients", BASIC),
    "modulation_score": Estimand("continuous", "modulation_score", "all", ("group", *BASIC)),
    "age": Estimand("continuous", "age", "all", ("group", "sex", "site")),
    "persisting-recovering": Estimand("group", "outcome", "subacute", BASIC),
    "time": Estimand("paired", "", "chronic", (), uses_change=True),
    "group:time": Estimand("group", "stage", "chronic+controls", BASIC, uses_change=True),
    "change~pain_relief": Estimand("continuous", "pain_relief", "chronic", BASIC, uses_change=True),
}
LONGITUDINAL = ("time", "group:time", "change~pain_relief")

#: Covariates a module adds to the cross-sectional contrasts (docs/architecture.md, Decisions).
MODULE_COVARIATES = {"connectivity": ("mean_fd",), "structure": ("gm_total",)}

_LEVELS = {"treatment_response": {"responder": 1.0, "non-responder": 0.0},
           "group": {"patient": 1.0, "control": 0.0},
           "outcome": {"persisting": 1.0, "recovering": 0.0},
           "stage": {"chronic": 1.0, "n/a": 0.0}}


def module_covariates(module: str, feature: str, contrast: str) -> tuple[str, ...]:
    """The module's own covariates for a cross-sectional contrast (none for longitudinal ones)."""
    if ESTIMANDS[contrast].uses_change or feature == "structure.gm_total":
        return ()
    return MODULE_COVARIATES.get(module, ())


class Coded:
    """A participants table with its columns coded once (the Monte Carlo sample is large and
    every effect reads the same columns)."""

    def __init__(self, parts: pd.DataFrame):
        self.parts = parts
        self._cache: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.parts)

    def text(self, name: str) -> np.ndarray:
        key = f"text:{name}"
        if key not in self._cache:
            self._cache[key] = (self.parts[name].astype(str).to_numpy() if name in self.parts
                                else np.full(len(self.parts), ""))
        return self._cache[key]

    def column(self, name: str) -> np.ndarray:
        """(n, k) coded covariate columns of ``name``."""
        key = f"cov:{name}"
        if key not in self._cache:
            if name == "site":
                text = self.text("site")
                cols = [(text == level).astype(float) for level in sorted(set(text))[1:]]
                value = np.column_stack(cols) if cols else np.empty((len(text), 0))
            elif name == "sex":
                value = (self.text("sex") == "F").astype(float)[:, None]
            else:
                value = self.regressor(name)[:, None]
            self._cache[key] = value
        return self._cache[key]

    def regressor(self, name: str) -> np.ndarray:
        if name in _LEVELS:
            return pd.Series(self.text(name)).map(_LEVELS[name]).to_numpy(float)
        return self.parts[name].to_numpy(float)

    def members(self, who: str) -> np.ndarray:
        group, stage = self.text("group"), self.text("stage")
        if who == "all":
            return np.ones(len(group), bool)
        if who == "patients":
            return group == "patient"
        if who == "chronic":
            return stage == "chronic"
        if who == "subacute":
            return stage == "subacute"
        if who == "chronic+controls":
            return (stage == "chronic") | (group == "control")
        raise ValueError(who)


def covariates(parts: pd.DataFrame | Coded, names, extra=None) -> np.ndarray:
    """(n, k) covariate matrix coded as the module docstring says (``extra``: a mapping of
    further per-participant columns, e.g. ``gm_total``)."""
    coded = parts if isinstance(parts, Coded) else Coded(parts)
    cols = []
    for name in names:
        if extra is not None and name in extra:
            cols.append(np.asarray(extra[name], float)[:, None])
        else:
            cols.append(coded.column(name))
    return np.column_stack(cols) if cols else np.empty((len(coded), 0))


def _residualize(values: np.ndarray, design: np.ndarray) -> np.ndarray:
    coef, *_ = np.linalg.lstsq(design, values, rcond=None)
    return values - design @ coef


def adjusted_d(y: np.ndarray, g: np.ndarray, cov: np.ndarray | None = None) -> float:
    """Cohen's d of ``g`` (1 vs 0): least-squares coefficient over the residual SD."""
    n = len(y)
    X = np.column_stack([np.ones(n), g] + ([cov] if cov is not None and cov.size else []))
    coef, _, rank, _ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    return float(coef[1] / np.sqrt(resid @ resid / (n - rank)))


def partial_r(y: np.ndarray, x: np.ndarray, cov: np.ndarray | None = None) -> float:
    """Pearson r between ``y`` and ``x`` after least squares of both on ``1 + cov``."""
    n = len(y)
    D = np.column_stack([np.ones(n)] + ([cov] if cov is not None and cov.size else []))
    ry, rx = _residualize(np.column_stack([y, x]), D).T
    return float(ry @ rx / np.sqrt((ry @ ry) * (rx @ rx)))


def paired_dz(change: np.ndarray) -> float:
    """Mean over standard deviation (ddof 1) of within-person changes."""
    return float(np.mean(change) / np.std(change, ddof=1))


def size(contrast: str, y: np.ndarray, parts: pd.DataFrame | Coded,
         extra_covariates=(), extra=None) -> float:
    """The estimand of ``contrast`` for the values ``y`` (one per row of ``parts``).

    For the longitudinal contrasts ``y`` is the change score; for the others, the value at the
    session the analysis uses (the first).
    """
    spec = ESTIMANDS[contrast]
    coded = parts if isinstance(parts, Coded) else Coded(parts)
    y = np.asarray(y, float)
    keep = coded.members(spec.who) & np.isfinite(y)
    if spec.kind == "paired":
        return paired_dz(y[keep])
    x = coded.regressor(spec.column)
    cov = covariates(coded, tuple(spec.covariates) + tuple(extra_covariates), extra)
    keep &= np.isfinite(x) & np.all(np.isfinite(cov), axis=1)
    cov = cov[keep]   # constant or collinear columns are harmless: least squares finds the rank
    if spec.kind == "group":
        return adjusted_d(y[keep], x[keep], cov)
    return partial_r(y[keep], x[keep], cov)
