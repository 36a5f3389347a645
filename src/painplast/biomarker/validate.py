"""Validation of a biomarker: repeated nested cross-validation, leave-one-site-out, permutations.

Everything a model learns (ComBat, confound regression, scaling, PCA, the penalty chosen by the
inner cross-validation, the weights) is fitted inside each training fold only:
:class:`painplast.biomarker.model.BiomarkerModel` fits its own inner cross-validation, so
cross-validating it here is a nested cross-validation.

* :func:`cross_validate`: repeated stratified K-fold (strata: class, or quartile of a continuous
  target, crossed with site); out-of-fold scores per repeat.
* :func:`leave_site_out`: train on all sites but one, test on the held-out site (its site effects
  are estimated label-free from its own features, see :func:`painplast.biomarker.model.adapt_to_new_sites`).
* :func:`permutation_test`: the whole pipeline refitted on target labels permuted within site.
* :func:`metrics`: estimates (mean over repeats) with stratified bootstrap 95% intervals. Classes:
  AUC, balanced accuracy, sensitivity, specificity, PPV, NPV, Brier score, calibration curve;
  continuous: Pearson r, R² (out of sample: 1 - SSE/SST), MAE; paired designs: forced-choice
  accuracy (:func:`forced_choice`).
* :func:`learning_curve`: the cross-validated metric as a function of training-set size.
* :func:`validate` runs them all and returns the ``group/biomarker_<target>.json`` content;
  :func:`write_result` writes it atomically.

Examples
--------
>>> import numpy as np, pandas as pd
>>> from painplast.biomarker.model import BiomarkerModel
>>> rng = np.random.default_rng(0)
>>> X = pd.DataFrame(rng.normal(size=(60, 4)), columns=[f"m.f{i}" for i in range(4)])
>>> X["site"] = np.tile(["a", "b"], 30); X["age"] = rng.uniform(20, 60, 60)
>>> y = np.where(X["m.f0"] + 0.5 * rng.normal(size=60) > 0, "patient", "control")
>>> cv = cross_validate(BiomarkerModel(inner_folds=3), X, y, folds=3, repeats=1)
>>> round(metrics(y, cv, n_bootstrap=200)["auc"]["estimate"], 2) > 0.8
True
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from scipy.stats import rankdata
from sklearn.base import clone

from painplast.biomarker.model import BiomarkerModel, Target, strata, stratified_folds
from painplast.errors import InputError
from painplast.stats.permutation import draw_permutations

__all__ = ["CrossValidation", "cross_validate", "leave_site_out", "permutation_test",
           "metrics", "forced_choice", "learning_curve", "calibration_curve", "validate",
           "write_result", "write_predictions"]


class CrossValidation:
    """Out-of-fold predictions of a repeated cross-validation.

    Attributes
    ----------
    kind : {"binary", "multiclass", "continuous"}
    scores : ndarray, shape (n_repeats, n_participants)
        Probability of the positive class (logistic), decision value (SVM) or prediction
        (continuous); NaN for a participant not tested (never happens in K-fold).
    predicted : ndarray, shape (n_repeats, n_participants)
        Predicted labels (classes) or values.
    threshold : float
        Score at which a participant is called positive (0.5 for probabilities, 0 for decision
        values).
    classes : list of str
    probabilistic : bool
        Whether ``scores`` are probabilities.
    penalties : list of float
        Penalty chosen in each outer fold (over all repeats).
    folds : ndarray of int, shape (n_repeats, n_participants), optional
        Outer fold of each participant in each repeat (for the corrected intervals of
        :func:`metrics`).
    """

    def __init__(self, kind, scores, predicted, threshold, classes, probabilistic, penalties,
                 folds=None):
        self.kind, self.scores, self.predicted = kind, scores, predicted
        self.threshold, self.classes = threshold, list(classes)
        self.probabilistic, self.penalties = probabilistic, list(penalties)
        self.folds = folds

    @property
    def mean_score(self) -> np.ndarray:
        """Score averaged over repeats, shape (n_participants,)."""
        return np.nanmean(self.scores, axis=0)


# --------------------------------------------------------------------------------------------
# cross-validation


def _fit_predict(model, X, y, train, test):
    """Fit a clone on ``train``, return (test indices, scores, predictions, penalty, proba flag)."""
    fitted = clone(model).fit(X.iloc[train], y[train])
    Xte = X.iloc[test]
    predicted = fitted.predict(Xte)
    kind = fitted.kind_
    probabilistic = False
    if kind == "continuous":
        score = np.asarray(predicted, float)
    elif kind == "binary":
        if hasattr(fitted.pipeline_.steps[-1][1], "predict_proba"):
            score, probabilistic = fitted.predict_proba(Xte)[:, 1], True
        else:
            score = fitted.decision_function(Xte)
    else:
        score = np.full(len(test), np.nan)
    return test, score, np.asarray(predicted), fitted.penalty_, probabilistic


def _site(X, model):
    site = getattr(model, "site", "site")
    return X[site].astype(str).to_numpy() if site in X.columns else None


def _kind(model, y) -> str:
    return BiomarkerModel(kind=getattr(model, "kind", "auto"))._resolve_kind(y)


def cross_validate(model: BiomarkerModel, X: pd.DataFrame, y, folds: int = 5, repeats: int = 5,
                   random_state: int = 0, n_jobs: int = 1) -> CrossValidation:
    """Repeated stratified K-fold cross-validation (nested: the model tunes itself inside).

    Parameters
    ----------
    model : BiomarkerModel
        Unfitted; cloned for every fold.
    X : DataFrame, shape (n_participants, n_columns)
        Design table (features, site, confounds).
    y : array_like, shape (n_participants,)
    folds : int
        Outer folds.
    repeats : int
        Repetitions with different fold assignments.
    random_state : int
    n_jobs : int
        Folds fitted in parallel (joblib).

    Returns
    -------
    CrossValidation
    """
    y = np.asarray(y)
    kind = _kind(model, y)
    if kind != "continuous":
        y = y.astype(str)
    site = _site(X, model)
    jobs = []
    for r in range(repeats):
        for train, test in stratified_folds(folds, y, site, random_state + 1000 * r):
            jobs.append((r, train, test))
    outputs = Parallel(n_jobs=n_jobs)(delayed(_fit_predict)(model, X, y, train, test)
                                      for _, train, test in jobs)
    n = len(y)
    scores = np.full((repeats, n), np.nan)
    predicted = np.empty((repeats, n), dtype=object if kind != "continuous" else float)
    penalties, probabilistic = [], False
    fold_of = np.full((repeats, n), -1)
    for k, ((r, _, _), (test, score, pred, penalty, proba)) in enumerate(zip(jobs, outputs)):
        scores[r, test] = score
        predicted[r, test] = pred
        fold_of[r, test] = k
        penalties.append(penalty)
        probabilistic = probabilistic or proba
    classes = sorted(np.unique(y)) if kind != "continuous" else []
    threshold = 0.5 if probabilistic else 0.0
    return CrossValidation(kind, scores, predicted, threshold, classes, probabilistic, penalties,
                           folds=fold_of)


def leave_site_out(model: BiomarkerModel, X: pd.DataFrame, y, n_bootstrap: int = 1000,
                   random_state: int = 0, n_jobs: int = 1) -> list[dict]:
    """Train on all sites but one, test on the held-out site; one row per site.

    Parameters
    ----------
    model : BiomarkerModel
    X : DataFrame
        Design table with the site column.
    y : array_like, shape (n_participants,)
    n_bootstrap : int
        Resamples for the per-site intervals.
    random_state : int
    n_jobs : int

    Returns
    -------
    list of dict
        ``site``, ``n``, ``n_train`` and the metrics (each ``{estimate, ci_low, ci_high}``) on
        that site; an empty list with fewer than two sites.
    """
    y = np.asarray(y)
    kind = _kind(model, y)
    if kind != "continuous":
        y = y.astype(str)
    site = _site(X, model)
    if site is None or len(np.unique(site)) < 2:
        return []
    sites = sorted(np.unique(site))
    jobs = [(s, np.flatnonzero(site != s), np.flatnonzero(site == s)) for s in sites]
    outputs = Parallel(n_jobs=n_jobs)(delayed(_fit_predict)(model, X, y, train, test)
                                      for _, train, test in jobs)
    rows = []
    for (s, train, test), (_, score, pred, penalty, proba) in zip(jobs, outputs):
        cv = CrossValidation(kind, score[None], pred[None], 0.5 if proba else 0.0,
                             sorted(np.unique(y)) if kind != "continuous" else [], proba,
                             [penalty])
        row = {"site": str(s), "n": int(len(test)), "n_train": int(len(train))}
        yt = y[test]
        if kind != "continuous" and len(np.unique(yt)) < 2:
            row["note"] = "one class only at this site: AUC undefined"
        row.update(metrics(yt, cv, n_bootstrap=n_bootstrap, random_state=random_state,
                           calibration=False))
        rows.append(row)
    return rows


def _statistic(kind: str, y, cv: CrossValidation) -> float:
    """The permutation statistic of the first repeat: AUC (the mean of the outer folds' AUCs
    when ``cv.folds`` is known, see :func:`metrics`), balanced accuracy or r."""
    if kind == "binary":
        positive = np.asarray(y) == cv.classes[-1]
        if cv.folds is not None:
            return float(np.nanmean(_fold_aucs(cv.scores[:1], positive, cv.folds[:1])))
        return float(_auc(cv.scores[0][None], positive[None])[0])
    if kind == "multiclass":
        return float(_balanced_accuracy(np.asarray(y), cv.predicted[0]))
    return float(np.corrcoef(cv.scores[0], np.asarray(y, float))[0, 1])


def permutation_test(model: BiomarkerModel, X: pd.DataFrame, y, observed: float | None = None,
                     n_permutations: int = 100, folds: int = 5, random_state: int = 0,
                     n_jobs: int = 1) -> dict:
    """Permutation test of the whole pipeline (labels permuted within site, everything refitted).

    Parameters
    ----------
    model : BiomarkerModel
    X : DataFrame
    y : array_like, shape (n_participants,)
    observed : float, optional
        The statistic on the true labels with the same folds (first repeat of
        :func:`cross_validate` with the same ``random_state``); computed if not given.
    n_permutations : int
    folds : int
    random_state : int
    n_jobs : int

    Returns
    -------
    dict
        ``statistic`` (name), ``observed``, ``p`` ((1 + #null >= observed) / (1 + n)),
        ``null_mean``, ``null_sd``, ``n_permutations``.
    """
    y = np.asarray(y)
    kind = _kind(model, y)
    if kind != "continuous":
        y = y.astype(str)
    site = _site(X, model)
    if observed is None:
        observed = _statistic(kind, y, cross_validate(model, X, y, folds, 1, random_state))
    rows, _ = draw_permutations(len(y), n_permutations, blocks=site,
                                random_state=[random_state, 31337])
    permuted = [y[order] for order in rows]
    jobs = [(p, train, test) for p, yp in enumerate(permuted)
            for train, test in stratified_folds(folds, yp, site, random_state)]
    outputs = Parallel(n_jobs=n_jobs)(delayed(_fit_predict)(model, X, permuted[p], train, test)
                                      for p, train, test in jobs)
    n = len(y)
    scores = np.full((n_permutations, n), np.nan)
    predicted = np.empty((n_permutations, n), dtype=object if kind != "continuous" else float)
    fold_of = np.full((n_permutations, n), -1)
    for k, ((p, _, test), (_, score, pred, _, _)) in enumerate(zip(jobs, outputs)):
        scores[p, test] = score
        predicted[p, test] = pred
        fold_of[p, test] = k
    classes = sorted(np.unique(y)) if kind != "continuous" else []
    null = np.array([_statistic(kind, permuted[p], CrossValidation(
        kind, scores[p][None], predicted[p][None], 0.5, classes, True, [],
        folds=fold_of[p][None])) for p in range(n_permutations)])
    null = np.where(np.isfinite(null), null, -np.inf)
    name = {"binary": "auc", "multiclass": "balanced_accuracy", "continuous": "r"}[kind]
    return {"statistic": name, "observed": float(observed),
            "p": float((1 + np.sum(null >= observed - 1e-12)) / (1 + n_permutations)),
            "null_mean": float(np.mean(null[np.isfinite(null)])) if np.isfinite(null).any()
            else float("nan"),
            "null_sd": float(np.std(null[np.isfinite(null)])) if np.isfinite(null).any()
            else float("nan"),
            "n_permutations": int(n_permutations)}


# --------------------------------------------------------------------------------------------
# metrics (vectorized over bootstrap resamples)


def _auc(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Row-wise AUC (Mann-Whitney with tied ranks), shapes (B, n) -> (B,)."""
    ranks = rankdata(scores, axis=1)
    n1 = positive.sum(axis=1)
    n0 = positive.shape[1] - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * positive).sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def _outer_folds(folds: np.ndarray):
    """Yield ``(repeat, test_mask)`` for every outer fold of every repeat, in order.

    ``folds`` has shape (n_repeats, n): each participant's outer fold (-1: not tested)."""
    for r in range(folds.shape[0]):
        for k in np.unique(folds[r][folds[r] >= 0]):
            yield r, folds[r] == k


def _fold_aucs(scores: np.ndarray, positive: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """AUC of every outer fold (each fold's model on its own test participants).

    Parameters
    ----------
    scores, folds : ndarray, shape (n_repeats, n)
        Out-of-fold scores and the outer fold of each participant (-1: not tested).
    positive : ndarray of bool, shape (n,)

    Returns
    -------
    ndarray, shape (n_folds_over_all_repeats,)
        NaN for a fold with one class only.
    """
    return np.asarray([_auc(scores[r, test][None], positive[test][None])[0]
                       for r, test in _outer_folds(folds)], float)


def _pairs(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Mann-Whitney kernel, shape (n_positive, n_negative): 1 where the positive participant
    scores higher, 0.5 for a tie, 0 otherwise (its mean is the AUC)."""
    x, y = scores[positive], scores[~positive]
    return (x[:, None] > y[None]) + 0.5 * (x[:, None] == y[None])


def _delong_variance(scores: np.ndarray, positive: np.ndarray) -> float:
    """DeLong et al. (1988) variance of one AUC estimate over its test participants.

    Parameters
    ----------
    scores : ndarray, shape (n,)
    positive : ndarray of bool, shape (n,)

    Returns
    -------
    float
        NaN with fewer than two participants of either class.
    """
    h = _pairs(scores, positive)
    if min(h.shape) < 2:
        return float("nan")
    return float(h.mean(1).var(ddof=1) / h.shape[0] + h.mean(0).var(ddof=1) / h.shape[1])


def _fold_auc_bootstrap(scores: np.ndarray, positive: np.ndarray, folds: np.ndarray,
                        idx: np.ndarray) -> np.ndarray:
    """Mean of the folds' AUCs in each bootstrap resample of participants.

    A resample draws participant i ``w_i`` times; a fold's AUC in it is the Mann-Whitney
    statistic with those multiplicities, ``w_pos @ H @ w_neg / (sum w_pos * sum w_neg)``, where
    ``H`` holds 1 (0.5 for ties) when a positive test participant outscores a negative one.

    Parameters
    ----------
    scores, folds : ndarray, shape (n_repeats, n)
    positive : ndarray of bool, shape (n,)
    idx : ndarray of int, shape (n_bootstrap, n)
        Resampled participant indices (:func:`_bootstrap_indices`).

    Returns
    -------
    ndarray, shape (n_bootstrap,)
    """
    n_boot, n = idx.shape
    weights = np.zeros((n_boot, n))
    np.add.at(weights, (np.repeat(np.arange(n_boot), idx.shape[1]), idx.ravel()), 1.0)
    total, count = np.zeros(n_boot), np.zeros(n_boot)
    for r, test in _outer_folds(folds):
        p = positive[test]
        h = _pairs(scores[r, test], p)
        wp, wn = weights[:, test][:, p], weights[:, test][:, ~p]
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = np.einsum("bi,ij,bj->b", wp, h, wn) / (wp.sum(1) * wn.sum(1))
        ok = np.isfinite(auc)
        total[ok] += auc[ok]
        count[ok] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


def _balanced_accuracy(y, predicted) -> float:
    y, predicted = np.asarray(y).astype(str), np.asarray(predicted).astype(str)
    return float(np.mean([np.mean(predicted[y == c] == c) for c in np.unique(y)]))


def _binary_metrics(positive: np.ndarray, scores: np.ndarray, threshold: float,
                    probabilistic: bool) -> dict[str, np.ndarray]:
    """Metrics per row (rows: repeat x resample), shapes (B, n) -> {name: (B,)}."""
    called = scores >= threshold
    tp = (called & positive).sum(axis=1)
    fn = (~called & positive).sum(axis=1)
    tn = (~called & ~positive).sum(axis=1)
    fp = (called & ~positive).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {"auc": _auc(scores, positive),
               "sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp),
               "ppv": tp / (tp + fp), "npv": tn / (tn + fn)}
        out["balanced_accuracy"] = (out["sensitivity"] + out["specificity"]) / 2
        if probabilistic:
            out["brier"] = np.mean((scores - positive) ** 2, axis=1)
    return out


def _continuous_metrics(y: np.ndarray, predicted: np.ndarray) -> dict[str, np.ndarray]:
    yc = y - y.mean(axis=1, keepdims=True)
    pc = predicted - predicted.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (yc * pc).sum(axis=1) / np.sqrt((yc ** 2).sum(axis=1) * (pc ** 2).sum(axis=1))
        r2 = 1 - ((y - predicted) ** 2).sum(axis=1) / (yc ** 2).sum(axis=1)
    return {"r": r, "r2": r2, "mae": np.abs(y - predicted).mean(axis=1)}


def _bootstrap_indices(y, kind, n_bootstrap, rng) -> np.ndarray:
    """Resampled participant indices, shape (n_bootstrap, n); stratified by class."""
    n = len(y)
    if kind == "continuous":
        return rng.integers(0, n, (n_bootstrap, n))
    parts = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        parts.append(idx[rng.integers(0, len(idx), (n_bootstrap, len(idx)))])
    return np.concatenate(parts, axis=1)


def _summarize(point: dict[str, np.ndarray], boot: dict[str, np.ndarray]) -> dict:
    out = {}
    for name, values in point.items():
        b = boot[name]
        b = b[np.isfinite(b)]
        estimate = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        if b.size:
            low, high = np.percentile(b, [2.5, 97.5])
        else:
            low = high = float("nan")
        out[name] = {"estimate": estimate, "ci_low": float(low), "ci_high": float(high)}
    return out


#: Range of each metric (intervals are clipped to it).
_BOUNDS = {"auc": (0, 1), "sensitivity": (0, 1), "specificity": (0, 1), "ppv": (0, 1),
           "npv": (0, 1), "balanced_accuracy": (0, 1), "brier": (0, 1), "r": (-1, 1),
           "r2": (-np.inf, 1), "mae": (0, np.inf)}


def _widen_by_fold_variance(out: dict, per_fold: dict[str, np.ndarray], ratio: float,
                            floor: dict[str, float] | None = None) -> dict:
    """Widen each interval to cover the Nadeau-Bengio corrected repeated-CV interval.

    A bootstrap of out-of-fold predictions sees the test participants' sampling only, not the
    variability of models trained on different samples, and its intervals are too narrow for a
    cross-validated estimate (under --null they miss chance too often). The corrected variance of a mean over J fold estimates, (1/J + n_test/n_train)
    times their variance (Nadeau & Bengio 2003; scikit-learn's model-comparison example),
    accounts for it; the reported interval is the union of both.

    ``floor`` gives, per metric, a lower bound of one fold estimate's variance (for the AUC, the
    mean DeLong variance of the folds, :func:`_delong_variance`). The folds' sample variance
    estimates that variance times (1 - rho), rho the correlation between folds that the
    correction takes as n_test/n; when the folds are more correlated it falls below what one
    fold's test participants alone imply, and the bound is used instead.
    """
    from scipy import stats

    floor = floor or {}
    for name, values in per_fold.items():
        values = values[np.isfinite(values)]
        if name not in out or len(values) < 3:
            continue
        variance = max(np.var(values, ddof=1), floor.get(name, 0.0) / (1 + ratio))
        se = np.sqrt((1 / len(values) + ratio) * variance)
        half = stats.t.ppf(0.975, len(values) - 1) * se
        low, high = _BOUNDS.get(name, (-np.inf, np.inf))
        row = out[name]
        if np.isfinite(row["estimate"]):
            row["ci_low"] = float(max(low, min(row["ci_low"], row["estimate"] - half)))
            row["ci_high"] = float(min(high, max(row["ci_high"], row["estimate"] + half)))
    return out


def _per_fold(cv: CrossValidation, compute) -> tuple[dict[str, np.ndarray], float]:
    """``compute(test_indices, repeat)`` -> {metric: value} for every outer fold; and the mean
    ratio of test to training participants."""
    values, ratios = {}, []
    for r, mask in _outer_folds(cv.folds):
        test = np.flatnonzero(mask)
        ratios.append(len(test) / max(cv.folds.shape[1] - len(test), 1))
        for name, value in compute(test, r).items():
            values.setdefault(name, []).append(float(np.asarray(value).ravel()[0]))
    return {k: np.asarray(v, float) for k, v in values.items()}, float(np.mean(ratios))


def metrics(y, cv: CrossValidation, n_bootstrap: int = 2000, random_state: int = 0,
            calibration: bool = True) -> dict:
    """Performance with 95% intervals that account for the cross-validation.

    The estimate is the mean over repeats of each repeat's metric; every bootstrap resample of
    participants is scored in every repeat and averaged the same way (stratified percentile
    bootstrap). When the outer folds are known (``cv.folds``), each interval is widened to the
    Nadeau-Bengio corrected interval of the fold-wise metrics, which also counts the
    variability of the models trained in different folds (:func:`_widen_by_fold_variance`).

    The AUC, when the folds are known, is the mean of the outer folds' AUCs (as scikit-learn's
    ``cross_val_score`` and nilearn's ``Decoder`` report it): each fold's model ranks its own
    test participants, which is what a model does in use. Ranking the out-of-fold scores of
    all folds together (``auc_pooled``, also returned) puts scores of different models on one
    scale and lowers the AUC (Airola et al. 2011, Comput Stat Data Anal 55:1828; Forman &
    Scholz 2010). Its interval is the union of a bootstrap of the fold mean (participants
    resampled, :func:`_fold_auc_bootstrap`) and the Nadeau-Bengio interval, whose fold variance
    is kept at or above the folds' mean DeLong variance (:func:`_widen_by_fold_variance`): the
    folds' sample variance understates it when the folds agree more than the correction
    assumes. Its coverage, under ``--null`` and with an effect, is in benchmarks/RESULTS.md.

    Parameters
    ----------
    y : array_like, shape (n_participants,)
    cv : CrossValidation
    n_bootstrap : int
    random_state : int
    calibration : bool
        Add the calibration curve (probabilistic binary models).

    Returns
    -------
    dict
        Each metric as ``{"estimate", "ci_low", "ci_high"}``: ``auc``, ``balanced_accuracy``,
        ``sensitivity``, ``specificity``, ``ppv``, ``npv``, ``brier`` (binary; multiclass:
        ``balanced_accuracy``, ``accuracy``), or ``r``, ``r2``, ``mae``; plus ``auc_pooled``
        (binary, folds known) and ``calibration`` (list of bins) for a probabilistic binary
        model.
    """
    y = np.asarray(y)
    rng = np.random.default_rng([random_state, 2718])
    repeats, n = cv.scores.shape
    if cv.kind == "binary":
        positive = y.astype(str) == cv.classes[-1]
        point = _binary_metrics(np.broadcast_to(positive, (repeats, n)), cv.scores,
                                cv.threshold, cv.probabilistic)
        idx = _bootstrap_indices(positive, "binary", n_bootstrap, rng)
        acc = {}
        for r in range(repeats):
            for name, value in _binary_metrics(positive[idx], cv.scores[r][idx], cv.threshold,
                                               cv.probabilistic).items():
                acc[name] = acc.get(name, 0) + value / repeats
        out = _summarize(point, acc)
        if cv.folds is not None:
            per_fold, ratio = _per_fold(cv, lambda t, r: _binary_metrics(
                positive[t][None], cv.scores[r, t][None], cv.threshold, cv.probabilistic))
            out = _widen_by_fold_variance(out, per_fold, ratio)
            # AUC: the mean of the folds' AUCs; the pooled one is kept for comparison
            out["auc_pooled"] = out.pop("auc")
            fold_auc = per_fold["auc"]  # = _fold_aucs(cv.scores, positive, cv.folds)
            boot = _fold_auc_bootstrap(cv.scores, positive, cv.folds, idx)
            delong = [_delong_variance(cv.scores[r, test], positive[test])
                      for r, test in _outer_folds(cv.folds)]
            floor = {"auc": float(np.nanmean(delong))} if np.isfinite(delong).any() else {}
            auc = _widen_by_fold_variance(_summarize({"auc": fold_auc}, {"auc": boot}),
                                          {"auc": fold_auc}, ratio, floor)
            out = {"auc": auc["auc"], **out}
        if calibration and cv.probabilistic:
            out["calibration"] = calibration_curve(positive, cv.mean_score)
        return out
    if cv.kind == "continuous":
        yf = y.astype(float)
        point = _continuous_metrics(np.broadcast_to(yf, (repeats, n)), cv.scores)
        idx = _bootstrap_indices(yf, "continuous", n_bootstrap, rng)
        acc = {}
        for r in range(repeats):
            for name, value in _continuous_metrics(yf[idx], cv.scores[r][idx]).items():
                acc[name] = acc.get(name, 0) + value / repeats
        out = _summarize(point, acc)
        if cv.folds is not None:
            out = _widen_by_fold_variance(out, *_per_fold(cv, lambda t, r: _continuous_metrics(
                yf[t][None], cv.scores[r, t][None])))
        return out
    y = y.astype(str)
    pred = cv.predicted.astype(str)
    point = {"balanced_accuracy": np.array([_balanced_accuracy(y, p) for p in pred]),
             "accuracy": np.mean(pred == y, axis=1)}
    idx = _bootstrap_indices(y, "multiclass", min(n_bootstrap, 1000), rng)
    acc = {"balanced_accuracy": np.zeros(len(idx)), "accuracy": np.zeros(len(idx))}
    classes = np.unique(y)
    for r in range(repeats):
        yb, pb = y[idx], pred[r][idx]
        recall = np.stack([((pb == c) & (yb == c)).sum(1) / (yb == c).sum(1) for c in classes])
        acc["balanced_accuracy"] += recall.mean(axis=0) / repeats
        acc["accuracy"] += (pb == yb).mean(axis=1) / repeats
    return _summarize(point, acc)


def calibration_curve(positive, probability, n_bins: int = 5) -> list[dict]:
    """Observed fraction of positives per quantile bin of predicted probability.

    Parameters
    ----------
    positive : array_like of bool, shape (n,)
    probability : array_like, shape (n,)
    n_bins : int

    Returns
    -------
    list of dict
        ``{"predicted", "observed", "n"}`` per bin, in increasing order of predicted.
    """
    positive = np.asarray(positive, bool)
    probability = np.asarray(probability, float)
    order = np.argsort(probability, kind="stable")
    rows = []
    for chunk in np.array_split(order, min(n_bins, len(order))):
        if len(chunk):
            rows.append({"predicted": float(probability[chunk].mean()),
                         "observed": float(positive[chunk].mean()), "n": int(len(chunk))})
    return rows


def forced_choice(cv: CrossValidation, y, pairs, n_bootstrap: int = 2000,
                  random_state: int = 0) -> dict:
    """Forced-choice accuracy of a paired design: is the positive member's score the higher?

    Parameters
    ----------
    cv : CrossValidation
        Binary, out-of-fold scores (pairs should be kept in the same fold: give the pair ID as
        the grouping when designing the folds).
    y : array_like, shape (n,)
    pairs : array_like, shape (n,)
        Pair identifier per row (e.g. the participant of a within-participant contrast); pairs
        without exactly one positive and one negative member are ignored.
    n_bootstrap : int
    random_state : int

    Returns
    -------
    dict
        ``{"estimate", "ci_low", "ci_high", "n_pairs"}`` (ties count one half).
    """
    y = np.asarray(y).astype(str)
    positive = y == cv.classes[-1]
    pairs = np.asarray(pairs).astype(str)
    pos, neg = [], []
    for pair in np.unique(pairs):
        idx = np.flatnonzero(pairs == pair)
        if len(idx) == 2 and positive[idx].sum() == 1:
            pos.append(idx[positive[idx]][0])
            neg.append(idx[~positive[idx]][0])
    if not pos:
        raise InputError("no complete pairs (one positive, one negative member) were found",
                         fix="give a pair identifier shared by the two members of each pair")
    pos, neg = np.array(pos), np.array(neg)
    diff = cv.scores[:, pos] - cv.scores[:, neg]  # (repeats, n_pairs)
    correct = (diff > 0) + 0.5 * (diff == 0)
    rng = np.random.default_rng([random_state, 161])
    idx = rng.integers(0, len(pos), (n_bootstrap, len(pos)))
    boot = correct.mean(axis=0)[idx].mean(axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return {"estimate": float(correct.mean()), "ci_low": float(low), "ci_high": float(high),
            "n_pairs": int(len(pos))}


def learning_curve(model: BiomarkerModel, X: pd.DataFrame, y,
                   fractions: Sequence[float] = (0.4, 0.6, 0.8, 1.0), folds: int = 5,
                   random_state: int = 0, n_jobs: int = 1) -> list[dict]:
    """Cross-validated performance when training on a fraction of each training fold.

    Parameters
    ----------
    model : BiomarkerModel
    X : DataFrame
    y : array_like, shape (n_participants,)
    fractions : sequence of float
        Shares of each training fold used (stratified subsample).
    folds : int
    random_state : int
    n_jobs : int

    Returns
    -------
    list of dict
        ``{"fraction", "n_train", "metric", "estimate"}`` per fraction (AUC, balanced accuracy
        or r; the AUC as the mean of the folds' AUCs, like :func:`metrics`).
    """
    y = np.asarray(y)
    kind = _kind(model, y)
    if kind != "continuous":
        y = y.astype(str)
    site = _site(X, model)
    rng = np.random.default_rng([random_state, 77])
    outer = stratified_folds(folds, y, site, random_state)
    jobs = []
    for fraction in fractions:
        for train, test in outer:
            if fraction < 1:
                labels = strata(y[train], None if site is None else site[train])
                keep = []
                for label in np.unique(labels):
                    members = np.flatnonzero(labels == label)
                    count = max(1, int(round(fraction * len(members))))
                    keep.append(rng.permutation(members)[:count])
                train = np.sort(train[np.concatenate(keep)])
            jobs.append((fraction, train, test))
    outputs = Parallel(n_jobs=n_jobs)(delayed(_safe_fit_predict)(model, X, y, train, test)
                                      for _, train, test in jobs)
    rows = []
    classes = sorted(np.unique(y)) if kind != "continuous" else []
    for fraction in fractions:
        scores = np.full(len(y), np.nan)
        predicted = np.empty(len(y), dtype=object if kind != "continuous" else float)
        fold_of = np.full(len(y), -1)
        n_train, proba = [], False
        for k, ((f, train, test), out) in enumerate(zip(jobs, outputs)):
            if f != fraction or out is None:
                continue
            scores[test], predicted[test], fold_of[test] = out[1], out[2], k
            n_train.append(len(train))
            proba = proba or out[4]
        ok = np.isfinite(scores) if kind != "multiclass" else np.array(
            [p is not None for p in predicted])
        cv = CrossValidation(kind, scores[ok][None], predicted[ok][None],
                             0.5 if proba else 0.0, classes, proba, [],
                             folds=fold_of[ok][None])
        rows.append({"fraction": float(fraction),
                     "n_train": float(np.mean(n_train)) if n_train else float("nan"),
                     "metric": {"binary": "auc", "multiclass": "balanced_accuracy",
                                "continuous": "r"}[kind],
                     "estimate": _statistic(kind, y[ok], cv) if ok.sum() > 2 else float("nan")})
    return rows


def _safe_fit_predict(model, X, y, train, test):
    """:func:`_fit_predict`, or None when the subsample is too small to fit (e.g. ComBat)."""
    try:
        return _fit_predict(model, X, y, train, test)
    except (InputError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# everything, and the result file


def validate(X: pd.DataFrame, target: Target, model: BiomarkerModel | None = None, *,
             folds: int = 5, inner_folds: int = 5, repeats: int = 5, n_permutations: int = 100,
             n_bootstrap: int = 2000, site_out: bool = True, learning: bool = True,
             pairs: str | None = None, random_state: int = 0, n_jobs: int = 1) -> dict:
    """Validate a biomarker for ``target`` on the design table X (all schemes).

    Parameters
    ----------
    X : DataFrame
        Design table (:func:`painplast.biomarker.model.design`); rows not in ``target.y`` are
        ignored.
    target : Target
        From :func:`painplast.biomarker.model.resolve_target`.
    model : BiomarkerModel, optional
        Defaults to ``BiomarkerModel(inner_folds=inner_folds, random_state=random_state)``.
    folds, repeats : int
        Nested cross-validation: outer folds x repeats.
    inner_folds : int
        Inner folds choosing the penalty of the default model (a given model has its own).
    n_permutations : int
        0 skips the permutation test.
    n_bootstrap : int
    site_out : bool
        Run leave-one-site-out validation (needs two sites or more).
    learning : bool
        Compute the learning curve.
    pairs : str, optional
        Column of X holding a pair ID: adds forced-choice accuracy (paired designs).
    random_state : int
    n_jobs : int

    Returns
    -------
    dict
        The ``group/biomarker_<target>.json`` content: ``target``, ``column``, ``kind``,
        ``scheme``, ``n``, ``metrics``, ``permutation_p``, ``permutation``, ``leave_site_out``,
        ``learning_curve``, ``model`` (None until saved), ``timing_seconds``; and under the
        private key ``_out_of_fold`` a DataFrame of per-participant out-of-fold scores (not
        JSON; :func:`write_result` leaves it out).
    """
    start = time.perf_counter()
    ids = [i for i in target.y.index if i in X.index]
    if len(ids) < max(2 * folds, 8):
        raise InputError(f"only {len(ids)} participants have both features and a value of "
                         f"{target.name}", fix="check participant IDs in the feature table and "
                         "participants.tsv")
    X = X.loc[ids]
    y = target.y.loc[ids].to_numpy()
    model = model if model is not None else BiomarkerModel(inner_folds=inner_folds,
                                                           random_state=random_state)
    model = clone(model).set_params(kind=target.kind)
    inner_folds = model.inner_folds
    cv = cross_validate(model, X, y, folds, repeats, random_state, n_jobs)
    result_metrics = metrics(y, cv, n_bootstrap, random_state)
    calibration = result_metrics.pop("calibration", None)
    site = _site(X, model)
    n_sites = 0 if site is None else len(np.unique(site))
    scheme = (f"repeated nested cross-validation: {repeats} x {folds}-fold outer, {inner_folds}-"
              f"fold inner (penalty), stratified by {'class' if target.is_classification else 'target quartile'}"
              f"{' and site' if n_sites > 1 else ''}; harmonization, confound regression, scaling "
              "and model fitted within each training fold")
    result = {"target": target.name, "column": target.column, "kind": target.kind,
              "description": target.description, "scheme": scheme, "n": int(len(y)),
              "n_sites": n_sites, "classes": target.classes,
              "confounds": list(X.attrs.get("confounds", [c for c in model.confounds
                                                           if c in X.columns])),
              "n_features": int(len([c for c in X.columns if c not in
                                     set(model.confounds) | {model.site}])),
              "metrics": result_metrics, "calibration": calibration,
              "penalties_chosen": sorted(set(np.round(cv.penalties, 12).tolist()))}
    if pairs is not None and target.kind == "binary":
        result["forced_choice"] = forced_choice(cv, y, X[pairs].to_numpy(), n_bootstrap,
                                                random_state)
    if n_permutations:
        observed = _statistic(target.kind, y, cv)
        perm = permutation_test(model, X, y, observed, n_permutations, folds, random_state,
                                n_jobs)
        result["permutation_p"], result["permutation"] = perm["p"], perm
    else:
        result["permutation_p"], result["permutation"] = None, None
    result["leave_site_out"] = (leave_site_out(model, X, y, n_bootstrap, random_state, n_jobs)
                                if site_out else [])
    if site_out and result["leave_site_out"]:
        result["leave_site_out_summary"] = _pooled_site_out(result["leave_site_out"])
    result["learning_curve"] = (learning_curve(model, X, y, folds=folds,
                                               random_state=random_state, n_jobs=n_jobs)
                                if learning else [])
    result["model"] = None
    result["timing_seconds"] = round(time.perf_counter() - start, 2)
    oof = pd.DataFrame({"participant_id": ids, "target": y, "score": cv.mean_score})
    if target.kind != "continuous":
        oof["prediction"] = [pd.Series(col).mode().iloc[0] for col in cv.predicted.T]
    result["_out_of_fold"] = oof
    return result


def _pooled_site_out(rows: list[dict]) -> dict:
    """Participant-weighted mean of each metric's estimate over held-out sites."""
    names = [k for k, v in rows[0].items() if isinstance(v, dict) and "estimate" in v]
    out = {}
    for name in names:
        values = np.array([row[name]["estimate"] for row in rows], float)
        weights = np.array([row["n"] for row in rows], float)
        ok = np.isfinite(values)
        out[name] = float(np.average(values[ok], weights=weights[ok])) if ok.any() else None
    return out


def _json_ready(value):
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return value


def _atomic_write(path: Path, text: str) -> None:
    from painplast.derivatives import atomic_write_text
    atomic_write_text(path, text)


def write_result(result: dict, out_dir, target: str | None = None) -> Path:
    """Write ``group/biomarker_<target>.json`` atomically (NaN as null, private keys left out).

    Parameters
    ----------
    result : dict
        From :func:`validate` (``model`` may hold the saved model's path).
    out_dir : path
        The painplast output folder.
    target : str, optional
        Defaults to ``result["target"]``.

    Returns
    -------
    Path
    """
    path = Path(out_dir) / "group" / f"biomarker_{target or result['target']}.json"
    _atomic_write(path, json.dumps(_json_ready(result), indent=1, allow_nan=False) + "\n")
    return path


def write_predictions(result: dict, out_dir, target: str | None = None) -> Path:
    """Write the out-of-fold scores as ``group/biomarker_<target>_predictions.tsv`` (atomic).

    Parameters
    ----------
    result : dict
        From :func:`validate`.
    out_dir : path
    target : str, optional

    Returns
    -------
    Path
    """
    path = Path(out_dir) / "group" / f"biomarker_{target or result['target']}_predictions.tsv"
    _atomic_write(path, result["_out_of_fold"].to_csv(sep="\t", index=False, na_rep="n/a"))
    return path
