"""The five categories of pain-induced plastic change, one module each.

Every module exposes the two-stage contract of ``docs/architecture.md``::

    subject(subject: Subject, config: Config) -> SubjectResult
    group(results: list[SubjectResult], cohort: Cohort, config: Config) -> GroupResult

:func:`available` lists the modules that are installed; a module that has not landed yet is
reported as absent (never faked).
"""
from __future__ import annotations

import importlib
from types import ModuleType

from ..config import MODULES

__all__ = ["MODULES", "available", "load"]


def load(name: str) -> ModuleType | None:
    """The module ``painplast.plasticity.<name>``, or None if it is not part of this install."""
    if name not in MODULES:
        raise KeyError(name)
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as error:
        if error.name == f"{__name__}.{name}":
            return None
        raise


def available() -> dict[str, ModuleType]:
    """Installed plasticity modules, in the order of :data:`painplast.config.MODULES`."""
    out = {}
    for name in MODULES:
        mod = load(name)
        if mod is not None:
            out[name] = mod
    return out
