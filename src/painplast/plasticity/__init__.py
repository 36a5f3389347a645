"""The five categories of pain-induced plastic change, one module each, and their registry.

Every module is one file, ``painplast/plasticity/<name>.py``, with the two stages of
``docs/architecture.md``::

    subject(subject: Subject, config: Config) -> SubjectResult
    group(results: list[SubjectResult], cohort: Cohort, config: Config) -> GroupResult

and a :class:`Declaration` (``DECLARATION``) saying what the rest of painplast needs to know
about it: its title and description for the report, the task it reads and whether that is a
BOLD scan (head motion is then a confound of its features), the covariates it adds to the
contrasts, its options and its a-priori tests. The configuration, the report, the biomarker and
the tests read the declarations through :func:`available`; none keeps a list of modules.

The built-in modules are the files named in :data:`BUILTIN` (in the order of the report's
sections and of feature tables). A module defined elsewhere (another package, a test) joins with
:func:`register`.

Examples
--------
>>> names()
('sensitization', 'reorganization', 'connectivity', 'structure', 'modulation')
>>> get("connectivity").bold, get("structure").task
(True, None)
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

if TYPE_CHECKING:  # for annotations only: config imports this package to check module names
    from ..config import Config

__all__ = ["BUILTIN", "Declaration", "available", "get", "load", "names", "register",
           "unregister"]

#: The built-in modules, files of this package, in the order of report sections and tables.
BUILTIN = ("sensitization", "reorganization", "connectivity", "structure", "modulation")

_NAME = re.compile(r"^[a-z][a-z0-9]*$")


def _no_tests(config: "Config | None" = None) -> tuple:
    return ()


@dataclass(frozen=True)
class Declaration:
    """What a plasticity module tells the rest of painplast about itself.

    Parameters
    ----------
    name : str
        Lower-case letters and digits; the prefix of every feature (``<name>.<feature>``), the
        ``desc-`` entity of its files and the key of its options in ``Config.options``.
    title : str
        Heading of its section in the report.
    description : str
        One paragraph for the report: what changes in chronic pain and what is measured.
    task : str or None
        The BIDS task whose runs it reads (``"pain"``, ``"rest"`` ...); None for anatomical data.
    bold : bool
        Whether its features are measured in BOLD scans: the biomarker then regresses head
        motion (mean framewise displacement) out of them, and out of no other module's.
    subject, group : callable
        The two stages.
    defaults : mapping
        Its options, read with ``config.module(name, defaults)``.
    tests : callable
        ``tests(config) -> [(feature, contrast), ...]``: the a-priori rows of its findings
        table, chosen before any data are seen (contrasts of :data:`painplast.contrasts.CONTRASTS`).
    covariates : mapping
        ``{feature or "*": (covariate, ...)}``: covariates it adds to the contrasts' own when
        testing a feature (``"*"``: every feature without an entry of its own). A covariate that
        participants.tsv lacks is read from the module's own feature of that name
        (``connectivity.mean_fd``).
    group_options : tuple of str
        Options only the group stage reads (``nbs_threshold``): changing them never invalidates
        the participant outputs (they are left out of the participant parameter hash).
    prognostic : tuple of str
        Features whose baseline value the literature proposes as predicting the course of pain
        (``connectivity.mpfc_nacc``: Baliki et al. 2012). In a longitudinal cohort they are the
        features tested with ``persisting-recovering``, and the features of a biomarker of the
        course (``--biomarker outcome``); a module proposing none is not tested for it.
    cost : float
        Its subject stage's CPU time per byte of BOLD image it reads, relative to one smoothed
        voxel-wise GLM per run (1.0; measured at 2 mm: reorganization, two GLMs, 1.6;
        sensitization 1.3; modulation 1.0; connectivity 0.8). When the engine runs one
        participant's tasks on threads it starts the costliest first, so the threads finish
        together; it changes no output.

    Examples
    --------
    >>> toy = Declaration(name="toy", title="Toy", description="A module for examples.",
    ...                   task=None, bold=False, subject=print, group=print,
    ...                   tests=lambda config: [("toy.size", "patient-control")],
    ...                   covariates={"*": ("age",)})
    >>> toy.a_priori(), toy.covariates_of("toy.size")
    ([('toy.size', 'patient-control')], ('age',))
    """

    name: str
    title: str
    description: str
    task: str | None
    bold: bool
    subject: Callable
    group: Callable
    defaults: Mapping[str, Any] = field(default_factory=dict)
    tests: Callable[..., Iterable[tuple[str, str]]] = _no_tests
    covariates: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    group_options: tuple[str, ...] = ()
    prognostic: tuple[str, ...] = ()
    cost: float = 1.0

    def __post_init__(self):
        if not _NAME.match(str(self.name)):
            raise ValueError(f"module name {self.name!r}: use lower-case letters and digits")
        if not (str(self.title).strip() and str(self.description).strip()):
            raise ValueError(f"module {self.name}: declare a title and a description")
        if not (callable(self.subject) and callable(self.group)):
            raise ValueError(f"module {self.name}: subject and group must be callables")
        object.__setattr__(self, "covariates",
                           {str(k): tuple(v) for k, v in dict(self.covariates).items()})
        object.__setattr__(self, "defaults", dict(self.defaults))
        object.__setattr__(self, "group_options", tuple(self.group_options))
        object.__setattr__(self, "prognostic", tuple(str(f) for f in self.prognostic))
        if not float(self.cost) > 0:
            raise ValueError(f"module {self.name}: cost must be a positive number")
        if any(not f.startswith(self.name + ".") for f in self.prognostic):
            raise ValueError(f"module {self.name}: prognostic features must start with '{self.name}.'")
        unknown = [o for o in self.group_options if o not in self.defaults]
        if unknown:
            raise ValueError(f"module {self.name}: group_options {unknown} are not among its defaults")

    def a_priori(self, config: "Config | None" = None) -> list[tuple[str, str]]:
        """The a-priori (feature, contrast) tests for ``config``.

        Raises
        ------
        ValueError
            A feature without the module's prefix (a bug of the module; the contract test
            also checks that every contrast is one of :data:`painplast.contrasts.CONTRASTS`).
        """
        tests = [(str(f), str(c)) for f, c in self.tests(config)]
        bad = [f for f, _ in tests if not f.startswith(self.name + ".")]
        if bad:
            raise ValueError(f"module {self.name} declares tests of {bad[:2]}: features must "
                             f"start with '{self.name}.'")
        return tests

    def covariates_of(self, feature: str) -> tuple[str, ...]:
        """The covariates the module adds when testing ``feature``."""
        return self.covariates.get(feature, self.covariates.get("*", ()))


_REGISTERED: dict[str, Declaration] = {}


def register(declaration: Declaration) -> Declaration:
    """Add a module defined outside this package (after the built-in ones).

    Parameters
    ----------
    declaration : Declaration
        Its ``name`` must not be taken.

    Returns
    -------
    Declaration
        The same object (so that ``DECLARATION = register(Declaration(...))`` reads well).
    """
    if not isinstance(declaration, Declaration):
        raise TypeError("register a painplast.plasticity.Declaration")
    if declaration.name in BUILTIN or declaration.name in _REGISTERED:
        raise ValueError(f"a module named {declaration.name!r} is already registered")
    _REGISTERED[declaration.name] = declaration
    return declaration


def unregister(name: str) -> None:
    """Remove a module added with :func:`register` (built-in modules stay)."""
    _REGISTERED.pop(name, None)


def names() -> tuple[str, ...]:
    """Names of the registered modules, built-in first; nothing is imported.

    Examples
    --------
    >>> "structure" in names()
    True
    """
    return BUILTIN + tuple(_REGISTERED)


def load(name: str) -> Declaration | None:
    """The declaration of module ``name``, or None when its file is not part of this install.

    Raises
    ------
    KeyError
        ``name`` is not a registered module.
    """
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in BUILTIN:
        raise KeyError(name)
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as error:
        if error.name == f"{__name__}.{name}":
            return None
        raise
    return module.DECLARATION


def get(name: str) -> Declaration:
    """The declaration of an installed module.

    Raises
    ------
    KeyError
        No installed module has this name.
    """
    declaration = load(name)
    if declaration is None:
        raise KeyError(name)
    return declaration


def available() -> dict[str, Declaration]:
    """Declarations of the installed modules, in the order of :func:`names`.

    Examples
    --------
    >>> {name: d.task for name, d in available().items()}["reorganization"]
    'somatotopy'
    """
    out = {}
    for name in names():
        declaration = load(name)
        if declaration is not None:
            out[name] = declaration
    return out
