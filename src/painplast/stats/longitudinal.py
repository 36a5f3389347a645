"""Longitudinal contrasts: change within people, its difference between groups, its correlates.

The estimands are those the longitudinal simulator records as ground truth
(``painplast.simulate.estimands``), computed on change scores ``follow-up - baseline``:

===========================  =========  =========================  ====================  =======
contrast                     estimate   regressor                  who                   on
===========================  =========  =========================  ====================  =======
``time``                     d_z        (mean change)              chronic patients      change
``group:time``               Cohen's d  chronic patient=1,         chronic patients and  change
                                        control=0                  controls
``change~pain_relief``       partial r  ``pain_relief``            chronic patients      change
``persisting-recovering``    Cohen's d  ``outcome`` persisting=1,  subacute patients     baseline
                                        recovering=0
===========================  =========  =========================  ====================  =======

The last three adjust for age, sex and site; ``time`` has no covariates. "Chronic" and
"subacute" are the participants table's ``stage`` column; "patients" and "controls" its
``group`` column. Every cross-sectional contrast of :mod:`painplast.contrasts`
(``patient-control``, ...) can be listed too; it is tested on the baseline session. The
contrasts on the baseline session add the module's own covariates (``extra_covariates``); the
change contrasts do not: a change score has no single head-motion or total gray matter value.

* ``time``: ``d_z = mean(change) / sd(change)``, the paired t test (``t = d_z sqrt(n)`` on
  ``n - 1`` df) and the exact interval of d_z from the noncentral t distribution (Steiger &
  Fouladi 1997; Cumming & Finch 2001): the noncentrality parameters ``lambda`` under which the
  observed t is the upper and lower ``alpha / 2`` quantile, divided by ``sqrt(n)``.
* ``group:time``: :func:`painplast.stats.effects.group_effect` on the change scores: the
  adjusted difference in change over the residual SD of the change-score model (its interval is
  effects' Hedges & Olkin normal approximation with the t quantile).
* ``change~pain_relief``: :func:`painplast.stats.effects.continuous_effect` (partial r, Fisher z
  interval).

Why change scores rather than ANCOVA with baseline as a covariate: the groups differ at baseline
by design (patients lost gray matter before treatment). With measurement error in the baseline,
ANCOVA regresses the follow-up towards the group means and finds a group x time effect where none
exists (Lord's paradox; Van Breukelen 2006, J Clin Epidemiol 59:920). With two sessions and
complete data the change-score estimate is the group x time interaction of the linear mixed
model with a random intercept (and of least squares with one fixed intercept per subject), with
the same t statistic; the tests show that equality against statsmodels.

Voxel-wise, :func:`change_map_test` (one-sample, sign flips) and :func:`group_time_map_test`
(change maps on group and covariates, Freedman-Lane) call
:func:`painplast.stats.permutation.permutation_test` with TFCE.

References
----------
Steiger JH, Fouladi RT (1997). Noncentrality interval estimation and the evaluation of
statistical models. In: What if there were no significance tests? Erlbaum, 221-257.
Cumming G, Finch S (2001). A primer on the understanding, use, and calculation of confidence
intervals that are based on central and noncentral distributions. Educ Psychol Meas 61:532-574.
Van Breukelen GJP (2006). ANCOVA versus change from baseline had more power in randomized
studies and more bias in nonrandomized studies. J Clin Epidemiol 59:920-925.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize as _optimize
from scipy import special as _special
from scipy import stats as _st

from painplast import contrasts as _contrasts
from painplast.errors import InputError
from painplast.results import FINDINGS_COLUMNS
from painplast.stats.effects import Effect, continuous_effect, group_effect, holm
from painplast.stats.effects import design_matrix as _design_matrix
from painplast.stats.permutation import PermutationResult, permutation_test
from painplast.stats.reliability import long_frame

__all__ = ["LongitudinalContrast", "LONGITUDINAL_CONTRASTS", "LongitudinalFindings",
           "EXCLUDED_COLUMNS", "SKIPPED_COLUMNS", "paired_effect", "change_scores",
           "longitudinal_effect", "longitudinal_findings", "change_map_test",
           "group_time_map_test", "baseline_contrast_for"]

BASIC = ("age", "sex", "site")
#: Participant subsets, with the participants columns that define them.
_SUBSETS = {"all": [], "patients": ["group"], "controls": ["group"], "chronic": ["stage"],
            "subacute": ["stage"], "chronic+controls": ["stage", "group"]}
#: Columns of :attr:`LongitudinalFindings.excluded`.
EXCLUDED_COLUMNS = ("participant_id", "feature", "contrast", "reason")
#: Columns of :attr:`LongitudinalFindings.skipped`.
SKIPPED_COLUMNS = ("feature", "contrast", "reason")


@dataclass(frozen=True)
class LongitudinalContrast:
    """Who enters a longitudinal contrast, what is tested and on which values.

    Attributes
    ----------
    name : str
        The ``contrast`` column of the findings table.
    kind : {"paired", "group", "continuous"}
        d_z of the change, Cohen's d of a 1/0 regressor, or a partial r.
    column : str
        Participants column of the regressor (``""`` for ``paired``). ``"stage"`` codes
        chronic patients 1 and controls 0; ``"outcome"`` persisting 1 and recovering 0; any
        other column is read as numbers.
    who : {"all", "patients", "controls", "chronic", "subacute", "chronic+controls"}
        The participants who enter (``group`` and ``stage`` columns).
    covariates : tuple of str
        Participants columns adjusted for (coded as :func:`painplast.contrasts.covariate_matrix`
        codes them).
    uses_change : bool
        Tested on change scores (follow-up minus baseline); otherwise on the baseline values.
    """

    name: str
    kind: str
    column: str
    who: str
    covariates: tuple[str, ...] = ()
    uses_change: bool = True

    def __post_init__(self):
        if self.kind not in ("paired", "group", "continuous"):
            raise InputError(f"contrast {self.name!r}: unknown kind {self.kind!r}",
                             fix="use 'paired', 'group' or 'continuous'")
        if self.who not in _SUBSETS:
            raise InputError(f"contrast {self.name!r}: unknown participant subset {self.who!r}",
                             fix=f"use one of {sorted(_SUBSETS)}")
        if self.kind == "paired" and not self.uses_change:
            raise InputError(f"contrast {self.name!r}: a paired contrast tests change scores",
                             fix="set uses_change=True")


#: The longitudinal contrasts (the simulator's ground truth uses the same definitions).
LONGITUDINAL_CONTRASTS: dict[str, LongitudinalContrast] = {
    "time": LongitudinalContrast("time", "paired", "", "chronic", ()),
    "group:time": LongitudinalContrast("group:time", "group", "stage", "chronic+controls", BASIC),
    "change~pain_relief": LongitudinalContrast("change~pain_relief", "continuous", "pain_relief",
                                               "chronic", BASIC),
    "persisting-recovering": LongitudinalContrast("persisting-recovering", "group", "outcome",
                                                  "subacute", BASIC, uses_change=False),
}


def baseline_contrast_for(column: str) -> str | None:
    """The longitudinal contrast tested at baseline on a participants column, or None.

    A biomarker of that column (``--biomarker outcome``) predicts the course from baseline
    features, so its a-priori features are the ones tested with this contrast.

    Examples
    --------
    >>> baseline_contrast_for("outcome"), baseline_contrast_for("pain_relief")
    ('persisting-recovering', None)
    """
    return next((c.name for c in LONGITUDINAL_CONTRASTS.values()
                 if c.column == column and not c.uses_change), None)


# --------------------------------------------------------------------------------------------
# one feature
# --------------------------------------------------------------------------------------------

def paired_effect(change: np.ndarray, alpha: float = 0.05) -> Effect:
    """d_z of within-person changes with the paired t test and an exact interval.

    ``d_z = mean(change) / sd(change)`` (sd with ``n - 1``); ``t = d_z sqrt(n)`` has a
    noncentral t distribution on ``n - 1`` df with noncentrality ``delta_z sqrt(n)``, so the
    interval is the two noncentralities that put the observed t at the ``1 - alpha / 2`` and
    ``alpha / 2`` quantiles (Steiger & Fouladi 1997), divided by ``sqrt(n)``. Non-finite changes
    are dropped.

    Parameters
    ----------
    change : ndarray, shape (n,)
        Follow-up minus baseline, one value per participant.
    alpha : float
        1 - confidence level.

    Returns
    -------
    Effect
        ``kind="paired"``; NaN with fewer than three changes or no spread.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> e = paired_effect(0.5 + rng.normal(size=400))
    >>> round(e.estimate, 1), e.ci_low < 0.5 < e.ci_high, e.df
    (0.5, True, 399)
    """
    change = np.asarray(change, float).ravel()
    change = change[np.isfinite(change)]
    n = int(change.size)
    sd = float(np.std(change, ddof=1)) if n > 1 else 0.0
    if n < 3 or not sd > 0:
        return Effect(np.nan, np.nan, np.nan, np.nan, max(n - 1, 0), np.nan, n, "paired")
    d = float(np.mean(change)) / sd
    df = n - 1
    t = d * np.sqrt(n)
    low = _noncentrality(df, 1 - alpha / 2, t) / np.sqrt(n)
    high = _noncentrality(df, alpha / 2, t) / np.sqrt(n)
    p = 2 * _st.t.sf(abs(t), df)
    return Effect(d, float(low), float(high), float(t), df, float(p), n, "paired")


def _noncentrality(df: int, q: float, t: float) -> float:
    """The noncentrality ``nc`` under which ``P(T <= t) = q`` for ``T ~ nct(df, nc)``.

    ``scipy.special.nctdtrinc`` gives a first guess (its tolerance leaves errors near 1e-6 in
    ``nc`` for large t); the root is then polished on ``nctdtr``, which decreases in ``nc``.
    """
    guess = float(_special.nctdtrinc(df, q, t))
    if not np.isfinite(guess):
        return guess
    def gap(nc):
        return float(_special.nctdtr(df, nc, t)) - q
    width = 0.01 * (1.0 + abs(guess))
    low, high = guess - width, guess + width
    for _ in range(60):            # widen until the root is bracketed
        if gap(low) >= 0 >= gap(high):
            return float(_optimize.brentq(gap, low, high, xtol=1e-13, rtol=1e-13))
        low, high = low - width, high + width
        width *= 2
    return guess


def change_scores(features: pd.DataFrame, baseline: str, followup: str, *,
                  subject: str = "participant_id", session: str = "session",
                  columns: Sequence[str] | None = None
                  ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split a long feature table into baseline values, follow-up values and their difference.

    Parameters
    ----------
    features : DataFrame
        One row per participant and session: columns (or index levels) ``subject`` and
        ``session``, one column per feature. Session labels match with or without ``ses-``.
    baseline, followup : str
        The two sessions (e.g. ``"baseline"``, ``"followup"``).
    subject, session : str
        Names of the participant and session columns.
    columns : sequence of str, optional
        Feature columns (default: every numeric column but ``subject`` and ``session``).

    Returns
    -------
    baseline, followup, change : DataFrame
        Indexed by participant (everyone with a row in either session; NaN where a session is
        missing), one column per feature; ``change = followup - baseline``.

    Examples
    --------
    >>> long = pd.DataFrame({"participant_id": ["sub-1", "sub-1", "sub-2"],
    ...                      "session": ["ses-1", "ses-2", "ses-1"], "gm": [0.5, 0.45, 0.6]})
    >>> base, follow, change = change_scores(long, "1", "2")
    >>> change["gm"].round(2).tolist()
    [-0.05, nan]
    """
    frame, columns = long_frame(features, columns, subject, session)
    labels = frame[session].astype(str).map(_strip_ses)
    wanted = {_strip_ses(baseline): "baseline", _strip_ses(followup): "followup"}
    if len(wanted) < 2:
        raise InputError(f"baseline and follow-up are the same session ({baseline!r})",
                         fix="name two different sessions")
    keep = labels.isin(wanted)
    rows = frame.loc[keep, [subject, *columns]].assign(_which=labels[keep].map(wanted).to_numpy())
    duplicated = rows.duplicated([subject, "_which"])
    if duplicated.any():
        pid, which = rows.loc[duplicated, [subject, "_which"]].iloc[0].tolist()
        raise InputError(f"the feature table has several rows for {subject} {pid!r} in the "
                         f"{which} session", fix="give one row per participant and session")
    ids = pd.Index(pd.unique(rows[subject].astype(str)), name=subject)
    split = {}
    for which in ("baseline", "followup"):
        part = rows[rows["_which"] == which].drop(columns="_which")
        part = part.assign(**{subject: part[subject].astype(str)}).set_index(subject)
        split[which] = part.reindex(ids)[list(columns)].astype(float)
    return split["baseline"], split["followup"], split["followup"] - split["baseline"]


def _strip_ses(label) -> str:
    label = str(label)
    return label[4:] if label.startswith("ses-") else label


def _text(participants: pd.DataFrame, column: str) -> np.ndarray:
    if column not in participants:
        return np.full(len(participants), "", dtype=object)
    values = participants[column]
    return np.where(values.isna(), "", values.astype(str).str.strip().str.lower()).astype(object)


def _members(participants: pd.DataFrame, who: str) -> np.ndarray:
    group, stage = _text(participants, "group"), _text(participants, "stage")
    masks = {"all": np.ones(len(participants), bool), "patients": group == "patient",
             "controls": group == "control", "chronic": stage == "chronic",
             "subacute": stage == "subacute",
             "chronic+controls": (stage == "chronic") | (group == "control")}
    return masks[who]


def _needs(spec: LongitudinalContrast) -> list[str]:
    """Participants columns a contrast cannot do without."""
    needed = list(_SUBSETS[spec.who])
    if spec.column and spec.column != "stage":
        needed.append(spec.column)
    return needed


_LEVELS = {"outcome": {"persisting": 1.0, "recovering": 0.0}}


def _regressor(participants: pd.DataFrame, spec: LongitudinalContrast) -> np.ndarray:
    """The regressor of interest for the contrast's members (NaN elsewhere or where n/a)."""
    n = len(participants)
    members = _members(participants, spec.who)
    if spec.kind == "paired":
        x = np.ones(n)
    elif spec.column == "stage":
        x = np.where(_text(participants, "stage") == "chronic", 1.0,
                     np.where(_text(participants, "group") == "control", 0.0, np.nan))
    elif spec.column in _LEVELS:
        x = pd.Series(_text(participants, spec.column)).map(_LEVELS[spec.column]).to_numpy(float)
    elif spec.column in participants:
        x = pd.to_numeric(participants[spec.column], errors="coerce").to_numpy(float)
    else:
        x = np.full(n, np.nan)
    return np.where(members, x, np.nan)


def longitudinal_effect(y: np.ndarray, participants: pd.DataFrame,
                        contrast: str | LongitudinalContrast, alpha: float = 0.05) -> Effect:
    """The effect of one contrast on one feature's values (change scores or baseline values).

    Parameters
    ----------
    y : ndarray, shape (n,)
        Change scores (for a contrast with ``uses_change``) or baseline values, in the row order
        of ``participants``; NaN where missing.
    participants : DataFrame
        The participants table (``group``, ``stage`` and the contrast's columns).
    contrast : str or LongitudinalContrast
        A name of :data:`LONGITUDINAL_CONTRASTS` or a contrast of your own.
    alpha : float
        1 - confidence level.

    Returns
    -------
    Effect
        From :func:`paired_effect`, :func:`~painplast.stats.effects.group_effect` or
        :func:`~painplast.stats.effects.continuous_effect` on the contrast's members with
        complete values.

    Examples
    --------
    >>> parts = pd.DataFrame({"group": ["patient"] * 4 + ["control"] * 2,
    ...                       "stage": ["chronic"] * 4 + [None] * 2})
    >>> e = longitudinal_effect(np.array([-1.0, -2, -1.5, -0.5, 9, 9]), parts, "time")
    >>> e.n, round(e.estimate, 2)
    (4, -1.94)
    """
    spec = _spec(contrast)
    x = _regressor(participants, spec)
    cov, _ = _contrasts.covariate_matrix(participants, spec.covariates)
    return _effect(np.asarray(y, float), x, cov, spec.kind, alpha)


def _effect(y: np.ndarray, x: np.ndarray, cov: np.ndarray, kind: str, alpha: float) -> Effect:
    """The effect on the participants with a regressor (the effect functions drop other n/a)."""
    ok = np.isfinite(x)
    if kind == "paired":
        return paired_effect(y[ok], alpha=alpha)
    fn = group_effect if kind == "group" else continuous_effect
    return fn(y[ok], x[ok], cov[ok] if cov.size else None, alpha=alpha)


def _is_cross(contrast) -> bool:
    """A cross-sectional contrast of :mod:`painplast.contrasts` (tested at baseline)."""
    return (isinstance(contrast, str) and contrast not in LONGITUDINAL_CONTRASTS
            and contrast in _contrasts.CONTRASTS)


def _spec(contrast) -> LongitudinalContrast:
    if isinstance(contrast, LongitudinalContrast):
        return contrast
    if contrast not in LONGITUDINAL_CONTRASTS:
        raise InputError(f"unknown longitudinal contrast {contrast!r}",
                         fix=f"use one of {sorted(LONGITUDINAL_CONTRASTS)}")
    return LONGITUDINAL_CONTRASTS[contrast]


# --------------------------------------------------------------------------------------------
# a findings table
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LongitudinalFindings:
    """A longitudinal findings table and who was left out of it.

    Attributes
    ----------
    table : DataFrame
        Contract columns ``feature, contrast, estimate, ci_low, ci_high, p, p_corrected, n``;
        ``p_corrected`` is Holm's correction over all rows.
    excluded : DataFrame
        Columns ``participant_id, feature, contrast, reason``: members of a contrast left out
        of it. ``feature`` is ``"*"`` when the reason holds for every feature of that contrast
        (a missing session, an n/a regressor or covariate); reasons are joined with ``"; "``.
    skipped : DataFrame
        Columns ``feature, contrast, reason``: requested tests not in ``table`` (feature or
        participants column absent, too few participants).
    """

    table: pd.DataFrame
    excluded: pd.DataFrame
    skipped: pd.DataFrame


def _indexed(participants: pd.DataFrame, subject: str) -> pd.DataFrame:
    if participants.index.name != subject and subject in participants:
        participants = participants.set_index(subject)
    return participants.set_axis(participants.index.astype(str))


def longitudinal_findings(features: pd.DataFrame, participants: pd.DataFrame,
                          tests: Iterable[tuple[str, str | LongitudinalContrast]], *,
                          baseline: str, followup: str,
                          subject: str = "participant_id", session: str = "session",
                          extra_covariates: Mapping[str, Sequence[str]] | None = None,
                          extra: pd.DataFrame | None = None,
                          alpha: float = 0.05) -> LongitudinalFindings:
    """Findings rows (contract columns) for longitudinal and baseline contrasts of features.

    Parameters
    ----------
    features : DataFrame
        Long table: one row per participant and session, columns (or index levels) ``subject``
        and ``session`` and one column per feature. Session labels match with or without
        ``ses-``.
    participants : DataFrame
        The participants table, indexed by (or with a column) ``subject``.
    tests : iterable of (feature, contrast)
        ``contrast`` is a name of :data:`LONGITUDINAL_CONTRASTS`, a
        :class:`LongitudinalContrast`, or a cross-sectional contrast of
        :data:`painplast.contrasts.CONTRASTS` (tested on the baseline session).
    baseline, followup : str
        The two sessions; change scores are ``followup - baseline``.
    subject, session : str
        Names of the participant and session columns.
    extra_covariates : mapping, optional
        ``{feature or "*": [covariate, ...]}``: module covariates (``mean_fd``, ``gm_total``) of
        the contrasts tested on the baseline session (``persisting-recovering`` and the
        cross-sectional ones), as :func:`painplast.contrasts.findings_table` takes them. Change
        contrasts use only their own covariates.
    extra : DataFrame, optional
        Per-participant baseline values of covariates not in ``participants``, indexed by
        participant.
    alpha : float
        1 - confidence level.

    Returns
    -------
    LongitudinalFindings

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ids = [f"sub-{i:02d}" for i in range(40)]
    >>> parts = pd.DataFrame({"group": ["control"] * 10 + ["patient"] * 30,
    ...                       "stage": [None] * 10 + ["chronic"] * 30}, index=ids)
    >>> base = rng.normal(size=40)
    >>> long = pd.DataFrame({"participant_id": ids * 2,
    ...                      "session": ["baseline"] * 40 + ["followup"] * 39 + ["x"],
    ...                      "gm": np.r_[base, base[:39] + 1 + 0.5 * rng.normal(size=39), 0]})
    >>> out = longitudinal_findings(long, parts, [("gm", "time")],
    ...                             baseline="baseline", followup="followup")
    >>> out.table[["contrast", "n"]].values.tolist(), out.table.p_corrected.item() < 0.05
    ([['time', 29]], True)
    >>> out.excluded.values.tolist()
    [['sub-39', '*', 'time', 'no followup session']]
    """
    parts = _indexed(participants, subject)
    tests = list(tests)
    wanted = sorted({feature for feature, _ in tests})
    frame = features.reset_index() if {subject, session} - set(features.columns) else features
    present = [f for f in wanted if f in frame]
    base, follow, change = change_scores(frame, baseline, followup, subject=subject,
                                         session=session, columns=present)
    sessions = {"baseline": _strip_ses(baseline), "followup": _strip_ses(followup)}
    # a participant has a session when the long table has a row for it (even if all n/a)
    long_ids = frame[subject].astype(str)
    long_sessions = frame[session].astype(str).map(_strip_ses)
    has_row = {which: pd.Index(long_ids[long_sessions == label].unique())
               for which, label in sessions.items()}
    base, follow, change = (t.reindex(parts.index) for t in (base, follow, change))
    ext = None if extra is None else extra.set_axis(extra.index.astype(str)).reindex(parts.index)
    extra_covariates = extra_covariates or {}

    rows, excluded, skipped = [], set(), []
    for pid in sorted(set(long_ids) - set(parts.index)):
        excluded.add((pid, "*", "*", "not in the participants table"))
    for _, contrast in tests:                 # unknown names fail before any work
        if not _is_cross(contrast):
            _spec(contrast)
    designs: dict[tuple, _Design | str] = {}
    for feature, contrast in tests:
        name = contrast if isinstance(contrast, str) else contrast.name
        if feature not in present:
            skipped.append((feature, name, "feature not in the feature table"))
            continue
        on_baseline = _is_cross(contrast) or not _spec(contrast).uses_change
        module_covariates = ((tuple(extra_covariates.get("*", ()))
                              + tuple(extra_covariates.get(feature, ()))) if on_baseline else ())
        key = (name, contrast if isinstance(contrast, LongitudinalContrast) else None,
               module_covariates)
        if key not in designs:
            designs[key] = _design(parts, contrast, module_covariates, ext, has_row, sessions)
        design = designs[key]
        if isinstance(design, str):
            skipped.append((feature, name, design))
            continue
        for pid, reason in design.reasons:
            excluded.add((pid, "*", name, reason))
        for which in design.sessions:
            values = (base if which == "baseline" else follow)[feature].to_numpy(float)
            for pid in parts.index[design.complete & ~np.isfinite(values)]:
                if pid in has_row[which]:
                    excluded.add((pid, feature, name, f"{feature} n/a at {sessions[which]}"))
        y = (change if design.uses_change else base)[feature].to_numpy(float)
        effect = _effect(y, design.x, design.cov, design.kind, alpha)
        if not np.isfinite(effect.estimate):
            skipped.append((feature, name, f"too few participants (n={effect.n})"))
            continue
        rows.append({"feature": feature, "contrast": name, "estimate": effect.estimate,
                     "ci_low": effect.ci_low, "ci_high": effect.ci_high, "p": effect.p,
                     "n": effect.n})
    table = pd.DataFrame(rows, columns=[c for c in FINDINGS_COLUMNS if c != "p_corrected"])
    table["p_corrected"] = holm(table["p"].to_numpy(float)) if len(table) else []
    excluded_table = pd.DataFrame(sorted(excluded, key=lambda r: (r[2], r[1], r[0])),
                                  columns=list(EXCLUDED_COLUMNS))
    return LongitudinalFindings(table[list(FINDINGS_COLUMNS)], excluded_table,
                                pd.DataFrame(skipped, columns=list(SKIPPED_COLUMNS)))


@dataclass(frozen=True)
class _Design:
    """What a contrast needs from the participants table, computed once per contrast."""

    kind: str
    x: np.ndarray               # regressor, NaN for non-members (and n/a)
    cov: np.ndarray             # covariates (n, c)
    uses_change: bool
    sessions: tuple[str, ...]   # the sessions the values come from
    reasons: list               # (participant, reason) of members left out whatever the feature
    complete: np.ndarray        # members with a session row, a regressor and covariates


def _design(parts: pd.DataFrame, contrast, module_covariates: tuple[str, ...],
            extra: pd.DataFrame | None, has_row: dict, sessions: dict) -> _Design | str:
    """The design of one contrast, or the reason it cannot be tested."""
    if _is_cross(contrast):
        spec = _contrasts.CONTRASTS[contrast]         # cross-sectional: on the baseline session
        needed = [spec.column] + (["group"] if spec.subset == "patients" else [])
        members = (_text(parts, "group") == "patient" if spec.subset == "patients"
                   else np.ones(len(parts), bool))
        kind, column, uses_change = spec.kind, spec.column, False
        covariates, source = tuple(spec.covariates) + tuple(module_covariates), extra
        make_x = lambda: _contrasts.regressor(parts, spec)     # noqa: E731
    else:
        spec = _spec(contrast)
        needed = _needs(spec)
        members = None
        kind, column, uses_change = spec.kind, spec.column, spec.uses_change
        covariates, source = tuple(spec.covariates) + tuple(module_covariates), extra
        make_x = lambda: _regressor(parts, spec)               # noqa: E731
    absent = [c for c in needed if c not in parts]
    if absent:
        return f"participants table has no {absent[0]!r} column"
    if members is None:
        members = _members(parts, spec.who)
    x = make_x()
    cov, used = _contrasts.covariate_matrix(parts, covariates, source)
    which = ("baseline", "followup") if uses_change else ("baseline",)
    names = [name.split("[")[0] for name in used]      # site[B] -> site
    ids = parts.index
    reasons = []
    for i in np.flatnonzero(members):
        why = [f"no {sessions[w]} session" for w in which if ids[i] not in has_row[w]]
        if column and not np.isfinite(x[i]):
            why.append(f"{column} n/a")
        why += [f"{name} n/a" for name in sorted({names[j] for j in
                                                   np.flatnonzero(~np.isfinite(cov[i]))})]
        if why:
            reasons.append((ids[i], "; ".join(why)))
    complete = members & np.isfinite(x) & np.all(np.isfinite(cov), axis=1)
    complete &= np.all([ids.isin(has_row[w]) for w in which], axis=0)
    return _Design(kind, x, cov, uses_change, which, reasons, complete)


# --------------------------------------------------------------------------------------------
# voxel-wise
# --------------------------------------------------------------------------------------------

def _check_maps(change: np.ndarray) -> np.ndarray:
    change = np.asarray(change, float)
    if change.ndim != 2:
        raise InputError(f"change maps must be (participants, voxels), got shape {change.shape}",
                         fix="stack each participant's follow-up minus baseline map as a row")
    return change


def change_map_test(change: np.ndarray, mask: np.ndarray | None = None, *,
                    covariates: np.ndarray | None = None, n_permutations: int = 5000,
                    tfce: bool = True, two_sided: bool = True,
                    random_state: int | np.random.Generator | None = 0,
                    **kwargs) -> PermutationResult:
    """Voxel-wise test of mean change in one group: sign flips with TFCE.

    The change maps (follow-up minus baseline) are tested against 0 with the one-sample t
    statistic; their signs are flipped at random (symmetric errors under the null of no
    change), as :func:`painplast.stats.permutation.permutation_test` does for an intercept
    contrast. Covariates, if given, are centred, so the tested effect is the mean change at
    their mean.

    Parameters
    ----------
    change : ndarray, shape (n, V)
        One change map per participant (masked voxels, ``image[mask]`` order).
    mask : ndarray of bool, shape (X, Y, Z), optional
        The brain mask with ``V`` True voxels; required with ``tfce=True``.
    covariates : ndarray, shape (n, c), optional
        Nuisance covariates (constant and collinear columns are dropped).
    n_permutations : int
        Sign flips drawn.
    tfce, two_sided, random_state, **kwargs
        Passed to :func:`~painplast.stats.permutation.permutation_test` (e.g. ``n_jobs``,
        ``connectivity``, ``blocks``).

    Returns
    -------
    PermutationResult
        ``t`` (positive: increase), ``p_fwe`` (max-t) and, with TFCE, ``tfce`` and
        ``p_fwe_tfce``, all of shape (V,).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> change = rng.normal(size=(20, 30))
    >>> change[:, :3] += 2.0
    >>> res = change_map_test(change, tfce=False, n_permutations=200)
    >>> res.scheme, bool(np.all(res.p_fwe[:3] < 0.05))
    ('sign-flip', True)
    """
    change = _check_maps(change)
    n = change.shape[0]
    if covariates is None or not np.size(covariates):
        design = np.ones((n, 1))
    else:
        # the intercept stands in for the tested regressor; the covariates that add rank stay
        kept = _design_matrix(np.ones(n), np.asarray(covariates, float).reshape(n, -1))[:, 2:]
        design = np.column_stack([np.ones(n), kept - kept.mean(axis=0)])
    contrast = np.zeros(design.shape[1])
    contrast[0] = 1.0
    return permutation_test(change, design, contrast, n_permutations=n_permutations, tfce=tfce,
                            mask=mask, two_sided=two_sided, random_state=random_state,
                            scheme="sign-flip", **kwargs)


def group_time_map_test(change: np.ndarray, group: np.ndarray, mask: np.ndarray | None = None,
                        *, covariates: np.ndarray | None = None, n_permutations: int = 5000,
                        tfce: bool = True, two_sided: bool = True,
                        blocks: Sequence | np.ndarray | None = None,
                        random_state: int | np.random.Generator | None = 0,
                        **kwargs) -> PermutationResult:
    """Voxel-wise group x time: change maps on group and covariates, Freedman-Lane with TFCE.

    The voxel-wise twin of ``group:time``: ``change ~ 1 + group + covariates``, the t of
    ``group`` (1 minus 0), rows permuted after removing the nuisance fit (Freedman & Lane 1983),
    within ``blocks`` (e.g. site) if given.

    Parameters
    ----------
    change : ndarray, shape (n, V)
        Change maps (follow-up minus baseline).
    group : ndarray, shape (n,)
        1 for the group whose extra change is tested (treated patients), 0 for the reference.
    mask : ndarray of bool, shape (X, Y, Z), optional
        Brain mask with ``V`` True voxels; required with ``tfce=True``.
    covariates : ndarray, shape (n, c), optional
        Age, sex, site columns...; constant and collinear columns are dropped.
    n_permutations, tfce, two_sided, blocks, random_state, **kwargs
        Passed to :func:`~painplast.stats.permutation.permutation_test`.

    Returns
    -------
    PermutationResult
        As :func:`change_map_test`; ``t`` positive where the group 1 changes more.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> group = np.repeat([1.0, 0.0], 15)
    >>> change = rng.normal(size=(30, 40))
    >>> change[:, :4] += 2.0 * group[:, None]
    >>> res = group_time_map_test(change, group, tfce=False, n_permutations=200)
    >>> res.scheme, bool(np.all(res.p_fwe[:4] < 0.05))
    ('permutation', True)
    """
    change = _check_maps(change)
    n = change.shape[0]
    group = np.asarray(group, float).ravel()
    if group.shape != (n,) or not np.all(np.isin(group, (0.0, 1.0))):
        raise InputError("group must hold one 1 or 0 per change map",
                         fix="code the tested group 1 and the reference group 0")
    cov = None if covariates is None or not np.size(covariates) else \
        np.asarray(covariates, float).reshape(n, -1)
    design = _design_matrix(group, cov)
    contrast = np.zeros(design.shape[1])
    contrast[1] = 1.0
    return permutation_test(change, design, contrast, n_permutations=n_permutations, tfce=tfce,
                            mask=mask, two_sided=two_sided, blocks=blocks,
                            random_state=random_state, scheme="permutation", **kwargs)
