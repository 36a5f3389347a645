"""fMRIPrep confound regressors chosen by a strategy string, shared by the task and rest modules."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import InputError

MOTION = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
#: Parts of a strategy string; ``spikes`` is understood here but applied by the caller
#: (spike regressors in a first-level model, scrubbing in connectivity).
STRATEGY_PARTS = ("motion6", "motion24", "wm_csf", "acompcor", "global", "spikes")


def parse_strategy(strategy: str | None) -> list[str]:
    """The parts of a ``+``-joined strategy (``""`` or ``"none"``: no part).

    Examples
    --------
    >>> parse_strategy("motion24+wm_csf")
    ['motion24', 'wm_csf']
    """
    parts = [p.strip() for p in str(strategy or "").split("+") if p.strip() and p.strip() != "none"]
    unknown = [p for p in parts if p not in STRATEGY_PARTS]
    if unknown:
        raise InputError(f"unknown confound strategy part(s) {', '.join(unknown)} in '{strategy}'",
                         fix=f"join parts from {', '.join(STRATEGY_PARTS)} with '+'")
    return parts


def confound_regressors(table: pd.DataFrame, strategy: str, path=None,
                        global_column: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """Confound regressors picked from an fMRIPrep confounds table by a strategy string.

    Parameters
    ----------
    table : DataFrame, shape (T, n_columns)
        ``desc-confounds_timeseries.tsv`` (``n/a`` as NaN).
    strategy : str
        ``+``-joined parts: ``motion6`` or ``motion24`` (realignment parameters, with temporal
        derivatives and squares for 24), ``wm_csf``, ``acompcor`` (first five ``a_comp_cor_*``
        columns where present, none if the file has none), ``global``; ``spikes`` is accepted and
        left to the caller. ``""``: none.
    path : path, optional
        The file, for messages.
    global_column : ndarray, shape (T,), optional
        Global signal to use for ``global`` when the table has no ``global_signal`` column.

    Returns
    -------
    confounds : ndarray, shape (T, k), float64
        Finite (fMRIPrep's ``n/a`` in the first row of derivatives becomes 0).
    names : list of str, length k

    Examples
    --------
    >>> t = pd.DataFrame({c: np.arange(5.0) for c in MOTION})
    >>> confound_regressors(t, "motion6")[0].shape
    (5, 6)
    """
    parts = parse_strategy(strategy)
    cols: list[str] = []
    if "motion24" in parts:
        cols += [f"{m}{s}" for m in MOTION for s in ("", "_derivative1", "_power2", "_derivative1_power2")]
    elif "motion6" in parts:
        cols += list(MOTION)
    if "wm_csf" in parts:
        cols += ["white_matter", "csf"]
    if "acompcor" in parts:
        cols += [c for c in (f"a_comp_cor_{i:02d}" for i in range(5)) if c in table.columns]
    extra = []
    if "global" in parts:
        if "global_signal" in table.columns:
            cols.append("global_signal")
        elif global_column is not None:
            extra.append(("global_signal", np.asarray(global_column, float)))
        else:
            raise InputError("the global signal was asked for but there is none", path=path,
                             fix="drop 'global' from the confounds strategy")
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise InputError(f"the confounds file lacks column(s) {', '.join(missing[:4])}", path=path,
                         fix="use fMRIPrep's desc-confounds_timeseries.tsv, or a simpler confounds_strategy")
    out = table[cols].apply(pd.to_numeric, errors="coerce").to_numpy(float) if cols else np.empty((len(table), 0))
    if extra:
        out = np.column_stack([out] + [v for _, v in extra])
        cols += [n for n, _ in extra]
    return np.nan_to_num(out, nan=0.0), cols
