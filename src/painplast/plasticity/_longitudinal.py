"""The longitudinal part of every module's group stage: change between two sessions.

When the cohort has a baseline and a follow-up session per participant
(:func:`painplast.engine.longitudinal_sessions`), the engine runs each module's group stage as
usual on the baseline session (the cross-sectional contrasts), then :func:`extend` adds the
longitudinal contrasts of :data:`painplast.stats.longitudinal.LONGITUDINAL_CONTRASTS` to the
same findings table:

* the tested features are the module's a-priori features (those of its declared tests that
  were measured in at least :data:`~painplast.plasticity._group.MIN_PARTICIPANTS`
  participants at baseline), each with every longitudinal contrast: ``time``, ``group:time``,
  ``change~pain_relief`` (on change scores ``followup - baseline``) and
  ``persisting-recovering`` (at baseline, on the features the module declares ``prognostic``
  only, with the module's declared covariates read as the shared stage reads them);
* one family per module: Holm's correction runs over the whole table, cross-sectional and
  longitudinal rows together, so ``p_corrected`` keeps meaning "within the module's findings";
* participants excluded in either session (``info["excluded"]``) or absent from
  participants.tsv lose that session's values; who was left out of which contrast, and why, is
  the table ``longitudinal_excluded``; contrasts that could not be tested (a participants
  column missing) are in ``longitudinal_skipped``;
* the table ``features_long`` holds every included participant-session's features (with
  ``session``), for the report's spaghetti plots and for reliability;
* modules whose subject stage writes a ``gm_smoothed`` map (structure) also get voxel-wise
  change maps (:func:`painplast.stats.longitudinal.change_map_test` for ``time`` and
  :func:`~painplast.stats.longitudinal.group_time_map_test` for ``group:time``) with TFCE, as
  maps ``time_t``, ``time_logp_fwe_tfce``, ... and clusters appended to the module's.

The module's own group stage is not changed, so a module written before longitudinal designs
existed gets longitudinal findings without a line of its own.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from ..results import FINDINGS_COLUMNS, GroupResult, SubjectResult
from ..stats import longitudinal as _long
from ..stats.effects import holm
from . import _group

if TYPE_CHECKING:
    from ..cohort import Cohort
    from ..config import Config
    from . import Declaration

__all__ = ["CONTRASTS", "long_table", "longitudinal_tests", "extend"]

#: The longitudinal contrasts every module tests on its a-priori features.
CONTRASTS = tuple(_long.LONGITUDINAL_CONTRASTS)
#: Those tested at baseline on the course of pain (``persisting-recovering``): only on the
#: features a module declares ``prognostic``, so its family holds the hypotheses made for it.
BASELINE_CONTRASTS = tuple(c for c, spec in _long.LONGITUDINAL_CONTRASTS.items() if not spec.uses_change)


def long_table(baseline: Sequence[SubjectResult], followup: Sequence[SubjectResult],
               known: pd.Index, sessions: tuple[str, str]) -> pd.DataFrame:
    """One row per included participant and session: ``participant_id``, ``session``, features.

    Results marked ``info["excluded"]`` and participants not in ``known`` are left out.

    Examples
    --------
    >>> from painplast.results import SubjectResult
    >>> base = [SubjectResult("m", "sub-1", {"m.a": 1.0}), SubjectResult("m", "sub-2", {"m.a": 2.0})]
    >>> follow = [SubjectResult("m", "sub-1", {"m.a": 1.5})]
    >>> long_table(base, follow, pd.Index(["sub-1", "sub-2"]), ("pre", "post")).values.tolist()
    [['sub-1', 'pre', 1.0], ['sub-2', 'pre', 2.0], ['sub-1', 'post', 1.5]]
    """
    frames = []
    for label, results in zip(sessions, (baseline, followup)):
        kept = [r for r in results if not r.excluded and r.participant_id in known]
        if not kept:
            continue
        table = _group.feature_table(kept).reset_index()
        table.insert(1, "session", label)
        frames.append(table)
    if not frames:
        return pd.DataFrame(columns=["participant_id", "session"])
    return pd.concat(frames, ignore_index=True)


def longitudinal_tests(declaration: "Declaration", config: "Config",
                       measured: pd.Series) -> list[tuple[str, str]]:
    """(feature, contrast) rows: each a-priori feature measured at baseline in at least
    :data:`~painplast.plasticity._group.MIN_PARTICIPANTS` participants, with every contrast of
    :data:`CONTRASTS` that tests change; ``persisting-recovering`` only on the module's
    ``prognostic`` features.

    Examples
    --------
    >>> from painplast import config, plasticity
    >>> rows = longitudinal_tests(plasticity.get("reorganization"), config.Config(),
    ...                           pd.Series({"reorganization.shift_mm": 30}))
    >>> rows[:2]
    [('reorganization.shift_mm', 'time'), ('reorganization.shift_mm', 'group:time')]
    """
    features = dict.fromkeys(f for f, _ in declaration.a_priori(config)
                             if measured.get(f, 0) >= _group.MIN_PARTICIPANTS)
    prognostic = {f for f in declaration.prognostic if measured.get(f, 0) >= _group.MIN_PARTICIPANTS}
    return [(f, c) for f in features for c in CONTRASTS
            if c not in BASELINE_CONTRASTS or f in prognostic]


def extend(group: GroupResult, declaration: "Declaration", baseline: Sequence[SubjectResult],
           followup: Sequence[SubjectResult], cohort: "Cohort", config: "Config",
           sessions: tuple[str, str]) -> GroupResult:
    """The module's group result with the longitudinal contrasts added (see the module notes).

    Parameters
    ----------
    group : GroupResult
        The module's group stage on the baseline session.
    declaration : Declaration
    baseline, followup : sequence of SubjectResult
        The module's results of the two sessions (one per participant each).
    cohort : Cohort
    config : Config
    sessions : (str, str)
        Baseline and follow-up session labels.

    Returns
    -------
    GroupResult
        Findings with the longitudinal rows and Holm over the whole table; tables
        ``features_long``, ``longitudinal_excluded``, ``longitudinal_skipped``; voxel-wise
        change maps and clusters when the subject stage writes ``gm_smoothed``.

    Examples
    --------
    >>> from painplast import cohort, config, plasticity, results
    >>> from painplast.results import GroupResult, empty_findings
    >>> people = cohort.Cohort.from_bids(bids_dir)
    >>> ids = list(people.participants.index)
    >>> base = [results.SubjectResult("structure", p, {"structure.gm_total": 600.0 + i})
    ...         for i, p in enumerate(ids)]
    >>> follow = [results.SubjectResult("structure", p, {"structure.gm_total": 590.0 + i})
    ...           for i, p in enumerate(ids)]
    >>> out = extend(GroupResult("structure", empty_findings()), plasticity.get("structure"),
    ...              base, follow, people, config.Config(), ("baseline", "followup"))
    >>> sorted(out.tables)
    ['features_long', 'longitudinal_excluded', 'longitudinal_skipped']
    """
    name = declaration.name
    baseline = [r for r in baseline if r.module == name]
    followup = [r for r in followup if r.module == name]
    participants = cohort.participants
    long = long_table(baseline, followup, participants.index, sessions)
    tables = {"features_long": long}
    notes = [f"longitudinal contrasts: {sessions[0]} -> {sessions[1]} "
             f"({int((long['session'] == sessions[0]).sum())} and "
             f"{int((long['session'] == sessions[1]).sum())} participants); "
             "Holm over the whole findings table"]
    base_rows = long[long["session"] == sessions[0]].set_index("participant_id")
    features = base_rows.drop(columns="session").astype(float)
    if features.empty:
        tables["longitudinal_excluded"] = pd.DataFrame(columns=list(_long.EXCLUDED_COLUMNS))
        tables["longitudinal_skipped"] = pd.DataFrame(columns=list(_long.SKIPPED_COLUMNS))
        return replace(group, tables={**group.tables, **tables},
                       notes=tuple(group.notes) + tuple(notes))
    parts = participants.loc[participants.index.intersection(features.index)]
    extra, covariates, more = _group._covariates(declaration, features.loc[parts.index], parts)
    notes += more
    tests = longitudinal_tests(declaration, config, features.notna().sum())
    out = _long.longitudinal_findings(
        long, participants, tests, baseline=sessions[0], followup=sessions[1],
        extra_covariates={f: tuple(c for c in declaration.covariates_of(f) if c in covariates)
                          for f, _ in tests},
        extra=extra, alpha=config.alpha)
    parts_found = [t[list(FINDINGS_COLUMNS)] for t in (group.findings, out.table) if len(t)]
    findings = pd.concat(parts_found, ignore_index=True) if parts_found else out.table.copy()
    findings = findings[list(FINDINGS_COLUMNS)].copy()
    findings["p_corrected"] = holm(findings["p"].to_numpy(float)) if len(findings) else []
    tables["longitudinal_excluded"] = out.excluded
    tables["longitudinal_skipped"] = out.skipped
    maps, clusters = dict(group.maps), group.clusters
    if any("gm_smoothed" in r.maps for r in baseline[:1]):
        more_maps, more_clusters, summary, more_notes = _change_maps(
            baseline, followup, participants, declaration, config)
        maps.update(more_maps)
        if more_clusters is not None and len(more_clusters):
            clusters = more_clusters if clusters is None or not len(clusters) else \
                pd.concat([clusters, more_clusters], ignore_index=True)
        if summary is not None:
            tables["voxelwise_longitudinal"] = summary
        notes += more_notes
    return replace(group, findings=findings, clusters=clusters, maps=maps,
                   tables={**group.tables, **tables}, notes=tuple(group.notes) + tuple(notes))


def _change_maps(baseline, followup, participants, declaration, config):
    """Voxel-wise ``time`` and ``group:time`` on smoothed GM change maps (TFCE, FWE)."""
    import nibabel as nib

    from ..contrasts import covariate_matrix
    from . import _secondlevel

    options = config.module(declaration.name, declaration.defaults)
    if not options.get("voxelwise", True):
        return {}, None, None, []
    follow = {r.participant_id: r for r in followup if not r.excluded and "gm_smoothed" in r.maps}
    pairs = [(b, follow[b.participant_id]) for b in baseline
             if not b.excluded and b.participant_id in follow and b.participant_id in participants.index
             and "gm_smoothed" in b.maps]
    if len(pairs) < 6:
        return {}, None, None, [f"voxel-wise change maps not computed ({len(pairs)} participants "
                                "with both sessions)"]
    first = pairs[0][0].maps["gm_smoothed"]
    affine = np.asarray(first.affine, float)
    base_stack = np.stack([np.asarray(b.maps["gm_smoothed"].dataobj, np.float32) for b, _ in pairs])
    follow_stack = np.stack([np.asarray(f.maps["gm_smoothed"].dataobj, np.float32) for _, f in pairs])
    mask = base_stack.mean(axis=0) > float(options.get("mask_threshold", 0.2))
    change = (follow_stack[:, mask] - base_stack[:, mask]).astype(np.float64)
    del base_stack, follow_stack
    ids = [b.participant_id for b, _ in pairs]
    parts = participants.loc[ids]
    n_perm = int(config.n_permutations)
    maps, rows, summary, notes = {}, [], [], []
    for k, contrast in enumerate(("time", "group:time")):
        spec = _long.LONGITUDINAL_CONTRASTS[contrast]
        needed = [c for c in _long._needs(spec) if c not in parts]
        if needed:
            notes.append(f"voxel-wise {contrast} not computed (participants.tsv lacks {needed[0]!r})")
            continue
        x = _long._regressor(parts, spec)
        cov, _ = covariate_matrix(parts, spec.covariates, None)
        keep = np.isfinite(x) & np.all(np.isfinite(cov), axis=1)
        if keep.sum() < 6 or (contrast == "group:time" and len(np.unique(x[keep])) < 2):
            notes.append(f"voxel-wise {contrast} not computed ({int(keep.sum())} participants)")
            continue
        rng = [int(config.random_state), 1000 + k]
        if contrast == "time":
            res = _long.change_map_test(change[keep], mask, n_permutations=n_perm, random_state=rng)
        else:
            res = _long.group_time_map_test(change[keep], x[keep], mask, covariates=cov[keep],
                                            n_permutations=n_perm, random_state=rng)
        key = contrast.replace(":", "_")
        logp = -np.log10(np.clip(res.p_fwe_tfce, 1e-300, 1))
        volumes = {}
        for stat, values in (("t", res.t), ("tfce", res.tfce), ("logp_fwe_tfce", logp),
                             ("p", res.p_fwe_tfce)):
            volume = np.zeros(mask.shape, np.float32) if stat != "p" else np.ones(mask.shape)
            volume[mask] = values
            volumes[stat] = volume
            if stat != "p":
                maps[_secondlevel.map_name(key, stat)] = nib.Nifti1Image(volume, affine)
        table = _secondlevel.cluster_table(volumes["t"], volumes["p"], affine, contrast,
                                           alpha=config.alpha)
        if table is not None and len(table):
            rows.append(table)
        summary.append({"contrast": contrast, "n": int(keep.sum()), "n_voxels": int(mask.sum()),
                        "n_permutations": n_perm, "scheme": res.scheme,
                        "min_p_fwe_tfce": float(np.min(res.p_fwe_tfce)),
                        "n_significant_voxels": int(np.sum(res.p_fwe_tfce < config.alpha))})
    clusters = pd.concat(rows, ignore_index=True) if rows else None
    return maps, clusters, pd.DataFrame(summary) if summary else None, notes
