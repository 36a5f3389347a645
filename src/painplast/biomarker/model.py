"""The biomarker model: a scikit-learn estimator whose whole pipeline is fitted on training data only.

:class:`BiomarkerModel` takes a *design* table (features, the ``site`` label and numeric
confounds; :func:`design` builds it from a feature table and participants.tsv) and fits, in order:

1. ComBat harmonization by site (:class:`painplast.biomarker.combat.ComBatTransformer`), when the
   training data have at least two sites. Age, sex and motion are preserved covariates.
   Optionally (``preserve_target``, off by default) the training target is preserved too, and
   every participant is then harmonized with the target set to its training mean (no label is
   used to transform); when sites and groups are confounded this lets site effects through as
   group signal, so by default site effects are removed without it, which is conservative
   under confounding (benchmarks/RESULTS.md). A held-out participant from a site unseen in
   training is harmonized by estimating that site's effects from the held-out site's own feature values
   (:func:`adapt_to_new_sites`: label-free, as neuroHarmonize does).
2. Confound regression (:class:`ConfoundRegression`): age, sex, motion (``mean_fd``) and, without
   ComBat, site indicators are regressed out of the features by least squares fitted on the
   training data without the target (cross-validated confound regression, Snoek et al. 2019);
   motion only out of the features of BOLD modules (``confound_scope``). A confound that
   differs between the groups (patients move more) takes the part of the group difference it
   shares with it: the model then predicts from what the features say beyond the confounds.
   Optionally (``confounds_keep_target``, off by default) the confound effects are estimated
   with the training target as a covariate, which keeps that shared part but lets the
   confound into the predictions: the errors of its coefficients correlate with the learned
   weights, so a held-out participant's score follows its confound. On null cohorts whose
   patients move more that lifts the cross-validated AUC above chance, the more so the more
   features, and permuting labels (which breaks the tie between motion and group) does not
   account for it (``benchmarks/biomarker_null.py``; figures in benchmarks/RESULTS.md).
3. Scaling (``StandardScaler``), then either univariate feature screening (:class:`Screening`,
   as nilearn's ``Decoder`` screens; the inner cross-validation picks the share kept, all
   features included among the choices) or, if asked, dimension reduction (``PCA``).
4. The estimator: L2-penalized logistic regression or a linear SVM for classes, ridge or a linear
   SVR for continuous outcomes. Its penalty is chosen by an inner, stratified cross-validation
   within the training data (so an outer cross-validation of this estimator is a nested one);
   the preprocessing is fitted once per inner fold and shared across penalties.

The fitted pipeline (``pipeline_``) is a plain :class:`sklearn.pipeline.Pipeline` of steps that
:mod:`painplast.biomarker.store` writes without pickle; :func:`save` / :func:`predict` go through it.

Examples
--------
>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> X = pd.DataFrame(rng.normal(size=(60, 5)), columns=[f"m.f{i}" for i in range(5)])
>>> X["site"] = np.repeat(["a", "b"], 30); X["age"] = rng.uniform(20, 60, 60); X["sex"] = 1.0 * (rng.random(60) < .5)
>>> y = np.where(X["m.f0"] + rng.normal(size=60) > 0, "patient", "control")
>>> model = BiomarkerModel(inner_folds=3, screening=None).fit(X, y)
>>> [name for name, _ in model.pipeline_.steps]
['combat', 'confounds', 'scale', 'estimator']
>>> model.predict_proba(X).shape
(60, 2)
"""
from __future__ import annotations

import copy
import warnings
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from scipy.stats import rankdata
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR, LinearSVC
from sklearn.utils.validation import check_is_fitted

from painplast import plasticity
from painplast.biomarker import steps as _steps
from painplast.biomarker.combat import ComBatTransformer
from painplast.biomarker.features import module_of
from painplast.biomarker.steps import ConfoundRegression, Screening, top_share
from painplast.biomarker.store import load_model, save_model
from painplast.errors import InputError, MissingColumnError
from painplast.stats.harmonize import (ComBatModel, empirical_bayes_posterior,
                                       empirical_bayes_priors)

__all__ = ["BOLD", "CONFOUNDS", "CONFOUND_SCOPE", "TARGET_COLUMN", "BiomarkerModel",
           "Target", "fit_in_row_space",
           "resolve_target", "design", "strata", "stratified_folds", "adapt_to_new_sites", "save", "predict"]

#: Confounds regressed out (and preserved through ComBat), when present.
CONFOUNDS = ("age", "sex", "mean_fd")
#: In a confound scope: the modules whose declaration says their features come from BOLD scans
#: (:attr:`painplast.plasticity.Declaration.bold`), read when the model is fitted.
BOLD = "bold"
#: Confounds regressed only out of the features of some modules: head motion (mean framewise
#: displacement) out of the features measured in BOLD scans, not out of gray-matter volumes.
#: Features of no registered module (voxel maps, user columns) get every confound.
CONFOUND_SCOPE = (("mean_fd", BOLD),)
#: Pipeline-input column holding the target's training mean (ComBat's preserved target covariate).
TARGET_COLUMN = "__target__"
#: Default screening percentiles the inner cross-validation chooses from (100 = no screening).
SCREENING = (10.0, 25.0, 50.0, 100.0)
#: Target aliases (architecture.md): name -> participants column.
ALIASES = {"diagnosis": "group", "treatment": "treatment_response"}

_CLASSIFIERS = ("logistic", "svm")
_REGRESSORS = ("ridge", "svr")


# --------------------------------------------------------------------------------------------
# targets and design


class Target:
    """A resolved prediction target.

    Attributes
    ----------
    name : str
        As asked (``diagnosis``, ``treatment``, ``pain_sensitivity`` ...).
    column : str
        The participants column it reads.
    kind : {"binary", "multiclass", "continuous"}
    y : Series
        Target values of the eligible participants (index ``participant_id``): class labels
        (str) or float.
    classes : list of str
        Sorted class labels (the last is the positive class of a binary target); empty for
        continuous targets.
    description : str
        One line for reports.
    """

    def __init__(self, name, column, kind, y, classes, description):
        self.name, self.column, self.kind = name, column, kind
        self.y, self.classes, self.description = y, list(classes), description

    @property
    def is_classification(self) -> bool:
        return self.kind != "continuous"

    def __repr__(self):
        return f"Target({self.name!r}, column={self.column!r}, kind={self.kind!r}, n={len(self.y)})"


def _participants_indexed(participants: pd.DataFrame) -> pd.DataFrame:
    if "participant_id" in participants.columns:
        participants = participants.set_index("participant_id")
    participants = participants.copy()
    participants.index = pd.Index([str(i) for i in participants.index], name="participant_id")
    return participants


def _missing_text(series: pd.Series) -> pd.Series:
    text = series.astype("string").str.strip()
    return text.isna() | text.str.lower().isin(["", "n/a", "na", "nan", "none"])


def resolve_target(participants: pd.DataFrame, target: str) -> Target:
    """Which participants and values a target means (two levels -> classes, numbers -> regression).

    Parameters
    ----------
    participants : DataFrame
        participants.tsv (``participant_id`` as column or index).
    target : str
        Any participants column, or an alias: ``diagnosis`` (``group``: patient vs control),
        ``diagnosis_between`` (``diagnosis`` among patients, when several exist),
        ``treatment`` (``treatment_response``, patients only: responder vs non-responder, or the
        numeric response).

    Returns
    -------
    Target

    Raises
    ------
    MissingColumnError
        If the column is absent; InputError if it has fewer than two classes or too few values.

    Examples
    --------
    >>> import pandas as pd
    >>> p = pd.DataFrame({"participant_id": [f"sub-{i}" for i in range(6)],
    ...                   "group": ["patient", "control"] * 3})
    >>> resolve_target(p, "diagnosis").classes
    ['control', 'patient']
    """
    parts = _participants_indexed(participants)
    patients_only = False
    if target == "diagnosis_between":
        column, patients_only = "diagnosis", True
    else:
        column = ALIASES.get(target, target)
        patients_only = target == "treatment"
    if column not in parts.columns:
        raise MissingColumnError(f"target {target!r} needs a {column!r} column in participants.tsv",
                                 path="participants.tsv", fix=f"add a {column!r} column or choose "
                                 "another --biomarker target")
    values = parts[column]
    keep = ~_missing_text(values)
    if patients_only and "group" in parts.columns:
        keep &= parts["group"].astype("string").str.lower().eq("patient").fillna(False)
    values = values[keep]
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all() and numeric.nunique() > 2:
        kind, y, classes = "continuous", numeric.astype(float), []
    else:
        y = values.astype(str).str.strip()
        if column == "group":
            y = y.str.lower()
        classes = sorted(y.unique())
        kind = "binary" if len(classes) == 2 else "multiclass"
        if len(classes) < 2:
            raise InputError(f"target {target!r} ({column}) has only one value "
                             f"({classes[0] if classes else 'none'}) among the eligible "
                             "participants", path="participants.tsv",
                             fix="choose a target with at least two classes")
        counts = y.value_counts()
        if counts.min() < 3:
            raise InputError(f"target {target!r}: class {counts.idxmin()!r} has only "
                             f"{counts.min()} participant(s)", path="participants.tsv",
                             fix="a class needs at least 3 participants to cross-validate")
    if kind == "continuous" and len(y) < 8:
        raise InputError(f"target {target!r} has only {len(y)} values", path="participants.tsv",
                         fix="a continuous target needs at least 8 participants")
    who = "patients" if patients_only else "participants"
    description = (f"{target}: {column} ({kind}; {len(y)} {who}"
                   + (f": {', '.join(f'{c} {int((y == c).sum())}' for c in classes)})"
                      if classes else ")"))
    return Target(target, column, kind, y, classes, description)


def design(features, participants: pd.DataFrame, confounds: Sequence[str] = CONFOUNDS,
           site: str = "site") -> pd.DataFrame:
    """Join features with the site label and numeric confounds (the model's input X).

    Parameters
    ----------
    features : FeatureTable or DataFrame
        Participants by features (index ``participant_id``).
    participants : DataFrame
        participants.tsv; ``site`` (str) and confounds are read from it (``sex`` coded F=1,
        M=0). A confound missing from participants.tsv is taken from a feature column named
        ``<module>.<confound>`` if there is one (and then no longer used as a feature), and is
        otherwise left out.
    confounds : sequence of str
        Candidate confounds.
    site : str
        Site column name.

    Returns
    -------
    DataFrame, shape (n_participants, n_features + [1] + n_confounds)
        Feature columns first, then ``site`` (if present), then the confounds found; rows are
        the participants with features and complete confounds. ``attrs["confounds"]`` lists the
        confounds used and ``attrs["dropped"]`` the participants left out for missing confounds.

    Examples
    --------
    >>> import pandas as pd
    >>> f = pd.DataFrame({"m.x": [1.0, 2.0]}, index=["sub-1", "sub-2"])
    >>> p = pd.DataFrame({"participant_id": ["sub-1", "sub-2"], "age": [30, 40], "sex": ["F", "M"]})
    >>> design(f, p).columns.tolist()
    ['m.x', 'age', 'sex']
    """
    frame = getattr(features, "data", features)
    frame = frame.copy()
    frame.index = pd.Index([str(i) for i in frame.index], name="participant_id")
    parts = _participants_indexed(participants).reindex(frame.index)
    out = frame
    extra = {}
    if site in parts.columns and parts[site].notna().any():
        extra[site] = parts[site].astype(str)
    used = []
    for name in confounds:
        if name in parts.columns and parts[name].notna().any():
            column = parts[name]
            if name == "sex":
                column = column.astype("string").str.upper().str[:1].map({"F": 1.0, "M": 0.0})
            extra[name] = pd.to_numeric(column, errors="coerce").astype(float)
            used.append(name)
        else:
            matches = [c for c in out.columns if str(c).split(".", 1)[-1] == name]
            if matches:
                extra[name] = out[matches[0]].astype(float)
                out = out.drop(columns=matches[0])
                used.append(name)
    result = pd.concat([out, pd.DataFrame(extra, index=out.index)], axis=1)
    check = [c for c in (site, *used) if c in result.columns]
    bad = result.index[result[check].isna().any(axis=1)] if check else result.index[:0]
    result = result.drop(index=bad)
    result.attrs = {"confounds": used, "dropped": list(bad)}
    return result


def strata(y, site=None, n_bins: int = 4) -> np.ndarray:
    """Stratification labels: class (or quantile bin of a continuous y) crossed with site.

    Parameters
    ----------
    y : array_like, shape (n,)
    site : array_like, shape (n,), optional
    n_bins : int
        Quantile bins of a continuous y.

    Returns
    -------
    ndarray of str, shape (n,)
    """
    y = np.asarray(y)
    if y.dtype.kind in "fc" and len(np.unique(y)) > 2 * n_bins:
        edges = np.quantile(y, np.linspace(0, 1, n_bins + 1)[1:-1])
        labels = np.searchsorted(edges, y).astype(str)
    else:
        labels = y.astype(str)
    if site is not None:
        labels = np.char.add(np.char.add(labels, "|"), np.asarray(site).astype(str))
    return labels


def stratified_folds(n_splits: int, y, site, random_state, shuffle=True) -> list:
    """Stratified K-fold splits by (class or y-bin) x site, with coarser fallbacks.

    When a stratum is smaller than ``n_splits``, the site is dropped from the strata; when a
    class is still smaller, the number of folds shrinks to the size of the smallest class
    (at least 2), so small cohorts are cross-validated rather than refused.
    """
    y = np.asarray(y)
    zeros = np.zeros(len(y))
    for labels in (strata(y, site), strata(y)):
        _, counts = np.unique(labels, return_counts=True)
        if counts.min() >= n_splits:
            return list(StratifiedKFold(n_splits, shuffle=shuffle, random_state=random_state)
                        .split(zeros, labels))
    labels = strata(y)
    _, counts = np.unique(labels, return_counts=True)
    k = min(n_splits, int(counts.min()))
    if k >= 2:
        return list(StratifiedKFold(k, shuffle=shuffle, random_state=random_state).split(zeros, labels))
    return list(KFold(min(n_splits, len(y)), shuffle=shuffle, random_state=random_state).split(y))


# --------------------------------------------------------------------------------------------
# harmonizing sites unseen in training


def _new_site_model(model: ComBatModel, Y, site, covariates) -> ComBatModel:
    """``model`` extended with the effects of the sites in ``site`` it has not seen (label-free)."""

    Y = np.asarray(Y, dtype=np.float64)
    covariates = np.asarray(covariates, dtype=np.float64).reshape(len(Y), -1)
    site = np.asarray(site).astype(model.site_labels.dtype)
    new = [s for s in dict.fromkeys(site.tolist()) if s not in set(model.site_labels.tolist())]
    if not new:
        return model
    sd = np.sqrt(model.pooled_variance)
    standardized = (Y - model.grand_mean - covariates @ model.covariate_betas) / sd
    labels = list(model.site_labels.tolist())
    sizes = list(model.site_sizes.tolist())
    gamma = [row for row in model.gamma_star]
    delta = [row for row in model.delta_star]
    for label in new:
        rows = standardized[site == label]
        if len(rows) < 2:
            raise InputError(f"site {label!r} has one participant, too few to estimate its "
                             "site effects", fix="harmonize at least two participants of a new "
                             "site together, or add the site to the training data")
        gamma_hat, delta_hat = rows.mean(axis=0), rows.var(axis=0, ddof=1)
        if model.empirical_bayes and Y.shape[1] > 1:
            g_bar, t2, a, b = empirical_bayes_priors(gamma_hat[None], delta_hat[None])
            gamma_hat, delta_hat = empirical_bayes_posterior(rows, gamma_hat, delta_hat, g_bar[0], t2[0], a[0],
                                              b[0])
        labels.append(label)
        sizes.append(len(rows))
        gamma.append(gamma_hat)
        delta.append(delta_hat)
    order = np.argsort(np.asarray(labels))
    return ComBatModel(site_labels=np.asarray(labels)[order],
                       site_sizes=np.asarray(sizes, dtype=np.int64)[order],
                       grand_mean=model.grand_mean, pooled_variance=model.pooled_variance,
                       covariate_betas=model.covariate_betas,
                       gamma_star=np.asarray(gamma)[order], delta_star=np.asarray(delta)[order],
                       empirical_bayes=model.empirical_bayes)


def adapt_to_new_sites(steps, X):
    """Steps whose ComBat step also knows the sites of X unseen in training (label-free).

    The new sites' additive and multiplicative effects are estimated from their own
    participants' feature values, standardized with the training model (grand mean, pooled
    variance, covariate effects), with empirical Bayes across features; nothing is refitted for
    the training sites, and no target value is used.

    Parameters
    ----------
    steps : list of (str, step)
        Fitted pipeline steps (``Pipeline.steps`` or ``LoadedModel.steps``).
    X : DataFrame
        Pipeline input of the participants to predict (all participants of each new site).

    Returns
    -------
    list of (str, step)
        Shallow copies; the input steps are not changed.
    """
    out = list(steps)
    for position, (name, step) in enumerate(out):
        if not isinstance(step, ComBatTransformer):
            continue
        names = getattr(step, "feature_names_in_", None)
        frame = X.loc[:, list(names)] if names is not None and hasattr(X, "loc") else X
        values = frame.to_numpy() if hasattr(frame, "to_numpy") else np.asarray(frame)
        site = values[:, step.site_index_]
        covariates = values[:, step.covariate_indices_].astype(np.float64)
        preserved = getattr(step, "preserved_covariates_", None)
        if preserved is not None:        # the covariates the fit could preserve
            covariates = covariates[:, np.asarray(preserved, bool)]
        Y = values[:, step.feature_indices_].astype(np.float64)
        adapted = copy.copy(step)
        adapted.model_ = _new_site_model(step.model_, Y, site, covariates)
        out[position] = (name, adapted)
    return out


# --------------------------------------------------------------------------------------------
# the estimator


def _default_grid(estimator: str, n_features: int) -> list[float]:
    """Penalties scaled to the number of (standardized) features."""
    if estimator in ("logistic", "svm", "svr"):
        return list(np.logspace(-2, 3, 6) / max(n_features, 1))
    return list(max(n_features, 1) * np.logspace(-3, 2, 6))  # ridge alpha


#: Estimators whose fit depends on the data only through inner products of the rows (an L2
#: penalty on the weights, an unrotated intercept), so that they can be fitted in the rows' span.
_ROW_SPACE_ESTIMATORS = ("logistic", "svm", "ridge")


def _row_space(estimator: str, Z: np.ndarray) -> np.ndarray | None:
    """An orthonormal basis (p, n) of the span of the training rows, when p > n (else None).

    An L2-penalized linear model's weights lie in the span of the training rows (representer
    theorem): writing ``w = Q b`` with ``Q`` orthonormal leaves the loss (``Z w = (Z Q) b``) and
    the penalty (``|w| = |b|``) unchanged, so fitting on ``Z Q`` (n x n) and mapping the weights
    back with ``Q`` gives the same model as fitting on ``Z`` (n x p), at the cost of a QR
    decomposition instead of a solver over p = 35,000 edges.
    """
    if estimator not in _ROW_SPACE_ESTIMATORS or Z.shape[1] <= Z.shape[0]:
        return None
    basis, _ = np.linalg.qr(np.asarray(Z, dtype=np.float64).T)
    return basis


def fit_in_row_space(estimator, Z, y):
    """Fit an L2-penalized linear model in the span of the training rows (same model, faster).

    Parameters
    ----------
    estimator : LogisticRegression, LinearSVC or Ridge
        Unfitted; other estimators are fitted as they are.
    Z : ndarray, shape (n, p)
    y : ndarray, shape (n,)

    Returns
    -------
    The fitted estimator, with ``coef_`` of shape (.., p), as ``estimator.fit(Z, y)`` would give
    (to the solver's tolerance).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import Ridge
    >>> rng = np.random.default_rng(0)
    >>> Z, y = rng.normal(size=(10, 50)), rng.normal(size=10)
    >>> fast = fit_in_row_space(Ridge(alpha=1.0), Z, y)
    >>> bool(np.allclose(fast.coef_, Ridge(alpha=1.0).fit(Z, y).coef_))
    True
    """
    kinds = {LogisticRegression: "logistic", LinearSVC: "svm", Ridge: "ridge"}
    basis = _row_space(kinds.get(type(estimator), ""), Z)
    if basis is None:
        return estimator.fit(Z, y)
    estimator.fit(np.asarray(Z, dtype=np.float64) @ basis, y)
    estimator.coef_ = estimator.coef_ @ basis.T  # back to one weight per feature
    estimator.n_features_in_ = Z.shape[1]
    return estimator


def _make_estimator(estimator: str, penalty: float, random_state):
    if estimator == "logistic":
        return LogisticRegression(C=penalty, class_weight="balanced", max_iter=2000, tol=1e-4)
    if estimator == "svm":
        return LinearSVC(C=penalty, class_weight="balanced", max_iter=5000,
                         random_state=random_state)
    if estimator == "ridge":
        return Ridge(alpha=penalty)
    if estimator == "svr":
        return SVR(kernel="linear", C=penalty)
    raise InputError(f"unknown estimator {estimator!r}",
                     fix=f"choose one of {', '.join(_CLASSIFIERS + _REGRESSORS)}")


def _inner_output(kind: str, fitted, Z) -> np.ndarray:
    """What the inner cross-validation pools: decision values (binary) or predictions."""
    if kind == "binary":
        return fitted.decision_function(Z)
    return fitted.predict(Z)


def _pooled_score(kind: str, y_true, output) -> float:
    """Inner-CV score on pooled out-of-fold outputs: AUC (binary), balanced accuracy (several
    classes) or minus the mean squared error (continuous)."""
    if kind == "continuous":
        return -float(np.mean((np.asarray(output, float) - y_true) ** 2))
    if kind == "binary":
        positive = y_true == np.unique(y_true)[-1]
        ranks = rankdata(np.asarray(output, float))
        n1 = positive.sum()
        return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * (len(ranks) - n1)))
    return float(balanced_accuracy_score(y_true, output))


class BiomarkerModel(BaseEstimator):
    """Harmonization, confound regression, scaling, reduction and a penalized linear model.

    Parameters
    ----------
    kind : {"auto", "binary", "multiclass", "continuous"}
        ``auto``: continuous for numeric y with more than two values, classes otherwise.
    estimator : {"auto", "logistic", "svm", "ridge", "svr"}
        ``auto``: logistic regression for classes, ridge for continuous outcomes.
    site : str
        Column of X with the site label (absent or a single site: no ComBat).
    confounds : sequence of str
        Confound columns of X (those absent are ignored).
    confound_scope : sequence of (str, sequence of str or "bold") pairs
        Confounds regressed only out of the features of the named modules (the part of a
        feature name before the first dot), or of the modules declared ``bold`` (:data:`BOLD`);
        default: ``mean_fd`` out of the BOLD modules' features only (:data:`CONFOUND_SCOPE`).
        Features of no registered module get every confound.
    confounds_keep_target : bool
        Estimate the confound effects with the training target as a covariate
        (``ConfoundRegression(preserve_target=True)``). Default False: that keeps the part of
        the group difference a confound shares, but biases the AUC upwards when the confound
        differs between the groups (see the module docstring).
    harmonize : bool
        Use ComBat when X has two or more sites; otherwise site indicators join the confounds.
    preserve_target : bool
        Preserve the (training) target through ComBat (default False; see the module
        docstring).
    n_components : int or float, optional
        PCA components after scaling (``None``: no reduction).
    penalties : sequence of float, optional
        Candidate ``C`` (logistic, svm, svr) or ``alpha`` (ridge); default scales with the
        number of features.
    screening : sequence of float or None
        Candidate percentiles of univariate feature screening (:class:`Screening`, after
        scaling); the inner cross-validation chooses one jointly with the penalty. ``None`` or
        ``(100,)``: no screening.
    inner_folds : int
        Folds of the inner cross-validation that picks the penalty.
    random_state : int
        Seed of the inner folds.

    Attributes
    ----------
    pipeline_ : sklearn.pipeline.Pipeline
        Fitted on all training data with the chosen penalty.
    penalty_ : float
        The chosen penalty.
    screening_ : float
        The chosen screening percentile (100: all features).
    inner_scores_ : ndarray, shape (n_screening, n_penalties)
        Pooled inner-CV score of each (screening percentile, penalty).
    classes_ : ndarray
        Class labels (classification).
    feature_names_ : list of str
        The feature columns (not site, confounds).
    input_spec_ : dict
        How the pipeline input is made from a design table (see :func:`predict`).
    """

    def __init__(self, kind="auto", estimator="auto", site="site", confounds=CONFOUNDS,
                 confound_scope=CONFOUND_SCOPE, confounds_keep_target=False, harmonize=True,
                 preserve_target=False, n_components=None, penalties=None,
                 screening=SCREENING, inner_folds=5, random_state=0):
        self.kind = kind
        self.estimator = estimator
        self.site = site
        self.confounds = confounds
        self.confound_scope = confound_scope
        self.confounds_keep_target = confounds_keep_target
        self.harmonize = harmonize
        self.preserve_target = preserve_target
        self.n_components = n_components
        self.penalties = penalties
        self.screening = screening
        self.inner_folds = inner_folds
        self.random_state = random_state

    # ---------------------------------------------------------------- input
    def _resolve_kind(self, y) -> str:
        if self.kind != "auto":
            return self.kind
        numeric = pd.to_numeric(pd.Series(np.asarray(y)), errors="coerce")
        if numeric.notna().all() and numeric.nunique() > 2:
            return "continuous"
        return "binary" if len(np.unique(np.asarray(y).astype(str))) == 2 else "multiclass"

    def _spec(self, X: pd.DataFrame, y, kind: str) -> dict:
        if not hasattr(X, "columns"):
            raise InputError("BiomarkerModel needs a DataFrame (features, site, confounds)",
                             fix="build it with painplast.biomarker.model.design")
        confounds = [c for c in self.confounds if c in X.columns]
        site = self.site if self.site in X.columns else None
        features = [c for c in X.columns if c not in set(confounds) | {self.site, TARGET_COLUMN}]
        if not features:
            raise InputError("the design has no feature columns", fix="join a feature table")
        sites = sorted(X[site].astype(str).unique()) if site else []
        combat = bool(self.harmonize) and len(sites) >= 2
        target_fill = None
        if combat and self.preserve_target and kind in ("binary", "continuous"):
            target_fill = float(np.mean(self._coded(y, kind)))
        dummies = [] if combat or len(sites) < 2 else sites[1:]
        return {"features": features, "site": site if combat else None, "site_column": site,
                "site_levels": sites, "site_dummies": dummies, "confounds": confounds,
                "target_fill": target_fill}

    def _coded(self, y, kind):
        if kind == "binary":
            return (np.asarray(y).astype(str) == self.classes_[1]).astype(float)
        return np.asarray(y, dtype=float)

    @staticmethod
    def pipeline_input(X: pd.DataFrame, spec: dict, target=None) -> pd.DataFrame:
        """The pipeline's input columns from a design table.

        Parameters
        ----------
        X : DataFrame
            Design table (features, site, confounds).
        spec : dict
            ``input_spec_`` of a fitted model.
        target : array_like, optional
            Coded training target for ComBat's fit; otherwise the training mean is used.

        Returns
        -------
        DataFrame
        """
        missing = [c for c in spec["features"] + spec["confounds"] if c not in X.columns]
        if spec["site"] and spec["site"] not in X.columns:
            missing.append(spec["site"])
        if missing:
            raise InputError(f"the data lack {len(missing)} column(s) the model needs, e.g. "
                             f"{missing[0]!r}", fix="provide the same features and the "
                             "participants columns (site, age, sex, motion) used in training")
        parts = [pd.DataFrame(X[spec["features"]].to_numpy(dtype=np.float64),
                              index=X.index, columns=spec["features"])]
        columns = {}
        if spec["site"]:
            columns[spec["site"]] = X[spec["site"]].astype(str)
        for c in spec["confounds"]:
            columns[c] = X[c].astype(float)
        site_column = spec.get("site_column")
        site_column = site_column if site_column in X.columns else None
        for level in spec["site_dummies"]:
            values = (X[site_column].astype(str) == level) if site_column else False
            columns[f"site[{level}]"] = pd.Series(values, index=X.index).astype(float)
        if spec["target_fill"] is not None:
            fill = spec["target_fill"] if target is None else np.asarray(target, dtype=float)
            columns[TARGET_COLUMN] = pd.Series(fill, index=X.index, dtype=float)
        if columns:
            parts.append(pd.DataFrame(columns, index=X.index))
        return pd.concat(parts, axis=1) if len(parts) > 1 else parts[0]

    # ---------------------------------------------------------------- fitting
    def _scope(self, spec, offset=None):
        """ConfoundRegression's scope: by name, or by position when ``offset`` (ComBat) is given."""
        scope = []
        modules = [module_of(f) for f in spec["features"]]
        declared = plasticity.available()
        for name, allowed in self.confound_scope or ():
            if name not in spec["confounds"]:
                continue
            allowed = ({m for m, d in declared.items() if d.bold} if allowed == BOLD
                       else set(allowed))
            targets = [i for i, m in enumerate(modules) if m in allowed or m not in declared]
            if len(targets) == len(spec["features"]):
                continue
            if offset is not None:  # positions (an int array: stored as .npy, not JSON)
                scope.append((spec["confounds"].index(name) + offset,
                              np.asarray(targets, np.int64)))
            else:
                scope.append((name, [spec["features"][i] for i in targets]))
        return tuple(scope) or None

    def _preprocess(self, spec, X, y_coded, n_features_total, y=None):
        """Fitted preprocessing steps on (X, y); returns steps and the transformed training data."""
        n_features = len(spec["features"])
        steps = []
        train_in = self.pipeline_input(X, spec, y_coded if spec["target_fill"] is not None
                                       else None)
        apply_in = self.pipeline_input(X, spec)
        covariates = list(spec["confounds"])
        if spec["target_fill"] is not None:
            covariates.append(TARGET_COLUMN)
        if spec["site"]:
            # by position, on arrays: ComBatTransformer's column-name check is quadratic in the
            # number of columns (slow for a connectome's edges), positions skip it
            combat = ComBatTransformer(site=n_features, covariates=tuple(
                range(n_features + 1, n_features + 1 + len(covariates))),
                keep_covariates=True).fit(train_in.to_numpy())
            steps.append(("combat", combat))
            Z = combat.transform(apply_in.to_numpy())
            confounds = list(range(n_features, n_features + len(spec["confounds"])))
            exclude = [n_features + len(spec["confounds"])] if spec["target_fill"] is not None \
                else []
            if confounds or exclude:
                step = ConfoundRegression(confounds=confounds, exclude=exclude,
                                          scope=self._scope(spec, n_features),
                                          preserve_target=self.confounds_keep_target).fit(Z, y)
                steps.append(("confounds", step))
                Z = step.transform(Z)
        else:
            confounds = spec["confounds"] + [f"site[{s}]" for s in spec["site_dummies"]]
            if confounds:
                step = ConfoundRegression(confounds=confounds, scope=self._scope(spec),
                                          preserve_target=self.confounds_keep_target
                                          ).fit(apply_in, y)
                steps.append(("confounds", step))
                Z = step.transform(apply_in)
            else:
                Z = apply_in.to_numpy(dtype=np.float64)
        scaler = StandardScaler().fit(Z if steps else apply_in)
        Z = scaler.transform(Z if steps else apply_in)
        steps.append(("scale", scaler))
        if self.n_components is not None:
            n_comp = self.n_components
            if isinstance(n_comp, (int, np.integer)):
                n_comp = int(min(n_comp, Z.shape[0] - 1, Z.shape[1]))
            pca = PCA(n_components=n_comp, svd_solver="full").fit(Z)
            steps.append(("pca", pca))
            Z = pca.transform(Z)
        return steps, Z

    def fit(self, X, y):
        """Choose the penalty by inner cross-validation, then fit on all of (X, y).

        Parameters
        ----------
        X : DataFrame, shape (n_participants, n_columns)
            Design table (:func:`design`).
        y : array_like, shape (n_participants,)
            Class labels or continuous values.

        Returns
        -------
        self
        """
        y = np.asarray(y)
        if len(y) != len(X):
            raise InputError(f"{len(X)} rows of features but {len(y)} target values",
                             fix="align the design table and the target")
        kind = self._resolve_kind(y)
        estimator = self.estimator
        if estimator == "auto":
            estimator = "logistic" if kind != "continuous" else "ridge"
        if (kind == "continuous") != (estimator in _REGRESSORS):
            raise InputError(f"estimator {estimator!r} does not fit a {kind} target",
                             fix="use logistic/svm for classes, ridge/svr for continuous values")
        if kind != "continuous":
            y = y.astype(str)
            self.classes_ = np.unique(y)
        else:
            y = y.astype(float)
        spec = self._spec(X, y, kind)
        coded = self._coded(y, kind) if kind != "multiclass" else None
        penalties = list(self.penalties) if self.penalties is not None else \
            _default_grid(estimator, len(spec["features"]))
        site = X[spec["site"]].astype(str).to_numpy() if spec["site"] else None
        screens = sorted({min(float(v), 100.0) for v in (self.screening or (100.0,))})
        if self.n_components is not None:
            screens = [100.0]  # PCA is the reduction; screening would select components
        if any(v <= 0 for v in screens):
            raise InputError(f"screening percentiles must lie in (0, 100], got {self.screening}",
                             fix="give percentiles such as (10, 25, 50, 100)")
        if len(penalties) * len(screens) > 1:
            folds = stratified_folds(self.inner_folds, y, site, self.random_state)
            outputs = [[np.empty(len(y), dtype=object if kind == "multiclass" else float)
                        for _ in penalties] for _ in screens]
            for train, test in folds:
                Xtr, Xte = X.iloc[train], X.iloc[test]
                steps, Ztr = self._preprocess(spec, Xtr, None if coded is None else coded[train],
                                              len(spec["features"]), y[train])
                Zte = _steps.apply(steps, self.pipeline_input(Xte, spec))
                scores = Screening(100.0, kind).fit(Ztr, y[train]).scores_
                for i, share in enumerate(screens):
                    keep = top_share(scores, share)
                    A, B = Ztr[:, keep], Zte[:, keep]
                    basis = _row_space(estimator, A)
                    if basis is not None:  # the whole penalty path in the training rows' span
                        A, B = A @ basis, B @ basis
                    path = None  # the penalty path, warm-started from the previous penalty
                    for p in np.argsort(penalties):
                        path = self._fit_final(estimator, penalties[p], A, y[train], warm=path)
                        outputs[i][p][test] = _inner_output(kind, path, B)
            mean = np.array([[_pooled_score(kind, y, out) for out in row] for row in outputs])
            if np.isfinite(mean).any():
                best_screen, best = np.unravel_index(np.nanargmax(mean), mean.shape)
            else:
                best_screen, best = len(screens) - 1, len(penalties) // 2
        else:
            mean, best_screen, best = np.array([[np.nan]]), 0, 0
        steps, Z = self._preprocess(spec, X, coded, len(spec["features"]), y)
        if screens[best_screen] < 100.0:
            screen = Screening(screens[best_screen], kind).fit(Z, y)
            steps.append(("screening", screen))
            Z = screen.transform(Z)
        final = self._fit_final(estimator, penalties[best], Z, y)
        self.pipeline_ = Pipeline(steps + [("estimator", final)])
        self.penalty_ = float(penalties[best])
        self.screening_ = float(screens[best_screen])
        self.penalties_ = [float(p) for p in penalties]
        self.inner_scores_ = mean
        self.kind_ = kind
        self.estimator_name_ = estimator
        self.feature_names_ = list(spec["features"])
        self.input_spec_ = spec
        return self

    def _fit_final(self, estimator, penalty, Z, y, warm=None):
        """Fit the estimator; ``warm``: a logistic regression to continue from (penalty path)."""
        if warm is not None and estimator == "logistic":
            fitted = warm.set_params(C=penalty, warm_start=True)
        else:
            fitted = _make_estimator(estimator, penalty, self.random_state)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            if warm is not None:
                return fitted.fit(Z, y)
            return fit_in_row_space(fitted, Z, y)

    # ---------------------------------------------------------------- prediction
    def _steps_for(self, X_input):
        steps = self.pipeline_.steps
        if self.input_spec_["site"]:
            known = set(self.input_spec_["site_levels"])
            if not set(X_input[self.input_spec_["site"]].astype(str)) <= known:
                return adapt_to_new_sites(steps, X_input)
        return steps

    def transform(self, X):
        """Preprocessed data entering the estimator, shape (n_participants, n_components)."""
        check_is_fitted(self, "pipeline_")
        X_input = self.pipeline_input(X, self.input_spec_)
        return _steps.apply(self._steps_for(X_input)[:-1], X_input)

    def predict(self, X):
        """Predicted class or value, shape (n_participants,)."""
        return self.pipeline_.steps[-1][1].predict(self.transform(X))

    def decision_function(self, X):
        """Continuous score: decision value (classes) or prediction (continuous), shape (n,)."""
        final = self.pipeline_.steps[-1][1]
        Z = self.transform(X)
        return final.decision_function(Z) if hasattr(final, "decision_function") else \
            final.predict(Z)

    def predict_proba(self, X):
        """Class probabilities, shape (n_participants, n_classes) (logistic regression only)."""
        final = self.pipeline_.steps[-1][1]
        if not hasattr(final, "predict_proba"):
            raise InputError(f"{type(final).__name__} gives no probabilities",
                             fix="use estimator='logistic' for probabilities")
        return final.predict_proba(self.transform(X))

    def coefficients(self) -> pd.Series:
        """Weights of the features (in standardized units, through PCA), index feature names.

        Returns
        -------
        Series, shape (n_features,)
            For a multiclass model, the weights of the last class.
        """
        check_is_fitted(self, "pipeline_")
        final = self.pipeline_.steps[-1][1]
        coef = np.atleast_2d(np.asarray(getattr(final, "coef_", np.zeros(1)), float))[-1]
        for name, step in reversed(self.pipeline_.steps[:-1]):
            if isinstance(step, PCA):
                coef = coef @ step.components_
            elif isinstance(step, Screening):
                coef = step.inverse_transform(coef)
        return pd.Series(coef[: len(self.feature_names_)], index=self.feature_names_)


# --------------------------------------------------------------------------------------------
# saving and predicting


def save(model: BiomarkerModel, path, metadata: dict | None = None, overwrite: bool = False):
    """Write a fitted model as a safe model file (:func:`painplast.biomarker.store.save_model`).

    Parameters
    ----------
    model : BiomarkerModel
        Fitted.
    path : path
        Model directory to create (e.g. ``OUTPUT_DIR/models/diagnosis``).
    metadata : dict, optional
        Extra JSON-able metadata (target, training cohort, validation metrics ...).
    overwrite : bool
        Replace an existing model.

    Returns
    -------
    Path
        The model directory.
    """
    check_is_fitted(model, "pipeline_")
    meta = dict(metadata or {})
    meta["kind"] = model.kind_
    meta["biomarker_input"] = model.input_spec_
    first = model.pipeline_.steps[0][1]
    if not hasattr(first, "feature_names_in_"):  # ComBat fitted on an array (by position)
        meta["feature_names"] = list(BiomarkerModel.pipeline_input(
            pd.DataFrame(columns=model.input_spec_["features"] + model.input_spec_["confounds"]
                         + ([model.input_spec_["site"]] if model.input_spec_["site"] else [])),
            model.input_spec_).columns)
    meta["penalty"] = model.penalty_
    meta["estimator_name"] = model.estimator_name_
    if hasattr(model, "classes_"):
        meta["classes"] = [str(c) for c in model.classes_]
    return save_model(model.pipeline_, path, metadata=meta, overwrite=overwrite)


def predict(model_dir, feature_table, participants: pd.DataFrame) -> pd.DataFrame:
    """Apply a saved model to new participants.

    Participants from a site the model was not trained on are harmonized by estimating that
    site's effects from their own feature values (label-free; at least two per new site).

    Parameters
    ----------
    model_dir : path
        Directory (or .zip) written by :func:`save`.
    feature_table : FeatureTable or DataFrame
        Features of the participants (index ``participant_id``), the same columns as in training.
    participants : DataFrame
        participants.tsv rows of those participants (site, age, sex, motion as in training).

    Returns
    -------
    DataFrame
        Columns ``participant_id``, ``prediction``, and ``probability`` (of the positive class,
        the last in sorted order, e.g. ``patient``) for a two-level target.

    Raises
    ------
    InputError
        If the model file is damaged or edited, or columns it needs are missing.
    """
    loaded = load_model(model_dir)
    spec = loaded.metadata.get("biomarker_input")
    if spec is None:
        raise InputError("was not written by painplast.biomarker.model.save (no biomarker_input "
                         "in its metadata)", path=model_dir, fix="train the model with painplast")
    X = design(feature_table, participants, confounds=spec["confounds"],
               site=spec["site"] or "site")
    if len(X) == 0:
        raise InputError("no participant has the features and covariates the model needs",
                         path=model_dir, fix="check participant IDs and columns")
    X_input = BiomarkerModel.pipeline_input(X, spec)
    if spec["site"] and not set(X_input[spec["site"]].astype(str)) <= set(spec["site_levels"]):
        loaded = loaded.with_steps(adapt_to_new_sites(loaded.steps, X_input))
    Z = loaded.transform(X_input)
    final = loaded.steps[-1][1]
    out = pd.DataFrame({"participant_id": X.index.to_numpy(), "prediction": final.predict(Z)})
    classes = getattr(final, "classes_", None)
    if classes is not None and len(classes) == 2:
        out["probability"] = (final.predict_proba(Z)[:, 1] if hasattr(final, "predict_proba")
                              else np.nan)
    return out
