"""The participants table and each participant's files, read from a BIDS dataset and checked once.

:meth:`Cohort.from_bids` reads ``participants.tsv``, finds every participant's files in the raw
dataset and its derivatives (fMRIPrep, CAT12, ROI time series extracted by another pipeline), and
checks all of it before any analysis starts, so that the plasticity modules can trust their
inputs. Every problem that bad input can cause is an :class:`~painplast.errors.InputError` whose
one-line message names the file and the fix.

What is found where
-------------------
Raw dataset (``root``):

- ``sub-<l>/[ses-<s>/]func/sub-<l>_[ses-<s>_]task-<t>_[run-<r>_]bold.nii[.gz]``: a run exists;
- ``..._events.tsv`` and ``..._bold.json`` (``RepetitionTime``), found with the BIDS inheritance
  principle: a file at the dataset root (``task-<t>_bold.json``), subject or session level applies
  to every run whose entities it matches, and the most specific one wins.

Derivative datasets (default: every folder under ``root/derivatives``, whether or not it has a
``dataset_description.json``; folders written by painplast itself are skipped):

- ``..._task-<t>_..._space-<space>_desc-preproc_bold.nii[.gz]``: ``Run.bold``;
- ``..._task-<t>_..._space-<space>_desc-brain_mask.nii[.gz]``: ``Run.mask``;
- ``..._task-<t>_..._desc-confounds_timeseries.tsv`` (older fMRIPrep: ``_regressors.tsv``):
  ``Run.confounds``;
- any other ``..._task-<t>_..._timeseries.tsv``: ``Run.timeseries`` (ROI time series, one column
  per region);
- ``sub-<l>_..._space-<space>_label-GM_probseg.nii[.gz]`` (no ``task``): ``Subject.gm``, or a
  CAT12 ``mwp1*.nii[.gz]`` whose name or folder names the participant;
- ``sub-<l>_..._space-<space>_desc-brain_mask.nii[.gz]`` (no ``task``): ``Subject.anat_mask``.

Files are matched to a run by their entities (``ses``, ``task``, ``acq``, ``ce``, ``rec``,
``dir``, ``run``), not by their folder. Two files of the same kind for the same run (two fMRIPrep
versions side by side, two atlases' time series, an fMRIPrep GM map and a CAT12 one) are an error
that asks the user to pass ``derivatives=`` with one of them; painplast does not guess.

Decisions (see :meth:`Cohort.from_bids` for the full list of checks)
--------------------------------------------------------------------
- A participant listed in ``participants.tsv`` may lack a raw folder (a derivatives-only dataset
  such as ROI time series is fine); a participant with no file at all, anywhere, is an error
  (remove the row, add the data, or leave it out with ``participant_label``).
- Folders ``sub-*`` that ``participants.tsv`` does not list are ignored with a warning.
- ``group`` is optional; when the column exists, every value must be ``patient`` or ``control``
  (any case, stored in lower case) and ``n/a`` is an error: a participant of unknown group cannot
  enter a group comparison silently. The same holds for ``n/a`` in a ``site`` column.
- Tasks whose label starts with ``rest`` are resting state and need no events; every other task
  run needs an events file with ``onset`` and ``duration`` columns.
- A preprocessed BOLD run needs its confounds file; a time-series-only run may lack one (motion
  unknown).
- Image checks read headers, the gzip trailer and, for 4-D BOLD, the first volume only (a BOLD
  series whose later volumes are zero passes); GM maps and brain masks are read in full.
- Participant IDs are always checked (they become file names of the outputs), also with
  ``validate=False``, which skips the file checks only.
"""
from __future__ import annotations

import json
import os
import re
import struct
import warnings
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import nibabel as nib
import numpy as np
import pandas as pd

from .errors import InputError, MissingColumnError

__all__ = ["Run", "Subject", "Cohort", "GROUPS", "DEFAULT_SPACE"]

#: Values of the ``group`` column (after lower-casing).
GROUPS = ("patient", "control")
#: fMRIPrep's default template space.
DEFAULT_SPACE = "MNI152NLin2009cAsym"
#: Site given to every participant when ``participants.tsv`` has no ``site`` column.
DEFAULT_SITE = "site-1"

_PARTICIPANT_ID = re.compile(r"sub-[A-Za-z0-9]+")
_LABEL_IN_NAME = re.compile(r"sub-([A-Za-z0-9]+)")
_RUN_ENTITIES = ("ses", "task", "acq", "ce", "rec", "dir", "run")
_NIFTI = (".nii", ".nii.gz")
_NA_VALUES = ["n/a", ""]
_GRID_ATOL = 1e-3


# --------------------------------------------------------------------------------------------
# The three records
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    """One functional run of one participant: its files and repetition time.

    Parameters
    ----------
    task : str
        BIDS ``task`` label (``"pain"``, ``"rest"``, ...).
    session, run : str or None
        BIDS ``ses`` and ``run`` labels, None when the dataset has none.
    bold : Path or None
        Preprocessed BOLD series in the template space (fMRIPrep ``desc-preproc_bold``).
    mask : Path or None
        fMRIPrep brain mask of this run in the same space.
    confounds : Path or None
        fMRIPrep ``desc-confounds_timeseries.tsv`` (or the file beside ROI time series that
        carries ``framewise_displacement``).
    events : Path or None
        Raw ``events.tsv`` (found with BIDS inheritance).
    timeseries : Path or None
        ROI time series extracted elsewhere: one row per volume, one column per region.
    repetition_time : float or None
        Seconds, from the JSON sidecars (BIDS inheritance) or else the NIfTI header.

    Examples
    --------
    >>> run = Run(task="rest", session=None, run="1", repetition_time=2.0)
    >>> run.is_rest, run.bold is None
    (True, True)
    """

    task: str
    session: str | None = None
    run: str | None = None
    bold: Path | None = None
    mask: Path | None = None
    confounds: Path | None = None
    events: Path | None = None
    timeseries: Path | None = None
    repetition_time: float | None = None

    @property
    def is_rest(self) -> bool:
        """True for resting-state runs (task label starting with ``rest``)."""
        return _is_rest(self.task)

    @property
    def name(self) -> str:
        """The run's BIDS entities as they appear in file names (``ses-1_task-pain_run-2``)."""
        parts = [f"ses-{self.session}"] if self.session else []
        parts.append(f"task-{self.task}")
        if self.run:
            parts.append(f"run-{self.run}")
        return "_".join(parts)

    def load_events(self) -> pd.DataFrame:
        """The events table (``onset``, ``duration``, ...; ``n/a`` read as NaN)."""
        if self.events is None:
            raise InputError(f"run {self.name} has no events file",
                             fix=f"add a BIDS events.tsv for task '{self.task}'")
        return _read_tsv(self.events, "events file")

    def load_confounds(self) -> pd.DataFrame:
        """The confounds table, one row per volume (``n/a`` read as NaN)."""
        if self.confounds is None:
            raise InputError(f"run {self.name} has no confounds file",
                             fix="give the fMRIPrep derivatives folder with desc-confounds_timeseries.tsv")
        return _read_tsv(self.confounds, "confounds file")

    def load_timeseries(self) -> pd.DataFrame:
        """ROI time series as floats, one column per region, in file order.

        Region names may repeat (different regions with the same label), so columns are kept by
        position: select them with ``.iloc``, not by name.
        """
        if self.timeseries is None:
            raise InputError(f"run {self.name} has no ROI time series",
                             fix="give the derivatives folder holding *_timeseries.tsv")
        return _read_timeseries(self.timeseries)


@dataclass(frozen=True)
class Subject:
    """One participant: the participants.tsv row and the files found for it.

    Parameters
    ----------
    participant_id : str
        ``"sub-001"``.
    label : str
        ``"001"``.
    info : mapping
        The participant's row of ``participants.tsv`` (NaN for ``n/a``; ``group`` in lower case).
    runs : tuple of Run
        Functional runs, sorted by session, task and run number.
    gm : Path or None
        Gray-matter map: fMRIPrep ``label-GM_probseg`` in the template space, or CAT12 ``mwp1``.
    anat_mask : Path or None
        Anatomical brain mask in the template space.

    Examples
    --------
    >>> sub = Subject("sub-01", "01", {"age": 30.0},
    ...               (Run("pain", run="1"), Run("pain", run="2"), Run("rest")))
    >>> sub.tasks, len(sub.runs_for("pain")), sub.run("rest").task, sub.run("somatotopy")
    (('pain', 'rest'), 2, 'rest', None)
    """

    participant_id: str
    label: str
    info: Mapping[str, Any] = field(default_factory=dict, hash=False)
    runs: tuple[Run, ...] = ()
    gm: Path | None = None
    anat_mask: Path | None = None

    def runs_for(self, task: str) -> tuple[Run, ...]:
        """All runs of ``task``, in session and run order."""
        return tuple(r for r in self.runs if r.task == task)

    def run(self, task: str) -> Run | None:
        """The first run of ``task``, or None."""
        runs = self.runs_for(task)
        return runs[0] if runs else None

    @property
    def tasks(self) -> tuple[str, ...]:
        """Task labels of this participant's runs, in order of first appearance."""
        return tuple(dict.fromkeys(r.task for r in self.runs))


@dataclass(frozen=True, eq=False)
class Cohort:
    """A BIDS dataset's participants and their files, validated up front.

    Build it with :meth:`from_bids`. Iterating yields :class:`Subject` objects in the order of
    ``participants.tsv``; ``participants`` is that table indexed by ``participant_id``.

    Examples
    --------
    A derivatives-only dataset of ROI time series (written to a temporary folder):

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = (root / "participants.tsv").write_text("participant_id\\tage\\nsub-01\\t31\\n")
    >>> func = root / "derivatives" / "roi" / "sub-01" / "func"
    >>> func.mkdir(parents=True)
    >>> _ = (func / "sub-01_task-rest_atlas-X_timeseries.tsv").write_text("a\\tb\\n1\\t2\\n3\\t4\\n")
    >>> cohort = Cohort.from_bids(root)
    >>> len(cohort), cohort.subject("01").tasks, cohort.has("group"), list(cohort.sites)
    (1, ('rest',), False, ['site-1'])
    >>> cohort.subject("sub-01").run("rest").load_timeseries().shape
    (2, 2)
    >>> import shutil; shutil.rmtree(root)
    """

    root: Path
    participants: pd.DataFrame
    subjects: tuple[Subject, ...]
    derivatives: tuple[Path, ...] = ()
    space: str = DEFAULT_SPACE
    _by_id: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_by_id", {s.participant_id: s for s in self.subjects})

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_bids(cls, root: str | os.PathLike, derivatives: Sequence[str | os.PathLike] | None = None,
                  participant_label: Sequence[str] | str | None = None,
                  space: str = DEFAULT_SPACE, validate: bool = True) -> "Cohort":
        """Read a BIDS dataset (with derivatives) and check it.

        Parameters
        ----------
        root : path
            BIDS dataset root, holding ``participants.tsv``.
        derivatives : list of paths, optional
            Derivative datasets to search (fMRIPrep, CAT12, ROI time series). Default: every
            sub-folder of ``root/derivatives`` except painplast's own outputs.
        participant_label : list of str, optional
            Participants to keep, with or without ``sub-``; default all of ``participants.tsv``.
        space : str
            Template space (the ``space-`` entity) of the preprocessed images.
        validate : bool
            Check the files (see Notes). Reading ``participants.tsv``, its IDs and the file
            discovery are checked in any case.

        Returns
        -------
        Cohort

        Raises
        ------
        InputError
            On the first problem found; the message names the file and the fix.

        Notes
        -----
        With ``validate=True`` these are errors: ``group`` values other than patient/control
        (``n/a`` included); ``n/a`` in ``site``; a listed participant with no file anywhere; a
        NIfTI that nibabel cannot read, that is truncated (gzip trailer or file size against the
        header's data size), not 3-D/4-D, or whose values are all zero or NaN (GM maps and masks
        in full, BOLD by its first volume); BOLD runs and run masks whose grid (shape and affine,
        within 1e-3) differ from the majority's, and likewise among GM maps and among anatomical
        masks; a task run (not rest) without events, or events without ``onset``/``duration``
        or with a missing onset; a BOLD run without confounds; confounds or time series whose
        number of rows differs from the BOLD volumes (or from each other); a repetition time that
        is not a positive number. Only headers, gzip trailers, first volumes and small tables
        are read, so validation stays fast; nothing is written.
        """
        root = _as_dir(root, "BIDS dataset root", "give the folder that holds participants.tsv")
        if not isinstance(space, str) or not re.fullmatch(r"[A-Za-z0-9]+", space):
            raise InputError(f"space '{space}' is not a BIDS label",
                             fix="give the template name as in the file names, e.g. MNI152NLin2009cAsym")
        table_path = root / "participants.tsv"
        table = _read_participants(table_path)
        if participant_label is not None:
            table = _select(table, participant_label, table_path)
        if derivatives is None:
            deriv_dirs = _default_derivatives(root)
        else:
            if isinstance(derivatives, (str, os.PathLike)):
                derivatives = [derivatives]
            deriv_dirs = tuple(_as_dir(d, "derivatives folder", "give an existing derivatives folder")
                               for d in derivatives)

        finder = _Finder(root, deriv_dirs, space)
        listed = set(table.index)
        unlisted = sorted(label for label in finder.labels if f"sub-{label}" not in listed)
        if unlisted and participant_label is None:
            warnings.warn(f"{table_path}: {len(unlisted)} participant folder(s) not listed are "
                          f"ignored: {', '.join('sub-' + x for x in unlisted[:5])}"
                          f"{' ...' if len(unlisted) > 5 else ''}", stacklevel=2)

        subjects = tuple(finder.subject(pid, table.loc[pid]) for pid in table.index)
        if validate:
            _Validator(table_path, table, subjects, finder).run()
        return cls(root=root, participants=table, subjects=subjects, derivatives=deriv_dirs, space=space)

    # -- access ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.subjects)

    def __iter__(self) -> Iterator[Subject]:
        return iter(self.subjects)

    def subject(self, participant_id: str) -> Subject:
        """The participant with this ID (``"sub-01"`` or ``"01"``)."""
        pid = participant_id if str(participant_id).startswith("sub-") else f"sub-{participant_id}"
        try:
            return self._by_id[pid]
        except KeyError:
            raise InputError(f"participant {pid} is not in the cohort", path=self.root / "participants.tsv",
                             fix="use one of " + ", ".join(list(self._by_id)[:5])
                             + (" ..." if len(self._by_id) > 5 else "")) from None

    def has(self, column: str) -> bool:
        """True if ``participants.tsv`` has ``column`` with at least one value that is not n/a."""
        return column in self.participants.columns and bool(self.participants[column].notna().any())

    def require(self, column: str, purpose: str) -> pd.Series:
        """The ``column`` of participants.tsv, or a :class:`MissingColumnError` saying who needs it.

        Parameters
        ----------
        column : str
            Column name.
        purpose : str
            What needs it, for the message (e.g. ``"the patient-control contrast"``).

        Returns
        -------
        Series
            Indexed by ``participant_id``; may hold NaN where the value is n/a.
        """
        path = self.root / "participants.tsv"
        if column not in self.participants.columns:
            raise MissingColumnError(f"column '{column}' is missing, needed for {purpose}", path=path,
                                     fix=f"add a '{column}' column (n/a where unknown)")
        values = self.participants[column]
        if not values.notna().any():
            raise MissingColumnError(f"column '{column}' is n/a for every participant, needed for {purpose}",
                                     path=path, fix=f"fill in '{column}'")
        return values

    @property
    def groups(self) -> pd.Series | None:
        """``group`` (``patient``/``control``) per participant, or None without a group column."""
        return self.participants["group"] if "group" in self.participants.columns else None

    @property
    def sites(self) -> pd.Series:
        """``site`` per participant; ``"site-1"`` for everyone when there is no site column."""
        if "site" in self.participants.columns:
            return self.participants["site"]
        return pd.Series(DEFAULT_SITE, index=self.participants.index, name="site")


# --------------------------------------------------------------------------------------------
# participants.tsv
# --------------------------------------------------------------------------------------------

def _read_participants(path: Path) -> pd.DataFrame:
    """participants.tsv indexed by participant_id; IDs checked, ``group`` lower-cased."""
    if not path.is_file():
        raise InputError("participants.tsv is missing", path=path,
                         fix="add a tab-separated participants.tsv with a participant_id column")
    try:
        table = pd.read_csv(path, sep="\t", na_values=_NA_VALUES, keep_default_na=False,
                            dtype={"participant_id": str}, encoding="utf-8-sig")
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read participants.tsv ({_reason(error)})", path=path,
                         fix="write it as UTF-8 text, tab-separated, with a header row") from None
    if "participant_id" not in table.columns:
        raise InputError("no participant_id column", path=path,
                         fix="name the first column participant_id (tab-separated header)")
    if len(table) == 0:
        raise InputError("participants.tsv lists no participants", path=path,
                         fix="add one row per participant")
    ids = table["participant_id"]
    for row, pid in enumerate(ids, start=2):
        if not isinstance(pid, str) or not _PARTICIPANT_ID.fullmatch(pid):
            raise InputError(f"malformed participant_id {pid!r} on line {row}", path=path,
                             fix="use sub-<label> with letters and digits only "
                                 "(no spaces, '/', '.', '-' or '_')")
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        raise InputError(f"duplicate participant_id {duplicated.iloc[0]}", path=path,
                         fix="list each participant once")
    table = table.set_index("participant_id")
    if "group" in table.columns:
        table["group"] = table["group"].map(lambda v: v.strip().lower() if isinstance(v, str) else v)
    return table


def _select(table: pd.DataFrame, labels: Sequence[str] | str, path: Path) -> pd.DataFrame:
    """Rows of the participants named in ``labels`` (with or without ``sub-``), in table order."""
    if isinstance(labels, str):
        labels = [labels]
    wanted = set()
    for label in labels:
        pid = label if str(label).startswith("sub-") else f"sub-{label}"
        if not _PARTICIPANT_ID.fullmatch(pid):
            raise InputError(f"malformed participant label {label!r}",
                             fix="give labels such as 01 or sub-01 (letters and digits only)")
        if pid not in table.index:
            raise InputError(f"participant {pid} is not listed", path=path,
                             fix="add it to participants.tsv or drop it from participant_label")
        wanted.add(pid)
    return table.loc[[pid for pid in table.index if pid in wanted]]


# --------------------------------------------------------------------------------------------
# File discovery
# --------------------------------------------------------------------------------------------

def _default_derivatives(root: Path) -> tuple[Path, ...]:
    """Sub-folders of ``root/derivatives``, except hidden ones and painplast's own outputs."""
    base = root / "derivatives"
    if not base.is_dir():
        return ()
    found = []
    for folder in sorted(base.iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        if folder.name == "painplast" or _generated_by_painplast(folder):
            continue
        found.append(folder.resolve())
    return tuple(found)


def _generated_by_painplast(folder: Path) -> bool:
    try:
        description = json.loads((folder / "dataset_description.json").read_text())
        return any(str(g.get("Name", "")).lower() == "painplast" for g in description.get("GeneratedBy", []))
    except (OSError, ValueError, AttributeError, TypeError):
        return False


def _parse_name(name: str) -> tuple[dict[str, str], str, str] | None:
    """BIDS entities, suffix and extension of a file name, or None if it is not BIDS-like.

    >>> _parse_name("sub-01_ses-1_task-pain_run-2_bold.nii.gz")
    ({'sub': '01', 'ses': '1', 'task': 'pain', 'run': '2'}, 'bold', '.nii.gz')
    """
    stem, dot, ext = name.partition(".")
    parts = stem.split("_")
    if len(parts) < 2:
        return None
    entities = {}
    for pair in parts[:-1]:
        key, sep, value = pair.partition("-")
        if not (sep and key and value):
            return None
        entities[key] = value
    return entities, parts[-1], "." + ext if dot else ""


def _run_key(entities: Mapping[str, str]) -> tuple:
    return tuple(entities.get(e) for e in _RUN_ENTITIES)


def _sort_key(key: tuple) -> tuple:
    run = key[_RUN_ENTITIES.index("run")]
    return tuple("" if v is None else v for v in key[:-1]) + (
        (0, int(run), "") if run and run.isdigit() else (1, 0, run or ""),)


class _Finder:
    """Indexes the raw dataset and the derivatives once; builds :class:`Subject` records."""

    def __init__(self, root: Path, derivatives: Sequence[Path], space: str):
        self.root, self.space = root, space
        self.labels: set[str] = set()
        self.raw_bold: dict = defaultdict(list)      # (label, key) -> [Path]
        self.meta: dict = defaultdict(list)          # folder -> [(entities, suffix, ext, Path)]
        self.files: dict = defaultdict(list)         # (kind, label, key) -> [Path]
        self.gm: dict = defaultdict(list)            # label -> [(source, Path)]
        self.anat_mask: dict = defaultdict(list)     # label -> [Path]
        self.run_keys: dict = defaultdict(set)       # label -> run keys (raw BOLD, BOLD, time series)
        self.raw_of: dict = {}                       # (label, Run) -> raw BOLD Path
        self._json: dict = {}
        self._index_raw()
        for folder in derivatives:
            self._index_derivatives(folder)

    # indexing ---------------------------------------------------------------------------------

    def _index_raw(self):
        for name in sorted(os.listdir(self.root)):
            path = self.root / name
            if path.is_dir() and _PARTICIPANT_ID.fullmatch(name):
                self.labels.add(name[4:])
                for folder, file in _walk(path):
                    self._add_raw(folder, file)
            elif path.is_file():
                self._add_raw(self.root, name)

    def _add_raw(self, folder: Path, name: str):
        parsed = _parse_name(name)
        if parsed is None:
            return
        entities, suffix, ext = parsed
        if ext in (".json", ".tsv") and suffix in ("bold", "events"):
            self.meta[folder].append((entities, suffix, ext, folder / name))
        elif ext in _NIFTI and suffix == "bold" and "sub" in entities and "task" in entities:
            self.raw_bold[entities["sub"], _run_key(entities)].append(folder / name)
            self.run_keys[entities["sub"]].add(_run_key(entities))

    def _index_derivatives(self, top: Path):
        for folder, name in _walk(top, prune=("sourcedata",)):
            path = folder / name
            if name.startswith("mwp1") and name.endswith(_NIFTI):
                label = _label_of(path, top)
                if label:
                    self.labels.add(label)
                    self.gm[label].append(("CAT12 mwp1", path))
                continue
            parsed = _parse_name(name)
            if parsed is None or "sub" not in parsed[0]:
                continue
            entities, suffix, ext = parsed
            label, desc, task = entities["sub"], entities.get("desc"), entities.get("task")
            in_space = entities.get("space") == self.space
            kind = None
            if ext in _NIFTI and in_space:
                if suffix == "bold" and desc == "preproc" and task:
                    kind = "bold"
                elif suffix == "mask" and desc == "brain":
                    kind = "mask" if task else "anat_mask"
                elif suffix == "probseg" and entities.get("label") == "GM" and not task:
                    kind = "gm"
            elif ext == ".tsv" and task:
                if desc == "confounds" and suffix in ("timeseries", "regressors"):
                    kind = "confounds"
                elif suffix == "timeseries":
                    kind = "timeseries"
            if kind is None:
                continue
            self.labels.add(label)
            if kind == "anat_mask":
                self.anat_mask[label].append(path)
            elif kind == "gm":
                self.gm[label].append(("fMRIPrep probseg", path))
            else:
                self.files[kind, label, _run_key(entities)].append(path)
                if kind in ("bold", "timeseries"):
                    self.run_keys[label].add(_run_key(entities))

    # building ---------------------------------------------------------------------------------

    def subject(self, pid: str, row: pd.Series) -> Subject:
        label = pid[4:]
        runs = tuple(self._run(label, key) for key in sorted(self.run_keys.get(label, ()), key=_sort_key))
        gm = self._only([p for _, p in self.gm.get(label, ())], f"gray-matter maps for {pid}",
                        "pass derivatives= with only one of fMRIPrep or CAT12 (one GM map per participant)")
        anat_mask = self._only(self.anat_mask.get(label, ()), f"anatomical brain masks for {pid}",
                               "pass derivatives= with one pipeline's folder")
        info = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
        return Subject(participant_id=pid, label=label, info=info, runs=runs, gm=gm, anat_mask=anat_mask)

    def _run(self, label: str, key: tuple) -> Run:
        entities = {"sub": label, **{e: v for e, v in zip(_RUN_ENTITIES, key) if v is not None}}
        fix = "pass derivatives= with one pipeline's folder, or remove the extra file"
        owner = f"for sub-{label} " + "_".join(f"{e}-{v}" for e, v in entities.items() if e != "sub")
        bold = self._only(self.files.get(("bold", label, key), ()), f"preprocessed BOLD files {owner}", fix)
        timeseries = self._only(self.files.get(("timeseries", label, key), ()),
                                f"ROI time-series files {owner}",
                                "keep one atlas per run in the derivatives you pass (derivatives=)")
        near = [p.parent for p in (bold, timeseries) if p is not None]
        mask = self._only(self.files.get(("mask", label, key), ()), f"BOLD brain masks {owner}", fix, near)
        confounds = self._only(self.files.get(("confounds", label, key), ()), f"confounds files {owner}",
                               fix, near)
        raw = self.raw_bold.get((label, key), ())
        events = self._inherited(entities, "events", ".tsv")
        run = Run(task=entities["task"], session=entities.get("ses"), run=entities.get("run"),
                  bold=bold, mask=mask, confounds=confounds,
                  events=events[-1] if events else None, timeseries=timeseries,
                  repetition_time=self._repetition_time(entities, bold, timeseries, raw[0] if raw else None))
        if raw:
            self.raw_of[label, run] = raw[0]
        return run

    @staticmethod
    def _only(paths: Sequence[Path], what: str, fix: str, near: Sequence[Path] = ()) -> Path | None:
        """The one file of a kind; among several, the one beside ``near``; else an error."""
        paths = list(dict.fromkeys(paths))
        if len(paths) > 1:
            for folder in near:
                beside = [p for p in paths if p.parent == folder]
                if len(beside) == 1:
                    return beside[0]
            raise InputError(f"{len(paths)} {what}; the other: {', '.join(str(p) for p in paths[1:3])}",
                             path=paths[0], fix=fix)
        return paths[0] if paths else None

    def _inherited(self, entities: Mapping[str, str], suffix: str, ext: str) -> list[Path]:
        """Raw metadata files applying to a run, least specific first (BIDS inheritance)."""
        levels = [self.root, self.root / f"sub-{entities['sub']}"]
        if "ses" in entities:
            levels.append(levels[-1] / f"ses-{entities['ses']}")
        levels.append(levels[-1] / "func")
        found = []
        for level in levels:
            here = sorted((len(e), str(p), p) for e, s, x, p in self.meta.get(level, ())
                          if s == suffix and x == ext and all(entities.get(k) == v for k, v in e.items()))
            if len(here) > 1 and here[-1][0] == here[-2][0]:
                raise InputError(f"two {suffix}{ext} files apply to the same run ({here[-2][2].name})",
                                 path=here[-1][2], fix="keep one per run (BIDS inheritance)")
            found.extend(p for _, _, p in here)
        return found

    def _repetition_time(self, entities, bold, timeseries, raw_bold) -> float | None:
        """Seconds: raw sidecars (BIDS inheritance, most specific wins), then the sidecars of the
        derivative files, then the NIfTI header (preprocessed, then raw BOLD)."""
        value, source = None, None
        for path in self._inherited(entities, "bold", ".json"):
            meta = self._read_json(path)
            if "RepetitionTime" in meta:
                value, source = meta["RepetitionTime"], path
        for path in (bold, timeseries):
            if value is not None or path is None or not _sidecar(path).is_file():
                continue
            meta = self._read_json(_sidecar(path))
            if "RepetitionTime" in meta:
                value, source = meta["RepetitionTime"], _sidecar(path)
            elif "SamplingFrequency" in meta:
                value = 1.0 / _positive(meta["SamplingFrequency"], _sidecar(path), "SamplingFrequency")
                source = _sidecar(path)
        if value is not None:
            return _positive(value, source, "RepetitionTime")
        for image in (bold, raw_bold):
            if image is not None:
                seconds = _header_tr(image)
                if seconds:
                    return seconds
        return None

    def _read_json(self, path: Path) -> dict:
        if path not in self._json:
            try:
                data = json.loads(path.read_text(encoding="utf-8-sig"))
            except (OSError, ValueError) as error:
                raise InputError(f"cannot read the JSON sidecar ({_reason(error)})", path=path,
                                 fix="write valid JSON (e.g. {\"RepetitionTime\": 2.0})") from None
            if not isinstance(data, dict):
                raise InputError("the JSON sidecar is not an object", path=path,
                                 fix="write {\"RepetitionTime\": 2.0, ...}")
            self._json[path] = data
        return self._json[path]


def _walk(top: Path, prune: Sequence[str] = ()) -> Iterator[tuple[Path, str]]:
    for folder, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in prune)
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(folder), name


def _label_of(path: Path, top: Path) -> str | None:
    """Participant label of a CAT12 file: from its name (mwp1sub-01_T1w.nii) or its folders."""
    match = _LABEL_IN_NAME.search(path.name)
    if match:
        return match.group(1)
    for part in reversed(path.relative_to(top).parts[:-1]):
        if _PARTICIPANT_ID.fullmatch(part):
            return part[4:]
    return None


def _sidecar(path: Path) -> Path:
    name = path.name
    for ext in (".nii.gz", ".nii", ".tsv"):
        if name.endswith(ext):
            return path.with_name(name[: -len(ext)] + ".json")
    return path.with_suffix(".json")


def _positive(value, path: Path, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
        unit = "seconds (e.g. 2.0)" if key == "RepetitionTime" else "Hz (e.g. 0.5)"
        raise InputError(f"{key} is {value!r}, not a positive number", path=path, fix=f"set {key} in {unit}")
    return float(value)


def _header_tr(path: Path) -> float | None:
    header = _load_nifti(path).header
    zooms = header.get_zooms()
    if len(zooms) < 4 or not zooms[3] > 0:
        return None
    unit = header.get_xyzt_units()[1]
    return float(zooms[3]) * {"msec": 1e-3, "usec": 1e-6}.get(unit, 1.0)


def _is_rest(task: str) -> bool:
    return task.lower().startswith("rest")


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

def _read_tsv(path: Path, what: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep="\t", na_values=_NA_VALUES, keep_default_na=False, encoding="utf-8-sig")
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read the {what} ({_reason(error)})", path=path,
                         fix="write a tab-separated table with a header row, n/a for missing values"
                         ) from None


def _read_timeseries(path: Path) -> pd.DataFrame:
    fix = "write one tab-separated column per region with a header row of region names, numbers below"
    try:
        with open(path, encoding="utf-8-sig") as handle:
            header = handle.readline().rstrip("\r\n").split("\t")
        data = pd.read_csv(path, sep="\t", header=None, skiprows=1, na_values=_NA_VALUES,
                           keep_default_na=False, dtype=float, encoding="utf-8-sig")
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read the ROI time series ({_reason(error)})", path=path, fix=fix) from None
    if data.shape[1] != len(header):
        raise InputError(f"the header names {len(header)} regions but the rows have {data.shape[1]} values",
                         path=path, fix=fix)
    data.columns = pd.Index(header)  # names may repeat: keep by position
    return data


def _count_rows(path: Path) -> int:
    """Data rows of a small TSV (non-empty lines after the header), without parsing it."""
    with open(path, "rb") as handle:
        lines = handle.read().splitlines()
    return max(sum(1 for line in lines if line.strip()) - 1, 0)


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------

def _load_nifti(path: Path) -> nib.Nifti1Image:
    """The image with its header read (data not loaded), or an InputError."""
    try:
        image = nib.load(path)
    except Exception as error:  # nibabel raises many kinds on damaged files
        raise InputError(f"cannot read the NIfTI header ({_reason(error)})", path=path,
                         fix="copy or regenerate the file (it is damaged or not NIfTI)") from None
    if not isinstance(image.header, nib.Nifti1Header):
        raise InputError("not a NIfTI image", path=path, fix="convert it to NIfTI (.nii or .nii.gz)")
    return image


def _check_complete(path: Path, image: nib.Nifti1Image) -> None:
    """Error if the file holds fewer bytes than the header promises.

    A ``.nii.gz`` is checked through its gzip trailer (ISIZE, the uncompressed size modulo 2**32),
    so only 4 bytes are read; only when that disagrees (several gzip members, trailing bytes) is
    the stream decompressed to count. A ``.nii`` is checked by its size.
    """
    header = image.header
    shape = header.get_data_shape()
    offset = getattr(image.dataobj, "offset", None)  # nibabel zeroes vox_offset in a loaded header
    offset = int(header["vox_offset"]) if offset is None else int(offset)
    expected = offset + int(np.prod(shape, dtype=np.int64)) * header.get_data_dtype().itemsize
    if path.name.endswith(".gz"):
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() >= 18:
                handle.seek(-4, os.SEEK_END)
                if struct.unpack("<I", handle.read(4))[0] == expected % 2**32:
                    return
        actual = _gunzip_size(path)
    else:
        actual = path.stat().st_size
    if actual is None or actual < expected:
        held = "a broken gzip stream" if actual is None else f"{actual} bytes"
        raise InputError(f"truncated NIfTI: the header promises {expected} bytes, the file holds {held}",
                         path=path, fix="copy or regenerate the file (an interrupted copy or download?)")


def _gunzip_size(path: Path, chunk: int = 1 << 22) -> int | None:
    """Uncompressed size of a (possibly multi-member) gzip file, or None if it is broken."""
    total, pending = 0, False
    decompressor = zlib.decompressobj(wbits=31)
    try:
        with open(path, "rb") as handle:
            while data := handle.read(chunk):
                while data:
                    pending = True
                    total += len(decompressor.decompress(data))
                    if not decompressor.eof:
                        break
                    data, pending = decompressor.unused_data, False
                    decompressor = zlib.decompressobj(wbits=31)
                    if not data.strip(b"\0"):
                        break
    except zlib.error:
        return None
    return None if pending else total


def _no_signal(data: np.ndarray) -> bool:
    """True when no value is finite and non-zero."""
    data = np.asarray(data)
    return not np.any(np.isfinite(data) & (data != 0))


@dataclass(frozen=True)
class _Grid:
    path: Path
    shape: tuple[int, int, int]
    affine: np.ndarray


def _check_image(path: Path, what: str, fix: str, bold: bool = False) -> tuple[_Grid, int]:
    """Check one image (readable, complete, 3-D/4-D, not empty); return its grid and volumes."""
    image = _load_nifti(path)
    shape = image.shape
    if len(shape) not in (3, 4) or (bold and len(shape) != 4):
        raise InputError(f"{what} has shape {shape}, expected {'4-D' if bold else '3-D'}", path=path,
                         fix="give the image the pipeline wrote, unchanged")
    _check_complete(path, image)
    try:
        if len(shape) == 4 and shape[3] > 1:
            data = image.dataobj[..., 0] if bold else image.dataobj[...]
        else:
            data = image.dataobj[...]
    except Exception as error:
        raise InputError(f"cannot read the image data ({_reason(error)})", path=path,
                         fix="copy or regenerate the file") from None
    if _no_signal(data):
        scope = "its first volume is" if bold else "it is"
        raise InputError(f"{what}: {scope} all zero or NaN", path=path, fix=fix)
    volumes = int(shape[3]) if len(shape) == 4 else 1
    return _Grid(path, tuple(int(n) for n in shape[:3]), image.affine), volumes


def _same_grid(a: _Grid, b: _Grid) -> bool:
    return a.shape == b.shape and np.allclose(a.affine, b.affine, atol=_GRID_ATOL)


def _describe(grid: _Grid) -> str:
    voxel = np.sqrt((grid.affine[:3, :3] ** 2).sum(axis=0))
    origin = grid.affine[:3, 3]
    return (f"{'x'.join(map(str, grid.shape))} voxels of {'x'.join(f'{v:g}' for v in voxel)} mm, "
            f"origin ({', '.join(f'{v:g}' for v in origin)})")


def _check_grids(grids: Sequence[_Grid], what: str) -> None:
    """Error naming the first image whose grid differs from the majority's.

    On a tie the grid seen first counts as the majority, so with one BOLD run and its mask the
    mask is the file named.
    """
    clusters: list[list[_Grid]] = []
    for grid in grids:
        for cluster in clusters:
            if _same_grid(cluster[0], grid):
                cluster.append(grid)
                break
        else:
            clusters.append([grid])
    if len(clusters) < 2:
        return
    majority = max(clusters, key=len)
    odd = next(g for g in grids if not any(g is m for m in majority))
    raise InputError(f"grid {_describe(odd)} differs from the majority of {what}s: "
                     f"{_describe(majority[0])} ({len(majority)} of {len(grids)} files)", path=odd.path,
                     fix="resample it to the common grid (e.g. the same fMRIPrep --output-spaces) "
                         "or leave this participant out")


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

class _Validator:
    """The checks of ``Cohort.from_bids(validate=True)``, in the order they run."""

    def __init__(self, table_path: Path, table: pd.DataFrame, subjects: Sequence[Subject], finder: _Finder):
        self.table_path, self.table, self.subjects, self.finder = table_path, table, subjects, finder

    def run(self) -> None:
        self.participants()
        functional, gm, anat = [], [], []
        for subject in self.subjects:
            if not (subject.runs or subject.gm or subject.anat_mask):
                raise InputError(f"{subject.participant_id} is listed but no file of it was found in the "
                                 f"dataset or its derivatives", path=self.table_path,
                                 fix="add its data, remove its row, or leave it out with participant_label")
            for run in subject.runs:
                functional += self.run_files(subject, run)
            if subject.gm is not None:
                gm.append(_check_image(subject.gm, "gray-matter map",
                                       "regenerate the segmentation (fMRIPrep or CAT12)")[0])
            if subject.anat_mask is not None:
                anat.append(_check_image(subject.anat_mask, "anatomical brain mask",
                                         "regenerate the mask")[0])
        _check_grids(functional, "BOLD series and run mask")
        _check_grids(gm, "gray-matter map")
        _check_grids(anat, "anatomical mask")
        sources = {source for s in self.subjects
                   for source, path in self.finder.gm.get(s.label, ()) if path == s.gm}
        if len(sources) > 1:
            raise InputError(f"gray-matter maps mix {' and '.join(sorted(sources))} across participants",
                             path=next(s.gm for s in self.subjects if s.gm is not None),
                             fix="pass derivatives= with one pipeline's GM maps for everyone")

    def participants(self) -> None:
        path = self.table_path
        if "group" in self.table.columns:
            for pid, value in self.table["group"].items():
                if value not in GROUPS:
                    shown = "n/a" if not isinstance(value, str) else repr(value)
                    raise InputError(f"group of {pid} is {shown}", path=path,
                                     fix="use patient or control for every participant, "
                                         "or drop the group column for a cohort without groups")
        if "site" in self.table.columns:
            missing = self.table.index[self.table["site"].isna()]
            if len(missing):
                raise InputError(f"site of {missing[0]} is n/a", path=path,
                                 fix="fill in every site, or drop the site column for a one-site study")

    def run_files(self, subject: Subject, run: Run) -> list[_Grid]:
        where = f"{subject.participant_id} {run.name}"
        if not run.is_rest:
            if run.events is None:
                near = self.finder.raw_of.get((subject.label, run)) or run.bold or run.timeseries
                raise InputError(f"task run {where} has no events file", path=near,
                                 fix=f"add {subject.participant_id}_{run.name}_events.tsv "
                                     f"(onset, duration, trial_type) to the raw func folder")
            self.events(run.events)
        if run.bold is not None and run.confounds is None:
            raise InputError(f"BOLD run {where} has no confounds file", path=run.bold,
                             fix="give the fMRIPrep derivatives folder with its "
                                 "desc-confounds_timeseries.tsv")
        grids, volumes = [], None
        if run.bold is not None:
            grid, volumes = _check_image(run.bold, "BOLD series", "regenerate it with fMRIPrep", bold=True)
            grids.append(grid)
        if run.mask is not None:
            grids.append(_check_image(run.mask, "BOLD brain mask", "regenerate the mask with fMRIPrep")[0])
        rows = {}
        for path, what in ((run.confounds, "confounds file"), (run.timeseries, "ROI time-series file")):
            if path is not None:
                try:
                    rows[path] = (_count_rows(path), what)
                except OSError as error:
                    raise InputError(f"cannot read the {what} ({_reason(error)})", path=path,
                                     fix="check the file's permissions") from None
                if rows[path][0] == 0:
                    raise InputError(f"the {what} has no rows", path=path,
                                     fix="write one row per volume below the header")
        if run.confounds is not None:
            columns = _read_header(run.confounds)
            if not columns or columns == [""]:
                raise InputError("the confounds file has no columns", path=run.confounds,
                                 fix="give fMRIPrep's desc-confounds_timeseries.tsv")
        reference = ("BOLD volumes", volumes) if volumes else None
        for path, (count, what) in rows.items():
            if reference is None:
                reference = (f"rows of {path.name}", count)
            elif count != reference[1]:
                raise InputError(f"the {what} has {count} rows but there are {reference[1]} {reference[0]}",
                                 path=path, fix="give the file made from this run (one row per volume)")
        return grids

    def events(self, path: Path) -> None:
        table = _read_tsv(path, "events file")
        missing = [c for c in ("onset", "duration") if c not in table.columns]
        if missing:
            raise InputError(f"events file lacks column(s) {', '.join(missing)}", path=path,
                             fix="add onset and duration (seconds) columns, tab-separated")
        onset = pd.to_numeric(table["onset"], errors="coerce")
        if onset.isna().any():
            row = int(np.flatnonzero(onset.isna().to_numpy())[0]) + 2
            raise InputError(f"onset on line {row} is not a number", path=path,
                             fix="give every onset in seconds")


def _read_header(path: Path) -> list[str]:
    with open(path, encoding="utf-8-sig") as handle:
        return handle.readline().rstrip("\r\n").split("\t")


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------

def _as_dir(path: str | os.PathLike, what: str, fix: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_dir():
        raise InputError(f"{what} does not exist or is not a folder", path=path, fix=fix)
    return path.resolve()


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."
