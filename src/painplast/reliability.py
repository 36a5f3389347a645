"""Test-retest reliability of every feature from repeated sessions of people who should not change.

``painplast reliability BIDS_DIR OUTPUT_DIR`` reads the participant results that
``painplast run ... participant`` wrote for every session, keeps the participants who should
not change between sessions (controls by default: ``--who``; everyone for a test-retest
dataset without a ``group`` column) and computes, per feature, ICC(2,1) (absolute agreement)
and ICC(3,1) (consistency) with McGraw & Wong's 95% intervals
(:func:`painplast.stats.reliability.icc_from_long`). It writes ``group/reliability.tsv``
(columns of :data:`painplast.stats.reliability.ICC_COLUMNS` plus ``module`` and ``band``, Koo &
Li's poor < 0.5 <= moderate < 0.75 <= good <= 0.9 < excellent, ranked by ICC within each kind)
and ``group/reliability.json`` (sessions, participants, who was left out and why).

A participant missing a session of a feature, or excluded for quality in one, is left out of
that feature's ICC (the ANOVA needs every session): imputing a session would invent agreement.

A biomarker is only as reliable as the score it gives one person twice: every model that
``painplast run ... group --biomarker TARGET`` saved under ``models/`` is applied to each
session's features of the same participants (as ``painplast predict`` applies it) and its
predicted score (the probability of the positive class, or the predicted value) gets its ICCs
as the feature ``biomarker.<target>``. A model that cannot be applied to these sessions (other
features) is named in ``reliability.json`` with the reason.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .cohort import Cohort
from .config import Config
from .derivatives import Derivatives, write_json, write_tsv
from .errors import InputError
from .stats.reliability import icc_band, icc_from_long

__all__ = ["WHO", "retest_table", "reliability_table", "prediction_table", "run_reliability"]

#: Participant subsets of ``--who``.
WHO = ("controls", "patients", "all")


def _strip(label: str) -> str:
    return label[4:] if label.startswith("ses-") else label


def retest_table(cohort: Cohort, config: Config, out_dir: str | os.PathLike,
                 sessions: Sequence[str] | None = None, who: str = "controls"
                 ) -> tuple[pd.DataFrame, dict]:
    """Long table (``participant_id``, ``session``, features) of the repeated sessions.

    Parameters
    ----------
    cohort : Cohort
    config : Config
        Its modules, and the parameter hash their results must have been written with.
    out_dir : path
        The output folder of ``painplast run``.
    sessions : sequence of str, optional
        The sessions compared (default: every session of the cohort, earliest first).
    who : {"controls", "patients", "all"}
        Whose sessions: controls by default (``all`` when participants.tsv has no ``group``).

    Returns
    -------
    long : DataFrame
    info : dict
        ``sessions``, ``who``, ``participants`` and ``left_out`` (``{participant: reason}``).
    """
    if who not in WHO:
        raise InputError(f"--who {who!r} is not one of {', '.join(WHO)}", fix="give --who controls, patients or all")
    present = list(dict.fromkeys(s for subject in cohort.subjects for s in subject.sessions if s is not None))
    chosen = [_strip(str(s)) for s in sessions] if sessions else present
    absent = [s for s in chosen if s not in present]
    if absent or len(chosen) < 2:
        raise InputError(f"reliability needs two or more sessions; the cohort has "
                         f"{', '.join(present) or 'none'}" + (f", not {absent[0]}" if absent else ""),
                         path=cohort.root, fix="name sessions the dataset has with --sessions A,B")
    parts = cohort.participants
    if who == "all" or "group" not in parts:
        members = set(parts.index)
        who = "all"
    else:
        wanted = "control" if who == "controls" else "patient"
        members = set(parts.index[parts["group"].astype(str).str.lower() == wanted])
    deriv = Derivatives(out_dir)
    rows, left_out = [], {}
    for subject in cohort.subjects:
        pid = subject.participant_id
        if pid not in members:
            continue
        for ses in chosen:
            row = {"participant_id": pid, "session": ses}
            for module in config.modules:
                if not deriv.is_done(pid, module, config.parameter_hash(module), ses):
                    left_out.setdefault(pid, f"no {module} result for session {ses}")
                    continue
                result = deriv.read_subject(pid, module, ses)
                if result is None:
                    continue
                if result.excluded:
                    left_out.setdefault(pid, f"{module} excluded at {ses}: {result.excluded}")
                    continue
                row.update({k: float(v) for k, v in result.features.items()})
            rows.append(row)
    long = pd.DataFrame(rows)
    if long.empty or len(long.columns) <= 2:
        raise InputError(f"no participant results of the {who} in sessions {', '.join(chosen)}", path=out_dir,
                         fix="run 'painplast run BIDS_DIR OUTPUT_DIR participant' for every session first, "
                             "with the same --modules")
    info = {"sessions": chosen, "who": who, "participants": int(long["participant_id"].nunique()),
            "left_out": left_out}
    return long, info


def reliability_table(long: pd.DataFrame, sessions: Sequence[str], alpha: float = 0.05) -> pd.DataFrame:
    """ICC(2,1) and ICC(3,1) of every feature column of a long table, with module and band.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> trait = rng.normal(size=50)
    >>> long = pd.DataFrame({"participant_id": list(range(50)) * 2, "session": ["a"] * 50 + ["b"] * 50,
    ...                      "m.x": np.r_[trait, trait + 0.3 * rng.normal(size=50)]})
    >>> table = reliability_table(long, ["a", "b"])
    >>> table[["feature", "module", "kind", "band"]].values.tolist()[0]
    ['m.x', 'm', 'ICC(2,1)', 'excellent']
    """
    features = [c for c in long.columns if c not in ("participant_id", "session")
                and np.isfinite(long[c].to_numpy(float)).sum() > 0]
    table = icc_from_long(long, features, subject="participant_id", session="session",
                          sessions=list(sessions), alpha=alpha)
    table.insert(1, "module", table["feature"].str.split(".").str[0])
    table["band"] = icc_band(table["icc"].to_numpy(float))
    table = table.sort_values(["kind", "icc"], ascending=[True, False], kind="stable")
    return table.reset_index(drop=True)


def prediction_table(cohort: Cohort, out_dir: str | os.PathLike, sessions: Sequence[str],
                     participants: Sequence[str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Long table of every saved biomarker's predicted score per participant and session.

    Parameters
    ----------
    cohort : Cohort
        participants.tsv (covariates the models use).
    out_dir : path
        The output folder holding ``models/<target>``.
    sessions : sequence of str
    participants : sequence of str
        Whose scores (those of the feature reliability).

    Returns
    -------
    long : DataFrame
        ``participant_id``, ``session``, ``biomarker.<target>`` for each model that applied.
    skipped : dict
        ``{target: reason}`` for the models that could not be applied.
    """
    from .biomarker.features import from_derivatives
    from .biomarker.model import predict

    models = Path(out_dir) / "models"
    found = sorted(p for p in models.iterdir() if p.is_dir() or p.suffix == ".zip") if models.is_dir() else []
    table = cohort.participants.reset_index()
    table = table[table["participant_id"].isin(set(participants))]
    long, skipped = None, {}
    for model_dir in found:
        target = model_dir.name[:-4] if model_dir.suffix == ".zip" else model_dir.name
        frames = []
        try:
            for ses in sessions:
                features = from_derivatives(out_dir, sessions={pid: ses for pid in participants})
                scores = predict(model_dir, features, table)
                value = scores["probability"] if "probability" in scores else scores["prediction"]
                frames.append(pd.DataFrame({"participant_id": scores["participant_id"].to_numpy(),
                                            "session": ses, f"biomarker.{target}": value.to_numpy(float)}))
        except (InputError, ValueError, KeyError) as error:
            skipped[target] = str(error).splitlines()[0]
            continue
        frame = pd.concat(frames, ignore_index=True)
        long = frame if long is None else long.merge(frame, on=["participant_id", "session"], how="outer")
    if long is None:
        long = pd.DataFrame(columns=["participant_id", "session"])
    return long, skipped


def run_reliability(cohort: Cohort, config: Config, out_dir: str | os.PathLike,
                    sessions: Sequence[str] | None = None, who: str = "controls") -> Path:
    """Write ``group/reliability.tsv`` and ``group/reliability.json``; returns the table's path.

    See the module notes; parameters as :func:`retest_table`.
    """
    long, info = retest_table(cohort, config, out_dir, sessions, who)
    table = reliability_table(long, info["sessions"], alpha=config.alpha)
    scores, skipped = prediction_table(cohort, out_dir, info["sessions"],
                                       sorted(long["participant_id"].unique()))
    if len(scores.columns) > 2:
        table = pd.concat([table, reliability_table(scores, info["sessions"], alpha=config.alpha)],
                          ignore_index=True)
        table = table.sort_values(["kind", "icc"], ascending=[True, False], kind="stable",
                                  ignore_index=True)
    info["biomarkers"] = [c.split(".", 1)[1] for c in scores.columns[2:]]
    info["biomarkers_not_applied"] = skipped
    deriv = Derivatives(out_dir)
    path = deriv.group_dir / "reliability.tsv"
    write_tsv(path, table)
    bands = table[table["kind"] == "ICC(3,1)"]["band"].value_counts().to_dict()
    write_json(deriv.group_dir / "reliability.json", {**info, "bands_icc3": bands,
                                                     "method": "McGraw & Wong (1996) ICC(A,1) = ICC(2,1) "
                                                               "and ICC(C,1) = ICC(3,1), F-based 95% intervals; "
                                                               "Koo & Li (2016) bands"})
    return path
