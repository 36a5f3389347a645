"""Connectome-wide prediction: every edge of the participant connectome as a feature.

Edge-level prediction of an individual trait from resting-state connectivity is the field's most
used individual-difference method: connectome-based predictive modelling (CPM; Shen et al. 2017,
Nat Protoc 12:506), the resting-state pain susceptibility network signature (RPN; Spisak et al.
2020, Nat Commun 11:187). With 122 regions there are 7,381 edges (7,503 with the global signal
as a node) and a few dozen participants, so every step that looks at the target (edge
selection, penalty, weights) must be fitted inside the training folds, and a permutation test
must repeat all of them.

Input: one covariance matrix per participant
-------------------------------------------
Models here take a stack of per-participant covariance matrices, shape (n, R, R), or their upper
triangles with the diagonal, shape (n, R (R + 1) / 2) (order ``np.triu_indices(R)``): the
Ledoit-Wolf covariance of the participant's z-scored, cleaned ROI time series
(:func:`ledoit_wolf_covariances`, as nilearn's ``ConnectivityMeasure`` computes it). A
covariance holds everything each connectome kind needs, and it is computed from one
participant's data alone, so it can be made before any cross-validation without leakage. The
kind is a model parameter (:class:`ConnectomeTransformer`):

* ``correlation``: the covariance as a correlation;
* ``partial correlation``: ``-P_ij / sqrt(P_ii P_jj)`` of the precision ``P`` (the RPN
  signature's kind);
* ``tangent``: ``logm(W C W)`` with ``W`` the inverse square root of the geometric mean of the
  *training* participants' covariances (Varoquaux et al. 2010; Dadi et al. 2019, NeuroImage
  192:115). The reference is fitted in each training fold (and each inner training fold), never
  on a participant it then predicts.

Edges are the off-diagonal upper triangle, ``np.triu_indices(R, 1)`` (the order of the
connectivity group stage's ``edges`` table); :func:`edge_names` names them ``a--b``.

Models
------
* :class:`ConnectomeRegressor`: scaling (robust: median and interquartile range, or standard),
  univariate selection of edges by their Pearson correlation with the target (``top_k``: the k
  edges of largest ``|r|``; ``p_value``: edges with ``p < p_threshold``), and ridge or an elastic
  net. An inner K-fold cross-validation inside the training data chooses k and the penalty
  jointly (smallest pooled squared error), with every step refitted in each inner training fold;
  the model is then refitted on all training data.
* :class:`CPMRegressor`: connectome-based predictive modelling (Shen et al. 2017): edges whose
  correlation with the target has ``p < p_threshold`` form a positive and a negative network;
  a participant's summary is the sum of its positive-network edges minus the sum of its
  negative-network edges (``network="combined"``), or either sum alone, or both as two
  predictors (``"glm"``); a linear fit maps it to the target.

Both are scikit-learn estimators (``get_params`` / ``set_params`` / ``fit`` / ``predict``) whose
parameters are plain JSON values and whose fitted state is plain arrays and numbers, listed in
each class's ``Attributes`` and in :data:`FITTED_ATTRIBUTES`, so a model file stores them without
pickle.

Validation
----------
:func:`nested_cv` cross-validates a model (outer K-fold, repeated; the model's own inner
cross-validation makes it nested) and runs a permutation test in which the whole model, edge
selection included, is refitted on each permuted target. The folds do not depend on the
target, so everything that does not see it (covariance to edges, tangent reference, scaling) is
computed once per fold and reused for every permutation; what sees the target is recomputed.
The result equals cloning and fitting the model in every fold (tested).

Examples
--------
>>> rng = np.random.default_rng(0)
>>> ts = [rng.normal(size=(120, 6)) for _ in range(30)]
>>> cov = ledoit_wolf_covariances(ts)
>>> cov.shape
(30, 6, 6)
>>> ConnectomeTransformer(kind="partial correlation").fit_transform(cov).shape
(30, 15)
"""
from __future__ import annotations

import json
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from painplast.biomarker.store import register_estimator
from painplast.errors import InputError

__all__ = ["KINDS", "FITTED_ATTRIBUTES", "ConnectomeData", "ConnectomeTransformer",
           "ConnectomeRegressor", "CPMRegressor", "edge_names", "edge_networks",
           "geometric_mean", "ledoit_wolf_covariances", "nested_cv", "read_connectomes",
           "upper_triangle"]

#: Connectome kinds a model can compute from covariances.
KINDS = ("correlation", "partial correlation", "tangent")
_ALIASES = {"partial": "partial correlation", "partial_correlation": "partial correlation",
            "partial-correlation": "partial correlation"}
#: Fitted attributes a model file must store for each estimator (all plain arrays, numbers,
#: strings or None), beside the JSON parameters of ``get_params()``.
FITTED_ATTRIBUTES = {
    "ConnectomeTransformer": ("n_nodes_", "n_features_in_", "reference_", "whitening_"),
    "ConnectomeRegressor": ("n_nodes_", "n_features_in_", "reference_", "whitening_",
                            "center_", "scale_", "support_", "coef_", "intercept_", "k_",
                            "alpha_", "k_grid_", "alpha_grid_", "inner_scores_"),
    "CPMRegressor": ("n_nodes_", "n_features_in_", "reference_", "whitening_",
                     "positive_", "negative_", "coef_", "intercept_", "r_threshold_"),
}


# =============================================================================== edges


def _kind(kind: str) -> str:
    key = _ALIASES.get(str(kind).lower(), str(kind).lower())
    if key not in KINDS:
        raise InputError(f"unknown connectome kind {kind!r}",
                         fix=f"choose one of {', '.join(KINDS)}")
    return key


def n_nodes_of(n_values: int, diagonal: bool) -> int:
    """R from the length of an upper triangle (with or without the diagonal).

    Examples
    --------
    >>> n_nodes_of(7503, diagonal=False), n_nodes_of(7626, diagonal=True)
    (123, 123)
    """
    # R (R - 1) / 2 = m  or  R (R + 1) / 2 = m
    root = ((-1 if diagonal else 1) + np.sqrt(1 + 8 * n_values)) / 2
    r = int(round(root))
    if (r * (r - 1) // 2 if not diagonal else r * (r + 1) // 2) != n_values:
        raise InputError(f"{n_values} values are not the upper triangle of a square matrix",
                         fix="give (n, R, R) matrices or their upper triangles with the diagonal")
    return r


def upper_triangle(matrices: np.ndarray, diagonal: bool = False) -> np.ndarray:
    """Upper triangles of a stack of symmetric matrices, (n, R, R) -> (n, E).

    Order ``np.triu_indices(R, 0 if diagonal else 1)``.

    Examples
    --------
    >>> upper_triangle(np.arange(9.0).reshape(1, 3, 3)).tolist()
    [[1.0, 2.0, 5.0]]
    """
    m = np.asarray(matrices)
    i, j = np.triu_indices(m.shape[-1], 0 if diagonal else 1)
    return m[..., i, j]


def _symmetric(vectors: np.ndarray, n_nodes: int) -> np.ndarray:
    """Inverse of ``upper_triangle(..., diagonal=True)``: (n, R (R + 1) / 2) -> (n, R, R)."""
    i, j = np.triu_indices(n_nodes)
    out = np.zeros((len(vectors), n_nodes, n_nodes))
    out[:, i, j] = vectors
    out[:, j, i] = vectors
    return out


def edge_names(nodes: Sequence[str]) -> list[str]:
    """Edge names ``a--b`` in the order of :func:`upper_triangle`.

    Examples
    --------
    >>> edge_names(["mpfc", "nacc", "pcc"])
    ['mpfc--nacc', 'mpfc--pcc', 'nacc--pcc']
    """
    i, j = np.triu_indices(len(nodes), 1)
    return [f"{nodes[a]}--{nodes[b]}" for a, b in zip(i, j)]


def edge_networks(networks: Sequence[str]) -> list[str]:
    """The network pair of every edge (``a--b`` sorted by name), order of :func:`upper_triangle`.

    Examples
    --------
    >>> edge_networks(["dmn", "sal", "dmn"])
    ['dmn--sal', 'dmn--dmn', 'dmn--sal']
    """
    i, j = np.triu_indices(len(networks), 1)
    return ["--".join(sorted((str(networks[a]), str(networks[b])))) for a, b in zip(i, j)]


def _zscore(ts: np.ndarray) -> np.ndarray:
    ts = np.asarray(ts, np.float64)
    ts = ts - ts.mean(0)
    sd = ts.std(0, ddof=1)
    return ts / np.where(sd > 0, sd, 1.0)


def ledoit_wolf_covariances(timeseries: Sequence[np.ndarray]) -> np.ndarray:
    """Ledoit-Wolf covariance of each participant's z-scored time series, (n, R, R).

    The covariance estimate nilearn's ``ConnectivityMeasure`` uses by default
    (``sklearn.covariance.LedoitWolf``), on series z-scored with ``ddof=1`` as the connectivity
    subject stage leaves them: all three kinds are then computed from it.

    Parameters
    ----------
    timeseries : sequence of ndarray, each (T_i, R)
        One participant per item; T_i may differ.

    Returns
    -------
    ndarray, shape (n, R, R), float64
    """
    from sklearn.covariance import ledoit_wolf

    out = []
    for k, ts in enumerate(timeseries):
        ts = np.asarray(ts, np.float64)
        if ts.ndim != 2 or ts.shape[0] < 3:
            raise InputError(f"time series {k} has shape {ts.shape}; need (volumes, regions)",
                             fix="give each participant's (T, R) ROI time series")
        if not np.all(np.isfinite(ts)):
            raise InputError(f"time series {k} has missing values",
                             fix="give finite time series (the connectivity stage writes them)")
        out.append(ledoit_wolf(_zscore(ts))[0])
    shapes = {c.shape for c in out}
    if len(shapes) > 1:
        raise InputError(f"participants have different numbers of regions ({sorted(shapes)})",
                         fix="use the same atlas for every participant")
    return np.stack(out) if out else np.empty((0, 0, 0))


# =============================================================================== tangent space


def _form(values: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``V diag(values) V^T`` for one matrix or a stack."""
    return (vectors * values[..., None, :]) @ np.swapaxes(vectors, -1, -2)


def geometric_mean(matrices: np.ndarray, max_iter: int = 30, tol: float = 1e-7) -> np.ndarray:
    """Geometric (Riemannian) mean of symmetric positive definite matrices.

    The gradient descent of Fletcher & Joshi (2007), as nilearn's ``ConnectivityMeasure(kind=
    "tangent")`` fits its reference (same start, step rule and stopping rule), on the whole
    stack at once.

    Parameters
    ----------
    matrices : ndarray, shape (n, R, R)
    max_iter : int
    tol : float
        Stop when the norm of the mean log-map divided by R^2 falls below it.

    Returns
    -------
    ndarray, shape (R, R)

    Examples
    --------
    >>> m = np.stack([np.diag([1.0, 4.0]), np.diag([4.0, 1.0])])
    >>> geometric_mean(m).round(6).tolist()
    [[2.0, 0.0], [0.0, 2.0]]
    """
    matrices = np.asarray(matrices, np.float64)
    values = np.linalg.eigvalsh(matrices)
    if not np.all(values > 0):
        raise InputError("a covariance matrix is not positive definite",
                         fix="use Ledoit-Wolf covariances (ledoit_wolf_covariances)")
    gmean = matrices.mean(0)
    norm_old, step = np.inf, 1.0
    norm = np.inf
    for _ in range(max_iter):
        vals, vecs = np.linalg.eigh(gmean)
        inv_sqrt = _form(1.0 / np.sqrt(vals), vecs)
        whitened = inv_sqrt @ matrices @ inv_sqrt
        w_vals, w_vecs = np.linalg.eigh(whitened)
        logs_mean = _form(np.log(w_vals), w_vecs).mean(0)
        norm = float(np.linalg.norm(logs_mean))
        l_vals, l_vecs = np.linalg.eigh(logs_mean)
        sqrt_g = _form(np.sqrt(vals), vecs)
        gmean = sqrt_g @ _form(np.exp(l_vals * step), l_vecs) @ sqrt_g
        if norm < norm_old:
            norm_old = norm
        elif norm > norm_old:
            step /= 2.0
            norm = norm_old
        if norm / gmean.size < tol:
            break
    return gmean


# =============================================================================== transformer


def _as_covariances(X) -> np.ndarray:
    """(n, R, R) covariances from (n, R, R) or (n, R (R + 1) / 2) input."""
    X = np.asarray(X, np.float64)
    if X.ndim == 3 and X.shape[1] == X.shape[2]:
        return X
    if X.ndim == 2:
        return _symmetric(X, n_nodes_of(X.shape[1], diagonal=True))
    raise InputError(f"connectome input has shape {X.shape}",
                     fix="give (n, R, R) covariances or their upper triangles with the diagonal")


def _edges(cov: np.ndarray, kind: str, whitening: np.ndarray | None) -> np.ndarray:
    """Edges (n, E) of the given kind from covariances (n, R, R)."""
    if kind == "correlation":
        d = np.sqrt(np.einsum("nii->ni", cov))
        m = cov / d[:, :, None] / d[:, None, :]
    elif kind == "partial correlation":
        prec = np.linalg.inv(cov)
        d = np.sqrt(np.einsum("nii->ni", prec))
        m = -prec / d[:, :, None] / d[:, None, :]
    else:
        vals, vecs = np.linalg.eigh(whitening @ cov @ whitening)
        m = _form(np.log(vals), vecs)
    return upper_triangle(m)


class ConnectomeTransformer(TransformerMixin, BaseEstimator):
    """Per-participant covariances -> connectome edges of one kind.

    Correlation and partial correlation are computed from each participant's covariance alone
    (nothing is learned); the tangent kind learns its reference, the geometric mean of the
    training covariances, in ``fit``. Equal to nilearn's ``ConnectivityMeasure(kind=...,
    vectorize=True, discard_diagonal=True)`` on the same series (up to the edge order).

    Parameters
    ----------
    kind : {"correlation", "partial correlation", "tangent"}

    Attributes
    ----------
    n_nodes_ : int
    n_features_in_ : int
        Length of an input row (R (R + 1) / 2 for vectorized input, R for matrices).
    reference_ : ndarray, shape (R, R) or None
        Tangent kind: geometric mean of the training covariances.
    whitening_ : ndarray, shape (R, R) or None
        Tangent kind: ``reference_ ** -1/2``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> cov = ledoit_wolf_covariances([rng.normal(size=(80, 4)) for _ in range(10)])
    >>> ConnectomeTransformer(kind="tangent").fit(cov[:8]).transform(cov[8:]).shape
    (2, 6)
    """

    def __init__(self, kind="partial correlation"):
        self.kind = kind

    def fit(self, X, y=None):
        """Learn the tangent reference from training covariances (other kinds learn nothing).

        Parameters
        ----------
        X : array_like, shape (n, R, R) or (n, R (R + 1) / 2)
        y : ignored

        Returns
        -------
        self
        """
        cov = _as_covariances(X)
        kind = _kind(self.kind)
        self.n_nodes_ = int(cov.shape[1])
        self.n_features_in_ = int(np.shape(X)[1])
        self.reference_ = self.whitening_ = None
        if kind == "tangent":
            self.reference_ = geometric_mean(cov)
            vals, vecs = np.linalg.eigh(self.reference_)
            self.whitening_ = _form(1.0 / np.sqrt(vals), vecs)
        return self

    def transform(self, X):
        """Edges, shape (n, R (R - 1) / 2), order ``np.triu_indices(R, 1)``."""
        check_is_fitted(self, "n_nodes_")
        cov = _as_covariances(X)
        if cov.shape[1] != self.n_nodes_:
            raise InputError(f"connectomes have {cov.shape[1]} regions, the model {self.n_nodes_}",
                             fix="use the atlas the model was trained with")
        return _edges(cov, _kind(self.kind), self.whitening_)


# =============================================================================== the shared core


def _scaling(Z: np.ndarray, scaling: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Centre and scale of each column (RobustScaler / StandardScaler semantics)."""
    if scaling in (None, "none"):
        return np.zeros(Z.shape[1]), np.ones(Z.shape[1])
    if scaling == "robust":
        q25, center, q75 = np.percentile(Z, [25, 50, 75], axis=0)
        scale = q75 - q25
    elif scaling == "standard":
        center, scale = Z.mean(0), Z.std(0)
    else:
        raise InputError(f"unknown scaling {scaling!r}", fix="use 'robust', 'standard' or None")
    scale = np.where(scale > 10 * np.finfo(float).eps * np.maximum(np.abs(center), 1), scale, 1.0)
    return center, scale


@dataclass
class _Block:
    """One training set prepared for the target-dependent steps (all y-independent).

    ``Zc``: training edges, scaled, centred on their training mean (n_tr, E); ``norm``: column
    norms of Zc; ``mean``: the training mean of the scaled edges; ``test``: scaled test edges
    centred on the training mean (n_te, E) or None; ``raw``/``raw_test``: unscaled edges (CPM).
    """
    Zc: np.ndarray
    norm: np.ndarray
    mean: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    test: np.ndarray | None
    test_index: np.ndarray | None
    state: dict = field(default_factory=dict)


def _prepare(cov_train, cov_test, kind, scaling, test_index=None, keep_raw=False) -> _Block:
    transformer = ConnectomeTransformer(kind=kind).fit(cov_train)
    edges = transformer.transform(cov_train)
    center, scale = _scaling(edges, scaling)
    Z = (edges - center) / scale
    mean = Z.mean(0)
    Zc = Z - mean
    test = None
    if cov_test is not None and len(cov_test):
        test = (transformer.transform(cov_test) - center) / scale - mean
    state = {"n_nodes_": transformer.n_nodes_, "reference_": transformer.reference_,
             "whitening_": transformer.whitening_}
    block = _Block(Zc, np.sqrt(np.einsum("ij,ij->j", Zc, Zc)), mean, center, scale, test,
                   test_index, state)
    if keep_raw:
        block.state["raw"] = edges
        block.state["raw_test"] = (transformer.transform(cov_test)
                                   if cov_test is not None and len(cov_test) else None)
    return block


def _correlations(block: _Block, Y: np.ndarray) -> np.ndarray:
    """Pearson r of every edge with each target column: (E, n_targets)."""
    Yc = Y - Y.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (block.Zc.T @ Yc) / (block.norm[:, None] * np.sqrt((Yc * Yc).sum(0))[None, :])
    return np.nan_to_num(r, nan=0.0)


def _r_threshold(p: float, n: int) -> float:
    """|r| above which a two-sided Pearson test with n observations has p < ``p``."""
    df = n - 2
    t = sps.t.isf(p / 2.0, df)
    return float(t / np.sqrt(df + t * t))


def _inner_folds(n: int, folds: int, random_state) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled K-fold splits of ``range(n)`` that do not depend on the target."""
    from sklearn.model_selection import KFold

    k = max(2, min(int(folds), n))
    return list(KFold(k, shuffle=True, random_state=random_state).split(np.zeros(n)))


# =============================================================================== the regressor


#: Targets (true and permuted) processed together in one batch of kernel computations.
_CHUNK = 64


def _order(r: np.ndarray, k_max: int) -> np.ndarray:
    """Per column of r (E, P): the indices of the k_max largest |r|, largest first, (k_max, P)."""
    a = np.abs(r)
    if k_max >= len(a):
        return np.argsort(-a, axis=0, kind="stable")
    top = np.argpartition(-a, k_max - 1, axis=0)[:k_max]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(a, top, 0), axis=0,
                                              kind="stable"), 0)


def _kernels(A: np.ndarray, B: np.ndarray | None, idx: np.ndarray):
    """Kernels of the columns ``idx`` (m, P) of A (n, E) and B (n_te, E), per target column:
    ``A[:, idx_p] A[:, idx_p]^T`` (P, n, n) and ``B[:, idx_p] A[:, idx_p]^T`` (P, n_te, n)."""
    G = np.moveaxis(A[:, idx], 2, 0)                    # (P, n, m)
    K = G @ np.swapaxes(G, 1, 2)
    C = None if B is None else np.moveaxis(B[:, idx], 2, 0) @ np.swapaxes(G, 1, 2)
    return K, C


def _masked_kernels(A, B, mask):
    """As :func:`_kernels` for boolean masks (E, P) of varying size."""
    W = mask.T.astype(A.dtype)                           # (P, E)
    AW = A[None, :, :] * W[:, None, :]                  # (P, n, E)
    K = AW @ A.T
    C = None if B is None else (B[None, :, :] * W[:, None, :]) @ A.T
    return K, C


class _shared:
    """One kernel (n, n) standing for P identical ones (eigendecomposed once)."""

    def __init__(self, K, P):
        self.K, self.P = K, P


def _dual(K, yc: np.ndarray, penalties: np.ndarray) -> np.ndarray:
    """Ridge dual coefficients ``(K + lambda I)^-1 y`` for every target and penalty.

    K: (P, n, n) or a :class:`_shared` kernel; yc: (P, n) centred targets; penalties: (P, A)
    -> (P, n, A)."""
    if isinstance(K, _shared):
        vals, vecs = np.linalg.eigh(K.K)
        vals = np.clip(vals, 0, None)
        proj = yc @ vecs                                 # (P, n)
        return np.einsum("ij,pja->pia", vecs,
                         proj[:, :, None] / (vals[None, :, None] + penalties[:, None, :]))
    vals, vecs = np.linalg.eigh(K)
    vals = np.clip(vals, 0, None)
    proj = np.einsum("pij,pi->pj", vecs, yc)            # V^T y
    return vecs @ (proj[:, :, None] / (vals[:, :, None] + penalties[:, None, :]))


class ConnectomeRegressor(RegressorMixin, BaseEstimator):
    """Edge selection and a penalized linear model, tuned by inner cross-validation.

    The steps, each fitted on training data only: connectome edges of ``kind`` from the
    covariances (the tangent reference from the training covariances), scaling, univariate
    selection by the Pearson correlation of each edge with the target, ridge (or an elastic
    net). An inner K-fold cross-validation chooses the number of edges and the penalty jointly,
    refitting every step (tangent reference and scaling included) in each inner training fold;
    the model is then refitted on all the training data.

    Ridge is solved in the span of the training participants (kernel form: one small
    eigendecomposition gives every penalty), so the whole inner grid costs a few n x n
    eigendecompositions, and many targets (a permutation test) are solved together.

    The defaults, and why: partial correlation with Ledoit-Wolf shrinkage (direct couplings,
    the best edge estimate in Smith et al. 2011, NeuroImage 54:875, and the RPN signature's
    kind); robust scaling (median / interquartile range: a few participants with extreme edges
    do not set the scale of a 35-participant model; the RPN study's choice); top-k selection
    with k chosen in the training folds from 10 to 200 edges (the range the RPN study searched,
    and the size of published predictive networks); ridge (as accurate as the elastic net and
    better than the lasso for connectome prediction, Cui & Gong 2018, NeuroImage 178:622;
    l2-penalized models are the most stable with few participants, Varoquaux et al. 2017,
    NeuroImage 145:166 -- and an exact kernel solution makes a 1000-permutation test of the
    whole model affordable); inner 10-fold cross-validation (Kohavi 1995).

    Parameters
    ----------
    kind : {"correlation", "partial correlation", "tangent"}
    scaling : {"robust", "standard", None}
        Per-edge centring and scaling fitted on the training data (``robust``: median and
        interquartile range, as scikit-learn's ``RobustScaler``).
    selection : {"top_k", "p_value", None}
        ``top_k``: keep the ``k`` edges of largest ``|r|`` (inner CV chooses among ``k``);
        ``p_value``: keep edges with two-sided p < ``p_threshold``; None: all edges.
    k : list of int or "all"
        Candidate numbers of edges (capped at the number of edges; ``"all"`` = every edge).
    p_threshold : float
        For ``selection="p_value"``.
    estimator : {"ridge", "elastic_net"}
    alphas : list of float, optional
        Candidate penalties. Ridge: per selected edge (the penalty is ``alpha * k`` on the
        scaled edges, so one grid serves every k); default ``logspace(-3, 2, 11)``. Elastic
        net: scikit-learn's ``alpha``; default ``[0.001, 0.005, 0.01, 0.05, 0.1, 0.5]`` (the RPN
        study's grid).
    l1_ratio : float
        Elastic net mixing (1 = lasso).
    inner_folds : int
        Folds of the inner cross-validation (shuffled K-fold; at most n, i.e. leave-one-out).
    random_state : int
        Seed of the inner folds.

    Attributes
    ----------
    n_nodes_, n_features_in_, reference_, whitening_
        As :class:`ConnectomeTransformer` (fitted on all training data).
    center_, scale_ : ndarray, shape (E,)
        Scaling of every edge.
    support_ : ndarray of bool, shape (E,)
        Edges the final model uses.
    coef_ : ndarray, shape (E,)
        Weights on the scaled edges (0 outside ``support_``).
    intercept_ : float
        ``prediction = ((edges - center_) / scale_) @ coef_ + intercept_``.
    k_ : int
        Number of edges selected.
    alpha_ : float
        Penalty chosen (as given in ``alphas``).
    k_grid_, alpha_grid_ : ndarray
        The grid searched (penalties strongest first).
    inner_scores_ : ndarray, shape (len(k_grid_), len(alpha_grid_))
        Pooled inner-CV mean squared error of each pair.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ts = [rng.normal(size=(100, 8)) for _ in range(40)]
    >>> y = rng.normal(size=40)
    >>> for t, v in zip(ts, y):
    ...     t[:, 1] += 0.6 * v * t[:, 0]          # edge 0--1 follows the target
    >>> cov = ledoit_wolf_covariances(ts)
    >>> model = ConnectomeRegressor(kind="correlation", k=[1, 5], inner_folds=5).fit(cov, y)
    >>> int(np.argmax(np.abs(model.coef_))), model.k_
    (0, 1)
    """

    def __init__(self, kind="partial correlation", scaling="robust", selection="top_k",
                 k=(10, 20, 50, 100, 200), p_threshold=0.01, estimator="ridge", alphas=None,
                 l1_ratio=0.5, inner_folds=10, random_state=0):
        self.kind = kind
        self.scaling = scaling
        self.selection = selection
        self.k = k
        self.p_threshold = p_threshold
        self.estimator = estimator
        self.alphas = alphas
        self.l1_ratio = l1_ratio
        self.inner_folds = inner_folds
        self.random_state = random_state

    # ------------------------------------------------------------------ grid
    def _grids(self, n_edges: int) -> tuple[np.ndarray, np.ndarray]:
        if self.estimator not in ("ridge", "elastic_net"):
            raise InputError(f"unknown estimator {self.estimator!r}",
                             fix="use 'ridge' or 'elastic_net' (or CPMRegressor for CPM)")
        if self.selection == "top_k":
            ks = [n_edges if str(v) == "all" else int(v) for v in np.atleast_1d(self.k)]
            if any(v < 1 for v in ks):
                raise InputError(f"k must be positive, got {self.k}",
                                 fix="give numbers of edges such as [20, 50, 100]")
            ks = np.unique(np.minimum(ks, n_edges))
        elif self.selection in ("p_value", None, "none"):
            ks = np.array([n_edges])
        else:
            raise InputError(f"unknown selection {self.selection!r}",
                             fix="use 'top_k', 'p_value' or None")
        if self.alphas is not None:
            alphas = np.asarray(self.alphas, float).ravel()
        elif self.estimator == "ridge":
            alphas = np.logspace(-3, 2, 11)
        else:
            alphas = np.array([0.001, 0.005, 0.01, 0.05, 0.1, 0.5])
        if not len(alphas) or np.any(alphas <= 0):
            raise InputError("penalties must be positive", fix="give alphas > 0")
        return ks, np.sort(alphas)[::-1]   # strongest penalty first (ties -> simpler model)

    def _blocks(self, cov: np.ndarray, cov_test=None) -> tuple[list[_Block], _Block]:
        """The y-independent preparation: one block per inner fold and one for all rows
        (with ``cov_test`` as its test rows)."""
        kind = _kind(self.kind)
        inner = [_prepare(cov[tr], cov[te], kind, self.scaling, te)
                 for tr, te in _inner_folds(len(cov), self.inner_folds, self.random_state)]
        return inner, _prepare(cov, cov_test, kind, self.scaling)

    # ------------------------------------------------------------------ the inner search
    def _masks(self, r: np.ndarray, n: int) -> np.ndarray:
        """p-value selection: (E, P) boolean masks (every edge when selection is None)."""
        if self.selection == "p_value":
            return np.abs(r) > _r_threshold(float(self.p_threshold), n)
        return np.ones(r.shape, bool)

    def _search(self, block: _Block, Y: np.ndarray, ks, alphas) -> np.ndarray:
        """Test predictions of every (k, alpha) for every target column of Y (n_tr, P):
        shape (P, n_te, len(ks), len(alphas))."""
        P, n_te = Y.shape[1], len(block.test)
        Yc = Y - Y.mean(0)
        r = _correlations(block, Y)
        out = np.zeros((P, n_te, len(ks), len(alphas)))
        if self.estimator == "elastic_net":
            for p in range(P):
                order = self._ordered(r[:, p], len(Y), int(ks.max()))
                out[p] = self._enet(block, Yc[:, p], order, ks, alphas)
            return out + Y.mean(0)[:, None, None, None]
        n_edges = block.Zc.shape[1]
        if self.selection != "p_value":          # top-k, or every edge (k = E)
            partial = ks[ks < n_edges]
            order = _order(r, int(partial.max())) if len(partial) else None
            K = np.zeros((P, len(Y), len(Y)))
            C = np.zeros((P, n_te, len(Y)))
            start = 0
            for a, k in enumerate(ks):
                if k >= n_edges:        # every edge: one kernel for all targets
                    dual = _dual(_shared(block.Zc @ block.Zc.T, P), Yc.T,
                                 np.broadcast_to(alphas * k, (P, len(alphas))))
                    out[:, :, a, :] = (block.test @ block.Zc.T) @ dual
                    continue
                dK, dC = _kernels(block.Zc, block.test, order[start:k])
                K += dK
                C += dC
                start = k
                dual = _dual(K, Yc.T, np.broadcast_to(alphas * k, (P, len(alphas))))
                out[:, :, a, :] = C @ dual
        else:
            mask = self._masks(r, len(Y))
            K, C = _masked_kernels(block.Zc, block.test, mask)
            # an empty selection has a zero kernel: any positive penalty gives the mean
            dual = _dual(K, Yc.T, np.maximum(mask.sum(0), 1)[:, None] * alphas[None, :])
            out[:, :, 0, :] = C @ dual
        return out + Y.mean(0)[:, None, None, None]

    def _chunk(self, n_edges: int) -> int:
        """Targets per batch: masked kernels hold (batch, n, E) values, so fewer of them."""
        if self.selection == "p_value":
            return max(1, min(_CHUNK, int(2e6 // max(n_edges * 40, 1))))
        return _CHUNK

    def _ordered(self, r: np.ndarray, n: int, k_max: int) -> np.ndarray:
        """One target: edge indices by decreasing |r| (at most k_max; p-value: those passing)."""
        if self.selection == "p_value":
            keep = np.flatnonzero(np.abs(r) > _r_threshold(float(self.p_threshold), n))
            return keep[np.argsort(-np.abs(r[keep]), kind="stable")]
        return _order(r[:, None], min(k_max, len(r)))[:, 0]

    def _enet(self, block: _Block, yc: np.ndarray, order: np.ndarray, ks, alphas, test=True):
        """Elastic net, one cold start per penalty (as ``ElasticNet(alpha).fit``): in the
        p > n regime a lasso solution is not unique and a warm-started path can end elsewhere.
        Columns in edge order, as ``SelectKBest`` keeps them. Test predictions (centred)
        (n_te, len(ks), len(alphas)), or the weights of the single (k, alpha) when ``test`` is
        False."""
        from sklearn.linear_model import enet_path

        out = np.zeros((0 if block.test is None else len(block.test), len(ks), len(alphas)))
        for a, k in enumerate(ks):
            idx = np.sort(order[:k])
            if not len(idx):
                continue
            A = np.asfortranarray(block.Zc[:, idx])
            coefs = np.empty((len(idx), len(alphas)))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for b, alpha in enumerate(alphas):
                    coefs[:, b] = enet_path(A, yc, l1_ratio=float(self.l1_ratio), alphas=[alpha],
                                            max_iter=100000, tol=1e-4, precompute=False)[1][:, 0]
            if not test:
                weights = np.zeros(block.Zc.shape[1])
                weights[idx] = coefs[:, 0]
                return weights
            out[:, a, :] = block.test[:, idx] @ coefs
        return out if test else np.zeros(block.Zc.shape[1])

    def _choose(self, inner: list[_Block], Y: np.ndarray, ks, alphas):
        """Pooled inner-CV squared error (P, len(ks), len(alphas)) and the chosen grid
        positions (first minimum in grid order: fewer edges, stronger penalty)."""
        n, P = Y.shape
        sq = np.zeros((P, len(ks), len(alphas)))
        chunk = self._chunk(inner[0].Zc.shape[1]) if inner else _CHUNK
        for block in inner:
            train = np.setdiff1d(np.arange(n), block.test_index, assume_unique=True)
            for lo in range(0, P, chunk):
                pred = self._search(block, Y[train, lo:lo + chunk], ks, alphas)
                truth = Y[block.test_index, lo:lo + chunk].T[:, :, None, None]
                sq[lo:lo + chunk] += ((pred - truth) ** 2).sum(1)
        sq /= n
        best = np.argmin(sq.reshape(P, -1), axis=1)
        return sq, best // len(alphas), best % len(alphas)

    def _final(self, full: _Block, Y: np.ndarray, k_at, a_at, ks, alphas, weights_of=()):
        """Refit with each target's chosen (k, alpha): centred test predictions (P, n_te) of
        ``full.test`` (None without test rows) and the edge weights of the columns in
        ``weights_of`` ({column: (weights (E,), n_selected)})."""
        n, P = Y.shape
        Yc = Y - Y.mean(0)
        n_te = 0 if full.test is None else len(full.test)
        preds = np.zeros((P, n_te))
        weights = {}
        r = _correlations(full, Y)
        if self.estimator == "elastic_net":
            for p in range(P):
                k, alpha = int(ks[k_at[p]]), float(alphas[a_at[p]])
                order = self._ordered(r[:, p], n, k)
                w = self._enet(full, Yc[:, p], order, [k], [alpha], test=False)
                if n_te:
                    preds[p] = full.test @ w
                if p in weights_of:
                    weights[p] = (w, int(min(k, len(order))))
            return preds, weights
        chunk = self._chunk(full.Zc.shape[1])
        for a_k in np.unique(k_at):
            cols = np.flatnonzero(k_at == a_k)
            for lo in range(0, len(cols), chunk):
                sub = cols[lo:lo + chunk]
                if self.selection != "p_value":
                    k = int(ks[a_k])
                    idx = _order(r[:, sub], k)
                    if k >= full.Zc.shape[1]:
                        K = _shared(full.Zc @ full.Zc.T, len(sub))
                        C = None if full.test is None else full.test @ full.Zc.T
                        C = None if C is None else np.broadcast_to(C, (len(sub),) + C.shape)
                    else:
                        K, C = _kernels(full.Zc, full.test, idx)
                    sizes = np.full(len(sub), k)
                else:
                    mask = self._masks(r[:, sub], n)
                    K, C = _masked_kernels(full.Zc, full.test, mask)
                    sizes = mask.sum(0)
                dual = _dual(K, Yc[:, sub].T,
                             (np.maximum(sizes, 1) * alphas[a_at[sub]])[:, None])[:, :, 0]
                if n_te:
                    preds[sub] = np.einsum("pij,pj->pi", C, dual)
                for q, p in enumerate(sub):
                    if p in weights_of:
                        sel = (idx[:, q] if self.selection != "p_value"
                               else np.flatnonzero(mask[:, q]))
                        w = np.zeros(full.Zc.shape[1])
                        if sizes[q]:
                            w[sel] = full.Zc[:, sel].T @ dual[q]
                        weights[p] = (w, int(sizes[q]))
        return preds, weights

    def _fit_many(self, inner, full, Y, weights_of=(0,)):
        """Inner search and refit for every target column of Y (n, P). Returns the chosen
        (k, alpha) positions, the centred predictions of ``full.test`` and the weights."""
        ks, alphas = self._grids(full.Zc.shape[1])
        sq, k_at, a_at = self._choose(inner, Y, ks, alphas)
        preds, weights = self._final(full, Y, k_at, a_at, ks, alphas, weights_of)
        return ks, alphas, sq, k_at, a_at, preds, weights

    def fit(self, X, y):
        """Fit on training covariances.

        Parameters
        ----------
        X : array_like, shape (n, R, R) or (n, R (R + 1) / 2)
            Per-participant covariance matrices (:func:`ledoit_wolf_covariances`).
        y : array_like, shape (n,)
            Continuous target.

        Returns
        -------
        self
        """
        cov = _as_covariances(X)
        y = _check_target(y, len(cov))
        inner, full = self._blocks(cov)
        ks, alphas, sq, k_at, a_at, _, weights = self._fit_many(inner, full, y[:, None])
        coef, k = weights[0]
        self.n_features_in_ = int(np.shape(X)[1])
        for key, value in full.state.items():
            setattr(self, key, value)
        self.center_, self.scale_ = full.center, full.scale
        self.coef_ = coef
        self.support_ = coef != 0
        self.intercept_ = float(y.mean() - full.mean @ coef)
        self.k_, self.alpha_ = int(k), float(alphas[a_at[0]])
        self.k_grid_, self.alpha_grid_ = ks.astype(np.int64), alphas
        self.inner_scores_ = sq[0]
        return self

    def edges(self, X) -> np.ndarray:
        """Scaled-space input of the linear model: ``(edges - center_) / scale_``, (n, E)."""
        check_is_fitted(self, "coef_")
        cov = _as_covariances(X)
        if cov.shape[1] != self.n_nodes_:
            raise InputError(f"connectomes have {cov.shape[1]} regions, the model {self.n_nodes_}",
                             fix="use the atlas the model was trained with")
        return (_edges(cov, _kind(self.kind), self.whitening_) - self.center_) / self.scale_

    def predict(self, X) -> np.ndarray:
        """Predicted target, shape (n,)."""
        return self.edges(X) @ self.coef_ + self.intercept_

    def edge_weights(self) -> np.ndarray:
        """Weight of every edge in its own units (``coef_ / scale_``), shape (E,)."""
        check_is_fitted(self, "coef_")
        return self.coef_ / self.scale_


def _check_target(y, n: int) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64).ravel()
    if len(y) != n:
        raise InputError(f"{n} connectomes but {len(y)} target values",
                         fix="give one target value per participant")
    if not np.all(np.isfinite(y)):
        raise InputError("the target has missing values",
                         fix="leave out participants without a target value")
    if n < 6 or np.ptp(y) == 0:
        raise InputError(f"the target has {n} values and range {np.ptp(y):g}",
                         fix="a continuous target needs at least 6 different participants")
    return y


# =============================================================================== CPM


class CPMRegressor(RegressorMixin, BaseEstimator):
    """Connectome-based predictive modelling (Shen et al. 2017, Nat Protoc 12:506).

    In the training data, every edge is correlated with the target (Pearson); edges with
    two-sided ``p < p_threshold`` and positive r form the positive network, those with negative
    r the negative network. A participant's network strength is the sum of its edges in a
    network; ``network`` says which summary enters a linear fit to the target:
    ``"combined"`` (positive minus negative strength), ``"positive"``, ``"negative"``, or
    ``"glm"`` (both strengths as two predictors). Edges are used in their own units (no
    scaling), as in the protocol. With no edge passing the threshold the model predicts the
    training mean.

    Parameters
    ----------
    kind : {"correlation", "partial correlation", "tangent"}
    p_threshold : float
        Edge-selection threshold (the protocol's default 0.01).
    network : {"combined", "positive", "negative", "glm"}

    Attributes
    ----------
    n_nodes_, n_features_in_, reference_, whitening_
        As :class:`ConnectomeTransformer`.
    positive_, negative_ : ndarray of bool, shape (E,)
        The two networks.
    coef_ : ndarray, shape (1,) or (2,)
        Slope(s) of the linear fit (``glm``: positive, negative).
    intercept_ : float
    r_threshold_ : float
        |r| equivalent to ``p_threshold`` with the training sample size.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ts = [rng.normal(size=(100, 8)) for _ in range(40)]
    >>> y = rng.normal(size=40)
    >>> for t, v in zip(ts, y):
    ...     t[:, 1] += 0.6 * v * t[:, 0]
    >>> model = CPMRegressor(kind="correlation").fit(ledoit_wolf_covariances(ts), y)
    >>> bool(model.positive_[0]), int(model.positive_.sum() + model.negative_.sum()) < 5
    (True, True)
    """

    def __init__(self, kind="partial correlation", p_threshold=0.01, network="combined"):
        self.kind = kind
        self.p_threshold = p_threshold
        self.network = network

    def _weights(self, positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
        """Edge weights of the network summaries: (E, P, 1) or (E, P, 2)."""
        pos, neg = positive.astype(np.float64), negative.astype(np.float64)
        if self.network == "combined":
            return (pos - neg)[..., None]
        if self.network == "positive":
            return pos[..., None]
        if self.network == "negative":
            return neg[..., None]
        if self.network == "glm":
            return np.stack([pos, neg], axis=-1)
        raise InputError(f"unknown CPM network {self.network!r}",
                         fix="use 'combined', 'positive', 'negative' or 'glm'")

    def _fit_many(self, raw: np.ndarray, Y: np.ndarray, raw_test=None):
        """Networks and linear fits for every target column of Y (n, P) on training edges
        ``raw`` (n, E); returns (positive, negative, coef (P, m), intercept (P,), test
        predictions (P, n_te) or None)."""
        n, P = Y.shape
        Rc = raw - raw.mean(0)
        Yc = Y - Y.mean(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (Rc.T @ Yc) / (np.sqrt((Rc * Rc).sum(0))[:, None] * np.sqrt((Yc * Yc).sum(0)))
        r = np.nan_to_num(r, nan=0.0)
        threshold = _r_threshold(float(self.p_threshold), n)
        positive, negative = r > threshold, r < -threshold
        W = self._weights(positive, negative)                      # (E, P, m)
        S = np.einsum("ne,epm->pnm", raw, W)                       # summaries (P, n, m)
        Sc = S - S.mean(1, keepdims=True)
        # least squares of y on the summaries (centred), one small system per target; a
        # summary with no variance (an empty network) gets a zero slope
        G = np.einsum("pnm,pnl->pml", Sc, Sc)
        b = np.einsum("pnm,np->pm", Sc, Yc)
        scale = np.maximum(np.einsum("pmm->pm", G), 1e-300)
        usable = np.einsum("pmm->pm", G) > 1e-12 * np.maximum(scale.max(1, keepdims=True), 1)
        G = G + np.eye(G.shape[1])[None] * (~usable)[:, :, None]
        coef = np.linalg.solve(G, b[:, :, None])[:, :, 0] * usable
        intercept = Y.mean(0) - np.einsum("pm,pm->p", S.mean(1), coef)
        preds = None
        if raw_test is not None:
            preds = np.einsum("pnm,pm->pn", np.einsum("ne,epm->pnm", raw_test, W), coef) \
                + intercept[:, None]
        return positive, negative, coef, intercept, preds, threshold

    def fit(self, X, y):
        """Select the networks and fit the strength-to-target line on training covariances.

        Parameters
        ----------
        X : array_like, shape (n, R, R) or (n, R (R + 1) / 2)
        y : array_like, shape (n,)

        Returns
        -------
        self
        """
        cov = _as_covariances(X)
        y = _check_target(y, len(cov))
        self.n_features_in_ = int(np.shape(X)[1])
        block = _prepare(cov, None, _kind(self.kind), None, keep_raw=True)
        for key in ("n_nodes_", "reference_", "whitening_"):
            setattr(self, key, block.state[key])
        pos, neg, coef, intercept, _, threshold = self._fit_many(block.state["raw"], y[:, None])
        self.positive_, self.negative_ = pos[:, 0], neg[:, 0]
        self.coef_, self.intercept_ = coef[0], float(intercept[0])
        self.r_threshold_ = threshold
        return self

    def strength(self, X) -> np.ndarray:
        """The network summary (n, 1) or (n, 2) of each participant."""
        check_is_fitted(self, "coef_")
        cov = _as_covariances(X)
        if cov.shape[1] != self.n_nodes_:
            raise InputError(f"connectomes have {cov.shape[1]} regions, the model {self.n_nodes_}",
                             fix="use the atlas the model was trained with")
        raw = _edges(cov, _kind(self.kind), self.whitening_)
        return raw @ self._weights(self.positive_[:, None], self.negative_[:, None])[:, 0, :]

    def predict(self, X) -> np.ndarray:
        """Predicted target, shape (n,)."""
        return self.strength(X) @ self.coef_ + self.intercept_

    def edge_weights(self) -> np.ndarray:
        """Weight of every edge in the prediction (network sign times slope), shape (E,)."""
        check_is_fitted(self, "coef_")
        return self._weights(self.positive_[:, None], self.negative_[:, None])[:, 0, :] @ self.coef_


# model files store these two without pickle (painplast.biomarker.store)
register_estimator("connectome_regressor", ConnectomeRegressor,
                   FITTED_ATTRIBUTES["ConnectomeRegressor"])
register_estimator("cpm", CPMRegressor, FITTED_ATTRIBUTES["CPMRegressor"])


# =============================================================================== validation


def _outer_folds(n: int, folds: int, repeats: int, random_state: int):
    from sklearn.model_selection import KFold

    k = max(2, min(int(folds), n))
    return [list(KFold(k, shuffle=True, random_state=random_state + 1000 * r)
                 .split(np.zeros(n))) for r in range(repeats)]


def _fold_job(model, cov, Y, train, test):
    """One outer fold: predictions for ``test`` under every target column of ``Y`` (n, P),
    and the edge weights, number of edges and penalty for the first column (the true target).
    The target-independent preparation is done once for all columns; BLAS runs on one thread
    (folds run in parallel processes)."""
    from threadpoolctl import threadpool_limits

    cpu = time.process_time()
    with threadpool_limits(1):
        Ytr = Y[train]
        if isinstance(model, CPMRegressor):
            block = _prepare(cov[train], cov[test], _kind(model.kind), None, keep_raw=True)
            pos, neg, coef, _, preds, _ = model._fit_many(block.state["raw"], Ytr,
                                                          block.state["raw_test"])
            weights = model._weights(pos[:, :1], neg[:, :1])[:, 0, :] @ coef[0]
            preds = preds.T
            info = {"k": int(pos[:, 0].sum() + neg[:, 0].sum()), "alpha": float("nan")}
        else:
            inner, full = model._blocks(cov[train], cov[test])
            _, alphas, _, _, a_at, preds, chosen = model._fit_many(inner, full, Ytr)
            weights, k = chosen[0]
            weights = weights / full.scale
            preds = (preds + Ytr.mean(0)[:, None]).T
            info = {"k": k, "alpha": float(alphas[a_at[0]])}
    info.update(weights=weights, cpu_seconds=time.process_time() - cpu,
                peak_rss_mb=_peak_rss_mb())
    return test, preds, info


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (MB; Linux reports kB, macOS bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 ** 2 if sys.platform == "darwin" else 1024.0)


def nested_cv(model, X, y, *, folds: int = 10, repeats: int = 1, n_permutations: int = 1000,
              n_bootstrap: int = 2000, random_state: int = 0, n_jobs: int = 1) -> dict:
    """Nested cross-validation of a connectome model with a permutation test of the whole model.

    Outer folds: shuffled K-fold (``repeats`` times with different seeds), independent of the
    target; the model's own inner cross-validation makes the estimate nested. In each outer
    fold, the target-independent preparation (edges of the kind, tangent reference, scaling, for
    the outer and every inner training set) is computed once and reused for the true target and
    every permuted one; edge selection, the inner choice of k and penalty and the weights are
    refitted for each (the same result as cloning and fitting the model per fold).

    Parameters
    ----------
    model : ConnectomeRegressor or CPMRegressor
        Unfitted template (not modified).
    X : array_like, shape (n, R, R) or (n, R (R + 1) / 2)
        Per-participant covariances.
    y : array_like, shape (n,)
    folds : int
        Outer folds (10: Varoquaux et al. 2017 recommend 10-20% test sets over leave-one-out).
    repeats : int
        Repetitions of the outer cross-validation (the estimate is their mean).
    n_permutations : int
        Permutations of the target (first repeat's folds); 0 skips the test.
    n_bootstrap : int
        Resamples of the interval (:func:`painplast.biomarker.validate.metrics`).
    random_state : int
    n_jobs : int
        Outer folds run in parallel (joblib processes; BLAS limited to one thread each).

    Returns
    -------
    dict
        ``metrics`` (``r``, ``r2``, ``mae``: ``{"estimate", "ci_low", "ci_high"}``),
        ``permutation`` (``observed``, ``p`` = (1 + #null >= observed) / (1 + n),
        ``null_mean``, ``null_sd``, ``null_ci`` (2.5 and 97.5 percentiles), ``n_permutations``),
        ``predictions`` (ndarray (repeats, n)), ``folds`` (ndarray (repeats, n): outer fold
        numbers), ``edges`` (DataFrame per edge: ``selection_frequency``, ``mean_weight`` over
        the outer folds of all repeats), ``chosen`` (per outer fold: ``k``, ``alpha``),
        ``null`` (ndarray of the permutation statistics), ``cpu_seconds`` (summed over the
        outer folds, whichever process ran them), ``peak_rss_mb`` (largest peak memory of the
        processes that ran folds).
    """
    from joblib import Parallel, delayed
    from sklearn.base import clone

    from painplast.biomarker.validate import CrossValidation, metrics

    cov = _as_covariances(X)
    y = _check_target(y, len(cov))
    n = len(y)
    rng = np.random.default_rng([random_state, 31337])
    perms = np.array([rng.permutation(n) for _ in range(n_permutations)], dtype=np.int64)
    splits = _outer_folds(n, folds, repeats, random_state)
    jobs = []
    for r, repeat in enumerate(splits):
        Y = y[:, None] if r or not n_permutations else np.column_stack([y, y[perms].T])
        for train, test in repeat:
            jobs.append((r, train, test, Y))
    outputs = Parallel(n_jobs=n_jobs)(delayed(_fold_job)(clone(model), cov, Y, train, test)
                                      for _, train, test, Y in jobs)
    predictions = np.full((repeats, n), np.nan)
    null_pred = np.full((max(n_permutations, 0), n), np.nan)
    fold_of = np.full((repeats, n), -1)
    weights, chosen = [], []
    for f, ((r, _, _, _), (test, preds, info)) in enumerate(zip(jobs, outputs)):
        predictions[r, test] = preds[:, 0]
        fold_of[r, test] = f
        if r == 0 and n_permutations:
            null_pred[:, test] = preds[:, 1:].T
        weights.append(info["weights"])
        chosen.append({"repeat": r, "k": info["k"], "alpha": info["alpha"]})
    cv = CrossValidation("continuous", predictions, predictions, 0.0, [], False,
                         [c["alpha"] for c in chosen], folds=fold_of)
    result = {"metrics": metrics(y, cv, n_bootstrap=n_bootstrap, random_state=random_state,
                                 calibration=False),
              "predictions": predictions, "folds": fold_of, "chosen": chosen,
              "cpu_seconds": float(sum(out[2]["cpu_seconds"] for out in outputs)),
              "peak_rss_mb": max(out[2]["peak_rss_mb"] for out in outputs)}
    W = np.asarray(weights)
    result["edges"] = pd.DataFrame({"selection_frequency": (W != 0).mean(0),
                                    "mean_weight": W.mean(0)})
    if n_permutations:
        observed = float(np.corrcoef(predictions[0], y)[0, 1])
        yp = y[perms]
        null = np.array([_pearson(null_pred[p], yp[p]) for p in range(n_permutations)])
        finite = np.where(np.isfinite(null), null, -np.inf)
        result["null"] = null
        result["permutation"] = {
            "statistic": "r", "observed": observed,
            "p": float((1 + np.sum(finite >= observed - 1e-12)) / (1 + n_permutations)),
            "null_mean": float(np.nanmean(null)), "null_sd": float(np.nanstd(null)),
            "null_ci": [float(v) for v in np.nanpercentile(null, [2.5, 97.5])],
            "n_permutations": int(n_permutations)}
    return result


def _pearson(a, b) -> float:
    a = a - a.mean()
    b = b - b.mean()
    d = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / d) if d > 0 else float("nan")


# =============================================================================== reading


@dataclass(frozen=True)
class ConnectomeData:
    """Per-participant covariances read from a painplast derivatives folder.

    Attributes
    ----------
    participant_ids : list of str
    nodes : list of str
        Region names (repeated names made unique by the connectivity stage).
    networks : list of str
    covariances : ndarray, shape (n, R, R)
        Ledoit-Wolf covariances of the cleaned, z-scored time series.
    excluded : dict
        participant_id -> reason, for participants the subject stage excluded (not in the data).
    level : str
        ``atlas`` or ``pain``.
    """
    participant_ids: list
    nodes: list
    networks: list
    covariances: np.ndarray
    excluded: dict = field(default_factory=dict)
    level: str = "atlas"

    @property
    def edge_names(self) -> list[str]:
        return edge_names(self.nodes)

    def edges(self, kind: str = "partial correlation") -> pd.DataFrame:
        """Participants x edges of a kind that needs no reference (correlation, partial)."""
        if _kind(kind) == "tangent":
            raise InputError("tangent edges depend on a reference fitted on training data",
                             fix="fit a ConnectomeTransformer(kind='tangent') on training rows")
        values = _edges(self.covariances, _kind(kind), None)
        return pd.DataFrame(values, index=pd.Index(self.participant_ids, name="participant_id"),
                            columns=self.edge_names)


_SIDECAR = re.compile(r"^(sub-[A-Za-z0-9]+)(?:_ses-([A-Za-z0-9]+))?_desc-connectivity_features\.json$")


def connectivity_sidecars(root: str | os.PathLike) -> list[Path]:
    """The connectivity sidecars of a painplast output folder, with or without sessions."""
    root = Path(root)
    return sorted([*root.glob("sub-*/sub-*_desc-connectivity_features.json"),
                   *root.glob("sub-*/ses-*/sub-*_ses-*_desc-connectivity_features.json")])


def read_connectomes(derivatives_dir: str | os.PathLike, level: str = "atlas",
                     participants: Sequence[str] | None = None,
                     sessions: Mapping[str, str | None] | None = None) -> ConnectomeData:
    """Covariances of every participant's cleaned ROI time series in a painplast output folder.

    Reads ``sub-*/[ses-*/]sub-*[_ses-*]_desc-connectivity_features.json`` (the sidecar names the
    arrays and the nodes) and the ``<level>_timeseries`` array it lists (``*_desc-connectivity
    <Level>Timeseries_array.npy``, loaded without pickle); only the participants asked for are
    read, one session each.

    Parameters
    ----------
    derivatives_dir : path
        The painplast output folder (``OUTPUT_DIR`` of ``painplast run``).
    level : {"atlas", "pain"}
        The network atlas (or ROI time series from elsewhere) or the 24 pain ROIs.
    participants : sequence of str, optional
        Participant IDs to read (default: all).
    sessions : mapping, optional
        ``{participant_id: session label or None}``, the session read per participant
        (:meth:`painplast.cohort.Cohort.cross_sectional_sessions`); participants not in it are
        not read. Default: each participant's only result; a participant with results in
        several sessions then stops with an error that says so.

    Returns
    -------
    ConnectomeData
        Participants excluded by the subject stage (motion) are listed in ``excluded``.

    Raises
    ------
    InputError
        No sidecars, no time series of that level, or regions that differ between participants.
    """
    root = Path(derivatives_dir)
    if not root.is_dir():
        raise InputError("is not a folder", path=root, fix="give the painplast output folder")
    wanted = None if participants is None else {str(p) for p in participants}
    ids, series, excluded = [], [], {}
    nodes = networks = None
    key = f"{level}_timeseries"
    sidecars = connectivity_sidecars(root)
    if not sidecars:
        raise InputError("has no connectivity results "
                         "(sub-*/[ses-*/]sub-*_desc-connectivity_features.json)", path=root,
                         fix="run painplast run ... participant --modules connectivity")
    found: dict[str, list] = {}
    for sidecar in sidecars:
        match = _SIDECAR.match(sidecar.name)
        if match is None or (wanted is not None and match.group(1) not in wanted):
            continue
        pid, session = match.group(1), match.group(2)
        if sessions is not None and (pid not in sessions or sessions[pid] != session):
            continue
        found.setdefault(pid, []).append((session, sidecar))
    for pid, these in found.items():
        if len(these) > 1:
            labels = ", ".join(f"ses-{s}" for s, _ in these)
            raise InputError(f"{pid} has connectivity results in several sessions ({labels})",
                             path=root, fix="choose one with --session-label")
    for pid in sorted(found):
        sidecar = found[pid][0][1]
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, ValueError) as error:
            raise InputError(f"cannot read ({error})", path=sidecar,
                             fix="rerun the connectivity module for this participant") from None
        info = meta.get("info", {}) or {}
        if info.get("excluded"):
            excluded[pid] = str(info["excluded"])
            continue
        name = (meta.get("arrays") or {}).get(key)
        if name is None:
            raise InputError(f"lists no {key} array", path=sidecar,
                             fix="rerun the connectivity module (with an atlas for level 'atlas')")
        try:
            ts = np.load(sidecar.parent / name, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise InputError(f"cannot read {name} ({error})", path=sidecar.parent,
                             fix="rerun the connectivity module for this participant") from None
        these = [str(v) for v in info.get(f"{level}_nodes") or range(ts.shape[1])]
        if nodes is None:
            nodes = these
            networks = [str(v) for v in
                        info.get(f"{level}_networks") or ["unlabelled"] * len(these)]
        elif these != nodes:
            raise InputError(f"{pid} has other regions than the first participant", path=sidecar,
                             fix="run every participant with the same atlas")
        ids.append(pid)
        series.append(ts)
    if not ids:
        raise InputError(f"no participant has {level} time series", path=root,
                         fix="run painplast run ... participant --modules connectivity")
    return ConnectomeData(ids, nodes, networks, ledoit_wolf_covariances(series), excluded, level)
