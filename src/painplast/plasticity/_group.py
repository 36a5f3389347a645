"""The group stage every plasticity module shares: one feature table, one path to the findings.

A module's ``group`` is :func:`run` with its :class:`~painplast.plasticity.Declaration` and a
function for what only that module does (curves, clusters, connectome tables, figures). The
shared part, the same for every module:

* results of other modules are ignored; one result per participant (the engine hands the
  group stage one per participant, whatever the sessions);
* a participant marked ``info["excluded"]``, or absent from participants.tsv, is left out
  and listed in the table ``excluded`` (``participant_id``, ``reason``);
* the feature table of the others: float64, index ``participant_id``, columns in order of
  first appearance; written as the table ``features``;
* no participant left: empty findings and a note, never an error;
* the declared covariates a module adds (``connectivity.mean_fd``, ``structure.gm_total``)
  are read from participants.tsv or, failing that, from the module's own feature of that name;
  one that is unknown for some participant is not used, and a note says so;
* the findings: the declared a-priori tests of features measured in at least
  :data:`MIN_PARTICIPANTS` participants, through :func:`painplast.contrasts.findings_table`
  (Holm's family-wise correction over the table); a contrast whose participants column is
  missing is left out, and a note says which.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd

from .. import contrasts
from ..results import GroupResult, SubjectResult, empty_findings

if TYPE_CHECKING:
    from ..cohort import Cohort
    from ..config import Config
    from . import Declaration

__all__ = ["MIN_PARTICIPANTS", "GroupData", "Specific", "feature_table", "run"]

#: A feature measured in fewer included participants is not tested.
MIN_PARTICIPANTS = 6


@dataclass(frozen=True)
class GroupData:
    """What the shared stage hands a module's own group analysis.

    Attributes
    ----------
    declaration : Declaration
    config : Config
    options : dict
        The module's options (declared defaults updated with the config).
    results : tuple of SubjectResult
        The included participants' results, in input order.
    features : DataFrame, shape (n_included, n_features)
        float64, index ``participant_id`` (the order of ``results``).
    participants : DataFrame
        participants.tsv rows of the included participants, in the same order.
    extra : DataFrame
        Declared covariates read from the module's features (e.g. ``mean_fd``), same index.
    covariates : tuple of str
        The declared covariates known for every included participant.
    findings : DataFrame
        The findings table (contract columns).
    """

    declaration: "Declaration"
    config: "Config"
    options: dict
    results: tuple[SubjectResult, ...]
    features: pd.DataFrame
    participants: pd.DataFrame
    extra: pd.DataFrame
    covariates: tuple[str, ...]
    findings: pd.DataFrame


@dataclass
class Specific:
    """What a module adds to the shared group result (its tables join ``features`` and
    ``excluded``; its notes follow the shared ones)."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    maps: dict[str, Any] = field(default_factory=dict)
    clusters: pd.DataFrame | None = None
    figures: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def feature_table(results: Sequence[SubjectResult]) -> pd.DataFrame:
    """Participants x features (float64, index ``participant_id``, columns by first appearance).

    Raises
    ------
    ValueError
        A participant has two results (the engine gives the group stage one per participant).

    Examples
    --------
    >>> from painplast.results import SubjectResult
    >>> table = feature_table([SubjectResult("m", "sub-1", {"m.a": 1}),
    ...                        SubjectResult("m", "sub-2", {"m.b": 2.5})])
    >>> table.dtypes.unique().tolist(), table.index.name
    ([dtype('float64')], 'participant_id')
    """
    ids = [r.participant_id for r in results]
    if len(set(ids)) != len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"the group stage needs one result per participant; {twice[:3]} have more")
    columns = list(dict.fromkeys(k for r in results for k in r.features))
    table = pd.DataFrame([dict(r.features) for r in results], columns=columns,
                         index=pd.Index(ids, name="participant_id"), dtype=np.float64)
    return table


def _excluded(results: Sequence[SubjectResult], known: pd.Index) -> tuple[list, pd.DataFrame]:
    """(included results, table of the others with the reason)."""
    included, rows = [], []
    for r in results:
        if r.excluded:
            rows.append({"participant_id": r.participant_id, "reason": str(r.excluded)})
        elif r.participant_id not in known:
            rows.append({"participant_id": r.participant_id, "reason": "not in participants.tsv"})
        else:
            included.append(r)
    return included, pd.DataFrame(rows, columns=["participant_id", "reason"])


def _covariates(declaration: "Declaration", features: pd.DataFrame,
                participants: pd.DataFrame) -> tuple[pd.DataFrame, tuple[str, ...], list[str]]:
    """Declared covariates: values not in participants.tsv, the usable names, notes."""
    names = list(dict.fromkeys(c for covs in declaration.covariates.values() for c in covs))
    extra = pd.DataFrame(index=features.index)
    usable, notes = [], []
    for name in names:
        column = f"{declaration.name}.{name}"
        if name not in participants and column in features:
            extra[name] = features[column]
            if not np.isfinite(extra[name].to_numpy(float)).all():
                notes.append(f"{name} is unknown for some participants: not used as a covariate")
                continue
        usable.append(name)
    return extra, tuple(usable), notes


def _missing_contrasts(tests: Sequence[tuple[str, str]], participants: pd.DataFrame) -> list[str]:
    out = []
    for name in dict.fromkeys(c for _, c in tests):
        spec = contrasts.CONTRASTS[name]
        if spec.column not in participants or (spec.subset == "patients" and "group" not in participants):
            out.append(f"{name} ({spec.column})")
    return out


def run(declaration: "Declaration", results: Sequence[SubjectResult], cohort: "Cohort",
        config: "Config", specific: Callable[[GroupData], Specific] | None = None) -> GroupResult:
    """The group stage of a module: the shared part, then ``specific(data)``.

    Parameters
    ----------
    declaration : Declaration
        The module's.
    results : sequence of SubjectResult
        Its subject stage's results (one per participant).
    cohort : Cohort
        Its ``participants`` table gives the contrasts and covariates.
    config : Config
    specific : callable, optional
        ``specific(GroupData) -> Specific``: what only this module computes; not called when
        no participant is left.

    Returns
    -------
    GroupResult

    Examples
    --------
    >>> from painplast import cohort, config, plasticity, results
    >>> participants = cohort.Cohort.from_bids(bids_dir)
    >>> measured = [results.SubjectResult("structure", pid, {"structure.gm_total": 600.0 + i})
    ...             for i, pid in enumerate(participants.participants.index)]
    >>> out = run(plasticity.get("structure"), measured, participants, config.Config())
    >>> out.findings[["feature", "contrast"]].values.tolist()
    [['structure.gm_total', 'age']]
    """
    name = declaration.name
    options = config.module(name, declaration.defaults)
    results = [r for r in results if r.module == name]
    participants_table = cohort.participants
    included, excluded = _excluded(results, participants_table.index)
    features = feature_table(included)
    notes = [f"{len(excluded)} participant(s) left out of group statistics (table 'excluded')"] \
        if len(excluded) else []
    tables = {"features": features.reset_index(), "excluded": excluded}
    if not included:
        notes.append("no participant left for group statistics")
        return GroupResult(name, empty_findings(), tables=tables, notes=tuple(notes))
    participants = participants_table.loc[features.index]
    extra, covariates, more = _covariates(declaration, features, participants)
    notes += more
    measured = features.notna().sum()
    tests = [(f, c) for f, c in declaration.a_priori(config)
             if f in features and measured[f] >= MIN_PARTICIPANTS]
    missing = _missing_contrasts(tests, participants)
    if missing:
        notes.append(f"contrasts not computed (participants.tsv lacks the column): {', '.join(missing)}")
    findings = contrasts.findings_table(
        features, participants, tests, alpha=config.alpha, extra=extra,
        extra_covariates={f: tuple(c for c in declaration.covariates_of(f) if c in covariates)
                          for f, _ in tests})
    data = GroupData(declaration, config, options, tuple(included), features, participants,
                     extra, covariates, findings)
    more = specific(data) if specific is not None else Specific()
    return GroupResult(name, findings, more.clusters, {**tables, **more.tables}, more.maps,
                       more.figures, tuple(notes + list(more.notes)))
