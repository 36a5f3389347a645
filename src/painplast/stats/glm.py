"""Mass-univariate ordinary least squares: one design, many voxels (or features).

The general linear model ``Y = X beta + error`` is fitted to every column of ``Y`` at once
(one BLAS call per block of columns), then tested with t contrasts (a vector) or F contrasts
(a matrix). Arrays in, arrays out; statistics are float64.

* :func:`check_design` rejects rank-deficient designs with an
  :class:`~painplast.errors.InputError` that names the collinear columns.
* :func:`fit_ols` returns an :class:`OLSResult` (betas, residual variance, degrees of freedom).
* :func:`t_contrast` and :func:`f_contrast` test contrasts of the betas.
* :func:`t_to_p` and :func:`f_to_p` turn statistics into parametric p-values.

Voxels whose residual variance is exactly zero (for example constant zeros outside the brain)
get a statistic of 0 and a p-value of 1 instead of NaN or infinity.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

from painplast.errors import InputError

__all__ = [
    "OLSResult",
    "TContrastResult",
    "FContrastResult",
    "check_design",
    "fit_ols",
    "t_contrast",
    "f_contrast",
    "t_to_p",
    "f_to_p",
]

#: columns of ``Y`` fitted per BLAS call in :func:`fit_ols` (bounds the residual buffer)
_VOXEL_BLOCK = 1 << 15


@dataclass(frozen=True)
class OLSResult:
    """A fitted mass-univariate OLS model.

    Attributes
    ----------
    beta : ndarray, shape (p, v)
        Parameter estimates, one column per voxel.
    residual_variance : ndarray, shape (v,)
        Unbiased residual variance ``RSS / df``.
    df : int
        Residual degrees of freedom ``n - p``.
    xtx_inv : ndarray, shape (p, p)
        ``(X' X)^-1``, the unscaled covariance of ``beta``.
    """

    beta: np.ndarray
    residual_variance: np.ndarray
    df: int
    xtx_inv: np.ndarray


@dataclass(frozen=True)
class TContrastResult:
    """A t contrast ``c' beta`` at every voxel.

    Attributes
    ----------
    t : ndarray, shape (v,)
        t statistics.
    effect : ndarray, shape (v,)
        Contrast estimates ``c' beta``.
    standard_error : ndarray, shape (v,)
        Standard errors of ``effect``.
    df : int
        Degrees of freedom of the t distribution.
    """

    t: np.ndarray
    effect: np.ndarray
    standard_error: np.ndarray
    df: int


@dataclass(frozen=True)
class FContrastResult:
    """An F contrast ``C beta = 0`` at every voxel.

    Attributes
    ----------
    F : ndarray, shape (v,)
        F statistics.
    effect : ndarray, shape (q, v)
        Contrast estimates ``C beta``.
    df_num, df_den : int
        Numerator (rank of ``C``) and denominator (residual) degrees of freedom.
    """

    F: np.ndarray
    effect: np.ndarray
    df_num: int
    df_den: int


def _column_names(p: int, names: Sequence[str] | None) -> list[str]:
    if names is None:
        return [f"column {j}" for j in range(p)]
    names = [str(name) for name in names]
    if len(names) != p:
        raise InputError(f"{len(names)} column names were given for a design with {p} columns",
                         fix="pass one name per design column")
    return names


def check_design(X: np.ndarray, names: Sequence[str] | None = None) -> np.ndarray:
    """Validate a design matrix and return it as a float64 array.

    Parameters
    ----------
    X : array-like, shape (n, p) or (n,)
        Design matrix, one row per observation (participant); a 1-D array is one column.
    names : sequence of str, optional
        Column names, used in error messages.

    Returns
    -------
    X : ndarray, shape (n, p)
        The design as a C-contiguous float64 array.

    Raises
    ------
    InputError
        If ``X`` is not finite, has no residual degrees of freedom (``n <= p``), or is rank
        deficient; the message of the last names the columns that are linearly dependent.

    Examples
    --------
    >>> X = np.column_stack([np.ones(4), [1, 1, 0, 0], [0, 0, 1, 1]])
    >>> try:
    ...     check_design(X, names=["intercept", "patient", "control"])
    ... except InputError as error:
    ...     print(error.message.split(": ")[1])
    columns 'intercept', 'patient', 'control' are linearly dependent
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise InputError(f"the design matrix must be 2-D (n, p), got shape {X.shape}")
    n, p = X.shape
    labels = _column_names(p, names)
    if p == 0:
        raise InputError("the design matrix has no columns", fix="add at least one regressor")
    bad = ~np.all(np.isfinite(X), axis=0)
    if bad.any():
        cols = ", ".join(repr(labels[j]) for j in np.flatnonzero(bad))
        raise InputError(f"the design matrix has missing or infinite values in {cols}",
                         fix="remove or impute the participants with missing values")
    if n <= p:
        raise InputError(f"the design has {n} rows but {p} columns, leaving no residual "
                         "degrees of freedom", fix="use fewer regressors or more participants")
    norms = np.linalg.norm(X, axis=0)
    zero = norms == 0
    scaled = X / np.where(zero, 1.0, norms)
    _, singular, vt = np.linalg.svd(scaled, full_matrices=False)
    tol = singular.max() * max(n, p) * np.finfo(np.float64).eps * 10 if singular.size else 0.0
    rank = int(np.sum(singular > tol))
    if rank < p:
        null = vt[rank:]  # rows span the null space of the (scaled) design
        involved = zero | np.any(np.abs(null) > 1e-8, axis=0)
        cols = ", ".join(repr(labels[j]) for j in np.flatnonzero(involved))
        raise InputError(
            f"the design matrix is rank deficient (rank {rank} < {p} columns): columns {cols} "
            "are linearly dependent",
            fix="drop or recode one of these columns (e.g. keep the intercept and one group "
                "indicator)")
    return np.ascontiguousarray(X)


def fit_ols(X: np.ndarray, Y: np.ndarray, names: Sequence[str] | None = None) -> OLSResult:
    """Fit ``Y = X beta + error`` by ordinary least squares at every voxel.

    Parameters
    ----------
    X : array-like, shape (n, p)
        Design matrix (full column rank; see :func:`check_design`).
    Y : array-like, shape (n, v) or (n,)
        Data, one column per voxel; a 1-D array is one voxel.
    names : sequence of str, optional
        Column names of ``X`` for error messages.

    Returns
    -------
    OLSResult
        ``beta`` (p, v), ``residual_variance`` (v,), ``df`` and ``xtx_inv`` (p, p).

    Examples
    --------
    >>> X = np.column_stack([np.ones(6), np.arange(6.0)])
    >>> Y = (2.0 + 0.5 * np.arange(6.0))[:, None] + np.array([[0.1, -0.1, -0.1, 0.1, 0, 0]]).T
    >>> fit = fit_ols(X, Y)
    >>> fit.beta.ravel().round(3).tolist(), fit.df
    ([2.0, 0.5], 4)
    """
    X = check_design(X, names)
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.ndim != 2 or Y.shape[0] != X.shape[0]:
        raise InputError(f"the data have shape {Y.shape} but the design has {X.shape[0]} rows",
                         fix="pass Y with one row per row of the design")
    n, p = X.shape
    pinv = np.linalg.pinv(X)
    beta = pinv @ Y
    rss = np.empty(Y.shape[1])
    for start in range(0, Y.shape[1], _VOXEL_BLOCK):
        block = slice(start, start + _VOXEL_BLOCK)
        residuals = Y[:, block] - X @ beta[:, block]
        rss[block] = np.einsum("ij,ij->j", residuals, residuals)
    df = n - p
    return OLSResult(beta=beta, residual_variance=rss / df, df=df, xtx_inv=pinv @ pinv.T)


def _contrast_matrix(contrast: np.ndarray, p: int, what: str) -> np.ndarray:
    C = np.atleast_2d(np.asarray(contrast, dtype=np.float64))
    if C.ndim != 2 or C.shape[1] != p:
        raise InputError(f"the {what} contrast has shape {np.shape(contrast)} but the design "
                         f"has {p} columns", fix="give one weight per design column")
    if not np.all(np.isfinite(C)) or not np.any(C):
        raise InputError(f"the {what} contrast must be finite and not all zero")
    return C


def t_contrast(result: OLSResult, X: np.ndarray, contrast: np.ndarray) -> TContrastResult:
    """t statistic of the contrast ``c' beta`` at every voxel.

    Parameters
    ----------
    result : OLSResult
        Output of :func:`fit_ols`.
    X : array-like, shape (n, p)
        The design that ``result`` was fitted with (its ``(X'X)^-1`` gives the variance).
    contrast : array-like, shape (p,)
        Contrast weights ``c``.

    Returns
    -------
    TContrastResult
        ``t``, ``effect`` and ``standard_error`` of shape (v,), and ``df``.

    Examples
    --------
    >>> X = np.column_stack([np.ones(6), [0, 0, 0, 1, 1, 1]])
    >>> Y = np.array([[1.0], [2.0], [3.0], [3.0], [4.0], [5.0]])
    >>> res = t_contrast(fit_ols(X, Y), X, [0, 1])
    >>> round(float(res.effect[0]), 6), round(float(res.t[0]), 4), res.df
    (2.0, 2.4495, 4)
    """
    X = check_design(X)
    if X.shape[1] != result.beta.shape[0]:
        raise InputError(f"the design has {X.shape[1]} columns but the fit has "
                         f"{result.beta.shape[0]} parameters", fix="pass the design you fitted")
    c = _contrast_matrix(contrast, X.shape[1], "t")
    if c.shape[0] != 1:
        raise InputError("a t contrast must be a single vector",
                         fix="use f_contrast for a contrast matrix")
    c = c[0]
    pinv = np.linalg.pinv(X)
    variance_factor = float(c @ (pinv @ pinv.T) @ c)
    effect = c @ result.beta
    standard_error = np.sqrt(result.residual_variance * variance_factor)
    t = np.zeros_like(effect)
    np.divide(effect, standard_error, out=t, where=standard_error > 0)
    return TContrastResult(t=t, effect=effect, standard_error=standard_error, df=result.df)


def f_contrast(result: OLSResult, X: np.ndarray, contrast: np.ndarray) -> FContrastResult:
    """F statistic of the hypothesis ``C beta = 0`` at every voxel.

    Parameters
    ----------
    result : OLSResult
        Output of :func:`fit_ols`.
    X : array-like, shape (n, p)
        The design that ``result`` was fitted with.
    contrast : array-like, shape (q, p) or (p,)
        Contrast matrix ``C`` of full row rank; a vector gives ``F = t**2``.

    Returns
    -------
    FContrastResult
        ``F`` (v,), ``effect`` (q, v), ``df_num`` (q) and ``df_den``.

    Examples
    --------
    >>> X = np.column_stack([np.ones(6), [0, 0, 0, 1, 1, 1]])
    >>> Y = np.array([[1.0], [2.0], [3.0], [3.0], [4.0], [5.0]])
    >>> res = f_contrast(fit_ols(X, Y), X, [[0, 1]])
    >>> float(res.F[0].round(4)), res.df_num, res.df_den
    (6.0, 1, 4)
    """
    X = check_design(X)
    if X.shape[1] != result.beta.shape[0]:
        raise InputError(f"the design has {X.shape[1]} columns but the fit has "
                         f"{result.beta.shape[0]} parameters", fix="pass the design you fitted")
    C = _contrast_matrix(contrast, X.shape[1], "F")
    q = C.shape[0]
    if np.linalg.matrix_rank(C) < q:
        raise InputError(f"the F contrast's {q} rows are linearly dependent",
                         fix="remove redundant rows from the contrast matrix")
    pinv = np.linalg.pinv(X)
    middle = np.linalg.inv(C @ (pinv @ pinv.T) @ C.T)
    effect = C @ result.beta
    quadratic = np.einsum("iv,ij,jv->v", effect, middle, effect)
    F = np.zeros_like(quadratic)
    denominator = q * result.residual_variance
    np.divide(quadratic, denominator, out=F, where=denominator > 0)
    return FContrastResult(F=F, effect=effect, df_num=q, df_den=result.df)


def t_to_p(t: np.ndarray, df: float, alternative: str = "two-sided") -> np.ndarray:
    """Parametric p-values of t statistics.

    Parameters
    ----------
    t : array-like, shape (v,)
        t statistics.
    df : float
        Degrees of freedom.
    alternative : {"two-sided", "greater", "less"}
        ``"greater"`` tests ``effect > 0``, ``"less"`` tests ``effect < 0``.

    Returns
    -------
    p : ndarray, shape (v,)
        p-values, float64.

    Examples
    --------
    >>> t_to_p(np.array([0.0, 2.0]), 10).round(4).tolist()
    [1.0, 0.0734]
    >>> t_to_p(np.array([2.0]), 10, "greater").round(4).tolist()
    [0.0367]
    """
    t = np.asarray(t, dtype=np.float64)
    if alternative == "two-sided":
        return np.minimum(2.0 * special.stdtr(df, -np.abs(t)), 1.0)
    if alternative == "greater":
        return special.stdtr(df, -t)
    if alternative == "less":
        return special.stdtr(df, t)
    raise InputError(f"unknown alternative {alternative!r}",
                     fix="use 'two-sided', 'greater' or 'less'")


def f_to_p(F: np.ndarray, df_num: float, df_den: float) -> np.ndarray:
    """Parametric p-values (upper tail) of F statistics.

    Parameters
    ----------
    F : array-like, shape (v,)
        F statistics.
    df_num, df_den : float
        Numerator and denominator degrees of freedom.

    Returns
    -------
    p : ndarray, shape (v,)
        p-values, float64.

    Examples
    --------
    >>> f_to_p(np.array([4.0]), 1, 10).round(4).tolist()
    [0.0734]
    """
    F = np.asarray(F, dtype=np.float64)
    return special.fdtrc(df_num, df_den, np.maximum(F, 0.0))
