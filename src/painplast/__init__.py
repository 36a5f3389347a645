"""painplast: pain-induced neuroplasticity in human MRI, measured per participant.

The package follows ``docs/architecture.md``: :mod:`painplast.cohort` reads a BIDS dataset,
:mod:`painplast.plasticity` measures the five categories of pain-induced plastic change,
:mod:`painplast.stats` holds the array-level statistics, :mod:`painplast.biomarker` builds and
validates individual-level biomarkers and :mod:`painplast.report` writes the HTML report.
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("painplast")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
