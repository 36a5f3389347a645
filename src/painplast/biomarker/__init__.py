"""Individual-level biomarkers: feature tables, pipelines, validation and safe model files.

* :mod:`~painplast.biomarker.features`: the feature table (any modules' subject features, voxel
  maps through a mask), with the module each column came from.
* :mod:`~painplast.biomarker.steps`: the pipeline steps painplast adds to scikit-learn's
  (confound regression, feature screening) and the one loop that applies fitted steps.
* :mod:`~painplast.biomarker.model`: :class:`~painplast.biomarker.model.BiomarkerModel`, whose
  pipeline (ComBat by site, confound regression, scaling, optional PCA, penalized linear model
  with its penalty tuned by inner cross-validation) is fitted on training data only;
  :func:`~painplast.biomarker.model.predict` applies a saved model.
* :mod:`~painplast.biomarker.validate`: repeated nested cross-validation, leave-one-site-out,
  permutation test, bootstrap intervals, learning curve; ``group/biomarker_<target>.json``.
* :mod:`~painplast.biomarker.profile`: per-patient plasticity profiles against a normative model
  of the controls, on the module axes.
* :mod:`~painplast.biomarker.combat`, :mod:`~painplast.biomarker.store`: the ComBat pipeline step
  and pickle-free model files.
* :mod:`~painplast.biomarker.connectome`, :mod:`~painplast.biomarker.connectome_run`: edge-level
  connectome prediction (``features="connectome"``: ridge or elastic net on the top-k edges, or
  CPM) and its outputs (edge and network tables, figure, model file, external validation).

The biomarker's options are declared here (:class:`Settings`, :data:`DEFAULTS`) and read from
``Config.options["biomarker"]`` like a module's (an unknown key is an InputError).
:func:`run_biomarker` strings the parts together for one target;
:func:`run_from_derivatives` does it from a painplast output folder (``painplast run ... group
--biomarker``).

Examples
--------
>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> ids = [f"sub-{i:02d}" for i in range(40)]
>>> parts = pd.DataFrame({"participant_id": ids, "group": ["patient", "control"] * 20,
...                       "site": ["a"] * 20 + ["b"] * 20, "age": rng.uniform(20, 60, 40)})
>>> feats = pd.DataFrame(rng.normal(size=(40, 3)), index=ids,
...                      columns=["structure.gm_dacc", "structure.gm_dlpfc", "connectivity.mpfc_nacc"])
>>> feats.iloc[::2, 0] -= 1.5
>>> settings = Settings(repeats=1, n_permutations=0, learning=False, n_bootstrap=200, inner_folds=3)
>>> result, model = run_biomarker(feats, parts, "diagnosis", settings)
>>> result["metrics"]["auc"]["estimate"] > 0.7
True
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from painplast.biomarker import connectome as _connectome  # noqa: F401  registers its models
from painplast.errors import InputError

if TYPE_CHECKING:
    from painplast.cohort import Cohort
    from painplast.config import Config

__all__ = ["DEFAULTS", "FALLBACK", "Settings", "exclude", "run_biomarker",
           "run_from_derivatives"]

#: Feature choices: the modules' a-priori features (their findings rows), every subject feature,
#: or every edge of the participants' connectome (:mod:`painplast.biomarker.connectome_run`).
FEATURES = ("a-priori", "all", "connectome")
#: What a target with no a-priori features uses instead (with a note in the result and the
#: report, never an error), first available: the connectome (a continuous target and
#: connectivity time series in the output folder: edge-level prediction is the field's standard
#: for an individual trait without a hypothesis, Shen et al. 2017, Spisak et al. 2020), else
#: every subject feature.
FALLBACK = ("connectome", "all")


@dataclass(frozen=True)
class Settings:
    """How a biomarker is built and validated (``Config.options["biomarker"]``).

    Parameters
    ----------
    features : {"a-priori", "all", "connectome"}
        The modules' a-priori features (the rows of their findings tables, and for a target
        that a findings contrast tests, the features tested with it), every subject feature, or
        every edge of the participant connectome (a continuous target; the connectivity
        module's time series). A target with no a-priori features falls back to
        :data:`FALLBACK` with a note.
    folds, inner_folds, repeats : int
        Nested cross-validation: outer folds x repeats; inner folds choose the penalty.
    n_permutations : int
        Label permutations of the whole pipeline (0: no permutation test).
    n_bootstrap : int
        Bootstrap resamples of the metrics' intervals.
    site_out : bool
        Also validate leaving one site out at a time.
    learning : bool
        Compute the learning curve.
    n_jobs : int
        Parallel jobs of the validation.
    model_options : mapping
        Further :class:`~painplast.biomarker.model.BiomarkerModel` parameters (``estimator``,
        ``confounds``, ``harmonize`` ...).
    connectome_kind : {"partial correlation", "correlation", "tangent"}
        Edges of the connectome features (tangent: reference fitted in the training folds).
    connectome_model : {"ridge", "elastic_net", "cpm"}
        Model of the connectome features (:func:`painplast.biomarker.connectome_run.make_model`).
    connectome_folds : int or "loo"
        Outer folds for the connectome features (10: test sets of 10% as Varoquaux et al. 2017,
        NeuroImage 145:166 recommend; a 5-fold split leaves a few dozen participants' models
        with 20% fewer training participants for thousands of edges). ``"loo"``: nested
        leave-one-out, the scheme of published connectome predictions (CPM, the RPN
        signature), to compare with their figures.
    exclude_column : str, optional
        A participants column; participants with 1 / true / yes there are left out of the
        biomarker (e.g. ``excluded_by_authors``), with a note in the result.

    Examples
    --------
    >>> from painplast.config import Config
    >>> Settings.from_config(Config(options={"biomarker": {"repeats": 2}})).repeats
    2
    >>> Settings.from_config(Config(options={"biomarker": {"repeat": 2}}))
    Traceback (most recent call last):
    ...
    painplast.errors.InputError: unknown option(s) repeat for biomarker; fix: use one of ...
    """

    features: str = "a-priori"
    folds: int = 5
    inner_folds: int = 5
    repeats: int = 5
    n_permutations: int = 100
    n_bootstrap: int = 2000
    site_out: bool = True
    learning: bool = True
    n_jobs: int = 1
    model_options: Mapping[str, Any] = field(default_factory=dict)
    connectome_kind: str = "partial correlation"
    connectome_model: str = "ridge"
    connectome_folds: int | str = 10
    exclude_column: str | None = None

    def __post_init__(self):
        if self.features not in FEATURES:
            raise InputError(f"biomarker option features={self.features!r} is not known",
                             fix="use --biomarker-features a-priori, all or connectome")
        from painplast.biomarker.connectome import _kind
        from painplast.biomarker.connectome_run import make_model

        object.__setattr__(self, "connectome_kind", _kind(self.connectome_kind))
        make_model(self.connectome_model, self.connectome_kind)   # an unknown name stops here
        from painplast.biomarker.connectome_run import outer_is_loo

        folds = "loo" if outer_is_loo(self.connectome_folds) else int(self.connectome_folds)
        object.__setattr__(self, "connectome_folds", folds)
        object.__setattr__(self, "model_options", dict(self.model_options or {}))

    @classmethod
    def from_config(cls, config: "Config", **overrides) -> "Settings":
        """The settings of ``config.options["biomarker"]``, then ``overrides``.

        Raises
        ------
        InputError
            An option (in the config or the overrides) that is not a field.
        """
        options = config.module("biomarker", DEFAULTS)
        unknown = sorted(set(overrides) - set(DEFAULTS))
        if unknown:
            raise InputError(f"unknown option(s) {', '.join(unknown)} for biomarker",
                             fix=f"use one of {', '.join(sorted(DEFAULTS))}")
        return cls(**{**options, **overrides})

    def validation(self) -> dict[str, Any]:
        """Keyword arguments of :func:`painplast.biomarker.validate.validate`."""
        keys = ("folds", "repeats", "n_permutations", "n_bootstrap", "site_out", "learning",
                "n_jobs")
        return {k: getattr(self, k) for k in keys}


#: The biomarker options and their defaults (``Config.options["biomarker"]``).
DEFAULTS: dict[str, Any] = {f.name: getattr(Settings(), f.name) for f in fields(Settings)}


def run_biomarker(feature_table, participants, target: str, settings: Settings | None = None, *,
                  random_state: int = 0, out_dir: str | os.PathLike | None = None,
                  overwrite: bool = False, **options):
    """Validate a biomarker for ``target``, fit it on everyone, and optionally write it.

    Parameters
    ----------
    feature_table : FeatureTable or DataFrame
        Participants by features (index ``participant_id``).
    participants : DataFrame
        participants.tsv.
    target : str
        Any participants column, or ``diagnosis`` / ``diagnosis_between`` / ``treatment``
        (see :func:`painplast.biomarker.model.resolve_target`).
    settings : Settings, optional
        How to validate; ``options`` (its fields as keywords) replace some of them.
    random_state : int
        Seed of folds, permutations and bootstrap.
    out_dir : path, optional
        If given, write ``group/biomarker_<target>.json``, the out-of-fold predictions and the
        model under ``models/<target>`` (atomically); otherwise nothing is written.
    overwrite : bool
        Replace an existing saved model.

    Returns
    -------
    result : dict
        The JSON content (``model`` holds the saved model's path relative to ``out_dir`` when
        written); the private ``_out_of_fold`` DataFrame holds the out-of-fold scores.
    model : BiomarkerModel
        Fitted on all eligible participants.
    """
    from painplast.biomarker.model import BiomarkerModel, design, resolve_target, save
    from painplast.biomarker.validate import validate, write_predictions, write_result

    settings = Settings(**{**asdict(settings or Settings()), **options})
    spec = resolve_target(participants, target)
    template = BiomarkerModel(**{"inner_folds": settings.inner_folds, "random_state": random_state,
                                 **settings.model_options})
    X = design(feature_table, participants, confounds=template.confounds, site=template.site)
    result = validate(X, spec, template, random_state=random_state, **settings.validation())
    ids = [i for i in spec.y.index if i in X.index]
    model = template.set_params(kind=spec.kind).fit(X.loc[ids], spec.y.loc[ids].to_numpy())
    result["chosen_penalty"] = model.penalty_
    if out_dir is not None:
        out_dir = Path(out_dir)
        relative = Path("models") / target
        groups = {str(k): int(v) for k, v in spec.y.loc[ids].astype(str).value_counts().items()} \
            if spec.is_classification else {}
        sites = X.loc[ids, template.site].astype(str).value_counts().to_dict() \
            if template.site in X.columns else {}
        metadata = {"target": target, "target_column": spec.column,
                    "training_cohort": {"n": len(ids), "classes": groups,
                                        "sites": {str(k): int(v) for k, v in sites.items()}},
                    "validation_metrics": {k: v["estimate"] for k, v in
                                           result["metrics"].items()}}
        save(model, out_dir / relative, metadata=metadata, overwrite=overwrite)
        result["model"] = str(relative)
        write_result(result, out_dir, target)
        write_predictions(result, out_dir, target)
    return result, model


def exclude(participants, column: str | None):
    """Participants without those marked in ``column`` (1 / true / yes), and a note.

    Parameters
    ----------
    participants : DataFrame
        participants.tsv (``participant_id`` as a column).
    column : str or None
        None: nobody is left out.

    Returns
    -------
    (DataFrame, str or None)

    Raises
    ------
    InputError
        The column is not in participants.tsv.

    Examples
    --------
    >>> import pandas as pd
    >>> p = pd.DataFrame({"participant_id": ["sub-1", "sub-2", "sub-3"], "out": [0, 1, "n/a"]})
    >>> kept, note = exclude(p, "out")
    >>> kept["participant_id"].tolist(), note
    (['sub-1', 'sub-3'], '1 participant(s) left out by the exclusion column out: sub-2')
    """
    if not column:
        return participants, None
    if column not in participants.columns:
        raise InputError(f"the exclusion column {column!r} is not in participants.tsv",
                         path="participants.tsv",
                         fix="give an existing column to --exclude-column, or leave it out")
    text = participants[column].astype("string").str.strip().str.lower()
    marked = text.isin(["1", "1.0", "true", "yes", "y"]).fillna(False).to_numpy(bool)
    gone = participants.loc[marked, "participant_id"].astype(str).tolist()
    note = (f"{len(gone)} participant(s) left out by the exclusion column {column}: "
            f"{', '.join(gone) or 'none'}")
    return participants.loc[~marked].reset_index(drop=True), note


def _has_connectome(out_dir) -> bool:
    from painplast.biomarker.connectome import connectivity_sidecars

    return bool(connectivity_sidecars(out_dir))


def run_from_derivatives(cohort: "Cohort", config: "Config", out_dir: str | os.PathLike,
                         target: str, **overrides) -> dict:
    """Build, validate and save the biomarker for ``target`` from a painplast output folder.

    The engine's biomarker runner (:func:`painplast.engine.run_biomarker`): reads the features
    the participant stages wrote (one session per participant,
    :meth:`~painplast.cohort.Cohort.cross_sectional_sessions`), keeps the modules' a-priori ones (``features="a-priori"``:
    the findings tables' rows; for a target a findings contrast tests, the rows of that
    contrast), drops incomplete and uninformative columns, and runs :func:`run_biomarker`.
    With ``features="connectome"`` every edge of the participants' connectomes is the input
    (:func:`painplast.biomarker.connectome_run.build`). A target left with no a-priori feature
    falls back to :data:`FALLBACK`, with a note in the result (``notes``) and the report.
    Participants marked in ``exclude_column`` are left out first.

    Parameters
    ----------
    cohort : Cohort
    config : Config
        Its ``options["biomarker"]`` (:data:`DEFAULTS`) and ``random_state``.
    out_dir : path
        The painplast output folder (after the participant and group levels).
    target : str
    **overrides
        Settings fields replacing the config's (e.g. ``repeats=1``).

    Returns
    -------
    dict
        The result written to ``group/biomarker_<target>.json``.
    """
    from painplast.biomarker.features import from_derivatives
    from painplast.biomarker.model import ALIASES, CONFOUNDS, resolve_target
    from painplast.biomarker.validate import write_result
    from painplast.contrasts import for_column
    from painplast.stats.longitudinal import baseline_contrast_for

    settings = Settings.from_config(config, **overrides)
    participants, note = exclude(cohort.participants.reset_index(), settings.exclude_column)
    notes = [note] if note else []
    features = settings.features
    if features == "a-priori":
        table = from_derivatives(out_dir, sessions=cohort.cross_sectional_sessions())
        # keep the feature files' confound columns (mean FD) only if the model uses them
        confounds = settings.model_options.get("confounds", CONFOUNDS)
        column = ALIASES.get(target, target)
        table = table.a_priori(out_dir, keep=tuple(confounds),
                               contrast=for_column(column) or baseline_contrast_for(column)) \
            .complete().informative()
        left = [c for c in table.features if str(c).split(".", 1)[-1] not in set(confounds)]
        if not left:
            spec = resolve_target(participants, target)
            usable = [f for f in FALLBACK if f != "connectome" or (
                spec.kind == "continuous" and _has_connectome(out_dir))]
            features = usable[0]
            notes.append(f"no a-priori feature for {target} (no findings table tests it), so "
                         f"the {features} features were used instead; choose with "
                         "--biomarker-features a-priori, all or connectome")
    if features == "connectome":
        from painplast.biomarker.connectome_run import build

        return build(out_dir, participants, target, kind=settings.connectome_kind,
                     model=settings.connectome_model, folds=settings.connectome_folds,
                     repeats=settings.repeats, n_permutations=settings.n_permutations,
                     n_bootstrap=settings.n_bootstrap, n_jobs=settings.n_jobs,
                     random_state=config.random_state, notes=notes,
                     metadata={"connectivity_options": dict(
                         config.options.get("connectivity") or {})},
                     sessions=cohort.cross_sectional_sessions())
    if features == "all":
        table = from_derivatives(out_dir, sessions=cohort.cross_sectional_sessions()) \
            .complete().informative()
    result, _ = run_biomarker(table, participants, target, settings,
                              random_state=config.random_state, out_dir=out_dir, overwrite=True)
    if notes:
        import logging

        result["notes"] = notes
        write_result(result, out_dir, target)
        for text in notes:
            logging.getLogger("painplast").warning("biomarker %s: %s", target, text)
    return result
