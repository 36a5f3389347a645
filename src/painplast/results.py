"""Result containers of the two-stage module contract (``docs/architecture.md``).

A module's ``subject`` stage returns a :class:`SubjectResult`; its ``group`` stage returns a
:class:`GroupResult`. Both are frozen: stages are pure functions and the engine does the writing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

#: Columns of ``group/<module>_findings.tsv``; a contract, keep it stable.
FINDINGS_COLUMNS = ("feature", "contrast", "estimate", "ci_low", "ci_high", "p", "p_corrected", "n")
#: Columns of ``group/<module>_clusters.tsv``; a contract, keep it stable.
CLUSTERS_COLUMNS = ("contrast", "peak_x", "peak_y", "peak_z", "peak_stat", "size_mm3", "p_fwe", "label")


@dataclass(frozen=True)
class SubjectResult:
    """What one module measured in one participant.

    Parameters
    ----------
    module : str
        Module name (``"connectivity"``, ...).
    participant_id : str
        BIDS participant ID with its ``sub-`` prefix.
    features : mapping of str to float
        Flat scalar features, each named ``<module>.<feature>``.
    maps : mapping of str to nibabel image
        Named NIfTI maps (e.g. ``"pain_beta"``), written as NIfTI by the engine.
    arrays : mapping of str to ndarray
        Named arrays that the group stage needs (e.g. a connectome), written as ``.npy``.
    info : mapping
        Quality and provenance notes (JSON-serialisable), e.g. ``{"mean_fd": 0.12}``.
        ``info["excluded"]`` (a reason string) marks a participant the group stage leaves out;
        ``info["runs"]`` lists the runs used (``Run.name``).
    session : str or None
        The BIDS session measured (label without ``ses-``), None for a dataset without sessions.
    """

    module: str
    participant_id: str
    features: Mapping[str, float] = field(default_factory=dict)
    maps: Mapping[str, Any] = field(default_factory=dict)
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)
    info: Mapping[str, Any] = field(default_factory=dict)
    session: str | None = None

    def __post_init__(self):
        bad = [k for k in self.features if not k.startswith(self.module + ".")]
        if bad:
            raise ValueError(f"feature names must start with '{self.module}.': {bad[:3]}")

    @property
    def excluded(self) -> str | None:
        """The reason this participant is excluded from group statistics, or None."""
        return self.info.get("excluded") or None


@dataclass(frozen=True)
class GroupResult:
    """What one module found across participants.

    Parameters
    ----------
    module : str
        Module name.
    findings : DataFrame
        One row per tested feature and contrast, columns :data:`FINDINGS_COLUMNS`.
    clusters : DataFrame or None
        Voxel-wise clusters, columns :data:`CLUSTERS_COLUMNS`.
    tables : mapping of str to DataFrame
        Further tables, written as ``group/<module>_<name>.tsv``.
    maps : mapping of str to nibabel image
        Group maps, written as ``group/<module>_<name>.nii.gz``.
    figures : mapping of str to bytes
        PNG images for the report.
    notes : tuple of str
        Plain-text remarks for the report (e.g. why an analysis was skipped).
    """

    module: str
    findings: pd.DataFrame
    clusters: pd.DataFrame | None = None
    tables: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    maps: Mapping[str, Any] = field(default_factory=dict)
    figures: Mapping[str, bytes] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __post_init__(self):
        missing = [c for c in FINDINGS_COLUMNS if c not in self.findings.columns]
        if missing:
            raise ValueError(f"findings lack contract columns {missing}")
        if self.clusters is not None:
            missing = [c for c in CLUSTERS_COLUMNS if c not in self.clusters.columns]
            if missing:
                raise ValueError(f"clusters lack contract columns {missing}")


def figure_png(fig, dpi: int = 90, tight: bool = False) -> bytes:
    """A matplotlib figure as PNG bytes (for ``GroupResult.figures``); the figure is closed.

    Examples
    --------
    >>> from matplotlib.figure import Figure
    >>> figure_png(Figure(figsize=(1, 1)))[:4]
    b'\\x89PNG'
    """
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, **({"bbox_inches": "tight"} if tight else {}))
    plt.close(fig)
    return buf.getvalue()


def empty_findings() -> pd.DataFrame:
    """A findings table with the contract's columns and no rows."""
    return pd.DataFrame({c: pd.Series(dtype=object if c in ("feature", "contrast") else float)
                         for c in FINDINGS_COLUMNS})


def empty_clusters() -> pd.DataFrame:
    """A clusters table with the contract's columns and no rows."""
    return pd.DataFrame({c: pd.Series(dtype=object if c in ("contrast", "label") else float)
                         for c in CLUSTERS_COLUMNS})
