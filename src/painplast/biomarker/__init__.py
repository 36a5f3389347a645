"""Individual-level biomarkers: feature tables, pipelines, validation and safe model files.

* :mod:`~painplast.biomarker.features`: the feature table (any modules' subject features, voxel
  maps through a mask), with the module each column came from.
* :mod:`~painplast.biomarker.model`: :class:`~painplast.biomarker.model.BiomarkerModel`, whose
  pipeline (ComBat by site, confound regression, scaling, optional PCA, penalized linear model
  with its penalty tuned by inner cross-validation) is fitted on training data only;
  :func:`~painplast.biomarker.model.predict` applies a saved model.
* :mod:`~painplast.biomarker.validate`: repeated nested cross-validation, leave-one-site-out,
  permutation test, bootstrap intervals, learning curve; ``group/biomarker_<target>.json``.
* :mod:`~painplast.biomarker.profile`: per-patient plasticity profiles against a normative model
  of the controls, on the five module axes.
* :mod:`~painplast.biomarker.combat`, :mod:`~painplast.biomarker.store`: the ComBat pipeline step
  and pickle-free model files.

:func:`run_biomarker` strings them together for one target.

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
>>> result, model = run_biomarker(feats, parts, "diagnosis", repeats=1, n_permutations=0,
...                               learning=False, n_bootstrap=200, inner_folds=3)
>>> result["metrics"]["auc"]["estimate"] > 0.7
True
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["run_biomarker"]


def run_biomarker(feature_table, participants, target: str, random_state: int = 0,
                  out_dir: str | os.PathLike | None = None, *, model_options: dict | None = None,
                  folds: int = 5, inner_folds: int = 5, repeats: int = 5,
                  n_permutations: int = 100, n_bootstrap: int = 2000, site_out: bool = True,
                  learning: bool = True, n_jobs: int = 1, overwrite: bool = False):
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
    random_state : int
        Seed of folds, permutations and bootstrap.
    out_dir : path, optional
        If given, write ``group/biomarker_<target>.json``, the out-of-fold predictions and the
        model under ``models/<target>`` (atomically); otherwise nothing is written.
    model_options : dict, optional
        Parameters of :class:`~painplast.biomarker.model.BiomarkerModel` (``estimator``,
        ``n_components``, ``confounds``, ``harmonize`` ...).
    folds, inner_folds, repeats, n_permutations, n_bootstrap, site_out, learning, n_jobs
        See :func:`painplast.biomarker.validate.validate`.
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

    options = dict(model_options or {})
    options.setdefault("inner_folds", inner_folds)
    options.setdefault("random_state", random_state)
    spec = resolve_target(participants, target)
    template = BiomarkerModel(**options)
    X = design(feature_table, participants, confounds=template.confounds, site=template.site)
    result = validate(X, spec, template, folds=folds, inner_folds=inner_folds, repeats=repeats,
                      n_permutations=n_permutations, n_bootstrap=n_bootstrap, site_out=site_out,
                      learning=learning, random_state=random_state, n_jobs=n_jobs)
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
