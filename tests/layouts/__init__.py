"""A corpus of small datasets that copy real layouts name for name, with what painplast must do on each.

Every case (:data:`CASES`, defined in :mod:`.cases`) is a builder that writes a tiny dataset
into a folder -- a raw BIDS dataset with fMRIPrep, CAT12, XCP-D or ROI time-series derivatives,
file names copied from bids-examples or from the pipeline's documentation of one version -- and
the steps a user takes on it, each with its expected outcome, written as data:

- :class:`Participant`: ``painplast run ... participant`` exits 0 having written exactly these
  features sidecars, each listing the runs it used (and the inputs it read);
- :class:`Group`: ``painplast run ... group`` exits 0 with each module's findings table;
- :class:`Stop`: the command stops before any work: exit status 2, one line on stderr that names
  one of the given flags (the flag that fixes it), nothing written.

A case that needs a flag has both steps: without the flag it stops naming the flag, with it it
runs. ``tests/test_layouts.py`` runs every case and checks exactly these outcomes, plus: no
traceback anywhere, the input dataset never modified.

The builders are deterministic (same bytes on every build) and fast: images are 8 mm (see
:mod:`._images`), a case is at most a few megabytes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Union

__all__ = ["Case", "Step", "Participant", "Group", "Stop", "Sidecar", "CASES", "normalise_run",
           "SUBJECT_LEVEL"]

#: Session of an output that belongs to the participant, not to one session (anatomy that
#: fMRIPrep writes without ``ses``): the sidecar may be written at the participant level or once
#: per session of that participant (listed in :attr:`Participant.sessions`).
SUBJECT_LEVEL = "*"


@dataclass(frozen=True)
class Sidecar:
    """What one ``sub-X/[ses-Y/]sub-X_[ses-Y_]desc-<module>_features.json`` must record.

    Parameters
    ----------
    runs : tuple of str
        The runs used, named as ``painplast.cohort.Run.name`` names them
        (``ses-pre_task-rest_run-1``); compared as a set, run indices as integers
        (``run-01`` = ``run-1``, as BIDS defines the run index).
    inputs : tuple of str
        Files (relative to the case folder) that ``input_checksums`` must list, besides one file of
        every run (a file whose name starts with ``sub-X_<run>_``).
    """

    runs: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Participant:
    """The participant level runs: exit 0, exactly these sidecars (no other for these modules).

    Parameters
    ----------
    outputs : mapping
        ``(participant_id, session or None or SUBJECT_LEVEL, module) -> Sidecar``.
    not_from : tuple of str
        Folders (relative to the case folder) that no recorded input may come from (the
        pipeline that ``--derivatives`` left out).
    sessions : mapping
        ``participant_id -> sessions``, for outputs at :data:`SUBJECT_LEVEL`.
    """

    outputs: Mapping[tuple[str, str | None, str], Sidecar]
    not_from: tuple[str, ...] = ()
    sessions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Group:
    """The group level runs: exit 0 and ``group/<module>_findings.tsv`` for each module."""

    modules: tuple[str, ...]


@dataclass(frozen=True)
class Stop:
    """Stops before any work: exit 2, one line on stderr naming one of ``flags``, nothing written.

    ``says``: a regular expression the line must match as well (for a stop that no flag fixes,
    ``flags`` is empty and ``says`` carries the check).
    """

    flags: tuple[str, ...]
    says: str | None = None


Expect = Union[Participant, Group, Stop]


@dataclass(frozen=True)
class Step:
    """One command: ``painplast run <bids> <out> <level> <args>``.

    ``args`` may hold ``{root}`` (the case folder); ``out`` is the output folder, relative to
    the case folder (steps sharing it continue each other's work).
    """

    level: str
    args: tuple[str, ...]
    expect: Expect
    out: str = "out"


@dataclass(frozen=True)
class Case:
    """A dataset copied from a real layout and what painplast must do with it.

    Parameters
    ----------
    name : str
        Test id.
    source : str
        Where the naming comes from (dataset, pipeline version, documentation page).
    build : callable
        ``build(folder)`` writes the case into ``folder`` (the BIDS dataset at ``folder/bids``).
    steps : tuple of Step
        Run in order.
    bids : str
        The BIDS dataset, relative to the case folder.
    """

    name: str
    source: str
    build: Callable[[Path], None]
    steps: tuple[Step, ...]
    bids: str = "bids"


def normalise_run(name: str) -> str:
    """``ses-pre_task-rest_run-01`` -> ``ses-pre_task-rest_run-1`` (the run index as an integer).

    >>> normalise_run("ses-1_task-rest_run-02")
    'ses-1_task-rest_run-2'
    """
    return re.sub(r"(^|_)run-0*(\d+)(?=_|$)", r"\1run-\2", name)


from .cases import CASES  # noqa: E402  (the cases use the classes above)
