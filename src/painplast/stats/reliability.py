"""Test-retest reliability: intraclass correlations of many features at once.

Two intraclass correlations of McGraw & Wong (1996) from the two-way ANOVA of an
(n subjects x k sessions) table, with their F-based 95% intervals and the F test of ICC = 0:

* ``ICC(2,1)`` -- McGraw & Wong's ICC(A,1): two-way random effects, absolute agreement, one
  measurement. Systematic differences between sessions (a scanner upgrade, a practice effect)
  count as error: ``(MSR - MSE) / (MSR + (k - 1) MSE + k (MSC - MSE) / n)``. Its interval uses
  the Satterthwaite-type degrees of freedom McGraw & Wong give (their Table 7, case 2A).
* ``ICC(3,1)`` -- ICC(C,1): two-way mixed effects, consistency, one measurement. Session means
  are removed first: ``(MSR - MSE) / (MSR + (k - 1) MSE)``. Its interval is exact under the
  normal model (F-distributed ``MSR / MSE`` scaled by ``(1 + (k - 1) rho) / (1 - rho)``).

``MSR``, ``MSC`` and ``MSE`` are the mean squares of subjects (rows), sessions (columns) and the
residual. Both coefficients test ``F = MSR / MSE`` on ``(n - 1, (n - 1)(k - 1))`` degrees of
freedom against ICC = 0. The names ``ICC(2,1)`` / ``ICC(3,1)`` are Shrout & Fleiss's (1979); the
values are those of pingouin's ``intraclass_corr`` (rows ``ICC2`` and ``ICC3``).

Missing values are handled as pingouin's ``nan_policy="omit"`` does, per feature: a subject
missing any session of a feature is left out of that feature's ANOVA (the ``n`` column says how
many subjects entered). The ANOVA needs a complete subjects x sessions table; imputing a
session would invent agreement.

Features are processed together: ``Y`` of shape (n, k, p) gives p rows per coefficient in a
handful of array operations, so thousands of edges cost about as much as one feature.

References
----------
McGraw KO, Wong SP (1996). Forming inferences about some intraclass correlation coefficients.
Psychological Methods 1(1):30-46 (and the correction, 1(4):390).
Shrout PE, Fleiss JL (1979). Intraclass correlations: uses in assessing rater reliability.
Psychological Bulletin 86(2):420-428.
Koo TK, Li MY (2016). A guideline of selecting and reporting intraclass correlation
coefficients for reliability research. J Chiropr Med 15(2):155-163.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as _st

from painplast.errors import InputError

__all__ = ["ICC_COLUMNS", "ICC_KINDS", "MeanSquares", "mean_squares", "icc", "icc_from_long",
           "icc_band", "ICC_BANDS", "long_frame"]

#: Columns of a reliability table (one row per feature and kind of ICC).
ICC_COLUMNS = ("feature", "icc", "kind", "ci_low", "ci_high", "F", "df1", "df2", "p", "n")
#: The coefficients computed, in McGraw & Wong's names: ICC(2,1) = ICC(A,1), ICC(3,1) = ICC(C,1).
ICC_KINDS = ("ICC(2,1)", "ICC(3,1)")
_ALIASES = {"ICC(2,1)": "ICC(2,1)", "ICC2": "ICC(2,1)", "ICC(A,1)": "ICC(2,1)",
            "ICC(3,1)": "ICC(3,1)", "ICC3": "ICC(3,1)", "ICC(C,1)": "ICC(3,1)"}
#: Koo & Li's (2016) bands, lowest first (see :func:`icc_band` for the thresholds).
ICC_BANDS = ("poor", "moderate", "good", "excellent")


@dataclass(frozen=True)
class MeanSquares:
    """Two-way ANOVA (subjects x sessions, one observation per cell) of each feature.

    Attributes
    ----------
    msr, msc, mse : ndarray, shape (p,)
        Mean squares of subjects (rows, ``n - 1`` df), sessions (columns, ``k - 1`` df) and the
        residual (``(n - 1)(k - 1)`` df).
    n : ndarray of int, shape (p,)
        Complete subjects per feature (those with every session).
    k : int
        Sessions.
    """

    msr: np.ndarray
    msc: np.ndarray
    mse: np.ndarray
    n: np.ndarray
    k: int


def _as_3d(Y) -> np.ndarray:
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim == 2:
        Y = Y[:, :, None]
    if Y.ndim != 3:
        raise InputError(f"ICC needs an (n subjects, k sessions[, p features]) array, got shape "
                         f"{Y.shape}", fix="give one row per subject and one column per session")
    if Y.shape[1] < 2:
        raise InputError(f"ICC needs at least two sessions, got {Y.shape[1]}",
                         fix="give repeated sessions of the same subjects")
    return Y


def mean_squares(Y) -> MeanSquares:
    """Mean squares of the two-way ANOVA without replication, per feature.

    Parameters
    ----------
    Y : array-like, shape (n, k) or (n, k, p)
        Subjects x sessions (x features). A subject with a non-finite value in any session of a
        feature is left out of that feature.

    Returns
    -------
    MeanSquares

    Examples
    --------
    >>> ms = mean_squares([[1.0, 2.0], [3.0, 5.0], [6.0, 6.0]])
    >>> ms.msr.round(3).tolist(), ms.msc.round(3).tolist(), ms.mse.round(3).tolist(), ms.n.tolist()
    ([10.167], [1.5], [0.5], [3])
    """
    Y = _as_3d(Y)
    n_all, k, _ = Y.shape
    complete = np.all(np.isfinite(Y), axis=1)                        # (n, p)
    n = complete.sum(axis=0)                                         # (p,)
    Yc = np.where(complete[:, None, :], Y, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        subject_mean = Yc.mean(axis=1)                               # (n, p)
        session_mean = Yc.sum(axis=0) / n                            # (k, p)
        grand = session_mean.mean(axis=0)                            # (p,)
        residual = Yc - subject_mean[:, None, :] - session_mean[None] + grand
        residual *= complete[:, None, :]
        ss_rows = k * np.sum(complete * (subject_mean - grand) ** 2, axis=0)
        ss_cols = n * np.sum((session_mean - grand) ** 2, axis=0)
        ss_error = np.einsum("ikp,ikp->p", residual, residual)
        msr = ss_rows / (n - 1)
        msc = ss_cols / (k - 1)
        mse = ss_error / ((n - 1) * (k - 1))
    return MeanSquares(msr, msc, mse, n.astype(int), int(k))


def _icc_consistency(ms: MeanSquares, alpha: float) -> dict[str, np.ndarray]:
    """ICC(C,1) with McGraw & Wong's exact F interval (their Table 7, case 3)."""
    n, k = ms.n, ms.k
    df1, df2 = n - 1, (n - 1) * (k - 1)
    F = ms.msr / ms.mse
    value = (ms.msr - ms.mse) / (ms.msr + (k - 1) * ms.mse)
    f_low = F / _st.f.ppf(1 - alpha / 2, df1, df2)
    f_high = F * _st.f.ppf(1 - alpha / 2, df2, df1)
    return dict(icc=value, ci_low=(f_low - 1) / (f_low + k - 1),
                ci_high=(f_high - 1) / (f_high + k - 1), F=F, df1=df1, df2=df2,
                p=_st.f.sf(F, df1, df2))


def _icc_agreement(ms: MeanSquares, alpha: float) -> dict[str, np.ndarray]:
    """ICC(A,1) with McGraw & Wong's approximate interval (their Table 7, case 2A).

    The interval inverts ``F = MSR / (a MSC + b MSE)`` with Satterthwaite's degrees of freedom
    ``v`` for the denominator, where ``a = k rho / (n (1 - rho))`` and
    ``b = 1 + k rho (n - 1) / (n (1 - rho))`` are evaluated at the estimate ``rho``.
    """
    n, k = ms.n, ms.k
    msr, msc, mse = ms.msr, ms.msc, ms.mse
    df1, df2 = n - 1, (n - 1) * (k - 1)
    F = msr / mse
    value = (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)
    a = k * value / (n * (1 - value))
    b = 1 + k * value * (n - 1) / (n * (1 - value))
    v = (a * msc + b * mse) ** 2 / ((a * msc) ** 2 / (k - 1) + (b * mse) ** 2 / df2)
    f_star = _st.f.ppf(1 - alpha / 2, df1, v)
    f_star2 = _st.f.ppf(1 - alpha / 2, v, df1)
    spread = k * msc + (k * n - k - n) * mse
    low = n * (msr - f_star * mse) / (f_star * spread + n * msr)
    high = n * (f_star2 * msr - mse) / (spread + n * f_star2 * msr)
    return dict(icc=value, ci_low=low, ci_high=high, F=F, df1=df1, df2=df2,
                p=_st.f.sf(F, df1, df2))


def _kinds(kinds: str | Sequence[str]) -> list[str]:
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    bad = [kind for kind in kinds if kind not in _ALIASES]
    if bad or not kinds:
        raise InputError(f"unknown ICC kind(s) {bad or kinds!r}",
                         fix="use 'ICC(2,1)' (absolute agreement) and/or 'ICC(3,1)' (consistency)")
    return [_ALIASES[kind] for kind in kinds]


def icc(Y, features: Sequence[str] | None = None, *,
        kinds: str | Sequence[str] = ICC_KINDS, alpha: float = 0.05) -> pd.DataFrame:
    """ICC(2,1) and ICC(3,1) with 95% intervals of one or many features.

    Parameters
    ----------
    Y : array-like, shape (n, k) or (n, k, p)
        Subjects x sessions (x features). Per feature, subjects missing any session are left
        out (pingouin's ``nan_policy="omit"``); ``n`` counts the subjects used.
    features : sequence of str, optional
        Names of the p features (default ``"0"``, ``"1"``, ...).
    kinds : str or sequence of str
        ``"ICC(2,1)"`` (alias ``"ICC(A,1)"``, ``"ICC2"``) and/or ``"ICC(3,1)"`` (``"ICC(C,1)"``,
        ``"ICC3"``).
    alpha : float
        1 - confidence level of the intervals.

    Returns
    -------
    DataFrame
        Columns :data:`ICC_COLUMNS` (``feature, icc, kind, ci_low, ci_high, F, df1, df2, p,
        n``): one row per feature and kind, features in input order. ``F`` is ``MSR / MSE`` on
        ``(df1, df2) = (n - 1, (n - 1)(k - 1))`` degrees of freedom and ``p`` its one-sided
        p-value against ICC = 0. Features with fewer than two complete subjects give NaN.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> subject = rng.normal(size=(200, 1))
    >>> Y = subject + 0.5 * rng.normal(size=(200, 2))      # true ICC = 1 / 1.25 = 0.8
    >>> table = icc(Y, ["gm"])
    >>> table[["kind", "n"]].values.tolist()
    [['ICC(2,1)', 200], ['ICC(3,1)', 200]]
    >>> bool(np.all((table.ci_low < 0.8) & (0.8 < table.ci_high)))
    True
    """
    Y = _as_3d(Y)
    p = Y.shape[2]
    names = [str(j) for j in range(p)] if features is None else [str(f) for f in features]
    if len(names) != p:
        raise InputError(f"{len(names)} feature names for {p} features",
                         fix="give one name per feature (the last axis of Y)")
    if not 0 < alpha < 1:
        raise InputError(f"alpha must lie between 0 and 1, got {alpha!r}")
    ms = mean_squares(Y)
    parts = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for kind in _kinds(kinds):
            out = (_icc_agreement if kind == "ICC(2,1)" else _icc_consistency)(ms, alpha)
            too_few = ms.n < 2
            frame = pd.DataFrame({"feature": names, "kind": kind, "n": ms.n, "order": np.arange(p)})
            for column in ("icc", "ci_low", "ci_high", "F", "p"):
                frame[column] = np.where(too_few, np.nan, np.asarray(out[column], float))
            frame["df1"] = np.asarray(out["df1"], int)
            frame["df2"] = np.asarray(out["df2"], int)
            parts.append(frame)
    table = pd.concat(parts, ignore_index=True)
    table["kind_order"] = table["kind"].map({kind: j for j, kind in enumerate(ICC_KINDS)})
    table = table.sort_values(["order", "kind_order"], kind="stable").reset_index(drop=True)
    return table[list(ICC_COLUMNS)]


def long_frame(table: pd.DataFrame, columns: Sequence[str] | None, subject: str,
               session: str) -> tuple[pd.DataFrame, list[str]]:
    """A long table (one row per subject and session) and its feature columns, checked.

    ``subject`` and ``session`` may be columns or index levels; ``columns`` defaults to every
    numeric column but those two.

    Raises
    ------
    InputError
        The table lacks ``subject``, ``session`` or a named column.

    Examples
    --------
    >>> frame, cols = long_frame(pd.DataFrame({"id": [1, 1], "ses": ["a", "b"], "x": [0., 1.]}),
    ...                          None, "id", "ses")
    >>> cols
    ['x']
    """
    frame = table.reset_index() if {subject, session} - set(table.columns) else table
    missing = [c for c in (subject, session) if c not in frame]
    if missing:
        raise InputError(f"the feature table has no {missing[0]!r} column",
                         fix=f"give one row per {subject} and {session}")
    if columns is None:
        columns = [c for c in frame.columns if c not in (subject, session)
                   and pd.api.types.is_numeric_dtype(frame[c])]
    absent = [c for c in columns if c not in frame]
    if absent:
        raise InputError(f"the feature table has no column {absent[0]!r}",
                         fix="name feature columns that exist")
    return frame, list(columns)


def icc_from_long(table: pd.DataFrame, features: Sequence[str] | None = None, *,
                  subject: str = "participant_id", session: str = "session",
                  sessions: Sequence[str] | None = None,
                  kinds: str | Sequence[str] = ICC_KINDS, alpha: float = 0.05) -> pd.DataFrame:
    """ICCs of the feature columns of a long table (one row per subject and session).

    Parameters
    ----------
    table : DataFrame
        Columns (or index levels) ``subject`` and ``session`` and one column per feature.
    features : sequence of str, optional
        Feature columns (default: every numeric column but ``subject`` and ``session``).
    subject, session : str
        Names of the subject and session columns.
    sessions : sequence of str, optional
        The sessions compared, in order (default: all, sorted). Rows of other sessions are
        ignored.
    kinds, alpha
        As in :func:`icc`.

    Returns
    -------
    DataFrame
        As :func:`icc`. ``table.attrs["left_out"]`` maps each feature to the subjects left out
        of it (missing a session or with a non-finite value in one).

    Examples
    --------
    >>> long = pd.DataFrame({"participant_id": ["sub-1", "sub-1", "sub-2", "sub-2", "sub-3"],
    ...                      "session": ["1", "2", "1", "2", "1"],
    ...                      "gm": [0.50, 0.52, 0.61, 0.60, 0.40]})
    >>> out = icc_from_long(long, kinds="ICC(3,1)")
    >>> out.n.tolist(), out.attrs["left_out"]
    ([2], {'gm': ['sub-3']})
    """
    frame, features = long_frame(table, features, subject, session)
    labels = frame[session].astype(str)
    order = sorted(labels.unique()) if sessions is None else [str(s) for s in sessions]
    rows = frame[labels.isin(order)]
    if rows.duplicated([subject, session]).any():
        dup = rows.loc[rows.duplicated([subject, session]), [subject, session]].iloc[0].tolist()
        raise InputError(f"the feature table has several rows for {subject} {dup[0]!r}, "
                         f"{session} {dup[1]!r}", fix="give one row per subject and session")
    wide = rows.assign(**{session: rows[session].astype(str)}).pivot(
        index=subject, columns=session, values=list(features))
    wide = wide.reindex(columns=pd.MultiIndex.from_product([list(features), order]))
    values = wide.to_numpy(float).reshape(len(wide), len(features), len(order)).transpose(0, 2, 1)
    out = icc(values, list(features), kinds=kinds, alpha=alpha)
    complete = np.all(np.isfinite(values), axis=1)
    out.attrs["left_out"] = {f: wide.index[~complete[:, j]].astype(str).tolist()
                             for j, f in enumerate(features) if not complete[:, j].all()}
    return out


def icc_band(value):
    """Koo & Li's (2016) band of an ICC: poor, moderate, good or excellent.

    Poor below 0.5, moderate from 0.5 to below 0.75, good from 0.75 to 0.9, excellent above
    0.9. Koo & Li advise judging by the whole 95% interval, so apply this to ``ci_low`` and
    ``ci_high`` as well when a band must be guaranteed. NaN gives ``""``.

    Parameters
    ----------
    value : float or array-like

    Returns
    -------
    str or ndarray of str

    Examples
    --------
    >>> icc_band(0.84), icc_band([0.29, 0.5, 0.9, 0.95, float("nan")]).tolist()
    ('good', ['poor', 'moderate', 'good', 'excellent', ''])
    """
    values = np.asarray(value, float)
    names = np.array([*ICC_BANDS, ""], dtype=object)
    # poor < 0.5 <= moderate < 0.75 <= good <= 0.9 < excellent
    index = np.select([~np.isfinite(values), values > 0.9, values >= 0.75, values >= 0.5],
                      [4, 3, 2, 1], default=0)
    if values.ndim == 0:
        return str(names[int(index)])
    return names[index].astype(str)
