"""Figures of the report, drawn with matplotlib (Agg) and returned as PNG bytes.

Every function takes plain tables (pandas) and returns the PNG, or None when there is nothing to
draw; none reads or writes files.

Examples
--------
>>> import pandas as pd
>>> f = pd.DataFrame({"feature": ["structure.gm_dacc"], "contrast": ["patient-control"],
...                   "estimate": [-0.8], "ci_low": [-1.4], "ci_high": [-0.2], "p": [0.01],
...                   "p_corrected": [0.02], "n": [40]})
>>> forest_plot(f)[:4] == b"\\x89PNG"
True
"""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["cohort_bars", "motion_plot", "forest_plot", "roc_plot", "calibration_plot",
           "confusion_plot", "radar_plot", "png"]

GROUP_COLOURS = {"patient": "#c0392b", "control": "#2471a3", "responder": "#1e8449",
                 "non-responder": "#af7ac5", "all": "#555555"}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def png(fig, dpi: int = 110) -> bytes:
    """Render a matplotlib figure to PNG bytes (reproducible: no timestamp) and close it.

    Parameters
    ----------
    fig : matplotlib Figure
    dpi : int

    Returns
    -------
    bytes
    """
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def cohort_bars(participants: pd.DataFrame) -> bytes | None:
    """Participants per site, stacked by group.

    Parameters
    ----------
    participants : DataFrame
        Columns ``site`` and ``group`` (either may be missing).

    Returns
    -------
    bytes or None
    """
    if participants.empty:
        return None
    plt = _pyplot()
    site = participants["site"] if "site" in participants else pd.Series("all", index=participants.index)
    group = participants["group"] if "group" in participants else pd.Series("all", index=participants.index)
    counts = pd.crosstab(site.fillna("n/a").astype(str), group.fillna("n/a").astype(str))
    fig, ax = plt.subplots(figsize=(5, 2.8))
    bottom = np.zeros(len(counts))
    for col in counts.columns:
        ax.bar(counts.index, counts[col], bottom=bottom, label=col,
               color=GROUP_COLOURS.get(col, None))
        bottom += counts[col].to_numpy()
    ax.set_ylabel("participants")
    ax.set_title("Participants by site and group")
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.spines[["top", "right"]].set_visible(False)
    return png(fig)


def motion_plot(quality: pd.DataFrame, column: str, threshold: float | None = None) -> bytes | None:
    """One dot per participant of a motion measure (e.g. mean framewise displacement), by group.

    Parameters
    ----------
    quality : DataFrame
        Index ``participant_id``; ``column`` and optionally ``group`` and ``site``.
    column : str
    threshold : float, optional
        Exclusion threshold drawn as a dashed line.

    Returns
    -------
    bytes or None
    """
    values = pd.to_numeric(quality.get(column), errors="coerce") if column in quality else None
    if values is None or not values.notna().any():
        return None
    plt = _pyplot()
    group = quality["group"].fillna("n/a").astype(str) if "group" in quality else pd.Series("all", index=quality.index)
    levels = sorted(group.unique())
    fig, ax = plt.subplots(figsize=(5, 2.8))
    rng = np.random.default_rng(0)
    for i, level in enumerate(levels):
        v = values[group == level].dropna()
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(v)), v, s=14, alpha=0.8,
                   color=GROUP_COLOURS.get(level, "#555555"))
        if len(v):
            ax.hlines(v.median(), i - 0.25, i + 0.25, color="black", lw=1.5)
    if threshold is not None:
        ax.axhline(threshold, ls="--", color="grey", lw=1)
    ax.set_xticks(range(len(levels)), levels)
    ax.set_ylabel(column)
    ax.set_title(f"{column} per participant (line: median)")
    ax.spines[["top", "right"]].set_visible(False)
    return png(fig)


def forest_plot(findings: pd.DataFrame, alpha: float = 0.05, max_rows: int = 40) -> bytes | None:
    """Estimates with their 95% CIs, one row per feature and contrast.

    Parameters
    ----------
    findings : DataFrame
        The findings contract table (``feature``, ``contrast``, ``estimate``, ``ci_low``,
        ``ci_high``, ``p_corrected``).
    alpha : float
        Rows with ``p_corrected < alpha`` are drawn filled.
    max_rows : int
        The rows with the smallest corrected p are kept when there are more.

    Returns
    -------
    bytes or None
    """
    f = findings.dropna(subset=["estimate"])
    if f.empty:
        return None
    if len(f) > max_rows:
        f = f.sort_values("p_corrected", kind="stable").head(max_rows)
    f = f.iloc[::-1]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 0.28 * len(f) + 1.2))
    y = np.arange(len(f))
    sig = pd.to_numeric(f["p_corrected"], errors="coerce").to_numpy() < alpha
    est = f["estimate"].to_numpy(float)
    lo, hi = f["ci_low"].to_numpy(float), f["ci_high"].to_numpy(float)
    ax.hlines(y, lo, hi, color="#444444", lw=1.2)
    ax.scatter(est[~sig], y[~sig], facecolor="white", edgecolor="#444444", zorder=3, s=28)
    ax.scatter(est[sig], y[sig], color="#c0392b", zorder=3, s=28, label=f"p(corrected) < {alpha:g}")
    ax.axvline(0, color="grey", lw=0.8)
    labels = [f"{feat.split('.', 1)[-1]}  [{con}]" for feat, con in zip(f["feature"], f["contrast"])]
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("standardized estimate (Cohen's d or r) with 95% CI")
    if sig.any():
        ax.legend(frameon=False, fontsize=8, loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)
    return png(fig)


def _roc_points(positive: np.ndarray, score: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """True-positive rate at each false-positive rate of ``grid`` (step interpolation)."""
    order = np.argsort(-score, kind="stable")
    pos = positive[order]
    tpr = np.concatenate([[0], np.cumsum(pos) / max(pos.sum(), 1)])
    fpr = np.concatenate([[0], np.cumsum(~pos) / max((~pos).sum(), 1)])
    return np.interp(grid, fpr, tpr)


def roc_plot(positive: Sequence[bool], score: Sequence[float], auc: dict | None = None,
             n_bootstrap: int = 500, random_state: int = 0, title: str = "ROC") -> bytes | None:
    """ROC curve of out-of-fold scores with a 95% bootstrap band.

    Parameters
    ----------
    positive : array_like of bool, shape (n,)
    score : array_like, shape (n,)
        Higher means more likely positive.
    auc : dict, optional
        ``{"estimate", "ci_low", "ci_high"}`` written in the legend.
    n_bootstrap : int
    random_state : int
    title : str

    Returns
    -------
    bytes or None
        None when a class is missing.
    """
    positive = np.asarray(positive, bool)
    score = np.asarray(score, float)
    ok = np.isfinite(score)
    positive, score = positive[ok], score[ok]
    if positive.all() or not positive.any():
        return None
    plt = _pyplot()
    grid = np.linspace(0, 1, 101)
    curve = _roc_points(positive, score, grid)
    rng = np.random.default_rng(random_state)
    pos_idx, neg_idx = np.flatnonzero(positive), np.flatnonzero(~positive)
    boots = []
    for _ in range(n_bootstrap):
        idx = np.concatenate([rng.choice(pos_idx, len(pos_idx)), rng.choice(neg_idx, len(neg_idx))])
        boots.append(_roc_points(positive[idx], score[idx], grid))
    low, high = np.percentile(np.array(boots), [2.5, 97.5], axis=0)
    fig, ax = plt.subplots(figsize=(3.8, 3.6))
    ax.fill_between(grid, low, high, color="#2471a3", alpha=0.2, lw=0, label="95% bootstrap band")
    label = "out-of-fold ROC"
    if auc and auc.get("estimate") is not None:
        label += f"\nAUC {auc['estimate']:.2f}"
        if auc.get("ci_low") is not None and auc.get("ci_high") is not None:
            label += f" [{auc['ci_low']:.2f}, {auc['ci_high']:.2f}]"
    ax.step(grid, curve, where="post", color="#2471a3", lw=2, label=label)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=7, loc="lower right")
    ax.set_aspect("equal")
    return png(fig)


def calibration_plot(bins: Sequence[dict], title: str = "Calibration") -> bytes | None:
    """Observed fraction of positives against mean predicted probability per bin.

    Parameters
    ----------
    bins : list of dict
        ``{"predicted", "observed", "n"}`` (``calibration`` of ``biomarker_<target>.json``).
    title : str

    Returns
    -------
    bytes or None
    """
    rows = [b for b in bins or [] if b.get("predicted") is not None and b.get("observed") is not None]
    if not rows:
        return None
    plt = _pyplot()
    x = np.array([b["predicted"] for b in rows], float)
    y = np.array([b["observed"] for b in rows], float)
    n = np.array([b.get("n", 1) or 1 for b in rows], float)
    se = np.sqrt(np.clip(y * (1 - y), 1e-9, None) / n)
    fig, ax = plt.subplots(figsize=(3.8, 3.6))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="perfect calibration")
    ax.errorbar(x, y, yerr=1.96 * se, fmt="o-", color="#c0392b", capsize=3, label="observed (95% CI)")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed fraction")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=7, loc="upper left")
    ax.set_aspect("equal")
    return png(fig)


def confusion_plot(truth: Sequence[str], predicted: Sequence[str], title: str = "Confusion matrix") -> bytes | None:
    """Counts of true against predicted class.

    Parameters
    ----------
    truth, predicted : array_like of str, shape (n,)
    title : str

    Returns
    -------
    bytes or None
    """
    t = pd.Series(list(truth), dtype=object).astype(str)
    p = pd.Series(list(predicted), dtype=object).astype(str)
    if t.empty:
        return None
    classes = sorted(set(t) | set(p))
    table = pd.crosstab(t, p).reindex(index=classes, columns=classes, fill_value=0)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    ax.imshow(table.to_numpy(), cmap="Blues")
    vmax = table.to_numpy().max()
    for i in range(len(classes)):
        for j in range(len(classes)):
            v = int(table.iloc[i, j])
            ax.text(j, i, str(v), ha="center", va="center",
                    color="white" if v > vmax / 2 else "black", fontsize=11)
    ax.set_xticks(range(len(classes)), classes, fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted (out of fold)")
    ax.set_ylabel("true")
    ax.set_title(title)
    return png(fig)


def radar_plot(profiles: dict[str, pd.Series], title: str = "Plasticity profile") -> bytes | None:
    """Radar chart of axis scores (one polygon per group).

    Parameters
    ----------
    profiles : dict of str to Series
        ``{label: scores}``, each Series indexed by axis name (the plasticity categories).
    title : str

    Returns
    -------
    bytes or None
    """
    profiles = {k: v.dropna() for k, v in profiles.items() if v is not None and v.notna().any()}
    if not profiles:
        return None
    axes = [a for a in next(iter(profiles.values())).index]
    for v in profiles.values():
        axes += [a for a in v.index if a not in axes]
    if len(axes) < 3:
        return None
    plt = _pyplot()
    angles = np.linspace(0, 2 * np.pi, len(axes), endpoint=False)
    fig = plt.figure(figsize=(4.2, 4.2))
    ax = fig.add_subplot(projection="polar")
    for label, scores in profiles.items():
        values = scores.reindex(axes).to_numpy(float)
        closed = np.concatenate([values, values[:1]])
        ang = np.concatenate([angles, angles[:1]])
        colour = GROUP_COLOURS.get(label.split(" ")[0], None)
        ax.plot(ang, closed, lw=2, label=label, color=colour)
        ax.fill(ang, closed, alpha=0.12, color=colour)
    ax.plot(np.linspace(0, 2 * np.pi, 100), np.ones(100), ls="--", color="grey", lw=0.8)
    ax.set_xticks(angles, axes, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=7, loc="upper right", bbox_to_anchor=(1.35, 1.12))
    return png(fig)
