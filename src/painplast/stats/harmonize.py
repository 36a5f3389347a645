"""ComBat harmonization of site (scanner) effects, with biological covariates preserved.

ComBat (Johnson, Li & Rabinovic 2007, *Biostatistics* 8:118; for neuroimaging Fortin et al. 2017,
*NeuroImage* 161:149 and 2018, 167:104) models every feature ``v`` of participant ``j`` at site
``i`` as

    y_ijv = alpha_v + x_ij' beta_v + gamma_iv + delta_iv * eps_ijv,    eps ~ N(0, sigma_v**2)

with an additive (``gamma``) and a multiplicative (``delta``) site effect. The site effects are
shrunk towards a common prior across features (empirical Bayes, parametric priors: normal for
``gamma``, inverse gamma for ``delta``) and removed; the covariate effects ``x' beta`` (age, sex,
diagnosis, ...) are kept.

The arithmetic follows neuroHarmonize 2.4 (``harmonizationLearn`` / ``harmonizationApply`` with
``smooth_terms=[]`` and no reference site), which itself follows neuroCombat and R's
``sva::ComBat``, so that results agree with it to floating-point precision:

* the design is a one-hot site matrix (sites sorted) plus every covariate as a linear term, no
  separate intercept; categorical covariates must be coded numerically by the caller;
* the grand mean is the sample-size weighted mean of the site intercepts, the pooled variance
  the mean squared residual (divided by ``n``, not ``n - p``);
* the empirical Bayes iteration starts at the per-site least-squares estimates and stops when
  ``max((|new - old| / old))`` over features drops to 1e-4, as in sva/neuroCombat (the signed
  ratio included).

Differences from neuroHarmonize, on purpose: covariates stay float64 (neuroCombat casts them to
float32); a site with a single participant gets a location-only adjustment (its scale cannot be
estimated; neuroCombat returns NaN); a constant feature passes through unchanged; a non-finite value or a covariate that
is collinear with site raises :class:`~painplast.errors.InputError` instead of producing NaN; and applying a model to a site it has not seen raises instead of returning NaN
(neuroHarmonize would instead re-estimate that site from the held-out data, which is not a
fixed model).

Arrays in, arrays out; float64 throughout; no scikit-learn here (the pipeline step lives in
:mod:`painplast.biomarker.combat`).

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> site = np.repeat(["a", "b", "c"], 20)
>>> age = rng.uniform(20, 70, 60)
>>> Y = rng.normal(size=(60, 5)) + 0.05 * age[:, None] + (site == "b")[:, None] * 2.0
>>> model = fit_combat(Y, site, covariates=age)
>>> model.site_labels.tolist()
['a', 'b', 'c']
>>> Y_harmonized = apply_combat(model, Y, site, covariates=age)
>>> Y_harmonized.shape
(60, 5)
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from painplast.errors import InputError

__all__ = ["ComBatModel", "fit_combat", "apply_combat", "empirical_bayes_priors",
           "empirical_bayes_posterior"]

_CONVERGENCE = 1e-4  # sva / neuroCombat's stopping threshold for the EB iteration
_MAX_ITERATIONS = 10_000  # the reference has no bound; this one is never reached in practice


@dataclass(frozen=True, eq=False)
class ComBatModel:
    """A fitted ComBat harmonization model (all arrays read-only, float64 unless stated).

    Attributes
    ----------
    site_labels : ndarray, shape (n_sites,)
        Sorted site labels seen in training (numbers or strings).
    site_sizes : ndarray of int64, shape (n_sites,)
        Training participants per site.
    grand_mean : ndarray, shape (n_features,)
        Sample-size weighted mean of the site intercepts (``alpha`` in the model).
    pooled_variance : ndarray, shape (n_features,)
        Residual variance of the site + covariate model (``sigma**2``), divided by ``n``.
    covariate_betas : ndarray, shape (n_covariates, n_features)
        Effects of the covariates that harmonization preserves (``beta``).
    gamma_star : ndarray, shape (n_sites, n_features)
        Additive site effects, in units of the pooled standard deviation (EB posterior means,
        or the least-squares estimates when ``empirical_bayes`` is False).
    delta_star : ndarray, shape (n_sites, n_features)
        Multiplicative site effects on the variance (EB posterior, or per-site sample variance of
        the standardized data when ``empirical_bayes`` is False).
    empirical_bayes : bool
        Whether the site effects were shrunk by empirical Bayes.
    """

    site_labels: np.ndarray
    site_sizes: np.ndarray
    grand_mean: np.ndarray
    pooled_variance: np.ndarray
    covariate_betas: np.ndarray
    gamma_star: np.ndarray
    delta_star: np.ndarray
    empirical_bayes: bool

    def __post_init__(self) -> None:
        for name in ("site_labels", "site_sizes", "grand_mean", "pooled_variance",
                     "covariate_betas", "gamma_star", "delta_star"):
            array = np.array(getattr(self, name))  # a private copy
            array.setflags(write=False)
            object.__setattr__(self, name, array)
        object.__setattr__(self, "empirical_bayes", bool(self.empirical_bayes))

    @property
    def n_features(self) -> int:
        """Number of harmonized features."""
        return int(self.grand_mean.shape[0])

    @property
    def n_covariates(self) -> int:
        """Number of preserved covariates."""
        return int(self.covariate_betas.shape[0])


# --------------------------------------------------------------------------------------------
# validation at the boundary


def _check_data(Y, n_features: int | None = None) -> np.ndarray:
    """Return ``Y`` as a float64 (n_participants, n_features) array of finite values."""
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim != 2:
        raise InputError(f"data to harmonize must be 2-D (participants x features), got shape "
                         f"{Y.shape}", fix="pass one row per participant, one column per feature")
    if n_features is not None and Y.shape[1] != n_features:
        raise InputError(f"data has {Y.shape[1]} features but the ComBat model was fitted on "
                         f"{n_features}", fix="apply the model to the same features, in the same "
                         "order, as in training")
    if not np.all(np.isfinite(Y)):
        rows, cols = np.nonzero(~np.isfinite(Y))
        raise InputError(f"data to harmonize has {rows.size} missing or non-finite values "
                         f"(first at participant row {rows[0]}, feature column {cols[0]})",
                         fix="impute or drop those participants/features before harmonization")
    return Y


def _check_batch(batch, n: int) -> np.ndarray:
    """Return site labels as a 1-D array of length ``n`` (object labels become strings)."""
    batch = np.asarray(batch)
    if batch.ndim != 1 or batch.shape[0] != n:
        raise InputError(f"site labels must be 1-D with one label per participant ({n}), got "
                         f"shape {batch.shape}", fix="pass the site column of the participants "
                         "table, in the same order as the data rows")
    if batch.dtype == object:
        batch = batch.astype(str)
    return batch


def _check_covariates(covariates, n: int, n_covariates: int | None = None) -> np.ndarray:
    """Return covariates as a float64 (n, n_covariates) array (``None`` gives (n, 0))."""
    if covariates is None:
        covariates = np.zeros((n, 0))
    try:
        covariates = np.asarray(covariates, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"covariates must be numeric ({error})",
                         fix="code categorical covariates as numbers, e.g. sex as 0/1") from None
    if covariates.ndim == 1:
        covariates = covariates[:, None]
    if covariates.ndim != 2 or covariates.shape[0] != n:
        raise InputError(f"covariates must have one row per participant ({n}), got shape "
                         f"{covariates.shape}", fix="pass an (n_participants, n_covariates) array")
    if n_covariates is not None and covariates.shape[1] != n_covariates:
        raise InputError(f"{covariates.shape[1]} covariates given but the ComBat model was fitted "
                         f"with {n_covariates}", fix="pass the same covariates, in the same order, "
                         "as in training")
    if not np.all(np.isfinite(covariates)):
        raise InputError("covariates contain missing or non-finite values",
                         fix="impute or drop those participants before harmonization")
    return covariates


# --------------------------------------------------------------------------------------------
# the steps of ComBat


def _standardize(Y, site_index, covariates, grand_mean, pooled_variance, covariate_betas):
    """Standardized data ``(Y - alpha - X beta) / sigma``, shape (n, n_features)."""
    mean = grand_mean + covariates @ covariate_betas  # (n, n_features)
    return (Y - mean) / np.sqrt(pooled_variance)


def empirical_bayes_priors(gamma_hat: np.ndarray, delta_hat: np.ndarray):
    """Hyper-parameters of the normal (gamma) and inverse-gamma (delta) priors, per site.

    Parameters
    ----------
    gamma_hat, delta_hat : ndarray, shape (n_sites, n_features)

    Returns
    -------
    gamma_bar, t2, a_prior, b_prior : ndarray, shape (n_sites,)
    """
    gamma_bar = gamma_hat.mean(axis=1)
    t2 = gamma_hat.var(axis=1, ddof=1)
    m = delta_hat.mean(axis=1)
    s2 = delta_hat.var(axis=1, ddof=1)
    a_prior = (2 * s2 + m ** 2) / s2
    b_prior = (m * s2 + m ** 3) / s2
    return gamma_bar, t2, a_prior, b_prior


def empirical_bayes_posterior(s_site, gamma_hat, delta_hat, gamma_bar, t2, a, b):
    """Parametric EB posterior of one site's effects by fixed-point iteration.

    Parameters
    ----------
    s_site : ndarray, shape (n_site, n_features)
        Standardized data of the site's participants.
    gamma_hat, delta_hat : ndarray, shape (n_features,)
        Least-squares starting values.
    gamma_bar, t2, a, b : float
        Prior hyper-parameters.

    Returns
    -------
    gamma_star, delta_star : ndarray, shape (n_features,)
    """
    n = s_site.shape[0]
    g_old, d_old = gamma_hat, delta_hat
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(_MAX_ITERATIONS):
            g_new = (t2 * n * gamma_hat + d_old * gamma_bar) / (t2 * n + d_old)
            sum2 = ((s_site - g_new) ** 2).sum(axis=0)
            d_new = (0.5 * sum2 + b) / (n / 2.0 + a - 1.0)
            # sva's criterion, signed ratio included, so that results match the reference
            change = max((np.abs(g_new - g_old) / g_old).max(),
                         (np.abs(d_new - d_old) / d_old).max())
            g_old, d_old = g_new, d_new
            if not change > _CONVERGENCE:
                return g_new, d_new
    warnings.warn(f"ComBat's empirical Bayes iteration did not converge in {_MAX_ITERATIONS} "
                  "steps", RuntimeWarning, stacklevel=3)
    return g_new, d_new


# --------------------------------------------------------------------------------------------
# public API


def fit_combat(Y, batch, covariates=None, eb: bool = True) -> ComBatModel:
    """Fit a ComBat harmonization model.

    Parameters
    ----------
    Y : array_like, shape (n_participants, n_features)
        Data to harmonize (e.g. regional gray matter, connectivity edges, voxels).
    batch : array_like, shape (n_participants,)
        Site (scanner) label of every participant; at least two participants per site.
    covariates : array_like, shape (n_participants,) or (n_participants, n_covariates), optional
        Numeric biological covariates whose effects are preserved (age, sex coded 0/1,
        diagnosis ...). Each enters as a linear term.
    eb : bool, default True
        Shrink the site effects by empirical Bayes (parametric priors). With a single feature
        there is nothing to pool over and the least-squares estimates are used, as in
        neuroHarmonize.

    Returns
    -------
    ComBatModel
        The fitted parameters; harmonize with :func:`apply_combat`.

    Raises
    ------
    InputError
        On non-finite values or covariates collinear with site. (A site with one participant is
        adjusted for location only; a constant feature passes through unchanged.)

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> site = np.repeat([1, 2], 15)
    >>> Y = rng.normal(size=(30, 4)) * np.where(site == 2, 3.0, 1.0)[:, None]
    >>> model = fit_combat(Y, site, eb=False)
    >>> model.gamma_star.shape, model.empirical_bayes
    ((2, 4), False)
    """
    Y = _check_data(Y)
    n, n_features = Y.shape
    batch = _check_batch(batch, n)
    covariates = _check_covariates(covariates, n)
    labels, site_index, sizes = np.unique(batch, return_inverse=True, return_counts=True)
    n_sites = labels.shape[0]
    design = np.hstack([(site_index[:, None] == np.arange(n_sites)).astype(np.float64),
                        covariates])
    if np.linalg.matrix_rank(design) < design.shape[1]:
        raise InputError("covariates are collinear with site (or with each other), so their "
                         "effects cannot be told apart from site effects",
                         fix="drop covariates that are constant within every site or duplicate "
                         "another covariate")
    betas = np.linalg.solve(design.T @ design, design.T @ Y)  # (n_sites + n_covariates, n_feat)
    residual = Y - design @ betas
    pooled_variance = np.mean(residual ** 2, axis=0)
    del residual
    # zero up to rounding: a constant (or fully explained) feature cannot be standardized; it
    # passes through unchanged (no site effect to remove), as in a cross-validation fold where a
    # rarely non-zero feature happens to be constant
    tiny = (1e-10 * np.max(np.abs(Y), axis=0)) ** 2
    flat = pooled_variance <= tiny
    pooled_variance = np.where(flat, 1.0, pooled_variance)
    grand_mean = (sizes / n) @ betas[:n_sites]
    covariate_betas = betas[n_sites:]
    s_data = _standardize(Y, site_index, covariates, grand_mean, pooled_variance, covariate_betas)

    gamma_hat = np.empty((n_sites, n_features))
    delta_hat = np.empty((n_sites, n_features))
    for i in range(n_sites):
        s_site = s_data[site_index == i]
        gamma_hat[i] = s_site.mean(axis=0)
        # one participant: no variance to estimate, so that site gets a location-only adjustment
        delta_hat[i] = s_site.var(axis=0, ddof=1) if sizes[i] > 1 else 1.0
    gamma_hat[:, flat] = 0.0
    delta_hat[:, flat] = 1.0

    eb = bool(eb) and int((~flat).sum()) > 1
    if eb:
        with np.errstate(divide="ignore", invalid="ignore"):
            gamma_bar, t2, a_prior, b_prior = empirical_bayes_priors(gamma_hat[:, ~flat], delta_hat[:, ~flat])
        gamma_star = np.empty_like(gamma_hat)
        delta_star = np.empty_like(delta_hat)
        for i in range(n_sites):
            if sizes[i] == 1:  # normal posterior of the location with the scale fixed at 1
                gamma_star[i] = (t2[i] * gamma_hat[i] + gamma_bar[i]) / (t2[i] + 1.0)  # flat: reset below
                delta_star[i] = 1.0
                continue
            gamma_star[i, ~flat], delta_star[i, ~flat] = empirical_bayes_posterior(
                s_data[site_index == i][:, ~flat], gamma_hat[i, ~flat], delta_hat[i, ~flat],
                gamma_bar[i], t2[i], a_prior[i], b_prior[i])
        gamma_star[:, flat] = 0.0
        delta_star[:, flat] = 1.0
    else:
        gamma_star, delta_star = gamma_hat, delta_hat
    return ComBatModel(site_labels=labels, site_sizes=sizes.astype(np.int64),
                       grand_mean=grand_mean, pooled_variance=pooled_variance,
                       covariate_betas=covariate_betas, gamma_star=gamma_star,
                       delta_star=delta_star, empirical_bayes=eb)


def apply_combat(model: ComBatModel, Y, batch, covariates=None) -> np.ndarray:
    """Harmonize data with a fitted ComBat model (training or held-out participants).

    Parameters
    ----------
    model : ComBatModel
        From :func:`fit_combat`.
    Y : array_like, shape (n_participants, n_features)
        Data with the features, in the order, used in training.
    batch : array_like, shape (n_participants,)
        Site labels; every site must have been seen in training.
    covariates : array_like, shape (n_participants,) or (n_participants, n_covariates), optional
        The training covariates, in the same order.

    Returns
    -------
    ndarray, shape (n_participants, n_features)
        Harmonized data: site effects removed, covariate effects kept.

    Raises
    ------
    InputError
        If a site was not seen in training, or shapes do not match the model.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(2)
    >>> site = np.tile(["x", "y"], 20)
    >>> Y = rng.normal(size=(40, 3)) + (site == "y")[:, None] * 5.0
    >>> model = fit_combat(Y[:30], site[:30])
    >>> harmonized = apply_combat(model, Y[30:], site[30:])
    >>> bool(abs(harmonized[site[30:] == "y"].mean() - harmonized[site[30:] == "x"].mean()) < 2)
    True
    >>> apply_combat(model, Y[:2], ["z", "x"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    painplast.errors.InputError: site 'z' was not seen when the ComBat model was fitted ...
    """
    Y = _check_data(Y, model.n_features)
    n = Y.shape[0]
    batch = _check_batch(batch, n)
    covariates = _check_covariates(covariates, n, model.n_covariates)
    known = np.isin(batch, model.site_labels)
    if not np.all(known):
        unseen = list(dict.fromkeys(batch[~known].tolist()))
        names = ", ".join(repr(s) for s in unseen)
        raise InputError(f"site{'s' if len(unseen) > 1 else ''} {names} "
                         f"{'were' if len(unseen) > 1 else 'was'} not seen when the ComBat model "
                         f"was fitted (training sites: "
                         f"{', '.join(repr(s) for s in model.site_labels.tolist())})",
                         fix="fit the harmonization on data that includes this site (or leave "
                         "its participants out); ComBat cannot remove a site effect it has not "
                         "estimated")
    site_index = np.searchsorted(model.site_labels, batch)
    s_data = _standardize(Y, site_index, covariates, model.grand_mean, model.pooled_variance,
                          model.covariate_betas)
    adjusted = (s_data - model.gamma_star[site_index]) / np.sqrt(model.delta_star[site_index])
    return (adjusted * np.sqrt(model.pooled_variance) + model.grand_mean
            + covariates @ model.covariate_betas)
