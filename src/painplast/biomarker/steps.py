"""The pipeline steps painplast adds to scikit-learn's, and the one loop that applies fitted steps.

* :class:`ConfoundRegression`: confounds (age, sex, head motion, site indicators) regressed out
  of the features by least squares fitted on the training data, optionally only out of some
  features (head motion out of the features measured in BOLD scans).
* :class:`Screening`: keep the share of features with the largest univariate F statistic.
* :func:`apply`: run data through fitted steps, used by the model in training and prediction
  and by a model read back from its file (:class:`painplast.biomarker.store.LoadedModel`).

:mod:`painplast.biomarker.model` builds its pipeline from these steps and
:mod:`painplast.biomarker.store` writes and rebuilds them; both import this file, neither
imports the other's internals.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from painplast.errors import InputError

__all__ = ["ConfoundRegression", "Screening", "apply", "top_share"]


def apply(steps, X):
    """``X`` through the ``transform`` of each fitted step, in order.

    A first step fitted on a DataFrame (it has ``feature_names_in_``) receives ``X`` as it is
    and picks its columns by name; any other receives ``X``'s values.

    Parameters
    ----------
    steps : sequence of (str, step)
        Fitted steps (``Pipeline.steps`` without the estimator, or a loaded model's).
    X : DataFrame or array_like, shape (n_participants, n_columns)

    Returns
    -------
    ndarray, shape (n_participants, n_out)

    Examples
    --------
    >>> from sklearn.preprocessing import StandardScaler
    >>> X = pd.DataFrame({"a": [1.0, 2.0, 3.0], "age": [20.0, 30.0, 50.0]})
    >>> steps = [("confounds", ConfoundRegression(confounds=["age"]).fit(X))]
    >>> steps.append(("scale", StandardScaler().fit(apply(steps, X))))
    >>> apply(steps, X).shape
    (3, 1)
    """
    if steps and not hasattr(steps[0][1], "feature_names_in_") and hasattr(X, "to_numpy"):
        X = X.to_numpy()
    for _, step in steps:
        X = step.transform(X)
    return X


def _target_columns(y) -> np.ndarray:
    """A target as regression columns: itself if numeric with two or more values, else indicators."""
    y = np.asarray(y)
    numeric = pd.to_numeric(pd.Series(y), errors="coerce")
    if numeric.notna().all():
        return numeric.to_numpy(np.float64)[:, None]
    levels = np.unique(y.astype(str))
    return (y.astype(str)[:, None] == levels[None, 1:]).astype(np.float64)


class ConfoundRegression(TransformerMixin, BaseEstimator):
    """Regress confounds out of every feature (ordinary least squares, fitted on training data).

    The output is ``X[:, features] - (X[:, confounds] @ coef_ + intercept_)``, the features
    being every column that is neither a confound nor listed in ``exclude``.
    :mod:`painplast.biomarker.store` saves this step and reloads it as this class
    (``painplast_step_kind``).

    Parameters
    ----------
    confounds : sequence of int or str
        Confound columns: positions, or names when X is a DataFrame.
    exclude : sequence of int or str
        Further columns to drop from the output (e.g. ComBat's preserved target column).
    scope : mapping or sequence of (confound, features) pairs, optional
        A confound listed here is regressed only out of these feature columns (positions or
        names) and its coefficient is zero for the others; confounds not
        listed are regressed out of every feature. The motion of one scan is a confound of the
        features measured in that scan, not of a gray-matter volume.
    preserve_target : bool
        Estimate the confound effects with the training target ``y`` as a further covariate
        (one column for a numeric or two-level target, indicators for more classes) and remove
        only the confounds' part. A confound that differs between the groups (patients move
        more) then does not take the group difference with it; the target is used in ``fit``
        only, never in ``transform``. Without ``y`` it has no effect. In a predictive model
        this lets the confound into held-out predictions (the errors of the confound
        coefficients correlate with those of the target's, which the model learns), so
        :class:`BiomarkerModel` leaves it off by default.

    Attributes
    ----------
    confound_indices_ : ndarray of int, shape (n_confounds,)
    feature_indices_ : ndarray of int, shape (n_features_out,)
    coef_ : ndarray, shape (n_confounds, n_features_out)
    intercept_ : ndarray, shape (n_features_out,)
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        When fitted on a DataFrame.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> age = rng.uniform(20, 60, 50)
    >>> X = np.column_stack([0.1 * age + rng.normal(size=50), age])
    >>> cleaned = ConfoundRegression(confounds=[1]).fit_transform(X)
    >>> cleaned.shape, bool(abs(np.corrcoef(cleaned[:, 0], age)[0, 1]) < 1e-8)
    ((50, 1), True)
    """

    painplast_step_kind = "confound_regression"

    def __init__(self, confounds=(), exclude=(), scope=None, preserve_target=False):
        self.confounds = confounds
        self.exclude = exclude
        self.scope = scope
        self.preserve_target = preserve_target

    def _positions(self, keys, names, n_columns):
        lookup = {n: i for i, n in enumerate(names)} if names is not None else {}
        positions = []
        for key in keys:
            if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
                positions.append(int(key) % n_columns)
            elif names is not None and key in lookup:
                positions.append(lookup[key])
            else:
                raise InputError(f"confound column {key!r} is not in the data",
                                 fix="add it to the design table or drop it from the confounds")
        return np.asarray(positions, dtype=np.int64)

    def fit(self, X, y=None):
        """Estimate the confound effects on each feature.

        Parameters
        ----------
        X : DataFrame or array_like, shape (n_participants, n_columns)
        y : array_like, shape (n_participants,), optional
            Training target, used only with ``preserve_target``.

        Returns
        -------
        self
        """
        names = list(X.columns) if hasattr(X, "columns") else None
        n_columns = np.shape(X)[1]
        self.confound_indices_ = self._positions(self.confounds, names, n_columns)
        dropped = set(self.confound_indices_.tolist()) | set(
            self._positions(self.exclude, names, n_columns).tolist())
        self.feature_indices_ = np.array([i for i in range(n_columns) if i not in dropped],
                                         dtype=np.int64)
        values = np.asarray(X, dtype=np.float64)
        confounds = values[:, self.confound_indices_]
        features = values[:, self.feature_indices_]
        mean_c = confounds.mean(axis=0)
        centred = confounds - mean_c
        centred_f = features - features.mean(axis=0)
        target = _target_columns(y) if self.preserve_target and y is not None else \
            np.empty((len(values), 0))
        target = target - target.mean(axis=0)
        applies = self._applies(names, n_columns)
        self.coef_ = np.zeros((len(self.confound_indices_), len(self.feature_indices_)))
        # one least-squares fit per distinct set of confounds (all of them when scope is empty)
        patterns, which = np.unique(applies.T, axis=0, return_inverse=True)
        for index, pattern in enumerate(patterns):
            cols = np.flatnonzero(which.ravel() == index)
            if pattern.any():
                design_k = np.column_stack([centred[:, pattern], target])
                coef, *_ = np.linalg.lstsq(design_k, centred_f[:, cols], rcond=None)
                used = int(pattern.sum())
                self.coef_[np.ix_(pattern, cols)] = coef[:used].reshape(used, len(cols))
        self.intercept_ = features.mean(axis=0) - mean_c @ self.coef_
        self.n_features_in_ = n_columns
        if names is not None and all(isinstance(n, str) for n in names):
            self.feature_names_in_ = np.asarray(names, dtype=object)
        return self

    def _applies(self, names, n_columns) -> np.ndarray:
        """Boolean (n_confounds, n_features_out): which confound is regressed out of which feature."""
        applies = np.ones((len(self.confound_indices_), len(self.feature_indices_)), dtype=bool)
        position = {int(j): i for i, j in enumerate(self.feature_indices_)}
        scope = self.scope or ()
        for key, targets in (scope.items() if hasattr(scope, "items") else scope):
            row = self._positions([key], names, n_columns)[0]
            if row not in self.confound_indices_:
                raise InputError(f"confound scope names {key!r}, which is not a confound",
                                 fix="list it in confounds or drop it from scope")
            keep = {position[j] for j in self._positions(list(targets), names, n_columns).tolist()
                    if j in position}
            applies[self.confound_indices_.tolist().index(row)] = [
                i in keep for i in range(len(self.feature_indices_))]
        return applies

    def transform(self, X):
        """Features with the confound effects removed.

        Parameters
        ----------
        X : DataFrame or array_like, shape (n_participants, n_features_in_)

        Returns
        -------
        ndarray, shape (n_participants, n_features_out)
        """
        check_is_fitted(self, "coef_")
        names = getattr(self, "feature_names_in_", None)
        if names is not None and hasattr(X, "loc"):
            X = X.loc[:, list(names)]
        X = np.asarray(X, dtype=np.float64)
        confounds = X[:, self.confound_indices_]
        return X[:, self.feature_indices_] - (confounds @ self.coef_ + self.intercept_)

    def get_feature_names_out(self, input_features=None):
        """Names of the output columns."""
        check_is_fitted(self, "coef_")
        if input_features is None:
            input_features = getattr(self, "feature_names_in_",
                                     [f"x{i}" for i in range(self.n_features_in_)])
        return np.asarray(input_features, dtype=object)[self.feature_indices_]


# --------------------------------------------------------------------------------------------
# feature screening


class Screening(TransformerMixin, BaseEstimator):
    """Keep the features with the largest univariate F statistic (fitted on training data).

    The screening step of nilearn's ``Decoder`` (``screening_percentile``), as a pipeline step
    that :mod:`painplast.biomarker.store` saves without pickle (``support_`` is a boolean array).

    Parameters
    ----------
    percentile : float
        Share of the features kept, in (0, 100]; at least one feature is kept.
    kind : {"binary", "multiclass", "continuous"}
        ANOVA F (classes) or the F of a univariate regression (continuous targets).

    Attributes
    ----------
    scores_ : ndarray, shape (n_features_in_,)
        F statistics (NaN for constant features, which are never kept).
    support_ : ndarray of bool, shape (n_features_in_,)
        The features kept.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 10)); y = np.repeat([0, 1], 20); X[y == 1, 3] += 2
    >>> Screening(percentile=10, kind="binary").fit(X, y).support_.nonzero()[0].tolist()
    [3]
    """

    def __init__(self, percentile=100.0, kind="binary"):
        self.percentile = percentile
        self.kind = kind

    def fit(self, X, y):
        from sklearn.feature_selection import f_classif, f_regression

        X = np.asarray(X, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.filterwarnings("ignore", message=".*constant.*")
            scores = (f_regression(X, np.asarray(y, float))[0] if self.kind == "continuous"
                      else f_classif(X, np.asarray(y).astype(str))[0])
        self.scores_ = np.asarray(scores, dtype=np.float64)
        self.support_ = top_share(self.scores_, self.percentile)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        check_is_fitted(self, "support_")
        return np.asarray(X, dtype=np.float64)[:, self.support_]

    def inverse_transform(self, X):
        """Back to all features, zeros where screened out (as scikit-learn's selectors do);
        used to map model weights back to the features."""
        check_is_fitted(self, "support_")
        X = np.asarray(X, dtype=np.float64)
        full = np.zeros(X.shape[:-1] + (len(self.support_),))
        full[..., self.support_] = X
        return full


def top_share(scores: np.ndarray, percentile: float) -> np.ndarray:
    """Boolean mask of the ``percentile`` % largest finite scores (at least one).

    Examples
    --------
    >>> top_share(np.array([3.0, np.nan, 1.0, 2.0]), 50).tolist()
    [True, False, False, True]
    """
    finite = np.isfinite(scores)
    keep = np.zeros(len(scores), bool)
    k = max(1, int(round(len(scores) * float(percentile) / 100.0)))
    k = min(k, int(finite.sum()))
    if k:
        order = np.argsort(np.where(finite, -scores, np.inf), kind="stable")
        keep[order[:k]] = True
    return keep
