"""Run configuration: one frozen object that every stage receives.

Common parameters are fields; module-specific parameters live in ``options`` under the module's
name, with defaults declared by the module (:class:`painplast.plasticity.Declaration`) and read
through :meth:`Config.module`; the biomarker's options live under ``options["biomarker"]`` with
defaults declared in :mod:`painplast.biomarker`. The hash of the parameters a module sees decides
whether a rerun can skip a participant (see :mod:`painplast.engine`).

Module names are checked against :mod:`painplast.plasticity`'s registry when a Config is made;
this file keeps no list of modules (``painplast.plasticity`` imports nothing from here at import
time, and this file imports it only inside functions).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from .errors import InputError

#: Fields only the group stages and the biomarker read: not part of a participant output's hash.
GROUP_FIELDS = ("n_permutations", "alpha", "random_state")
#: The options section that is not a plasticity module.
BIOMARKER = "biomarker"


def __getattr__(name: str):
    """``MODULES``: the registered module names (:func:`painplast.plasticity.names`)."""
    if name == "MODULES":
        from . import plasticity

        return plasticity.names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Config:
    """Parameters of a painplast run.

    Parameters
    ----------
    modules : tuple of str, optional
        Plasticity modules to run, a subset of :func:`painplast.plasticity.names`; default: all.
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
        ``{module: {parameter: value}}`` overriding the module's declared defaults, and
        ``{"biomarker": {...}}`` overriding :data:`painplast.biomarker.DEFAULTS`.

    Examples
    --------
    >>> cfg = Config(modules=("structure",), options={"structure": {"fwhm": 8.0}})
    >>> cfg.module("structure", {"fwhm": 6.0, "atlas": "pain"})["fwhm"]
    8.0
    >>> cfg.module("structure")["mask_threshold"]      # the module's declared default
    0.2
    """

    modules: tuple[str, ...] | None = None
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
        from . import plasticity  # here, not at the top: the modules import this file

        known = plasticity.names()
        modules = known if self.modules is None else tuple(self.modules)
        unknown = [m for m in modules if m not in known]
        if unknown:
            raise InputError(f"unknown module(s) {', '.join(unknown)}",
                             fix=f"choose from {', '.join(known)}")
        object.__setattr__(self, "modules", modules)
        object.__setattr__(self, "signatures", tuple(str(s) for s in self.signatures))
        object.__setattr__(self, "task_map", {str(k): str(v) for k, v in dict(self.task_map).items()})

    def module(self, name: str, defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Options of a module (or of the biomarker): ``defaults`` updated with ``options[name]``.

        Parameters
        ----------
        name : str
            A module name, or ``"biomarker"``.
        defaults : mapping, optional
            Default: the module's declared defaults.

        Raises
        ------
        InputError
            ``options[name]`` has a key that ``defaults`` does not.
        """
        if defaults is None:
            from . import plasticity

            defaults = plasticity.get(name).defaults
        given = dict(self.options.get(name, {}))
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise InputError(f"unknown option(s) {', '.join(unknown)} for {name}",
                             fix=f"use one of {', '.join(sorted(defaults))} under "
                                 f"options[{name!r}] in the --config file")
        return {**defaults, **given}

    def check_options(self) -> None:
        """Check every options section and key against the declared defaults.

        Called where a configuration enters (a config file, the command line), so that a typo
        stops the run before anything is computed rather than when its stage starts.

        Raises
        ------
        InputError
            An unknown section (neither a module nor ``"biomarker"``) or option.

        Examples
        --------
        >>> Config(options={"structure": {"fwhm": 8}}).check_options()
        >>> Config(options={"structure": {"fhwm": 8}}).check_options()
        Traceback (most recent call last):
        ...
        painplast.errors.InputError: unknown option(s) fhwm for structure; fix: use one of ...
        """
        from . import biomarker, plasticity

        sections = {**{name: None for name in plasticity.names()},
                    BIOMARKER: biomarker.DEFAULTS}
        unknown = sorted(set(self.options) - set(sections))
        if unknown:
            raise InputError(f"unknown options section(s) {', '.join(unknown)}",
                             fix=f"use module names or {BIOMARKER!r} as keys of options")
        for name, defaults in sections.items():
            if name in self.options:
                self.module(name, defaults)

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
        significance level, seed) and the module's declared ``group_options`` are left out, so
        that a group-level option never invalidates participant outputs (BIDS-Apps users give
        ``--n-permutations`` at the group step).
        """
        data = self.to_dict()
        if module is not None:
            from . import plasticity

            group_only = set(plasticity.get(module).group_options) if module in plasticity.names() else set()
            data["options"] = {k: v for k, v in data["options"].get(module, {}).items() if k not in group_only}
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
        if not isinstance(data.get("options", {}), Mapping) or not all(
                isinstance(v, Mapping) for v in data.get("options", {}).values()):
            raise InputError("options must be an object of objects", path=path,
                             fix='write {"options": {"structure": {"fwhm": 8}}}')
        config = cls(**data)
        try:
            config.check_options()
        except InputError as error:
            raise InputError(error.message, path=path, fix=error.fix) from None
        return config
