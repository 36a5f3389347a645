"""The report's longitudinal and reliability sections (present only when their results are).

* ``longitudinal``: the longitudinal findings rows of every module (``time``, ``group:time``,
  ``change~pain_relief``, ``persisting-recovering``), spaghetti plots of the features with the
  strongest change (one line per participant from baseline to follow-up, coloured by group:
  chronic patients, subacute patients, controls) and change against pain relief for the
  strongest ``change~pain_relief`` row. Read from ``group/<module>_features_long.tsv`` and the
  findings tables.
* ``reliability``: ``group/reliability.tsv`` (``painplast reliability``): features ranked by
  ICC(3,1) with ICC(2,1) beside, Koo & Li's bands (poor < 0.5, moderate, good, excellent > 0.9),
  counts per band, and a warning beside every biomarker whose model uses poor features.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import figures as figs
from . import markup as html

__all__ = ["LONGITUDINAL", "longitudinal_section", "reliability_section", "spaghetti_plot",
           "change_plot"]

LONGITUDINAL = ("time", "group:time", "change~pain_relief", "persisting-recovering")
_COLOURS = {"chronic": "#c0392b", "subacute": "#e67e22", "control": "#2e86c1", "patient": "#8e44ad"}


def _read(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False)
    except (OSError, ValueError):
        return None


def _who(participants: pd.DataFrame) -> pd.Series:
    """chronic / subacute / control (or patient) per participant."""
    group = participants.get("group", pd.Series("", index=participants.index)).astype(str).str.lower()
    stage = participants.get("stage", pd.Series("", index=participants.index)).astype(str).str.lower()
    return pd.Series(np.where(stage.isin(["chronic", "subacute"]), stage, group), index=participants.index)


def spaghetti_plot(long: pd.DataFrame, feature: str, who: pd.Series, sessions: tuple[str, str]) -> bytes | None:
    """One line per participant from baseline to follow-up, coloured by group, group means bold.

    Examples
    --------
    >>> long = pd.DataFrame({"participant_id": ["a", "a", "b", "b"], "session": ["pre", "post"] * 2,
    ...                      "m.x": [1.0, 2.0, 1.5, 1.4]})
    >>> spaghetti_plot(long, "m.x", pd.Series({"a": "chronic", "b": "control"}), ("pre", "post"))[:4]
    b'\\x89PNG'
    """
    wide = long.pivot_table(index="participant_id", columns="session", values=feature)
    if not set(sessions) <= set(wide.columns):
        return None
    wide = wide[list(sessions)].dropna()
    if wide.empty:
        return None
    plt = figs._pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 3.4))
    for label in dict.fromkeys(who.reindex(wide.index).fillna("")):
        rows = wide[who.reindex(wide.index).fillna("").to_numpy() == label]
        colour = _COLOURS.get(label, "#7f8c8d")
        for values in rows.to_numpy():
            ax.plot([0, 1], values, color=colour, alpha=0.25, lw=0.8)
        ax.plot([0, 1], rows.mean().to_numpy(), color=colour, lw=3, label=f"{label or 'n/a'} (n={len(rows)})")
    ax.set_xticks([0, 1], list(sessions))
    ax.set_title(feature, fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    return figs.png(fig)


def change_plot(long: pd.DataFrame, feature: str, relief: pd.Series, sessions: tuple[str, str]) -> bytes | None:
    """Change (follow-up minus baseline) against pain relief (%), with the least-squares line.

    Examples
    --------
    >>> long = pd.DataFrame({"participant_id": list("abcabc"), "session": ["pre"] * 3 + ["post"] * 3,
    ...                      "m.x": [1.0, 1.0, 1.0, 1.2, 1.5, 1.9]})
    >>> change_plot(long, "m.x", pd.Series({"a": 10.0, "b": 50.0, "c": 90.0}), ("pre", "post"))[:4]
    b'\\x89PNG'
    """
    wide = long.pivot_table(index="participant_id", columns="session", values=feature)
    if not set(sessions) <= set(wide.columns):
        return None
    change = (wide[sessions[1]] - wide[sessions[0]]).rename("change")
    data = pd.concat([change, relief.rename("relief")], axis=1, join="inner").dropna()
    if len(data) < 3:
        return None
    plt = figs._pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 3.4))
    ax.scatter(data["relief"], data["change"], s=14, color=_COLOURS["chronic"])
    slope, intercept = np.polyfit(data["relief"], data["change"], 1)
    grid = np.linspace(data["relief"].min(), data["relief"].max(), 2)
    ax.plot(grid, intercept + slope * grid, color="black", lw=1)
    ax.axhline(0, color="#999", lw=0.5)
    ax.set_xlabel("pain relief (%)")
    ax.set_ylabel(f"change ({sessions[1]} - {sessions[0]})")
    ax.set_title(feature, fontsize=9)
    return figs.png(fig)


def _sessions(notes: list[str]) -> tuple[str, str] | None:
    for note in notes:
        if note.startswith("longitudinal contrasts: ") and " -> " in note:
            first, rest = note[len("longitudinal contrasts: "):].split(" -> ", 1)
            return first.strip(), rest.split(" ", 1)[0].strip()
    return None


def longitudinal_section(root: Path, modules, participants: pd.DataFrame, alpha: float):
    """The longitudinal section's body (a list of HTML parts), or None without longitudinal
    results."""

    group = root / "group"
    rows, longs, sessions = [], [], None
    for module in modules:
        notes = json.loads((group / f"{module}_notes.json").read_text()) \
            if (group / f"{module}_notes.json").exists() else {}
        pair = _sessions(notes.get("notes", []))
        findings, long = _read(group / f"{module}_findings.tsv"), _read(group / f"{module}_features_long.tsv")
        if pair is None or findings is None or long is None:
            continue
        sessions = sessions or pair
        rows.append(findings[findings["contrast"].isin(LONGITUDINAL)])
        longs.append(long.set_index(["participant_id", "session"]))
    if not rows or sessions is None:
        return None
    findings = pd.concat(rows, ignore_index=True).sort_values("p")
    long = pd.concat(longs, axis=1).reset_index()
    parts = participants.copy()
    parts.index = parts.index.astype(str)
    who = _who(parts)
    body = [html.tag("p", f"Change from {sessions[0]} to {sessions[1]}. time: d_z of the change in chronic "
                          "patients; group:time: Cohen's d of the change, chronic patients minus controls; "
                          "change~pain_relief: partial r of the change with pain relief; "
                          "persisting-recovering: baseline Cohen's d in subacute patients. Holm-corrected "
                          "within each module's findings.")]
    shown = findings[findings["contrast"].isin(("time", "group:time"))].drop_duplicates("feature").head(4)
    for feature in shown["feature"]:
        if feature in long:
            body.append(html.image(spaghetti_plot(long, feature, who, sessions), f"{feature} over sessions"))
    relief_rows = findings[findings["contrast"] == "change~pain_relief"].head(1)
    if len(relief_rows) and "pain_relief" in parts:
        feature = relief_rows["feature"].iloc[0]
        relief = pd.to_numeric(parts["pain_relief"], errors="coerce")
        relief = relief[who.reindex(relief.index) == "chronic"] if (who == "chronic").any() else relief
        if feature in long:
            body.append(html.image(change_plot(long, feature, relief, sessions), f"{feature} change vs relief"))
    body.append(html.table(findings, max_rows=60, caption="Longitudinal findings (all modules)"))
    return body


def _poor_biomarkers(root: Path, poor: set[str]) -> list[tuple[str, list[str]]]:
    out = []
    for path in sorted((root / "group").glob("biomarker_*.json")):
        try:
            result = json.loads(path.read_text())
            model = result.get("model")
            meta = json.loads((root / model / "model.json").read_text()) if model else {}
        except (OSError, ValueError, TypeError):
            continue
        names = meta.get("feature_names") or (meta.get("metadata") or {}).get("feature_names") or []
        bad = sorted(set(names) & poor)
        if bad:
            out.append((path.stem[len("biomarker_"):], bad))
    return out


def reliability_section(root: Path):
    """The reliability section's body (a list of HTML parts), or None without
    ``group/reliability.tsv``."""

    table = _read(root / "group" / "reliability.tsv")
    if table is None or table.empty:
        return None
    info = {}
    try:
        info = json.loads((root / "group" / "reliability.json").read_text())
    except (OSError, ValueError):
        pass
    consistency = table[table["kind"] == "ICC(3,1)"].set_index("feature")
    agreement = table[table["kind"] == "ICC(2,1)"].set_index("feature")
    ranked = consistency.assign(icc_2_1=agreement["icc"].reindex(consistency.index)).sort_values("icc", ascending=False)
    view = ranked.reset_index()[["feature", "module", "icc", "ci_low", "ci_high", "icc_2_1", "band", "n"]]
    view = view.rename(columns={"icc": "ICC(3,1)", "icc_2_1": "ICC(2,1)"})
    counts = ranked["band"].value_counts()
    body = [html.tag("p", f"Test-retest reliability from sessions {', '.join(info.get('sessions', []))} of "
                          f"{info.get('participants', '?')} participants ({info.get('who', '?')}): "
                          + ", ".join(f"{counts.get(b, 0)} {b}" for b in ("excellent", "good", "moderate", "poor"))
                          + " (Koo & Li 2016: poor < 0.5, moderate < 0.75, good <= 0.9, excellent > 0.9).")]
    poor = set(ranked.index[ranked["band"] == "poor"])
    for target, bad in _poor_biomarkers(root, poor):
        body.append(html.tag("p", f"Warning: the biomarker '{target}' uses {len(bad)} feature(s) of poor "
                                  f"reliability (ICC(3,1) < 0.5): {', '.join(bad[:8])}"
                                  + (" ..." if len(bad) > 8 else ""), class_="warning"))
    body.append(html.table(view, max_rows=80, caption="Features ranked by ICC(3,1)"))
    return body
