"""ComBat harmonization as a scikit-learn pipeline step.

:class:`ComBatTransformer` wraps :func:`painplast.stats.harmonize.fit_combat` /
:func:`~painplast.stats.harmonize.apply_combat` so that harmonization is fitted inside each
training fold of a cross-validation, by construction, like any other pipeline step.

Design choice: scikit-learn gives a transformer only ``X``, so the site label and the covariates
to preserve travel *as columns of X*. They are addressed by column name when ``X`` is a pandas
DataFrame (the usual case: the feature table joined with ``site``, ``age``, ``sex`` from
participants.tsv) or by integer position for a plain array. Every other column is a feature to
harmonize. The output holds the harmonized features only (site and covariate columns dropped), or
the harmonized features followed by the covariates unchanged when ``keep_covariates=True`` (for
a later confound-regression step). ``get_feature_names_out`` names the output columns, so
``set_output(transform="pandas")`` works.

The site column may hold strings (DataFrame) or numbers; covariates must be numeric (code sex as
0/1). A held-out participant from a site that is not in the training fold cannot be harmonized:
``transform`` raises :class:`~painplast.errors.InputError` naming the site (so leave-site-out
validation needs a pipeline without ComBat, or a site-free harmonization).

Examples
--------
>>> import numpy as np, pandas as pd
>>> from sklearn.pipeline import make_pipeline
>>> from sklearn.linear_model import LogisticRegression
>>> rng = np.random.default_rng(0)
>>> table = pd.DataFrame(rng.normal(size=(60, 4)), columns=["f1", "f2", "f3", "f4"])
>>> table["site"] = np.repeat(["A", "B", "C"], 20)
>>> table["age"] = rng.uniform(20, 70, 60)
>>> y = rng.integers(0, 2, 60)
>>> pipe = make_pipeline(ComBatTransformer(site="site", covariates=("age",)),
...                      LogisticRegression()).fit(table, y)
>>> pipe[0].get_feature_names_out().tolist()
['f1', 'f2', 'f3', 'f4']
>>> pipe[0].model_.site_labels.tolist()
['A', 'B', 'C']
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from painplast.errors import InputError
from painplast.stats.harmonize import apply_combat, fit_combat

__all__ = ["ComBatTransformer", "estimable_covariates"]


def _column_names(X) -> list | None:
    """Column names of a DataFrame, or None for an array."""
    columns = getattr(X, "columns", None)
    return None if columns is None else list(columns)


def _resolve(key, names: list | None, n_columns: int, role: str) -> int:
    """Position of the column ``key`` (a name or an integer index) in X."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        if not -n_columns <= key < n_columns:
            raise InputError(f"{role} column index {key} is out of range for X with "
                             f"{n_columns} columns", fix=f"give the {role} column's position "
                             "or its name")
        return int(key) % n_columns
    if names is None:
        raise InputError(f"{role} column {key!r} is given by name but X is an array without "
                         "column names", fix="pass a pandas DataFrame or give the column's "
                         "integer position")
    if key not in names:
        raise InputError(f"{role} column {key!r} is not in the data (columns: "
                         f"{', '.join(map(str, names[:10]))}{' ...' if len(names) > 10 else ''})",
                         fix=f"add a {key!r} column or change ComBatTransformer's {role} "
                         "parameter")
    return names.index(key)


def _columns(X, indices) -> np.ndarray:
    """Columns ``indices`` of X (DataFrame or array) as a numpy array."""
    if hasattr(X, "iloc"):
        return X.iloc[:, indices].to_numpy()
    return np.asarray(X)[:, indices]


def estimable_covariates(site: np.ndarray, covariates: np.ndarray) -> np.ndarray:
    """Which covariates ComBat can tell apart from site (and from the covariates before them).

    A covariate that is constant within every site (or a combination of the ones kept) has no
    effect separable from the site effects; in a small cross-validation training fold this
    happens by chance (a small site whose training participants are all of one sex).

    Returns
    -------
    ndarray of bool, shape (n_covariates,)
        True for the covariates kept, in order (greedy: each is kept if it adds to the rank).

    Examples
    --------
    >>> import numpy as np
    >>> site = np.array([1, 1, 2, 2, 2])
    >>> estimable_covariates(site, np.array([[0, 30.], [0, 41], [1, 25], [1, 60], [1, 33]]))
    array([False,  True])
    """
    covariates = np.asarray(covariates, dtype=np.float64).reshape(len(site), -1)
    keep = np.ones(covariates.shape[1], dtype=bool)
    if covariates.shape[1] == 0 or not np.all(np.isfinite(covariates)):
        return keep                     # fit_combat says what is wrong with non-finite values
    _, index = np.unique(np.asarray(site).astype(str), return_inverse=True)
    design = (index[:, None] == np.arange(index.max() + 1)).astype(np.float64)
    for j in range(covariates.shape[1]):
        trial = np.hstack([design, covariates[:, [j]]])
        keep[j] = np.linalg.matrix_rank(trial) == trial.shape[1]
        if keep[j]:
            design = trial
    return keep


class ComBatTransformer(TransformerMixin, BaseEstimator):
    """Remove site effects with ComBat, preserving covariate effects (a pipeline step).

    Covariates whose effects cannot be told apart from site in the participants it is fitted on
    (:func:`estimable_covariates`: constant within every site of a training fold) are not
    preserved in that fit (``preserved_covariates_``); their between-site part is removed with
    the site effects, as it must be, instead of the fit failing.

    Parameters
    ----------
    site : str or int, default "site"
        Column of X holding the site label: a name (DataFrame) or a position.
    covariates : sequence of str or int, default ()
        Columns of X holding numeric covariates whose effects are preserved.
    eb : bool, default True
        Empirical Bayes shrinkage of the site effects (see
        :func:`painplast.stats.harmonize.fit_combat`).
    keep_covariates : bool, default False
        Append the covariate columns, unchanged, after the harmonized features.

    Attributes
    ----------
    model_ : painplast.stats.harmonize.ComBatModel
        The fitted harmonization (site labels, grand mean, pooled variance, betas, gamma*, delta*).
    site_index_ : int
        Position of the site column in X.
    covariate_indices_ : ndarray of int, shape (n_covariates,)
        Positions of the covariate columns in X.
    feature_indices_ : ndarray of int, shape (n_harmonized,)
        Positions of the harmonized feature columns in X.
    preserved_covariates_ : ndarray of bool, shape (n_covariates,)
        Which covariates the fit preserved (see above).
    n_features_in_ : int
        Number of columns of X seen in ``fit``.
    feature_names_in_ : ndarray of str, shape (n_features_in_,)
        Column names of X, when X was a DataFrame with string column names.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> X = np.column_stack([rng.normal(size=(40, 3)), np.repeat([0, 1], 20)])
    >>> step = ComBatTransformer(site=3).fit(X)
    >>> step.transform(X).shape
    (40, 3)
    """

    def __init__(self, site="site", covariates=(), eb=True, keep_covariates=False):
        self.site = site
        self.covariates = covariates
        self.eb = eb
        self.keep_covariates = keep_covariates

    def fit(self, X, y=None):
        """Fit ComBat on the participants of X.

        Parameters
        ----------
        X : DataFrame or array_like, shape (n_participants, n_columns)
            Features plus the site column and the covariate columns.
        y : ignored

        Returns
        -------
        self
        """
        names = _column_names(X)
        n_columns = np.shape(X)[1]
        site_index = _resolve(self.site, names, n_columns, "site")
        covariate_keys = ((self.covariates,) if isinstance(self.covariates, (str, int))
                          else tuple(self.covariates))
        covariate_indices = np.array([_resolve(key, names, n_columns, "covariate")
                                      for key in covariate_keys], dtype=np.int64)
        if site_index in covariate_indices or len(set(covariate_indices.tolist())) < \
                len(covariate_indices):
            raise InputError("the site column is also listed as a covariate, or a covariate is "
                             "listed twice", fix="list each column once")
        special = {site_index, *covariate_indices.tolist()}
        feature_indices = np.array([i for i in range(n_columns) if i not in special],
                                   dtype=np.int64)
        if feature_indices.size == 0:
            raise InputError("X has no feature columns besides site and covariates",
                             fix="join the feature table to the site/covariate columns")
        site = _columns(X, site_index)
        covariates = _columns(X, covariate_indices).astype(np.float64)
        preserved = estimable_covariates(site, covariates)
        self.model_ = fit_combat(_columns(X, feature_indices).astype(np.float64), site,
                                 covariates[:, preserved], eb=self.eb)
        self.preserved_covariates_ = preserved
        self.site_index_ = site_index
        self.covariate_indices_ = covariate_indices
        self.feature_indices_ = feature_indices
        self.n_features_in_ = n_columns
        if names is not None and all(isinstance(name, str) for name in names):
            self.feature_names_in_ = np.asarray(names, dtype=object)
        return self

    def transform(self, X):
        """Harmonize X with the fitted model.

        Parameters
        ----------
        X : DataFrame or array_like, shape (n_participants, n_features_in_)
            Same columns as in ``fit``; a DataFrame is matched by column name.

        Returns
        -------
        ndarray, shape (n_participants, n_harmonized [+ n_covariates])
            Harmonized features (then the covariates, if ``keep_covariates``).
        """
        check_is_fitted(self, "model_")
        names = _column_names(X)
        if hasattr(self, "feature_names_in_") and names is not None:
            present = set(names)
            missing = [name for name in self.feature_names_in_ if name not in present]
            if missing:
                raise InputError(f"{len(missing)} column(s) seen in training are missing, e.g. "
                                 f"{missing[0]!r}", fix="pass the same columns as in training")
            X = X.loc[:, list(self.feature_names_in_)]
        elif np.shape(X)[1] != self.n_features_in_:
            raise InputError(f"X has {np.shape(X)[1]} columns but ComBatTransformer was fitted "
                             f"on {self.n_features_in_}", fix="pass the same columns as in "
                             "training")
        covariates = _columns(X, self.covariate_indices_).astype(np.float64)
        preserved = getattr(self, "preserved_covariates_", np.ones(covariates.shape[1], bool))
        harmonized = apply_combat(self.model_, _columns(X, self.feature_indices_).astype(
            np.float64), _columns(X, self.site_index_), covariates[:, np.asarray(preserved, bool)])
        if self.keep_covariates:
            return np.hstack([harmonized, covariates])
        return harmonized

    def get_feature_names_out(self, input_features=None):
        """Names of the output columns.

        Parameters
        ----------
        input_features : array_like of str, optional
            Input column names; defaults to ``feature_names_in_`` or ``x0, x1, ...``.

        Returns
        -------
        ndarray of str, shape (n_harmonized [+ n_covariates],)
        """
        check_is_fitted(self, "model_")
        if input_features is None:
            input_features = getattr(self, "feature_names_in_",
                                     [f"x{i}" for i in range(self.n_features_in_)])
        input_features = np.asarray(input_features, dtype=object)
        indices = self.feature_indices_
        if self.keep_covariates:
            indices = np.concatenate([indices, self.covariate_indices_])
        return input_features[indices]
