"""Run configuration: one frozen object that every stage receives.

Common parameters are fields; module-specific parameters live in ``options`` under the module's
name, with defaults declared by the module (``DEFAULTS`` in each ``plasticity`` module) and read
through :meth:`Config.module`. The hash of the parameters a module sees decides whether a rerun
can skip a participant (see :mod:`painplast.engine`).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from .errors import InputError

MODULES = ("sensitization", "reorganization", "connectivity", "structure", "modulation")
#: Fields only the group stages and the biomarker read: not part of a participant output's hash.
GROUP_FIELDS = ("n_permutations", "alpha", "random_state")


@dataclass(frozen=True)
class Config:
    """Parameters of a painplast run.

    Parameters
    ----------
    modules : tuple of str
        Plasticity modules to run, a subset of :data:`MODULES`.
    space : str
        Template space of the preprocessed images (fMRIPrep ``space-`` entity).
    roi_radius_mm : float
        Radius of the pain-system ROI spheres (:mod:`painplast.atlas`).
    smoothing_fwhm : float or None
        Spatial smoothing (mm) for voxel-wise maps; ROI features use unsmoothed data.
    hrf_model : str
        Haemodynamic response model passed to nilearn (``"glover"``, ``"spm"``, ...).
    high_pass : float
        High-pass cut-off in Hz for the first-level models and denoising.
    n_permutations : int
        Permutations for voxel-wise and network inference.
    alpha : float
        Significance level (family-wise) for reported findings.
    signatures : tuple of str
        Paths of pattern weight maps whose response the sensitization module computes.
    random_state : int
        Seed of every random choice of the run.
    task_map : mapping
        ``{painplast task: dataset task label}`` (``--task-map rest=restingstate``).
    repetition_time : float or None
        Seconds, for runs whose files carry none (``--repetition-time``).
    options : mapping
        ``{module: {parameter: value}}`` overriding the module's ``DEFAULTS``.

    Examples
    --------
    >>> cfg = Config(modules=("structure",), options={"structure": {"fwhm": 8.0}})
    >>> cfg.module("structure", {"fwhm": 6.0, "atlas": "pain"})["fwhm"]
    8.0
    """

    modules: tuple[str, ...] = MODULES
    space: str = "MNI152NLin2009cAsym"
    roi_radius_mm: float = 6.0
    smoothing_fwhm: float | None = 6.0
    hrf_model: str = "glover"
    high_pass: float = 1.0 / 128
    n_permutations: int = 1000
    alpha: float = 0.05
    signatures: tuple[str, ...] = ()
    random_state: int = 0
    task_map: Mapping[str, str] = field(default_factory=dict)
    repetition_time: float | None = None
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self):
        unknown = [m for m in self.modules if m not in MODULES]
        if unknown:
            raise InputError(f"unknown module(s) {', '.join(unknown)}",
                             fix=f"choose from {', '.join(MODULES)}")
        object.__setattr__(self, "modules", tuple(self.modules))
        object.__setattr__(self, "signatures", tuple(str(s) for s in self.signatures))
        object.__setattr__(self, "task_map", {str(k): str(v) for k, v in dict(self.task_map).items()})

    def module(self, name: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
        """Module parameters: ``defaults`` updated with this config's ``options[name]``."""
        given = dict(self.options.get(name, {}))
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise InputError(f"unknown option(s) {', '.join(unknown)} for module {name}",
                             fix=f"use one of {', '.join(sorted(defaults))}")
        return {**defaults, **given}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["modules"] = list(self.modules)
        out["signatures"] = list(self.signatures)
        out["options"] = {k: dict(v) for k, v in self.options.items()}
        out["task_map"] = dict(self.task_map)
        return out

    def parameter_hash(self, module: str | None = None) -> str:
        """A short hash of the parameters (all, or those one module's participant stage sees).

        With ``module``, the fields only group stages read (:data:`GROUP_FIELDS`: permutations,
        significance level, seed) are left out, so that a group-level option never invalidates
        participant outputs (BIDS-Apps users give ``--n-permutations`` at the group step).
        """
        data = self.to_dict()
        if module is not None:
            data["options"] = data["options"].get(module, {})
            data["modules"] = [module]
            for name in GROUP_FIELDS:
                data.pop(name, None)
            if not data["task_map"]:
                data.pop("task_map")          # hashes of earlier versions stay valid
            if data["repetition_time"] is None:
                data.pop("repetition_time")
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def replace(self, **changes) -> "Config":
        return replace(self, **changes)

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> "Config":
        """Read a JSON config file (keys are the field names)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise InputError(f"cannot read the config file ({error})", path=path,
                             fix="give a JSON object whose keys are painplast Config fields")
        if not isinstance(data, dict):
            raise InputError("the config file is not a JSON object", path=path,
                             fix="write {\"n_permutations\": 500, ...}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(f"unknown config key(s) {', '.join(unknown)}", path=path,
                             fix=f"use only {', '.join(sorted(names))}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        for key in ("modules", "signatures"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)
