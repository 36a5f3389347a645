"""The biomarker's feature table: one row per participant, one column per feature, with provenance.

Features come from any combination of the plasticity modules' subject stages
(:class:`painplast.results.SubjectResult` objects, or the ``sub-*/sub-*_desc-<module>_features.tsv``
files the engine writes), from voxel maps through a mask, or from any participants-by-features
DataFrame. Nothing here knows the module names: a module is whatever wrote the features (the
``<module>.`` prefix of a column, or the ``desc-<module>`` entity of a file), so adding a module
needs no change.

A :class:`FeatureTable` keeps, for every column, where it came from (``provenance``: column ->
module or source name) so that a model's weights and a participant's plasticity profile can be
summarized per module.

Missing values: the safe model file (:mod:`painplast.biomarker.store`) has no imputation step, so
the pipeline needs complete rows. :meth:`FeatureTable.complete` drops features that too many
participants lack, then participants that still lack one, and says what it dropped.

Examples
--------
>>> import pandas as pd
>>> from painplast.results import SubjectResult
>>> results = [SubjectResult("structure", "sub-01", {"structure.gm_dacc": 0.61}),
...            SubjectResult("structure", "sub-02", {"structure.gm_dacc": 0.58}),
...            SubjectResult("connectivity", "sub-01", {"connectivity.mpfc_nacc": 0.2}),
...            SubjectResult("connectivity", "sub-02", {"connectivity.mpfc_nacc": 0.1})]
>>> table = from_results(results)
>>> table.data.shape, table.provenance["connectivity.mpfc_nacc"]
((2, 2), 'connectivity')
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from painplast.errors import InputError

__all__ = ["FeatureTable", "from_results", "from_derivatives", "from_frame", "from_maps",
           "combine", "module_of"]

_FEATURES_FILE = re.compile(r"^(sub-[A-Za-z0-9]+)(?:_ses-([A-Za-z0-9]+))?(?:_[a-z]+-[A-Za-z0-9]+)*?"
                            r"_desc-([A-Za-z0-9]+)_features\.tsv$")


@dataclass(frozen=True)
class FeatureTable:
    """Participants x features, with the source of every column.

    Parameters
    ----------
    data : DataFrame, shape (n_participants, n_features)
        Index ``participant_id`` (with ``sub-`` prefix), float64 columns.
    provenance : mapping of str to str
        Column name -> module (or source) that produced it.
    excluded : mapping of str to str
        Participants left out, with the reason (quality exclusions, incomplete rows).

    Examples
    --------
    >>> import pandas as pd
    >>> t = FeatureTable(pd.DataFrame({"a.x": [1.0, 2.0]}, index=["sub-1", "sub-2"]), {"a.x": "a"})
    >>> t.modules
    ['a']
    """

    data: pd.DataFrame
    provenance: Mapping[str, str] = field(default_factory=dict)
    excluded: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        data = self.data.copy()
        data.index = pd.Index([str(i) for i in data.index], name="participant_id")
        if data.index.has_duplicates:
            dup = data.index[data.index.duplicated()][0]
            raise InputError(f"participant {dup} appears twice in the feature table",
                             fix="give each participant one row per source")
        try:
            data = data.astype(np.float64)
        except (TypeError, ValueError) as error:
            raise InputError(f"feature values must be numeric ({error})",
                             fix="keep only numeric feature columns") from None
        provenance = {str(c): str(self.provenance.get(c, module_of(c))) for c in data.columns}
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "provenance", provenance)
        object.__setattr__(self, "excluded", dict(self.excluded))

    @property
    def modules(self) -> list[str]:
        """Sources of the columns, in order of first appearance."""
        return list(dict.fromkeys(self.provenance.values()))

    @property
    def features(self) -> list[str]:
        """Column names."""
        return list(self.data.columns)

    def columns_of(self, module: str) -> list[str]:
        """Columns produced by ``module``."""
        return [c for c, m in self.provenance.items() if m == module]

    def select(self, modules: Sequence[str] | None = None,
               features: Sequence[str] | None = None) -> "FeatureTable":
        """A table restricted to some modules and/or named features.

        Parameters
        ----------
        modules : sequence of str, optional
            Keep the columns of these sources.
        features : sequence of str, optional
            Keep these columns.

        Returns
        -------
        FeatureTable
        """
        keep = list(self.data.columns)
        if modules is not None:
            unknown = sorted(set(modules) - set(self.modules))
            if unknown:
                raise InputError(f"no features from {', '.join(unknown)} in the table (it has "
                                 f"{', '.join(self.modules) or 'none'})",
                                 fix="run those modules first or leave them out")
            keep = [c for c in keep if self.provenance[c] in set(modules)]
        if features is not None:
            missing = [f for f in features if f not in self.data.columns]
            if missing:
                raise InputError(f"feature {missing[0]!r} is not in the table",
                                 fix="choose features listed in FeatureTable.features")
            keep = [c for c in keep if c in set(features)]
        return FeatureTable(self.data[keep], {c: self.provenance[c] for c in keep},
                            self.excluded)

    def complete(self, max_missing: float = 0.2) -> "FeatureTable":
        """Drop unreliable features, then features missing in more than ``max_missing`` of
        participants, then incomplete rows.

        A feature that is missing for a participant whose other features from the same module
        exist (say, the intensity at which a response crosses a threshold it never reaches) is
        dropped as a whole, so that one such gap does not cost the participant; a participant
        without any feature of a module loses their row instead.

        Parameters
        ----------
        max_missing : float
            Largest tolerated fraction of participants without a feature.

        Returns
        -------
        FeatureTable
            No missing values; ``excluded`` lists the participants dropped and why.
        """
        data = self.data.replace([np.inf, -np.inf], np.nan)
        sporadic = []
        for module in self.modules:
            cols = self.columns_of(module)
            has_module = data[cols].notna().any(axis=1)
            sporadic += [c for c in cols if (data[c].isna() & has_module).any()]
        data = data.drop(columns=sporadic)
        keep = data.columns[data.isna().mean(axis=0) <= max_missing]
        data = data[keep]
        incomplete = data.index[data.isna().any(axis=1)]
        excluded = dict(self.excluded)
        for pid in incomplete:
            missing = data.columns[data.loc[pid].isna()]
            excluded[pid] = f"missing {len(missing)} feature(s), e.g. {missing[0]}"
        data = data.drop(index=incomplete)
        if data.shape[1] == 0 or data.shape[0] == 0:
            raise InputError("no complete features/participants are left after dropping missing "
                             "values", fix="check which modules ran for which participants")
        return FeatureTable(data, {c: self.provenance[c] for c in data.columns}, excluded)

    def informative(self, max_mode_share: float = 0.5) -> "FeatureTable":
        """Drop features that are mostly one value (e.g. a scrubbed fraction that is 0 for most).

        Such a feature is constant in many cross-validation training folds, where it cannot be
        standardized or harmonized, and carries little information anyway.

        Parameters
        ----------
        max_mode_share : float
            Largest tolerated share of participants sharing the most common value.

        Returns
        -------
        FeatureTable
        """
        data = self.data
        share = data.apply(lambda col: col.value_counts(normalize=True, dropna=True).max()
                           if col.notna().any() else 1.0)
        keep = [c for c in data.columns if share[c] <= max_mode_share]
        if not keep:
            raise InputError("every feature is (nearly) constant across participants",
                             fix="check that the modules ran on these participants")
        return FeatureTable(data[keep], {c: self.provenance[c] for c in keep}, self.excluded)

    def a_priori(self, derivatives_dir: str | os.PathLike,
                 keep: Sequence[str] = ("mean_fd",), contrast: str | None = None) -> "FeatureTable":
        """The features each module tests a priori: the rows of ``group/<module>_findings.tsv``.

        The findings tables list each module's named, hypothesis-driven features (regional
        responses and slopes, named couplings, regional gray matter, modulation indices, the
        somatotopic shift; ``docs/developing.md``), fixed before any data are seen, so choosing
        them uses no outcome. Exploratory features (graph metrics, map coordinates, quality
        measures) are left out; a module without a findings table keeps all its features
        (none when ``contrast`` selects rows of the other modules' tables).

        Parameters
        ----------
        derivatives_dir : path
            The painplast output folder (with ``group/``).
        keep : sequence of str
            Columns kept whatever the findings say (``<module>.<name>`` or ``<name>``): the
            confounds the biomarker reads from feature files (mean framewise displacement).
        contrast : str, optional
            Keep only the features the findings tables test with this contrast (the target's:
            ``responder-nonresponder`` for ``treatment``): the hypotheses made for this outcome.
            When no table has a row with it, every findings feature is kept.

        Returns
        -------
        FeatureTable

        Examples
        --------
        >>> import tempfile, pathlib, pandas as pd
        >>> out = pathlib.Path(tempfile.mkdtemp()); (out / "group").mkdir()
        >>> pd.DataFrame({"feature": ["m.a", "m.a", "m.b"],
        ...               "contrast": ["patient-control", "age", "patient-control"]}).to_csv(
        ...     out / "group" / "m_findings.tsv", sep="\\t", index=False)
        >>> t = from_frame(pd.DataFrame({"m.a": [1., 2.], "m.b": [3., 4.], "m.c": [5., 6.],
        ...                              "m.mean_fd": [.1, .2]}))
        >>> t.a_priori(out).features
        ['m.a', 'm.b', 'm.mean_fd']
        >>> t.a_priori(out, contrast="age").features
        ['m.a', 'm.mean_fd']
        >>> t.a_priori(out, contrast="pain_intensity").features   # no such rows: all of them
        ['m.a', 'm.b', 'm.mean_fd']
        """
        group = Path(derivatives_dir) / "group"
        tables = {}
        for module in self.modules:
            path = group / f"{module}_findings.tsv"
            if not path.exists():
                continue
            try:
                tables[module] = pd.read_csv(path, sep="\t",
                                             usecols=["feature", "contrast"]).astype(str)
            except (OSError, ValueError, pd.errors.ParserError) as error:
                raise InputError(f"cannot read the findings table ({error})", path=path,
                                 fix="rerun the group stage of this module") from None
        by_contrast = contrast is not None and any(
            (t["contrast"] == contrast).any() for t in tables.values())
        keep = set(keep)
        chosen = []
        for module in self.modules:
            columns = self.columns_of(module)
            if module not in tables:
                chosen += [] if by_contrast else columns
                continue
            rows = tables[module]
            named = set(rows.loc[rows["contrast"] == contrast, "feature"] if by_contrast
                        else rows["feature"])
            chosen += [c for c in columns if c in named or c in keep or c.split(".", 1)[-1] in keep]
        if not chosen:
            raise InputError("no feature of the findings tables is in the feature table",
                             path=group, fix="use all features (--biomarker-features all)")
        return self.select(features=chosen)

    def to_tsv_frame(self) -> pd.DataFrame:
        """The table with ``participant_id`` as first column (for writing as TSV)."""
        return self.data.reset_index()


def module_of(column: str) -> str:
    """Module of a ``<module>.<feature>`` column name, or ``"other"``.

    Examples
    --------
    >>> module_of("connectivity.mpfc_nacc"), module_of("age")
    ('connectivity', 'other')
    """
    column = str(column)
    return column.split(".", 1)[0] if "." in column else "other"


def from_frame(frame: pd.DataFrame, module: str | None = None,
               id_column: str = "participant_id") -> FeatureTable:
    """A feature table from a DataFrame (provenance from ``<module>.`` column prefixes).

    Parameters
    ----------
    frame : DataFrame, shape (n_participants, n_features [+ 1])
        Participants by features; ``participant_id`` as a column or as the index.
    module : str, optional
        Source name for every column (otherwise the column's ``<module>.`` prefix).
    id_column : str
        Name of the identifier column.

    Returns
    -------
    FeatureTable

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"participant_id": ["sub-1", "sub-2"], "structure.gm_total": [1, 1.1]})
    >>> from_frame(frame).provenance
    {'structure.gm_total': 'structure'}
    """
    if id_column in frame.columns:
        frame = frame.set_index(id_column)
    numeric = frame.select_dtypes(include=[np.number, "bool"])
    provenance = {c: module or module_of(c) for c in numeric.columns}
    return FeatureTable(numeric, provenance)


def from_results(results: Iterable, modules: Sequence[str] | None = None) -> FeatureTable:
    """A feature table from subject-stage results of any modules.

    Parameters
    ----------
    results : iterable of SubjectResult
        One per participant and module; excluded participants (``info["excluded"]``) are
        recorded in ``excluded`` and get no row from that module.
    modules : sequence of str, optional
        Keep only these modules' results.

    Returns
    -------
    FeatureTable
        One row per participant with at least one feature (missing values as NaN); columns
        grouped by module in :func:`painplast.plasticity.names` order (others after, by name).
    """
    rows: dict[str, dict[str, float]] = {}
    provenance: dict[str, str] = {}
    excluded: dict[str, str] = {}
    for result in results:
        if modules is not None and result.module not in modules:
            continue
        if result.excluded:
            excluded[result.participant_id] = f"{result.module}: {result.excluded}"
            continue
        row = rows.setdefault(result.participant_id, {})
        for name, value in result.features.items():
            row[name] = float(value)
            provenance[name] = result.module
    if not rows:
        raise InputError("no subject results with features were given",
                         fix="run at least one plasticity module first")
    from painplast import plasticity

    order = {m: i for i, m in enumerate(plasticity.names())}
    sources = sorted(set(provenance.values()), key=lambda m: (order.get(m, len(order)), m))
    columns = [c for m in sources for c in provenance if provenance[c] == m]
    data = pd.DataFrame.from_dict(rows, orient="index")
    data = data.reindex(columns=columns).sort_index()
    return FeatureTable(data, provenance, {k: v for k, v in excluded.items() if k not in rows})


def from_derivatives(derivatives_dir: str | os.PathLike,
                     modules: Sequence[str] | None = None,
                     sessions: Mapping[str, str | None] | None = None) -> FeatureTable:
    """A feature table from the engine's ``sub-*/[ses-*/]sub-*_desc-<module>_features.tsv`` files.

    Parameters
    ----------
    derivatives_dir : path
        The painplast derivatives folder (``OUTPUT_DIR``).
    modules : sequence of str, optional
        Keep only these modules (the ``desc-`` entity of the file name).
    sessions : mapping, optional
        ``{participant_id: session or None}``: the one session per participant to read
        (``Cohort.cross_sectional_sessions``); participants not in it are left out. Without it,
        a participant with features of several sessions is an error.

    Returns
    -------
    FeatureTable
        Provenance from the file each column came from; a participant whose JSON sidecar marks
        them excluded (``info.excluded``) is listed in ``excluded``.

    Raises
    ------
    InputError
        If the folder has no features files, or a file is unreadable.
    """
    root = Path(derivatives_dir)
    if not root.is_dir():
        raise InputError("is not a folder", path=root, fix="give the painplast output folder")
    results = []
    from painplast.results import SubjectResult

    seen: dict[tuple[str, str], str | None] = {}
    paths = sorted(root.glob("sub-*/sub-*_features.tsv")) + sorted(root.glob("sub-*/ses-*/sub-*_features.tsv"))
    for path in paths:
        match = _FEATURES_FILE.match(path.name)
        if match is None:
            continue
        pid, session, module = match.group(1), match.group(2), match.group(3)
        if modules is not None and module not in modules:
            continue
        if sessions is not None:
            if pid not in sessions or sessions[pid] != session:
                continue
        elif (pid, module) in seen:
            raise InputError(f"{pid} has {module} features of several sessions", path=path,
                             fix="choose the session with --session-label")
        seen[pid, module] = session
        try:
            table = pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False)
        except (OSError, ValueError, pd.errors.ParserError) as error:
            raise InputError(f"cannot read features ({error})", path=path,
                             fix="rerun the module for this participant") from None
        if len(table) != 1:
            raise InputError(f"has {len(table)} rows, expected one", path=path,
                             fix="rerun the module for this participant")
        info = {}
        sidecar = path.with_suffix(".json")
        if sidecar.exists():
            try:
                info = json.loads(sidecar.read_text()).get("info", {}) or {}
            except ValueError:
                info = {}
        features = {}
        for column in table.columns:
            if column in ("participant_id", "session_id"):
                continue
            name = column if column.startswith(module + ".") else f"{module}.{column}"
            features[name] = pd.to_numeric(table[column], errors="coerce").iloc[0]
        results.append(SubjectResult(module, pid, features, info=info))
    if not results:
        raise InputError("has no sub-*/sub-*_desc-<module>_features.tsv files", path=root,
                         fix="run the participant-level stage (painplast run) first")
    return from_results(results)


def from_maps(maps: Mapping[str, object], mask_img, name: str = "voxels") -> FeatureTable:
    """A feature table of voxel values inside a mask (one column per voxel).

    Parameters
    ----------
    maps : mapping of str to nibabel image or path
        Participant ID -> 3-D map (e.g. a gray-matter map or a contrast image), all on one grid.
    mask_img : nibabel image or path
        Boolean mask on that grid; voxels are read in C order of the mask.
    name : str
        Source name: columns are ``<name>.v<voxel index>``, provenance ``name``.

    Returns
    -------
    FeatureTable
        Shape (n_participants, n_voxels); the mask and its affine are in ``data.attrs`` for
        writing a model's weights back as an image.
    """
    import nibabel as nib

    mask_img = nib.load(mask_img) if isinstance(mask_img, (str, os.PathLike)) else mask_img
    mask = np.asarray(mask_img.dataobj) > 0
    if mask.ndim != 3 or not mask.any():
        raise InputError("the mask must be a 3-D image with at least one voxel",
                         fix="give a brain or gray-matter mask")
    rows, ids = [], []
    for pid, img in maps.items():
        img = nib.load(img) if isinstance(img, (str, os.PathLike)) else img
        data = np.asarray(img.dataobj, dtype=np.float64)
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.shape != mask.shape or not np.allclose(img.affine, mask_img.affine, atol=1e-3):
            raise InputError(f"map of {pid} is on a different grid than the mask "
                             f"({data.shape} vs {mask.shape})",
                             fix="resample the maps to the mask's grid first")
        rows.append(data[mask])
        ids.append(pid)
    if not rows:
        raise InputError("no maps were given", fix="pass one map per participant")
    columns = [f"{name}.v{i}" for i in range(int(mask.sum()))]
    data = pd.DataFrame(np.vstack(rows), index=ids, columns=columns)
    table = FeatureTable(data, {c: name for c in columns})
    table.data.attrs.update({"mask": mask, "affine": np.asarray(mask_img.affine)})
    return table


def combine(*tables: FeatureTable, how: str = "outer") -> FeatureTable:
    """Join feature tables on participant (columns must not repeat).

    Parameters
    ----------
    *tables : FeatureTable
    how : {"outer", "inner"}
        Keep participants in any table (missing as NaN) or only those in all.

    Returns
    -------
    FeatureTable
    """
    if not tables:
        raise InputError("no feature tables to combine", fix="pass at least one table")
    seen: dict[str, str] = {}
    for table in tables:
        for column in table.features:
            if column in seen:
                raise InputError(f"feature {column!r} is in two tables",
                                 fix="rename it or select it from one table only")
            seen[column] = table.provenance[column]
    data = tables[0].data
    for table in tables[1:]:
        data = data.join(table.data, how=how)
    excluded = {}
    for table in tables:
        excluded.update(table.excluded)
    return FeatureTable(data.sort_index(), seen, excluded)
