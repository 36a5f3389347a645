"""The connectome biomarker as a product: build it from a painplast output folder, write it,
interpret it and apply it to a new sample.

:mod:`painplast.biomarker.connectome` holds the models and their validation; this module strings
them into ``painplast run ... group --biomarker TARGET --biomarker-features connectome`` and
``painplast predict MODEL BIDS OUT``:

* :func:`make_model`: the model a name means (``ridge``, ``elastic_net``: a
  :class:`~painplast.biomarker.connectome.ConnectomeRegressor`; ``cpm``: a
  :class:`~painplast.biomarker.connectome.CPMRegressor`), with the connectome kind.
* :func:`build`: reads the participants' covariances (``read_connectomes``), runs
  :func:`~painplast.biomarker.connectome.nested_cv` (whole-model permutation test), fits the
  model on everyone, writes ``group/biomarker_<target>.json`` (the same keys as the summary
  features' result), the out-of-fold predictions, the model (pickle-free,
  :mod:`painplast.biomarker.store`), the edge table ``group/biomarker_<target>_edges.tsv``
  (selection frequency across outer folds, mean weight, the final model's weight), the
  network summary ``group/biomarker_<target>_networks.tsv`` and the figure
  ``group/biomarker_<target>_connectome.png`` that the report shows.
* :func:`predict_connectome` and :func:`external_validation`: a saved model applied to another
  sample's covariances, and r (or AUC) with its interval against the target column when the new
  sample has it.

Only continuous targets are modelled from edges (the models are regressors); a two-class target
is an InputError naming ``--biomarker-features all``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from painplast.biomarker import connectome as cx
from painplast.errors import InputError

__all__ = ["MODELS", "build", "edge_table", "external_validation", "make_model",
           "network_table", "predict_connectome"]

log = logging.getLogger("painplast")

#: Model names of ``--connectome-model``.
MODELS = ("ridge", "elastic_net", "cpm")


def outer_is_loo(folds) -> bool:
    """Whether an outer-folds setting means leave-one-out (``"loo"``), checking it otherwise.

    Examples
    --------
    >>> outer_is_loo("LOO"), outer_is_loo(10)
    (True, False)
    >>> outer_is_loo(1)
    Traceback (most recent call last):
    ...
    painplast.errors.InputError: connectome outer folds 1 is not an integer >= 2 or loo; fix: use --connectome-folds 10 (or another integer >= 2) or --connectome-folds loo
    """
    if str(folds).strip().lower() in ("loo", "leave-one-out"):
        return True
    try:
        ok = int(folds) >= 2 and float(folds) == int(folds)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"connectome outer folds {folds} is not an integer >= 2 or loo",
                         fix="use --connectome-folds 10 (or another integer >= 2) or "
                             "--connectome-folds loo")
    return False


def make_model(model: str = "ridge", kind: str = "partial correlation", random_state: int = 0):
    """The connectome model a name means, with its own defaults.

    Parameters
    ----------
    model : {"ridge", "elastic_net", "cpm"}
        ``ridge`` / ``elastic_net``: :class:`~painplast.biomarker.connectome.ConnectomeRegressor`
        (robust scaling, top-k selection and penalty chosen by inner 10-fold CV); ``cpm``:
        :class:`~painplast.biomarker.connectome.CPMRegressor` (Shen et al. 2017).
    kind : {"correlation", "partial correlation", "tangent"}
    random_state : int

    Examples
    --------
    >>> make_model("cpm", "tangent")
    CPMRegressor(kind='tangent')
    >>> make_model("lasso")
    Traceback (most recent call last):
    ...
    painplast.errors.InputError: unknown connectome model 'lasso'; fix: use --connectome-model ridge, elastic_net or cpm
    """
    name = str(model).lower().replace("-", "_")
    kind = cx._kind(kind)
    if name == "cpm":
        return cx.CPMRegressor(kind=kind)
    if name in ("ridge", "elastic_net"):
        return cx.ConnectomeRegressor(kind=kind, estimator=name, random_state=random_state)
    raise InputError(f"unknown connectome model {model!r}",
                     fix="use --connectome-model ridge, elastic_net or cpm")


def _edge_weights(model) -> np.ndarray:
    return np.asarray(model.edge_weights(), float)


def edge_table(nodes: Sequence[str], networks: Sequence[str], cv_edges: pd.DataFrame,
               final_weights: np.ndarray) -> pd.DataFrame:
    """One row per edge: its regions and networks, how often the outer folds selected it, its
    mean weight over the folds and its weight in the model fitted on everyone.

    Weights are in the edges' own units (a change of prediction per unit of partial correlation,
    correlation or tangent value), so they compare across edges of one model.

    Examples
    --------
    >>> cv = pd.DataFrame({"selection_frequency": [1.0, 0.0, 0.5],
    ...                    "mean_weight": [0.2, 0.0, -0.1]})
    >>> t = edge_table(["a", "b", "c"], ["x", "x", "y"], cv, np.array([0.3, 0.0, 0.0]))
    >>> t[["edge", "network_pair", "selection_frequency"]].values.tolist()
    [['a--b', 'x--x', 1.0], ['b--c', 'x--y', 0.5], ['a--c', 'x--y', 0.0]]
    """
    i, j = np.triu_indices(len(nodes), 1)
    table = pd.DataFrame({
        "edge": cx.edge_names(nodes), "region_a": [nodes[a] for a in i],
        "region_b": [nodes[b] for b in j], "network_a": [networks[a] for a in i],
        "network_b": [networks[b] for b in j], "network_pair": cx.edge_networks(networks),
        "selection_frequency": cv_edges["selection_frequency"].to_numpy(float),
        "mean_weight": cv_edges["mean_weight"].to_numpy(float),
        "final_weight": np.asarray(final_weights, float)})
    order = np.lexsort((-np.abs(table["mean_weight"].to_numpy()),
                        -table["selection_frequency"].to_numpy()))
    return table.iloc[order].reset_index(drop=True)


def network_table(edges: pd.DataFrame, min_frequency: float = 0.5) -> pd.DataFrame:
    """The predictive network summarised by atlas network pair.

    An edge counts as predictive when the outer folds selected it at least ``min_frequency`` of
    the time. Per network pair: edges in the pair, predictive edges (positive and negative mean
    weight), their share of the pair's edges, and the summed mean weight (positive: stronger
    coupling predicts a higher target).

    Examples
    --------
    >>> e = pd.DataFrame({"network_pair": ["x--x", "x--y", "x--y"],
    ...                   "selection_frequency": [1.0, 0.9, 0.1],
    ...                   "mean_weight": [0.2, -0.1, 0.05]})
    >>> network_table(e)[["network_pair", "n_edges", "n_predictive"]].values.tolist()
    [['x--x', 1, 1], ['x--y', 2, 1]]
    """
    chosen = edges["selection_frequency"].to_numpy(float) >= min_frequency
    weight = edges["mean_weight"].to_numpy(float)
    frame = pd.DataFrame({"network_pair": edges["network_pair"].to_numpy(),
                          "n_edges": 1, "n_predictive": chosen.astype(int),
                          "n_positive": (chosen & (weight > 0)).astype(int),
                          "n_negative": (chosen & (weight < 0)).astype(int),
                          "weight_sum": np.where(chosen, weight, 0.0)})
    out = frame.groupby("network_pair", sort=True).sum().reset_index()
    out["share_predictive"] = out["n_predictive"] / out["n_edges"]
    out = out.sort_values(["n_predictive", "network_pair"], ascending=[False, True],
                          kind="mergesort").reset_index(drop=True)
    return out[["network_pair", "n_edges", "n_predictive", "n_positive", "n_negative",
                "share_predictive", "weight_sum"]]


def connectome_figure(nodes: Sequence[str], networks: Sequence[str], edges: pd.DataFrame,
                      title: str) -> bytes:
    """PNG: the mean weight of every edge selected in at least half the folds, as a matrix
    with the regions ordered by network (network boundaries drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    index = {name: k for k, name in enumerate(cx.edge_names(nodes))}
    R = len(nodes)
    W = np.zeros((R, R))
    i, j = np.triu_indices(R, 1)
    chosen = edges["selection_frequency"].to_numpy(float) >= 0.5
    values = np.zeros(len(i))
    rows = [index[e] for e in edges["edge"]]
    values[rows] = np.where(chosen, edges["mean_weight"].to_numpy(float), 0.0)
    W[i, j] = values
    W = W + W.T
    order = np.argsort(np.asarray(networks, dtype=str), kind="mergesort")
    W = W[np.ix_(order, order)]
    limit = float(np.abs(W).max()) or 1.0
    fig, ax = plt.subplots(figsize=(6.2, 5.4), dpi=100)
    image = ax.imshow(W, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    sorted_networks = np.asarray(networks, dtype=str)[order]
    bounds = [k for k in range(1, R) if sorted_networks[k] != sorted_networks[k - 1]]
    for b in bounds:
        ax.axhline(b - 0.5, color="0.6", lw=0.5)
        ax.axvline(b - 0.5, color="0.6", lw=0.5)
    starts = [0] + bounds
    ends = bounds + [R]
    centres = [(s + e - 1) / 2 for s, e in zip(starts, ends)]
    labels = [sorted_networks[s] for s in starts]
    ax.set_xticks(centres)
    ax.set_xticklabels(labels, rotation=90, fontsize=6)
    ax.set_yticks(centres)
    ax.set_yticklabels(labels, fontsize=6)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8, label="mean weight (edges selected in >= 50% of folds)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def build(out_dir: str | os.PathLike, participants: pd.DataFrame, target: str, *,
          kind: str = "partial correlation", model: str = "ridge", folds: int | str = 10,
          repeats: int = 5, n_permutations: int = 100, n_bootstrap: int = 2000,
          n_jobs: int = 1, random_state: int = 0, notes: Sequence[str] = (),
          metadata: dict | None = None, level: str = "atlas",
          sessions: dict | None = None) -> dict:
    """Validate, fit and write the connectome biomarker for ``target`` (see the module notes).

    Parameters
    ----------
    out_dir : path
        The painplast output folder, after the connectivity participant stage.
    participants : DataFrame
        participants.tsv of the eligible participants (exclusions already applied).
    target : str
        A continuous participants column (or alias).
    kind, model : str
        Connectome kind and model name (:func:`make_model`).
    folds : int or "loo"
        Outer folds; ``"loo"``: leave-one-out (one outer fold per participant, ``repeats``
        ignored), the scheme of the connectome-prediction literature's nested estimates (CPM,
        Shen et al. 2017; the RPN signature, Spisak et al. 2020), for comparing with them.
    repeats, n_permutations, n_bootstrap, n_jobs, random_state
        As :func:`painplast.biomarker.connectome.nested_cv`.
    notes : sequence of str
        Notes carried into the result (feature fallback, exclusions).
    metadata : dict, optional
        Extra model-file metadata (e.g. the connectivity options used).
    level : {"atlas", "pain"}
        Which time series: the network atlas (or ROI series from elsewhere) or the pain ROIs.

    Returns
    -------
    dict
        The content of ``group/biomarker_<target>.json``.
    """
    import time

    from painplast.biomarker.model import resolve_target
    from painplast.biomarker.store import save_model
    from painplast.biomarker.validate import write_predictions, write_result
    from painplast.derivatives import atomic_write_bytes, write_tsv

    start = time.perf_counter()
    out_dir = Path(out_dir)
    spec = resolve_target(participants, target)
    if spec.kind != "continuous":
        raise InputError(f"target {target!r} is {spec.kind}; connectome features model a "
                         "continuous target", fix="use --biomarker-features all (or a-priori) "
                         "for a class target")
    data = cx.read_connectomes(out_dir, level=level, participants=list(spec.y.index),
                               sessions=sessions)
    ids = [pid for pid in data.participant_ids if pid in spec.y.index]
    loo = outer_is_loo(folds)
    if len(ids) < (8 if loo else max(2 * int(folds), 8)):
        raise InputError(f"only {len(ids)} participants have connectomes and a value of "
                         f"{target}", path=out_dir, fix="run painplast run ... participant "
                         "--modules connectivity for every participant")
    rows = [data.participant_ids.index(pid) for pid in ids]
    cov = data.covariances[rows]
    y = spec.y.loc[ids].to_numpy(float)
    notes = list(notes)
    if data.excluded:
        notes.append(f"{len(data.excluded)} participant(s) left out by the connectivity stage "
                     f"(motion): {', '.join(sorted(data.excluded))}")
    template = make_model(model, kind, random_state)
    if loo:
        folds, repeats = len(y), 1
    res = cx.nested_cv(template, cov, y, folds=folds, repeats=repeats,
                       n_permutations=n_permutations, n_bootstrap=n_bootstrap,
                       random_state=random_state, n_jobs=n_jobs)
    final = make_model(model, kind, random_state).fit(cov, y)
    networks = list(data.networks)
    edges = edge_table(data.nodes, networks, res["edges"], _edge_weights(final))
    nets = network_table(edges)
    name = "CPM (Shen et al. 2017)" if isinstance(final, cx.CPMRegressor) else \
        f"{model.replace('_', ' ')} on the top-k edges"
    outer = (f"nested leave-one-out cross-validation ({len(y)} outer folds)" if loo else
             f"repeated nested cross-validation: {repeats} x {folds}-fold outer")
    scheme = (f"{outer}; edges of the "
              f"{cx._kind(kind)} connectome ({len(edges)} edges, {len(data.nodes)} regions), "
              + ("edge selection at p < 0.01 and the linear fit" if isinstance(
                  final, cx.CPMRegressor) else "robust scaling, top-k edge selection, k and "
                 "penalty chosen by inner 10-fold cross-validation")
              + " fitted within each training fold; the permutation test refits the whole model")
    result = {"target": spec.name, "column": spec.column, "kind": spec.kind,
              "description": spec.description, "scheme": scheme, "n": int(len(y)),
              "n_sites": 0, "classes": [], "confounds": [], "n_features": int(len(edges)),
              "features": "connectome",
              "connectome": {"kind": cx._kind(kind), "model": name, "level": level,
                             "n_regions": len(data.nodes),
                             "k_chosen": [c["k"] for c in res["chosen"]],
                             "final_k": int(getattr(final, "k_", len(edges)))
                             if not isinstance(final, cx.CPMRegressor)
                             else int(final.positive_.sum() + final.negative_.sum()),
                             "edges": f"group/biomarker_{target}_edges.tsv",
                             "networks": f"group/biomarker_{target}_networks.tsv"},
              "metrics": res["metrics"], "calibration": None,
              "penalties_chosen": sorted({float(c["alpha"]) for c in res["chosen"]
                                          if np.isfinite(c["alpha"])}),
              "notes": notes}
    if n_permutations:
        perm = dict(res["permutation"])
        result["permutation_p"], result["permutation"] = perm["p"], perm
    else:
        result["permutation_p"], result["permutation"] = None, None
    result["leave_site_out"], result["learning_curve"] = [], []
    relative = Path("models") / target
    meta = {"target": target, "target_column": spec.column,
            "training_cohort": {"n": len(ids), "classes": {}, "sites": {}},
            "validation_metrics": {k: v["estimate"] for k, v in res["metrics"].items()},
            "kind": "regressor",
            "biomarker_input": {"features": [], "confounds": [], "site": None,
                                "connectome": {"kind": cx._kind(kind), "level": level,
                                               "nodes": list(data.nodes),
                                               "networks": networks, "model": model}},
            "feature_names": list(data.nodes), **(metadata or {})}
    save_model(final, out_dir / relative, metadata=meta, overwrite=True)
    result["model"] = str(relative)
    result["timing_seconds"] = round(time.perf_counter() - start, 2)
    result["_out_of_fold"] = pd.DataFrame({"participant_id": ids, "target": y,
                                           "score": np.nanmean(res["predictions"], axis=0)})
    write_tsv(out_dir / "group" / f"biomarker_{target}_edges.tsv", edges)
    write_tsv(out_dir / "group" / f"biomarker_{target}_networks.tsv", nets)
    atomic_write_bytes(out_dir / "group" / f"biomarker_{target}_connectome.png",
                       connectome_figure(data.nodes, networks, edges,
                                         f"{target}: predictive edges ({name})"))
    write_result(result, out_dir, target)
    write_predictions(result, out_dir, target)
    for note in notes:
        log.warning("biomarker %s: %s", target, note)
    return result


def predict_connectome(loaded, features_dir: str | os.PathLike,
                       sessions: dict | None = None) -> pd.DataFrame:
    """Apply a loaded connectome model to the covariances in a painplast output folder.

    Parameters
    ----------
    loaded : LoadedModel
        From :func:`painplast.biomarker.store.load_model`, with ``biomarker_input.connectome``.
    features_dir : path
        A painplast output folder holding the new participants' connectivity results.
    sessions : dict, optional
        The session read per participant (:func:`~painplast.biomarker.connectome.read_connectomes`).

    Returns
    -------
    DataFrame
        ``participant_id``, ``prediction``.
    """
    spec = loaded.metadata["biomarker_input"]["connectome"]
    data = cx.read_connectomes(features_dir, level=spec.get("level", "atlas"), sessions=sessions)
    if list(data.nodes) != list(spec["nodes"]):
        raise InputError(f"the new sample has {len(data.nodes)} regions "
                         f"({', '.join(data.nodes[:3])}, ...), the model "
                         f"{len(spec['nodes'])} ({', '.join(spec['nodes'][:3])}, ...)",
                         path=loaded.path, fix="extract the new sample's time series with the "
                         "atlas (and global-signal handling) the model was trained with")
    for pid, why in sorted(data.excluded.items()):
        log.warning("%s left out by the connectivity stage: %s", pid, why)
    return pd.DataFrame({"participant_id": data.participant_ids,
                         "prediction": loaded.predict(data.covariances)})


def external_validation(predictions: pd.DataFrame, participants: pd.DataFrame, column: str,
                        kind: str, n_bootstrap: int = 2000, random_state: int = 0) -> dict | None:
    """r (continuous target) or AUC (two classes) of a model's predictions on a new sample.

    Parameters
    ----------
    predictions : DataFrame
        ``participant_id``, ``prediction`` (and ``probability`` for a classifier).
    participants : DataFrame
        participants.tsv of the new sample.
    column : str
        The target column the model was trained on.
    kind : str
        The model file's kind: ``classifier`` or ``binary`` (AUC), else a regressor (r).
    n_bootstrap, random_state : int
        The interval: percentile bootstrap of participants.

    Returns
    -------
    dict or None
        ``{"target_column", "n", "metric", "estimate", "ci_low", "ci_high", "metrics"}``;
        None when the sample has no such column or fewer than 3 values.
    """
    from painplast.biomarker.model import _participants_indexed
    from painplast.biomarker.validate import CrossValidation, metrics

    parts = _participants_indexed(participants)
    if column not in parts.columns:
        return None
    values = parts[column].reindex(predictions["participant_id"].astype(str))
    if kind in ("classifier", "binary"):
        y = values.astype("string").str.strip()
        ok = y.notna().to_numpy() & ~y.str.lower().isin(["", "n/a", "nan"]).fillna(True).to_numpy()
        if ok.sum() < 3 or y[ok].nunique() != 2 or "probability" not in predictions:
            return None
        classes = sorted(y[ok].unique())
        positive = (y[ok] == classes[-1]).to_numpy()
        scores = predictions["probability"].to_numpy(float)[ok][None, :]
        cv = CrossValidation("binary", scores, np.where(scores >= 0.5, classes[-1], classes[0]),
                             0.5, classes, True, [])
        out = metrics(np.where(positive, classes[-1], classes[0]), cv, n_bootstrap=n_bootstrap,
                      random_state=random_state, calibration=False)
        metric = "auc"
    else:
        y = pd.to_numeric(values, errors="coerce").to_numpy(float)
        ok = np.isfinite(y)
        if ok.sum() < 3:
            return None
        scores = predictions["prediction"].to_numpy(float)[ok][None, :]
        cv = CrossValidation("continuous", scores, scores, 0.0, [], False, [])
        out = metrics(y[ok], cv, n_bootstrap=n_bootstrap, random_state=random_state,
                      calibration=False)
        metric = "r"
    main = out[metric]
    return {"target_column": column, "n": int(ok.sum()), "metric": metric,
            "estimate": main["estimate"], "ci_low": main["ci_low"], "ci_high": main["ci_high"],
            "metrics": out}
