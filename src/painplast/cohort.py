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
``dataset_description.json``; folders written by painplast itself are skipped; ``--derivatives``
gives folders anywhere):

- ``..._task-<t>_..._space-<space>_desc-preproc_bold.nii[.gz]``: ``Run.bold`` (``space`` in
  fMRIPrep's ``--output-spaces`` syntax, e.g. ``MNI152NLin6Asym:res-2``, see :class:`Space`);
- ``..._task-<t>_..._space-<space>_desc-brain_mask.nii[.gz]``: ``Run.mask``;
- ``..._task-<t>_..._desc-confounds_timeseries.tsv`` (fMRIPrep 1.2-20.1: ``_regressors.tsv``):
  ``Run.confounds``;
- any other ``..._task-<t>_..._timeseries.tsv``: ``Run.timeseries`` (ROI time series, one column
  per region; XCP-D's ``seg-<atlas>_stat-mean_timeseries.tsv`` among them);
- ``sub-<l>_[ses-<s>_]..._space-<space>_label-GM_probseg.nii[.gz]`` (no ``task``): gray matter
  of that session, or of every session without ``ses``; or a CAT12 ``mwp1*.nii[.gz]`` whose name
  or folders name the participant (and session);
- ``sub-<l>_..._space-<space>_desc-brain_mask.nii[.gz]`` (no ``task``): the anatomical mask.

Files are matched to a run by their entities (``ses``, ``task``, ``acq``, ``ce``, ``rec``,
``dir``, ``run``; ``run-01`` is ``run-1``), not by their folder. Two files of the same kind for
the same run (two fMRIPrep versions side by side, two atlases' time series, two resolutions of
one space, an fMRIPrep GM map and a CAT12 one) are an error whose fix names ``--derivatives`` or
``--space``; painplast does not guess. Names of fMRIPrep before 1.2 stop with one line.

Sessions and runs
-----------------
A :class:`Subject` holds every session; :meth:`Cohort.units` gives one record per participant and
session, the unit of the participant level. Sessions are ordered by ``acq_time`` in
``sub-<l>_sessions.tsv`` when it has one for each, else by label;
:meth:`Cohort.cross_sectional_sessions` picks the one session per participant of
cross-sectional statistics (named, only, or earliest by ``acq_time``; else an error naming
``--session-label``). The modules combine every run of a task.

Decisions (see :meth:`Cohort.from_bids` for the full list of checks)
--------------------------------------------------------------------
- A participant listed in ``participants.tsv`` may lack a raw folder (a derivatives-only dataset
  such as ROI time series is fine); a participant with no file at all, anywhere, is left out with
  a warning, as BIDS Apps do (``Cohort.left_out``; ``strict=True``: an error).
- Folders ``sub-*`` that ``participants.tsv`` does not list are ignored with a warning.
- ``participants.tsv`` is read as studies write it (see :meth:`Cohort.from_bids`, Notes): known
  columns in any case, group and sex codes through flags or ``participants.json`` ``Levels``;
  ``n/a`` leaves a participant out of the analyses that need the column, with a note
  (``Cohort.notes``); codes that say nothing stop with the flag that fixes them. ``n/a`` in a
  ``site`` column is an error: the scanner of a scan is always known.
- Tasks whose label starts with ``rest`` are resting state and need no events; a task run needs
  an events file with ``onset`` and ``duration`` columns when a model reads it.
- A preprocessed BOLD run needs its confounds file; a time-series-only run may lack one (motion
  unknown). A run needs a repetition time (``--repetition-time`` when its files carry none).
- With ``needs``, only the files the analyses about to run read are checked.
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import nibabel as nib
import numpy as np
import pandas as pd

from .errors import InputError, MissingColumnError

__all__ = ["Run", "Subject", "Cohort", "Space", "Needs", "GROUPS", "DEFAULT_SPACE", "KNOWN_COLUMNS",
           "expand_confounds"]

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
# The records
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Space:
    """A template space as fMRIPrep's ``--output-spaces`` names it: ``NAME[:entity-value...]``.

    ``MNI152NLin6Asym:res-2`` selects files with ``space-MNI152NLin6Asym`` and ``res-2`` in their
    names; without a ``res`` the files of any resolution match (and two resolutions of one run
    are an error that names the flag).

    Examples
    --------
    >>> space = Space.parse("MNI152NLin6Asym:res-2")
    >>> space.name, space.label, space.bids
    ('MNI152NLin6Asym', 'MNI152NLin6Asym:res-2', 'space-MNI152NLin6Asym_res-2')
    >>> space.matches({"space": "MNI152NLin6Asym", "res": "2"}), space.matches({"space": "MNI152NLin6Asym"})
    (True, False)
    """

    name: str
    entities: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: "str | Space") -> "Space":
        if isinstance(text, Space):
            return text
        parts = str(text).strip().split(":")
        fix = "give a template as fMRIPrep's --output-spaces writes it, e.g. --space MNI152NLin6Asym:res-2"
        if not re.fullmatch(r"[A-Za-z0-9]+", parts[0]):
            raise InputError(f"space '{text}' is not a template name", fix=fix)
        entities = []
        for part in parts[1:]:
            key, sep, value = part.partition("-")
            if not (sep and re.fullmatch(r"[a-z]+", key) and re.fullmatch(r"[A-Za-z0-9]+", value)):
                raise InputError(f"'{part}' in --space {text} is not an entity such as res-2", fix=fix)
            entities.append((key, value))
        return cls(parts[0], tuple(entities))

    def matches(self, entities: Mapping[str, str]) -> bool:
        """True if a file's entities are in this space (and resolution, when one is named)."""
        return entities.get("space") == self.name and all(entities.get(k) == v for k, v in self.entities)

    @property
    def label(self) -> str:
        """The space in fMRIPrep's ``--output-spaces`` syntax (what ``--space`` takes)."""
        return ":".join([self.name] + [f"{k}-{v}" for k, v in self.entities])

    @property
    def bids(self) -> str:
        """The space as BIDS entities in a file name (``space-X_res-2``)."""
        return "_".join([f"space-{self.name}"] + [f"{k}-{v}" for k, v in self.entities])


def _space_of(entities: Mapping[str, str]) -> str:
    """The ``--space`` label of a file (space and the entities that qualify it)."""
    extra = [f"{k}-{entities[k]}" for k in ("cohort", "res") if k in entities]
    return ":".join([entities["space"]] + extra)


@dataclass(frozen=True)
class Run:
    """One functional run of one participant: its files and repetition time.

    Parameters
    ----------
    task : str
        painplast's task name (``"pain"``, ``"rest"``, ...): the dataset's ``task`` label, or the
        name it is mapped to with ``task_map`` (``--task-map rest=restingstate``).
    session, run : str or None
        BIDS ``ses`` and ``run`` labels, None when the dataset has none.
    bold : Path or None
        Preprocessed BOLD series in the template space (fMRIPrep ``desc-preproc_bold``).
    mask : Path or None
        fMRIPrep brain mask of this run in the same space.
    confounds : Path or None
        fMRIPrep ``desc-confounds_timeseries.tsv`` / ``desc-confounds_regressors.tsv`` (or the
        file beside ROI time series that carries ``framewise_displacement``).
    events : Path or None
        Raw ``events.tsv`` (found with BIDS inheritance).
    timeseries : Path or None
        ROI time series extracted elsewhere: one row per volume, one column per region.
    repetition_time : float or None
        Seconds, from the JSON sidecars (BIDS inheritance) or else the NIfTI header, or the
        ``repetition_time`` given to :meth:`Cohort.from_bids` when the data carry none.
    label : str or None
        The dataset's own ``task`` label when it differs from ``task``.
    entities : tuple of (str, str)
        The run's other BIDS entities (``acq``, ``ce``, ``rec``, ``dir``), in file-name order.

    Examples
    --------
    >>> run = Run(task="rest", session=None, run="1", repetition_time=2.0)
    >>> run.is_rest, run.bold is None, run.name
    (True, True, 'task-rest_run-1')
    >>> Run(task="rest", session="pre", label="restingstate").name
    'ses-pre_task-restingstate'
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
    label: str | None = None
    entities: tuple[tuple[str, str], ...] = ()

    @property
    def is_rest(self) -> bool:
        """True for resting-state runs (task label starting with ``rest``)."""
        return _is_rest(self.task)

    @property
    def name(self) -> str:
        """The run's BIDS entities as they appear in file names (``ses-1_task-pain_run-2``)."""
        parts = [f"ses-{self.session}"] if self.session else []
        parts.append(f"task-{self.label or self.task}")
        parts += [f"{k}-{v}" for k, v in self.entities]
        if self.run:
            parts.append(f"run-{self.run}")
        return "_".join(parts)

    @property
    def files(self) -> tuple[Path, ...]:
        """The run's input files (those found)."""
        return tuple(p for p in (self.bold, self.mask, self.confounds, self.events, self.timeseries)
                     if p is not None)

    def load_events(self) -> pd.DataFrame:
        """The events table (``onset``, ``duration``, ...; ``n/a`` read as NaN)."""
        if self.events is None:
            raise InputError(f"run {self.name} has no events file",
                             fix=f"add a BIDS events.tsv for task '{self.label or self.task}'")
        return _read_tsv(self.events, "events file")

    def load_confounds(self) -> pd.DataFrame:
        """The confounds table, one row per volume (``n/a`` read as NaN).

        Tables of every fMRIPrep version from 1.2 on are read alike: where the file lacks the
        expansion columns of the six motion parameters and of the white-matter, CSF and global
        signals (``<name>_derivative1``, ``<name>_power2``, ``<name>_derivative1_power2``, absent
        before fMRIPrep 1.4/20.x), they are computed from the base column as fMRIPrep does
        (backward difference with ``n/a`` first; squares). The file itself is never changed.
        """
        if self.confounds is None:
            raise InputError(f"run {self.name} has no confounds file",
                             fix="give the fMRIPrep derivatives folder with desc-confounds_timeseries.tsv "
                                 "(--derivatives)")
        return expand_confounds(_read_tsv(self.confounds, "confounds file"))

    def load_timeseries(self) -> pd.DataFrame:
        """ROI time series as floats, one column per region, in file order.

        Region names may repeat (different regions with the same label), so columns are kept by
        position: select them with ``.iloc``, not by name.
        """
        if self.timeseries is None:
            raise InputError(f"run {self.name} has no ROI time series",
                             fix="give the derivatives folder holding *_timeseries.tsv (--derivatives)")
        return _read_timeseries(self.timeseries)


#: Confound columns whose temporal derivative and square fMRIPrep adds (since 1.4 / 20.x).
EXPANDED_CONFOUNDS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z",
                      "white_matter", "csf", "global_signal")


def expand_confounds(table: pd.DataFrame) -> pd.DataFrame:
    """Add the derivative and quadratic expansions that older fMRIPrep confounds files lack.

    Parameters
    ----------
    table : DataFrame
        A confounds table as read (``n/a`` as NaN).

    Returns
    -------
    DataFrame
        The same table with ``<c>_derivative1`` (backward difference, NaN in the first row, as
        fMRIPrep writes it), ``<c>_power2`` and ``<c>_derivative1_power2`` for every base column
        of :data:`EXPANDED_CONFOUNDS` present, where missing. Existing columns are kept as they are.

    Examples
    --------
    >>> t = expand_confounds(pd.DataFrame({"trans_x": [0.0, 1.0, 3.0]}))
    >>> t["trans_x_derivative1"].tolist()[1:], t["trans_x_derivative1_power2"].tolist()[1:]
    ([1.0, 2.0], [1.0, 4.0])
    """
    added = {}
    for base in EXPANDED_CONFOUNDS:
        if base not in table.columns:
            continue
        x = pd.to_numeric(table[base], errors="coerce")
        d = x.diff()
        for name, values in ((f"{base}_derivative1", d), (f"{base}_power2", x ** 2),
                             (f"{base}_derivative1_power2", d ** 2)):
            if name not in table.columns:
                added[name] = values
    return pd.concat([table, pd.DataFrame(added, index=table.index)], axis=1) if added else table


@dataclass(frozen=True)
class Subject:
    """One participant (or one session of one participant): the participants.tsv row and the files.

    A participant scanned in several sessions is one ``Subject`` holding every session's runs;
    :meth:`in_session` gives the record of one session (``session`` set, only that session's runs
    and anatomy), which is what a module's ``subject`` stage receives: the unit of the
    participant level is one participant and session.

    Parameters
    ----------
    participant_id : str
        ``"sub-001"``.
    label : str
        ``"001"``.
    info : mapping
        The participant's row of ``participants.tsv`` (NaN for ``n/a``; ``group`` as
        ``patient``/``control``, ``sex`` as ``M``/``F``).
    runs : tuple of Run
        Functional runs, sorted by session, task and run number.
    gm : Path or None
        Gray-matter map: fMRIPrep ``label-GM_probseg`` in the template space, or CAT12 ``mwp1``.
        For a participant with several sessions and anatomy per session, the record of the whole
        participant has none: take :meth:`in_session`.
    anat_mask : Path or None
        Anatomical brain mask in the template space.
    session : str or None
        The session this record covers (records made by :meth:`in_session`), else None.
    anatomy : mapping
        ``{session or None: (gm, anat_mask)}``: anatomy written per session (``ses-`` in its name
        or folder) or for the participant (key None, shared by every session).
    session_info : mapping
        ``{session: row of sub-<label>_sessions.tsv}`` (``acq_time``, ...), where there is one.

    Examples
    --------
    >>> sub = Subject("sub-01", "01", {"age": 30.0},
    ...               (Run("pain", run="1"), Run("pain", run="2"), Run("rest")))
    >>> sub.tasks, len(sub.runs_for("pain")), sub.run("rest").task, sub.run("somatotopy")
    (('pain', 'rest'), 2, 'rest', None)
    >>> two = Subject("sub-02", "02", {}, (Run("rest", session="pre"), Run("rest", session="post")),
    ...               session_info={"pre": {"acq_time": "2020-01-01"}, "post": {"acq_time": "2020-06-01"}})
    >>> two.sessions, two.in_session("post").runs[0].session
    (('pre', 'post'), 'post')
    """

    participant_id: str
    label: str
    info: Mapping[str, Any] = field(default_factory=dict, hash=False)
    runs: tuple[Run, ...] = ()
    gm: Path | None = None
    anat_mask: Path | None = None
    session: str | None = None
    anatomy: Mapping[str | None, tuple[Path | None, Path | None]] = field(default_factory=dict, hash=False)
    session_info: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)

    def runs_for(self, task: str) -> tuple[Run, ...]:
        """All runs of ``task``, in session and run order."""
        return tuple(r for r in self.runs if r.task == task)

    def run(self, task: str) -> Run | None:
        """The first run of ``task``, or None (a module combines all of :meth:`runs_for`)."""
        runs = self.runs_for(task)
        return runs[0] if runs else None

    @property
    def tasks(self) -> tuple[str, ...]:
        """Task labels of this participant's runs, in order of first appearance."""
        return tuple(dict.fromkeys(r.task for r in self.runs))

    @property
    def unit(self) -> str:
        """``sub-01`` or ``sub-01 ses-pre``: the participant-level unit, for messages."""
        return self.participant_id + (f" ses-{self.session}" if self.session else "")

    @property
    def sessions(self) -> tuple[str | None, ...]:
        """Sessions with data, earliest first (by ``acq_time`` in sessions.tsv when every session
        has one, else by label); ``(None,)`` for a dataset without sessions."""
        if self.session is not None:
            return (self.session,)
        found = {r.session for r in self.runs} | set(self.anatomy)
        labels = [s for s in found if s is not None]
        if not labels:
            return (None,)
        return tuple(_order_sessions(labels, self.session_info))

    def in_session(self, session: str | None) -> "Subject":
        """The record of one session: its runs, and its anatomy (else the participant's).

        Parameters
        ----------
        session : str or None
            A session label (without ``ses-``); None for a dataset without sessions.
        """
        if session is None or self.session == session:
            return self
        gm, mask = self.anatomy.get(session) or self.anatomy.get(None) or (None, None)
        return replace(self, runs=tuple(r for r in self.runs if r.session == session), gm=gm,
                       anat_mask=mask, session=session)

    def units(self) -> tuple["Subject", ...]:
        """One record per session (the record itself without sessions)."""
        return tuple(self.in_session(s) for s in self.sessions)

    @property
    def files(self) -> tuple[Path, ...]:
        """Every input file of this record (runs and anatomy), sorted, without repeats."""
        paths = [p for r in self.runs for p in r.files] + [p for p in (self.gm, self.anat_mask) if p]
        return tuple(sorted(dict.fromkeys(paths), key=str))


def _order_sessions(labels: Sequence[str], info: Mapping[str, Mapping[str, Any]]) -> list[str]:
    times = {s: pd.to_datetime((info.get(s) or {}).get("acq_time"), errors="coerce") for s in labels}
    if all(not pd.isna(t) for t in times.values()):
        return sorted(labels, key=lambda s: (times[s], _natural(s)))
    return sorted(labels, key=_natural)


def _natural(text: str) -> tuple:
    """Sort key that puts ``2`` before ``10``."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.findall(r"\d+|\D+", text))


@dataclass(frozen=True)
class Needs:
    """What one analysis (a plasticity module) reads from each participant and session.

    Parameters
    ----------
    name : str
        The analysis, for messages (``"connectivity"``).
    task : str, optional
        painplast task name whose runs it reads (``"rest"``).
    events : bool
        Its runs need an events file (task-based models).
    timeseries : bool
        ROI time series extracted elsewhere are enough (no BOLD image needed).
    anat : bool
        It reads the gray-matter map.

    Examples
    --------
    >>> Needs("structure", anat=True).describe()
    'a gray-matter map'
    """

    name: str
    task: str | None = None
    events: bool = False
    timeseries: bool = False
    anat: bool = False

    def describe(self) -> str:
        if self.anat:
            return "a gray-matter map"
        what = "a preprocessed BOLD run" + (" or ROI time series" if self.timeseries else "")
        return f"{what} of task '{self.task}'" + (" with events" if self.events else "")

    def met_by(self, unit: "Subject") -> bool:
        """True if this participant-session has the inputs."""
        if self.anat:
            return unit.gm is not None
        runs = unit.runs_for(self.task) if self.task else unit.runs
        return any((r.bold is not None or (self.timeseries and r.timeseries is not None))
                   and (r.events is not None or not self.events) for r in runs)


@dataclass(frozen=True)
class _Found:
    """What discovery saw besides the records, to explain why nothing matched."""
    tasks: tuple[str, ...] = ()               # dataset task labels (raw BOLD and derivatives)
    spaces: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # kind -> --space labels
    old_fmriprep: Path | None = None           # a file named as fMRIPrep < 1.2 names it
    derivatives_searched: tuple[Path, ...] = ()


@dataclass(frozen=True, eq=False)
class Cohort:
    """A BIDS dataset's participants and their files, validated up front.

    Build it with :meth:`from_bids`. Iterating yields :class:`Subject` objects (one per
    participant) in the order of ``participants.tsv``; :meth:`units` yields one record per
    participant and session, the unit of the participant level. ``participants`` is the table
    indexed by ``participant_id``, with known columns normalised (see :meth:`from_bids`).

    Examples
    --------
    A derivatives-only dataset of ROI time series (written to a temporary folder):

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = (root / "participants.tsv").write_text("participant_id\\tage\\nsub-01\\t31\\n")
    >>> func = root / "derivatives" / "roi" / "sub-01" / "func"
    >>> func.mkdir(parents=True)
    >>> _ = (func / "sub-01_task-rest_atlas-X_timeseries.tsv").write_text("a\\tb\\n1\\t2\\n3\\t4\\n")
    >>> cohort = Cohort.from_bids(root, repetition_time=2.0)
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
    notes: tuple[str, ...] = ()
    left_out: tuple[tuple[str, str], ...] = ()
    session_label: tuple[str, ...] = ()
    found: _Found = field(default_factory=_Found, repr=False, compare=False)
    _by_id: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_by_id", {s.participant_id: s for s in self.subjects})

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_bids(cls, root: str | os.PathLike, derivatives: Sequence[str | os.PathLike] | None = None,
                  participant_label: Sequence[str] | str | None = None,
                  space: "str | Space" = DEFAULT_SPACE, validate: bool = True, *,
                  session_label: Sequence[str] | str | None = None,
                  task_map: Mapping[str, str] | None = None,
                  repetition_time: float | None = None,
                  group_map: Mapping[str, str] | None = None,
                  sex_map: Mapping[str, str] | None = None,
                  strict: bool = False, needs: Sequence[Needs] | None = None,
                  lenient_codes: bool = False) -> "Cohort":
        """Read a BIDS dataset (with derivatives) and check it.

        Parameters
        ----------
        root : path
            BIDS dataset root, holding ``participants.tsv``.
        derivatives : list of paths, optional
            Derivative datasets to search (fMRIPrep, CAT12, XCP-D or other ROI time series),
            anywhere on disk (``--derivatives``). Default: every sub-folder of
            ``root/derivatives`` except painplast's own outputs.
        participant_label : list of str, optional
            Participants to keep, with or without ``sub-``; default all of ``participants.tsv``.
        space : str or Space
            Template space of the preprocessed images in fMRIPrep's ``--output-spaces`` syntax
            (``MNI152NLin2009cAsym``, ``MNI152NLin6Asym:res-2``).
        validate : bool
            Check the files (see Notes). Reading ``participants.tsv``, its IDs and the file
            discovery are checked in any case.
        session_label : list of str, optional
            Sessions to keep (with or without ``ses-``); default every session.
        task_map : mapping, optional
            ``{painplast task: dataset task label}``, e.g. ``{"rest": "restingstate"}``.
        repetition_time : float, optional
            Seconds; used for runs whose sidecars carry none (ROI time series), and instead of a
            value read only from a NIfTI header. A JSON sidecar that disagrees is an error.
        group_map, sex_map : mapping, optional
            Codes of the ``group`` / ``sex`` columns, e.g. ``{"CLBP": "patient", "HC": "control"}``,
            ``{"1": "M", "2": "F"}`` (see Notes).
        strict : bool
            A listed participant without any file is an error (default: left out, with a warning).
        needs : list of Needs, optional
            What the analyses to run read; only those files are validated. Default: everything.
        lenient_codes : bool
            ``group``/``sex`` codes that cannot be read become n/a with a note instead of an error
            (the participant level does not use them; the group level does).

        Returns
        -------
        Cohort

        Raises
        ------
        InputError
            On the first problem found; the message names the file and the fix.

        Notes
        -----
        ``participants.tsv`` as studies write it: the known columns (``group``, ``site``, ``age``,
        ``sex``, ``pain_intensity``, ...) are matched case-insensitively (``Age``, and ``Gender``
        for ``sex``), with a note. ``group`` values ``patient``/``control`` (any case, plural too)
        are used as they are; other codes through ``group_map`` or the ``Levels`` of
        ``participants.json`` whose descriptions say patient/pain or control/healthy; ``n/a``
        leaves that participant out of the analyses that need the group. ``sex`` as ``M``/``F``,
        ``male``/``female``; numeric codes (``1``/``2``: both conventions exist) only through
        ``sex_map`` or ``Levels``. Anything else is an error naming the flag.

        With ``validate=True`` these are errors: a NIfTI that nibabel cannot read, that is
        truncated (gzip trailer or file size against the header's data size), not 3-D/4-D, or whose
        values are all zero or NaN (GM maps and masks in full, BOLD by its first volume); BOLD
        runs and run masks whose grid (shape and affine, within 1e-3) differ from the majority's,
        and likewise among GM maps and among anatomical masks; a task run (not rest) without
        events, or events without ``onset``/``duration`` or with a missing onset; a BOLD run
        without confounds; confounds or time series whose number of rows differs from the BOLD
        volumes (or from each other); a repetition time that is not a positive number, or none at
        all. Only the files that ``needs`` names are checked; only headers, gzip trailers, first
        volumes and small tables are read, so validation stays fast; nothing is written.
        """
        root = _as_dir(root, "BIDS dataset root", "give the folder that holds participants.tsv")
        space = Space.parse(space)
        table_path = root / "participants.tsv"
        table, notes = _read_participants(table_path, group_map=group_map, sex_map=sex_map,
                                          lenient=lenient_codes)
        if participant_label is not None:
            table = _select(table, participant_label, table_path)
        if derivatives is None:
            deriv_dirs = _default_derivatives(root)
        else:
            if isinstance(derivatives, (str, os.PathLike)):
                derivatives = [derivatives]
            deriv_dirs = tuple(_as_dir(d, "derivatives folder", "give an existing folder to --derivatives")
                               for d in derivatives)
        sessions = _labels(session_label, "ses")
        finder = _Finder(root, deriv_dirs, space, task_map or {}, repetition_time)
        listed = set(table.index)
        unlisted = sorted(label for label in finder.labels if f"sub-{label}" not in listed)
        if unlisted and participant_label is None:
            warnings.warn(f"{table_path}: {len(unlisted)} participant folder(s) not listed are "
                          f"ignored: {', '.join('sub-' + x for x in unlisted[:5])}"
                          f"{' ...' if len(unlisted) > 5 else ''}", stacklevel=2)

        subjects, left_out = [], []
        for pid in table.index:
            subject = finder.subject(pid, table.loc[pid])
            if sessions:
                kept = tuple(r for r in subject.runs if r.session in sessions)
                anatomy = {s: a for s, a in subject.anatomy.items() if s is None or s in sessions}
                subject = replace(subject, runs=kept, anatomy=anatomy)
            if subject.runs or any(any(a) for a in subject.anatomy.values()):
                subjects.append(subject)
                continue
            where = f" in session(s) {', '.join(sessions)}" if sessions else ""
            if strict:
                raise InputError(f"{pid} is listed but no file of it was found{where} in the dataset or "
                                 "its derivatives", path=table_path,
                                 fix="add its data, remove its row, or leave it out with --participant-label")
            left_out.append((pid, f"no file found{where} (listed in participants.tsv)"))
        if left_out:
            ids = ", ".join(p for p, _ in left_out[:5]) + (" ..." if len(left_out) > 5 else "")
            warnings.warn(f"{table_path}: {len(left_out)} listed participant(s) without any file are left "
                          f"out: {ids} (--strict makes this an error)", stacklevel=2)
            notes.append(f"{len(left_out)} listed participant(s) without any file left out: {ids}")
        if finder.old_fmriprep is not None and not subjects:
            raise _old_fmriprep_error(finder.old_fmriprep)
        if validate:
            _Validator(table_path, table, subjects, finder, needs).run()
        found = _Found(tasks=tuple(sorted(finder.task_labels)),
                       spaces={k: tuple(sorted(v)) for k, v in finder.spaces.items()},
                       old_fmriprep=finder.old_fmriprep, derivatives_searched=deriv_dirs)
        return cls(root=root, participants=table, subjects=tuple(subjects), derivatives=deriv_dirs,
                   space=space.label, notes=tuple(notes), left_out=tuple(left_out),
                   session_label=tuple(sessions), found=found)

    # -- access ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.subjects)

    def __iter__(self) -> Iterator[Subject]:
        return iter(self.subjects)

    def subject(self, participant_id: str, session: str | None = None) -> Subject:
        """The participant with this ID (``"sub-01"`` or ``"01"``), or one session of it."""
        pid = participant_id if str(participant_id).startswith("sub-") else f"sub-{participant_id}"
        try:
            found = self._by_id[pid]
        except KeyError:
            raise InputError(f"participant {pid} is not in the cohort", path=self.root / "participants.tsv",
                             fix="use one of " + ", ".join(list(self._by_id)[:5])
                             + (" ..." if len(self._by_id) > 5 else "")) from None
        return found if session is None else found.in_session(str(session).removeprefix("ses-"))

    def units(self) -> tuple[Subject, ...]:
        """Every participant and session: the records the participant level runs on."""
        return tuple(unit for subject in self.subjects for unit in subject.units())

    @property
    def has_sessions(self) -> bool:
        """True if any participant has data in a named session."""
        return any(s is not None for subject in self.subjects for s in subject.sessions)

    def cross_sectional_sessions(self, session_label: Sequence[str] | str | None = None
                                 ) -> dict[str, str | None]:
        """The one session per participant that cross-sectional group statistics use.

        The session named (``session_label``, else the cohort's own ``session_label`` when it
        names exactly one), else the participant's only session, else the earliest by
        ``acq_time`` in ``sub-<label>_sessions.tsv``. Participants without data in the named
        session are not in the result.

        Returns
        -------
        dict
            ``{participant_id: session label or None}``.

        Raises
        ------
        InputError
            When the choice is not determined: the message names ``--session-label``.
        """
        wanted = _labels(session_label, "ses") or (self.session_label if len(self.session_label) == 1 else ())
        out = {}
        for subject in self.subjects:
            sessions = [s for s in subject.sessions if s is not None]
            if not sessions:
                out[subject.participant_id] = None
            elif wanted:
                hits = [s for s in sessions if s in wanted]
                if len(hits) > 1:
                    raise InputError(f"{subject.participant_id} has sessions {', '.join(hits)} among those "
                                     "selected; cross-sectional group statistics use one session",
                                     fix=f"give one --session-label (e.g. --session-label {hits[0]})")
                if hits:
                    out[subject.participant_id] = hits[0]
            elif len(sessions) == 1:
                out[subject.participant_id] = sessions[0]
            elif all(not pd.isna(pd.to_datetime((subject.session_info.get(s) or {}).get("acq_time"),
                                                errors="coerce")) for s in sessions):
                out[subject.participant_id] = subject.sessions[0]
            else:
                raise InputError(f"{subject.participant_id} has sessions {', '.join(sorted(sessions, key=_natural))} "
                                 f"and no acq_time for each in sub-{subject.label}_sessions.tsv, so the "
                                 "session of the cross-sectional group statistics is not known",
                                 path=self.root / f"sub-{subject.label}",
                                 fix=f"choose it with --session-label (e.g. --session-label "
                                     f"{sorted(sessions, key=_natural)[0]}), or add acq_time to the sessions.tsv")
        return out

    def check_inputs(self, needs: Sequence[Needs], required: Sequence[str] = ()) -> dict[str, int]:
        """How many participant-sessions each analysis can run on; stop when it would be none.

        Parameters
        ----------
        needs : list of Needs
            The analyses about to run.
        required : list of str
            Analyses the user asked for by name (``--modules``): each must find some input.

        Returns
        -------
        dict
            ``{analysis: number of participant-sessions with its inputs}``.

        Raises
        ------
        InputError
            Nothing at all would run, or a required analysis finds no input: the message says
            what was found instead and names the flag that fixes it (``--task-map``, ``--space``,
            ``--derivatives``, ``--session-label``, ``--repetition-time``).
        """
        units = self.units()
        counts = {need.name: sum(need.met_by(u) for u in units) for need in needs}
        empty = [need for need in needs if counts[need.name] == 0]
        if not empty:
            return counts
        if len(empty) < len(needs):
            empty = [need for need in empty if need.name in required]
            if not empty:
                return counts
        need = empty[0]
        raise self._nothing_error(need, units)

    def _nothing_error(self, need: Needs, units: Sequence[Subject]) -> InputError:
        found = self.found
        what = f"{need.name} needs {need.describe()}"
        if found.old_fmriprep is not None:
            return _old_fmriprep_error(found.old_fmriprep)
        if not self.subjects:
            return InputError(f"no participant has any file{' in the selected sessions' if self.session_label else ''}",
                              path=self.root, fix="check --participant-label/--session-label, or give the "
                                                  "preprocessed data with --derivatives")
        kind = "gm" if need.anat else "bold"
        other_spaces = [s for s in found.spaces.get(kind, ()) if s != self.space]
        in_other_space = (InputError(f"{what} in space {self.space} and none was found; found it in "
                                     f"{', '.join(other_spaces)}", path=self.root,
                                     fix=f"pass --space {other_spaces[0]}") if other_spaces else None)
        if need.anat:
            if in_other_space:
                return in_other_space
            return InputError(f"{what} (fMRIPrep label-GM_probseg or CAT12 mwp1) and none was found in "
                              f"{_searched(found)}", path=self.root,
                              fix="give the folder of fMRIPrep or CAT12 outputs with --derivatives")
        tasks = {r.task for u in units for r in u.runs}
        if need.task not in tasks:
            taken = {r.label for u in units for r in u.runs if r.label}     # already mapped elsewhere
            labels = [t for t in found.tasks if t not in taken]
            guess = next((t for t in labels if t.lower().startswith(need.task) or need.task in t.lower()),
                         labels[0] if labels else None)
            if guess is not None:
                return InputError(f"{what} and the dataset has no task '{need.task}' (its tasks: "
                                  f"{', '.join(found.tasks)})", path=self.root,
                                  fix=f"map the dataset's task with --task-map {need.task}={guess}")
            return InputError(f"{what} and the dataset has no task '{need.task}' and no other task",
                              path=self.root, fix="give the fMRIPrep outputs with --derivatives, or leave "
                                                  f"{need.name} out with --modules")
        runs = [r for u in units for r in u.runs_for(need.task)]
        if not any(r.bold is not None or r.timeseries is not None for r in runs):
            if in_other_space:
                return in_other_space
            return InputError(f"{what}: the raw runs are there but no preprocessed BOLD or ROI time series "
                              f"was found in {_searched(found)}", path=self.root,
                              fix="give the fMRIPrep (or ROI time-series) folder with --derivatives")
        if need.events:
            return InputError(f"{what}: no run of task '{need.task}' has an events file", path=self.root,
                              fix=f"add *_task-{need.task}_events.tsv files to the raw dataset, or leave "
                                  f"{need.name} out with --modules")
        return InputError(f"{what} and none of the selected participants has it", path=self.root,
                          fix="check --participant-label and --session-label")

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


def _searched(found: _Found) -> str:
    if not found.derivatives_searched:
        return "the dataset (it has no derivatives folder)"
    return ", ".join(str(p) for p in found.derivatives_searched[:3])


def _old_fmriprep_error(path: Path) -> InputError:
    return InputError("outputs of fMRIPrep before 1.2 (named as this file is) are not supported", path=path,
                      fix="re-run fMRIPrep 1.2 or later (20.2 LTS or newer) and pass its folder with --derivatives")


def _labels(values: Sequence[str] | str | None, prefix: str) -> tuple[str, ...]:
    """Labels given with or without their ``prefix-``, checked."""
    if values is None:
        return ()
    if isinstance(values, str):
        values = [values]
    out = []
    for value in values:
        label = str(value).strip().removeprefix(f"{prefix}-")
        if not re.fullmatch(r"[A-Za-z0-9]+", label):
            raise InputError(f"malformed {prefix} label {value!r}",
                             fix=f"give labels such as pre or {prefix}-pre (letters and digits only)")
        out.append(label)
    return tuple(dict.fromkeys(out))


# --------------------------------------------------------------------------------------------
# participants.tsv
# --------------------------------------------------------------------------------------------

#: participants.tsv columns painplast knows (docs/architecture.md, "Inputs").
KNOWN_COLUMNS = ("group", "diagnosis", "site", "age", "sex", "pain_intensity", "pain_duration_months",
                 "affected_side", "modulation_score", "treatment_response")
_COLUMN_SYNONYMS = {"gender": "sex"}
_GROUP_WORDS = {"patient": "patient", "patients": "patient", "control": "control", "controls": "control"}
_SEX_WORDS = {"m": "M", "male": "M", "man": "M", "f": "F", "female": "F", "woman": "F"}
_CONTROL_TEXT = re.compile(r"\b(control|controls|healthy|hc|hv|volunteers?|pain[- ]free)\b", re.I)
_PATIENT_TEXT = re.compile(r"\b(patients?|cases?|chronic|pain|clbp|cbp|fibromyalgia|migraine|crps|"
                           r"arthritis|neuropathic|neuropathy)\b", re.I)


def _read_participants(path: Path, group_map: Mapping[str, str] | None = None,
                       sex_map: Mapping[str, str] | None = None,
                       lenient: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """participants.tsv indexed by participant_id, known columns normalised; and notes on what
    was read differently from how it is written. ``lenient``: codes that say nothing (a group
    ``CLBP``) become n/a with a note instead of an error (the participant level does not use them)."""
    if not path.is_file():
        raise InputError("participants.tsv is missing", path=path,
                         fix="add a tab-separated participants.tsv with a participant_id column")
    try:
        table = pd.read_csv(path, sep="\t", na_values=_NA_VALUES, keep_default_na=False,
                            dtype={"participant_id": str}, encoding="utf-8-sig")
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read participants.tsv ({_reason(error)})", path=path,
                         fix="write it as UTF-8 text, tab-separated, with a header row") from None
    table.columns = [str(c).strip() for c in table.columns]
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
    levels = _levels(path.with_suffix(".json"))
    notes: list[str] = []
    renames = {}
    for column in table.columns:
        key = _COLUMN_SYNONYMS.get(column.lower(), column.lower())
        if key in KNOWN_COLUMNS and column != key and key not in table.columns \
                and key not in renames.values():
            renames[column] = key
    if renames:
        table = table.rename(columns=renames)
        levels = {renames.get(k, k): v for k, v in levels.items()}
        notes.append("participants.tsv: " + ", ".join(f"column '{a}' read as '{b}'" for a, b in renames.items()))
    for column, words, given, from_text, allowed, flag in (
            ("group", _GROUP_WORDS, group_map, _group_of_text, ("patient", "control"),
             "--group-map CLBP=patient,HC=control"),
            ("sex", _SEX_WORDS, sex_map, _sex_of_text, ("M", "F"), "--sex-map 1=M,2=F")):
        if column not in table.columns:
            continue
        try:
            table[column] = _recode(table[column], path, column, words, given, levels.get(column), from_text,
                                    allowed, flag)
        except InputError as error:
            if not lenient:
                raise
            table[column] = np.nan
            notes.append(f"participants.tsv: {column} not used ({error.message}); the group level needs "
                         f"{flag.split()[0]}")
    for column in KNOWN_COLUMNS:
        if column in table.columns and table[column].isna().any() and table[column].notna().any():
            missing = table.index[table[column].isna()]
            notes.append(f"participants.tsv: {column} is n/a for {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}; left out of the analyses that use {column}")
    return table, notes


def _levels(path: Path) -> dict[str, dict[str, str]]:
    """``{column: {code: description}}`` from participants.json ``Levels`` (missing file: empty)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read participants.json ({_reason(error)})", path=path,
                         fix="write valid JSON, or remove the file") from None
    out = {}
    for column, spec in (data.items() if isinstance(data, dict) else ()):
        if isinstance(spec, dict) and isinstance(spec.get("Levels"), dict):
            out[str(column).strip()] = {str(k).strip(): str(v) for k, v in spec["Levels"].items()}
    return out


def _group_of_text(text: str) -> str | None:
    if _CONTROL_TEXT.search(text):
        return "control"
    if _PATIENT_TEXT.search(text):
        return "patient"
    return None


def _sex_of_text(text: str) -> str | None:
    words = set(re.findall(r"[a-z]+", text.lower()))
    male, female = bool(words & {"m", "male", "man", "men"}), bool(words & {"f", "female", "woman", "women"})
    return "M" if male and not female else "F" if female and not male else None


def _recode(values: pd.Series, path: Path, column: str, words: Mapping[str, str],
            given: Mapping[str, str] | None, levels: Mapping[str, str] | None, from_text,
            allowed: tuple[str, ...], flag: str) -> pd.Series:
    """Map a coded column to painplast's values: the flag's mapping, else known words, else
    participants.json Levels described in words; n/a stays missing; anything else is an error."""
    mapping: dict[str, str | None] = {}
    source = "participants.json Levels"
    if given:
        source = flag.split()[0]
        for code, value in given.items():
            target = str(value).strip()
            norm = {a.lower(): a for a in allowed}.get(target.lower())
            if norm is None and target.lower() not in ("n/a", "na"):
                raise InputError(f"{source} maps '{code}' to '{value}'",
                                 fix=f"map every code to one of {', '.join(allowed)} or n/a, e.g. {flag}")
            mapping[str(code).strip().lower()] = norm
    else:
        for code, description in (levels or {}).items():
            key = code.lower()
            kind = words.get(key) or from_text(description) or from_text(code)
            if kind is not None:
                mapping[key] = kind
    out = []
    unknown: dict[str, str] = {}
    for pid, value in values.items():
        if value is None or (isinstance(value, float) and np.isnan(value)):
            out.append(np.nan)
            continue
        key = str(value).strip()
        if isinstance(value, float) and value.is_integer():
            key = str(int(value))
        key = key.lower()
        if key in mapping:
            out.append(np.nan if mapping[key] is None else mapping[key])
        elif key in words:
            out.append(words[key])
        else:
            out.append(np.nan)
            unknown.setdefault(key if not isinstance(value, str) else value.strip(), pid)
    if unknown:
        codes = ", ".join(f"{c!r} ({pid})" for c, pid in unknown.items())
        raise InputError(f"{column} value(s) {codes} are not {' or '.join(allowed)}"
                         + (f" and {source} does not map them" if given or levels else ""), path=path,
                         fix=f"say what the codes mean with {flag} (or Levels in participants.json)")
    return pd.Series(out, index=values.index, name=values.name, dtype=object)


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
                             fix="add it to participants.tsv or drop it from --participant-label")
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


#: File names of fMRIPrep before 1.2 (``..._bold_space-X_preproc.nii.gz``, ``..._bold_confounds.tsv``).
_OLD_FMRIPREP = re.compile(r"^sub-[A-Za-z0-9]+_.*(_bold_space-[A-Za-z0-9]+_(preproc|brainmask)\.nii|"
                           r"_bold_confounds\.tsv$|_T1w_space-[A-Za-z0-9]+_class-GM_probtissue\.nii)")


def _index_label(value: str | None) -> str | None:
    """An index entity's label compared as a number: ``run-01`` and ``run-1`` are the same run
    (BIDS: run is an index; fMRIPrep writes ``run-1`` for a raw ``run-01``)."""
    return str(int(value)) if value is not None and value.isdigit() else value


def _run_key(entities: Mapping[str, str]) -> tuple:
    return tuple(_index_label(entities.get(e)) if e == "run" else entities.get(e) for e in _RUN_ENTITIES)


def _same_entity(key: str, a: str | None, b: str | None) -> bool:
    return _index_label(a) == _index_label(b) if key == "run" else a == b


def _sort_key(key: tuple) -> tuple:
    run = key[_RUN_ENTITIES.index("run")]
    return tuple("" if v is None else v for v in key[:-1]) + (
        (0, int(run), "") if run and run.isdigit() else (1, 0, run or ""),)


class _Finder:
    """Indexes the raw dataset and the derivatives once; builds :class:`Subject` records."""

    def __init__(self, root: Path, derivatives: Sequence[Path], space: Space,
                 task_map: Mapping[str, str], repetition_time: float | None):
        self.root, self.space, self.derivatives = root, space, tuple(derivatives)
        self.tasks_of = _task_names(task_map)        # dataset label -> painplast task
        self.repetition_time = None if repetition_time is None else _positive(
            repetition_time, None, "RepetitionTime", flag=True)
        self.labels: set[str] = set()
        self.raw_bold: dict = defaultdict(list)      # (label, key) -> [Path]
        self.meta: dict = defaultdict(list)          # folder -> [(entities, suffix, ext, Path)]
        self.files: dict = defaultdict(list)         # (kind, label, key) -> [Path]
        self.gm: dict = defaultdict(list)            # label -> [(source, session, Path)]
        self.anat_mask: dict = defaultdict(list)     # label -> [(session, Path)]
        self.run_keys: dict = defaultdict(set)       # label -> run keys (raw BOLD, BOLD, time series)
        self.raw_of: dict = {}                       # (label, Run) -> raw BOLD Path
        self.task_labels: set[str] = set()           # every task label seen, in any space
        self.spaces: dict = defaultdict(set)         # "bold"/"gm" -> --space labels seen
        self.old_fmriprep: Path | None = None
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
            self.task_labels.add(entities["task"])

    def _index_derivatives(self, top: Path):
        for folder, name in _walk(top, prune=("sourcedata",)):
            path = folder / name
            if name.startswith("mwp1") and name.endswith(_NIFTI):
                label = _label_of(path, top)
                if label:
                    self.labels.add(label)
                    self.gm[label].append(("CAT12 mwp1", _session_of(path, top), path))
                continue
            if self.old_fmriprep is None and _OLD_FMRIPREP.match(name):
                self.old_fmriprep = path
            parsed = _parse_name(name)
            if parsed is None or "sub" not in parsed[0]:
                continue
            entities, suffix, ext = parsed
            label, desc, task = entities["sub"], entities.get("desc"), entities.get("task")
            kind = None
            if ext in _NIFTI and "space" in entities:
                if suffix == "bold" and desc == "preproc" and task:
                    kind = "bold"
                elif suffix == "mask" and desc == "brain":
                    kind = "mask" if task else "anat_mask"
                elif suffix == "probseg" and entities.get("label") == "GM" and not task:
                    kind = "gm"
                if kind in ("bold", "gm"):
                    self.spaces[kind].add(_space_of(entities))
                if kind == "bold":
                    self.task_labels.add(task)
                if not self.space.matches(entities):
                    continue
            elif ext == ".tsv" and task:
                if desc == "confounds" and suffix in ("timeseries", "regressors"):
                    kind = "confounds"
                elif suffix == "timeseries" and desc != "confounds":
                    kind = "timeseries"
                    self.task_labels.add(task)
            if kind is None:
                continue
            self.labels.add(label)
            if kind == "anat_mask":
                self.anat_mask[label].append((entities.get("ses"), path))
            elif kind == "gm":
                self.gm[label].append(("fMRIPrep probseg", entities.get("ses"), path))
            else:
                self.files[kind, label, _run_key(entities)].append(path)
                if kind in ("bold", "timeseries"):
                    self.run_keys[label].add(_run_key(entities))

    def top_of(self, path: Path) -> Path:
        """The derivatives folder (or the dataset root) a file was found in."""
        for top in sorted(self.derivatives, key=lambda p: -len(p.parts)):
            if top in path.parents:
                return top
        return self.root

    def sessions_table(self, label: str) -> dict[str, dict]:
        """Rows of ``sub-<label>/sub-<label>_sessions.tsv`` by session label (no file: empty)."""
        path = self.root / f"sub-{label}" / f"sub-{label}_sessions.tsv"
        if not path.is_file():
            return {}
        table = _read_tsv(path, "sessions file")
        if "session_id" not in table.columns:
            raise InputError("the sessions file has no session_id column", path=path,
                             fix="name the first column session_id (values such as ses-pre)")
        rows = {}
        for _, row in table.iterrows():
            key = str(row["session_id"]).strip().removeprefix("ses-")
            rows[key] = {k: (v.item() if isinstance(v, np.generic) else v)
                         for k, v in row.items() if k != "session_id"}
        return rows

    # building ---------------------------------------------------------------------------------

    def subject(self, pid: str, row: pd.Series) -> Subject:
        label = pid[4:]
        runs = tuple(self._run(label, key) for key in sorted(self.run_keys.get(label, ()), key=_sort_key))
        anatomy: dict = {}
        sessions = {s for _, s, _ in self.gm.get(label, ())} | {s for s, _ in self.anat_mask.get(label, ())}
        for ses in sorted(sessions, key=lambda s: (s is not None, s or "")):
            where = f"{pid}" + (f" ses-{ses}" if ses else "")
            gm = self._only([p for _, s, p in self.gm.get(label, ()) if s == ses],
                            f"gray-matter maps for {where}",
                            "pass --derivatives with only one of fMRIPrep or CAT12 (one GM map per participant"
                            " and session), or a --space with its resolution (e.g. MNI152NLin2009cAsym:res-2)")
            mask = self._only([p for s, p in self.anat_mask.get(label, ()) if s == ses],
                              f"anatomical brain masks for {where}",
                              "pass --derivatives with one pipeline's folder, or a --space with its resolution")
            anatomy[ses] = (gm, mask)
        whole = anatomy.get(None) or (next(iter(anatomy.values())) if len(anatomy) == 1 else (None, None))
        info = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
        return Subject(participant_id=pid, label=label, info=info, runs=runs, gm=whole[0], anat_mask=whole[1],
                       anatomy=anatomy, session_info=self.sessions_table(label))

    def _run(self, label: str, key: tuple) -> Run:
        entities = {"sub": label, **{e: v for e, v in zip(_RUN_ENTITIES, key) if v is not None}}
        fix = ("pass --derivatives with one pipeline's folder, or a --space with its resolution "
               "(e.g. --space MNI152NLin2009cAsym:res-2)")
        owner = f"for sub-{label} " + "_".join(f"{e}-{v}" for e, v in entities.items() if e != "sub")
        bold = self._only(self.files.get(("bold", label, key), ()), f"preprocessed BOLD files {owner}", fix)
        timeseries = self._only(self.files.get(("timeseries", label, key), ()),
                                f"ROI time-series files {owner}",
                                "keep one atlas per run in the folders you pass with --derivatives")
        near = [p.parent for p in (bold, timeseries) if p is not None]
        mask = self._only(self.files.get(("mask", label, key), ()), f"BOLD brain masks {owner}", fix, near)
        confounds = self._only(self.files.get(("confounds", label, key), ()), f"confounds files {owner}",
                               fix, near)
        raw = self.raw_bold.get((label, key), ())
        events = self._inherited(entities, "events", ".tsv")
        task_label = entities["task"]
        task = self.tasks_of.get(task_label, task_label)
        run = Run(task=task, session=entities.get("ses"), run=entities.get("run"),
                  bold=bold, mask=mask, confounds=confounds,
                  events=events[-1] if events else None, timeseries=timeseries,
                  repetition_time=self._repetition_time(entities, bold, timeseries, raw[0] if raw else None),
                  label=task_label if task_label != task else None,
                  entities=tuple((e, entities[e]) for e in ("acq", "ce", "rec", "dir") if e in entities))
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
                          if s == suffix and x == ext and all(_same_entity(k, entities.get(k), v) for k, v in e.items()))
            if len(here) > 1 and here[-1][0] == here[-2][0]:
                raise InputError(f"two {suffix}{ext} files apply to the same run ({here[-2][2].name})",
                                 path=here[-1][2], fix="keep one per run (BIDS inheritance)")
            found.extend(p for _, _, p in here)
        return found

    def _repetition_time(self, entities, bold, timeseries, raw_bold) -> float | None:
        """Seconds: raw sidecars (BIDS inheritance, most specific wins), then the sidecars of the
        derivative files; then ``--repetition-time``; then the NIfTI header (preprocessed, then
        raw BOLD). A sidecar that disagrees with ``--repetition-time`` is an error."""
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
            elif isinstance(meta.get("SamplingFrequency"), (int, float)) and \
                    not isinstance(meta["SamplingFrequency"], bool):   # XCP-D writes "TR" (a unit)
                value = 1.0 / _positive(meta["SamplingFrequency"], _sidecar(path), "SamplingFrequency")
                source = _sidecar(path)
        if value is not None:
            value = _positive(value, source, "RepetitionTime")
            if self.repetition_time is not None and abs(value - self.repetition_time) > 1e-3 * value:
                raise InputError(f"RepetitionTime is {value:g} s here but --repetition-time says "
                                 f"{self.repetition_time:g} s", path=source,
                                 fix="drop --repetition-time (the sidecar gives it) or correct the sidecar")
            return value
        if self.repetition_time is not None:
            return self.repetition_time
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


def _task_names(task_map: Mapping[str, str]) -> dict[str, str]:
    """``{dataset label: painplast task}`` from ``{painplast task: dataset label}``, checked."""
    out = {}
    for task, label in (task_map or {}).items():
        for value in (task, label):
            if not re.fullmatch(r"[A-Za-z0-9]+", str(value)):
                raise InputError(f"--task-map {task}={label}: '{value}' is not a task label",
                                 fix="give painplast's task and the dataset's label, e.g. --task-map rest=restingstate")
        if str(label) in out:
            raise InputError(f"--task-map maps the dataset's task '{label}' twice",
                             fix="map each dataset task to one painplast task")
        out[str(label)] = str(task)
    return out


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


def _session_of(path: Path, top: Path) -> str | None:
    """Session label of a CAT12 file: from its name (``..._ses-1_T1w``) or a ``ses-*`` folder."""
    match = re.search(r"_ses-([A-Za-z0-9]+)", path.name)
    if match:
        return match.group(1)
    for part in reversed(path.relative_to(top).parts[:-1]):
        if re.fullmatch(r"ses-[A-Za-z0-9]+", part):
            return part[4:]
    return None


def _sidecar(path: Path) -> Path:
    name = path.name
    for ext in (".nii.gz", ".nii", ".tsv"):
        if name.endswith(ext):
            return path.with_name(name[: -len(ext)] + ".json")
    return path.with_suffix(".json")


def _positive(value, path: Path | None, key: str, flag: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
        if flag:
            raise InputError(f"--repetition-time {value!r} is not a positive number of seconds",
                             fix="give the repetition time in seconds, e.g. --repetition-time 2.5")
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
    """The checks of ``Cohort.from_bids(validate=True)``, in the order they run.

    With ``needs``, only the files those analyses read are checked: the runs of their tasks
    (events only where a task model needs them) and the gray-matter maps if one reads them.
    """

    def __init__(self, table_path: Path, table: pd.DataFrame, subjects: Sequence[Subject], finder: _Finder,
                 needs: Sequence[Needs] | None = None):
        self.table_path, self.table, self.subjects, self.finder = table_path, table, subjects, finder
        self.needs = needs

    def _wanted(self, run: Run) -> tuple[bool, bool]:
        """(check this run, it needs events)."""
        if self.needs is None:
            return True, not run.is_rest
        hits = [n for n in self.needs if not n.anat and n.task == run.task]
        return bool(hits), any(n.events for n in hits)

    def run(self) -> None:
        self.participants()
        functional, gm, anat = [], [], []
        check_anat = self.needs is None or any(n.anat for n in self.needs)
        for subject in self.subjects:
            for run in subject.runs:
                wanted, events = self._wanted(run)
                if wanted:
                    functional += self.run_files(subject, run, events)
            if not check_anat:
                continue
            for session, (gm_path, mask_path) in subject.anatomy.items():
                if gm_path is not None:
                    gm.append(_check_image(gm_path, "gray-matter map",
                                           "regenerate the segmentation (fMRIPrep or CAT12)")[0])
                if mask_path is not None:
                    anat.append(_check_image(mask_path, "anatomical brain mask", "regenerate the mask")[0])
        _check_grids(functional, "BOLD series and run mask")
        _check_grids(gm, "gray-matter map")
        _check_grids(anat, "anatomical mask")
        if not check_anat:
            return
        used = {p for s in self.subjects for p, _ in s.anatomy.values() if p is not None}
        sources = {source for s in self.subjects for source, _, path in self.finder.gm.get(s.label, ())
                   if path in used}
        if len(sources) > 1:
            raise InputError(f"gray-matter maps mix {' and '.join(sorted(sources))} across participants",
                             path=sorted(used, key=str)[0],
                             fix="pass --derivatives with one pipeline's GM maps for everyone")

    def participants(self) -> None:
        path = self.table_path
        if "site" in self.table.columns:
            missing = self.table.index[self.table["site"].isna()]
            if len(missing):
                raise InputError(f"site of {missing[0]} is n/a", path=path,
                                 fix="fill in every site, or drop the site column for a one-site study")

    def run_files(self, subject: Subject, run: Run, events: bool = True) -> list[_Grid]:
        where = f"{subject.participant_id} {run.name}"
        if run.bold is not None and run.timeseries is not None:
            tops = [self.finder.top_of(p) for p in (run.bold, run.timeseries)]
            if tops[0] != tops[1]:
                raise InputError(f"run {where} has a preprocessed BOLD image in {tops[0].name} and ROI time "
                                 f"series in {tops[1].name}", path=run.timeseries,
                                 fix=f"choose one pipeline with --derivatives (e.g. --derivatives {tops[0]})")
        if run.repetition_time is None and (run.bold is not None or run.timeseries is not None):
            raise InputError(f"the repetition time of run {where} is unknown (no RepetitionTime in a "
                             "sidecar, none in the image header)", path=run.timeseries or run.bold,
                             fix="pass --repetition-time SECONDS, or add RepetitionTime to the JSON sidecar")
        if events:
            if run.events is None:
                near = self.finder.raw_of.get((subject.label, run)) or run.bold or run.timeseries
                raise InputError(f"task run {where} has no events file", path=near,
                                 fix=f"add {subject.participant_id}_{run.name}_events.tsv "
                                     f"(onset, duration, trial_type) to the raw func folder")
            self.events(run.events)
        if run.bold is not None and run.confounds is None:
            raise InputError(f"BOLD run {where} has no confounds file", path=run.bold,
                             fix="give the fMRIPrep folder with its desc-confounds_timeseries.tsv with --derivatives")
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
