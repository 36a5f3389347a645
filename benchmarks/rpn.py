"""The RPN signature on real data: the published pipeline beside painplast's connectome model.

Spisak et al. 2020 (Nat Commun 11:187) predicted pain sensitivity from resting-state
connectivity; ``../shared/data/rpn_bochum`` (training sample) and ``rpn_szeged`` (external
sample) hold the study's ROI time series. This script computes, on the same files:

(a) ``reference``: the published pipeline as the authors' code (spisakt/RPN-signature,
    ``PAINTeR/connectivity.py`` and ``model.py``) does it, with scikit-learn and nilearn
    directly: volumes with framewise displacement > 0.15 mm dropped; participants with mean FD
    > 0.15 mm or more than 30% of volumes dropped are excluded; time series z-scored;
    Ledoit-Wolf partial correlation of the 122 MIST regions plus the global signal (7,503
    edges); RobustScaler, SelectKBest(f_regression), ElasticNet(l1_ratio=0.999), the grid
    k in 20..80, alpha in 0.001..0.5 searched by GridSearchCV with leave-one-out (mean squared
    error); nested leave-one-out for the cross-validated r; the model refitted on all of
    Bochum and applied unchanged to Szeged.
(b) ``painplast``: what a user gets from the documented commands (``painplast run BIDS OUT
    participant --modules connectivity --repetition-time 2.5``; ``painplast run ... group
    --biomarker pain_sensitivity --biomarker-features connectome --exclude-column
    excluded_by_authors`` with ``--connectome-folds loo`` (nested leave-one-out, the published
    scheme) or the default repeated 10-fold; ``painplast predict`` of the saved model on
    Szeged), figures read from the outputs; and, on the same 35 participants and the same
    repeated 10-fold splits, the reference (scikit-learn) beside painplast's default, one r
    per repeat.
(c) ``cpm``: the same commands with ``--connectome-model cpm``.

Further rows (``--variants``) prototype changes to the connectivity subject stage on the same
files (each difference between its defaults and the paper's preprocessing, one at a time) and
measure what each costs with the reference model and with painplast's model.

Participants: ``excluded_by_authors`` is honoured everywhere. The study's published samples
(35 in Bochum, 19 in Szeged; the authors' ``res/*_sample_excl.csv``) also left out participants
for motion and, in Szeged, two whose pain thresholds were outside the reference ranges, which
``excluded_by_authors`` does not mark; figures on exactly those participants are printed as
``..._published_sample``.

Also measured: nested CV with 1000 permutations on 41 participants x 7,503 edges (time, CPU
time, peak memory), and reading 41 x 7,503 edges from one TSV versus per-participant ``.npy``.

Usage::

    python benchmarks/rpn.py [--n-jobs 2] [--permutations 1000] [--skip-reference] [--variants]
    python benchmarks/rpn.py --simulator      # recovery and --null calibration on the simulator

The last line printed is one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from painplast.biomarker import connectome as cx  # noqa: E402
from painplast.biomarker.validate import CrossValidation, metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TR = 2.5
#: The participants of the published analyses (spisakt/RPN-signature, res/bochum_sample_excl.csv
#: and res/szeged_sample_excl.csv: 'ID' of the rows kept).
PUBLISHED_SAMPLE = {
    "bochum": [f"sub-bochum{i:03d}" for i in (4, 6, 7, 8, 9, 11, 12, 13, 15, 16, 17, 18, 19, 20,
                                              23, 24, 25, 26, 27, 28, 30, 31, 32, 33, 35, 36, 37,
                                              38, 39, 41, 42, 43, 44, 45, 46)],
    "szeged": [f"sub-szeged{i:03d}" for i in (3, 4, 5, 6, 7, 8, 10, 14, 15, 16, 18, 19, 20, 21,
                                              22, 24, 25, 28, 29)],
}
#: The connectivity stage as proposed for time series from another pipeline: its scrubbing
#: (FD > 0.5 mm, kept segments >= 5 volumes), global signal handling (dropped), linear
#: detrending and z-scoring unchanged; no second high-pass of series another pipeline already
#: filtered, and the stringent motion exclusion of Parkes et al. 2018.
PROPOSED = {"fd_threshold": 0.5, "min_segment": 5, "global_signal": "drop", "high_pass": None,
            "exclusion": "stringent", "stage_cleaning": True}
RPN_GRID = {"fsel__k": [20, 25, 30, 35, 40, 45, 50, 60, 70, 80],
            "model__alpha": [.001, .005, .01, .05, .1, .5], "model__l1_ratio": [.999]}


# ----------------------------------------------------------------------------- data


def participants(site: str) -> pd.DataFrame:
    table = pd.read_csv(DATA / f"rpn_{site}" / "participants.tsv", sep="\t")
    table = table[pd.to_numeric(table["excluded_by_authors"], errors="coerce").fillna(0) == 0]
    table = table[pd.to_numeric(table["pain_sensitivity"], errors="coerce").notna()]
    return table.set_index("participant_id")


def raw_series(site: str, pid: str):
    func = DATA / f"rpn_{site}" / "derivatives" / "timeseries" / pid / "func"
    ts = pd.read_csv(func / f"{pid}_task-rest_atlas-MIST122_timeseries.tsv", sep="\t")
    fd = pd.read_csv(func / f"{pid}_task-rest_desc-confounds_timeseries.tsv", sep="\t")
    fd = pd.to_numeric(fd["framewise_displacement"], errors="coerce").to_numpy()
    return ts.to_numpy(float), fd


def paper_series(site: str, fd_threshold=0.15, global_signal="node", high_pass=None,
                 min_segment=1, exclusion="paper", stage_cleaning=False):
    """Per-participant z-scored ROI series after the paper's preprocessing (or a variant).

    ``global_signal``: ``node`` (the paper), ``drop`` or ``confound``; ``high_pass``: Hz (with
    detrending, painplast's cleaning); ``stage_cleaning``: clean with the connectivity stage's
    :func:`~painplast.plasticity.connectivity.clean` (linear detrending, the filter if any,
    z-scoring) even without a filter or confounds; ``exclusion``: ``paper`` (mean FD > 0.15 mm
    or > 30% scrubbed), ``stringent`` (Parkes et al. 2018: mean FD > 0.25 mm, more than 20% of
    volumes with FD > 0.2 mm, or any FD > 5 mm), ``painplast`` (the subject stage's defaults:
    mean FD > 0.5 mm, > 30% scrubbed, < 50 volumes) or ``none``. Returns (participant IDs,
    list of series, excluded IDs).
    """
    from sklearn.preprocessing import StandardScaler

    from painplast.plasticity.connectivity import clean, scrub_mask

    ids, series, excluded = [], [], []
    for pid in participants(site).index:
        values, fd = raw_series(site, pid)
        fd0 = np.nan_to_num(fd, nan=0.0)   # the paper prepends 0 for the first volume
        keep = scrub_mask(fd, len(values), fd_threshold if fd_threshold else np.inf, min_segment)
        scrubbed = 1.0 - keep.mean()
        if exclusion == "paper":
            out = fd0.mean() > 0.15 or 100 * scrubbed > 30
        elif exclusion == "stringent":   # Parkes et al. 2018
            out = np.nanmean(fd) > 0.25 or np.nanmean(fd > 0.2) > 0.2 or np.nanmax(fd) > 5
        elif exclusion == "painplast":
            out = np.nanmean(fd) > 0.5 or scrubbed > 0.3 or keep.sum() < 50
        else:
            out = False
        if out:
            excluded.append(pid)
            continue
        signal = values if global_signal == "node" else values[:, 1:]
        confounds = values[:, :1] if global_signal == "confound" else None
        if high_pass is None and confounds is None and not stage_cleaning:
            ts = StandardScaler().fit_transform(signal[keep])
        else:
            ts = clean(signal, confounds, keep, TR, high_pass, None)
        ids.append(pid)
        series.append(ts)
    return ids, series, excluded


def target(site: str, ids) -> np.ndarray:
    return participants(site).loc[list(ids), "pain_sensitivity"].to_numpy(float)


# ----------------------------------------------------------------------------- statistics


def interval_of_r(y, predictions, folds=None, n_bootstrap=2000, seed=0) -> dict:
    """r with painplast's interval (bootstrap, widened by the fold variance when folds given)."""
    predictions = np.atleast_2d(predictions)
    cv = CrossValidation("continuous", predictions, predictions, 0.0, [], False, [],
                         folds=None if folds is None else np.atleast_2d(folds))
    return metrics(np.asarray(y, float), cv, n_bootstrap=n_bootstrap, random_state=seed,
                   calibration=False)["r"]


def analytic_p(y, predictions) -> float:
    from scipy import stats

    return float(stats.pearsonr(np.ravel(predictions), y)[1])


def summary(name, r, extra=""):
    print(f"{name:44s} r = {r['estimate']:+.3f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]{extra}",
          flush=True)


# ----------------------------------------------------------------------------- (a) the reference


def reference_features(site, **kwargs):
    from nilearn.connectome import ConnectivityMeasure

    ids, series, excluded = paper_series(site, **kwargs)
    X = ConnectivityMeasure(kind="partial correlation", vectorize=True,
                            discard_diagonal=True).fit_transform(series)
    return ids, X, excluded, series


def reference_model(n_jobs, cache=None):
    """The authors' ``pipe_scale_fsel_elnet`` inside their ``GridSearchCV`` (PAINTeR/model.py).

    ``cache``: a folder for the Pipeline's transformer cache (``Pipeline(memory=...)``). It
    changes no result: the RobustScaler fitted on one training split is reused for the 60 grid
    points instead of being refitted 60 times (0.21 s each on 33 x 7,503 edges, 250 s per
    grid search without it, about 26 s with it).
    """
    from joblib import Memory
    from sklearn.feature_selection import SelectKBest, f_regression
    from sklearn.linear_model import ElasticNet
    from sklearn.model_selection import GridSearchCV, LeaveOneOut
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import RobustScaler

    pipe = Pipeline([("scaler", RobustScaler()), ("fsel", SelectKBest(f_regression)),
                     ("model", ElasticNet(max_iter=100000))],
                    memory=None if cache is None else Memory(str(cache), verbose=0))
    return GridSearchCV(pipe, RPN_GRID, cv=LeaveOneOut(), scoring="neg_mean_squared_error",
                        n_jobs=n_jobs)


def run_reference(n_jobs) -> dict:
    from sklearn.model_selection import LeaveOneOut, cross_val_predict

    warnings.filterwarnings("ignore")
    ids_b, Xb, excl_b, series_b = reference_features("bochum")
    ids_s, Xs, excl_s, series_s = reference_features("szeged")
    yb, ys = target("bochum", ids_b), target("szeged", ids_s)
    with tempfile.TemporaryDirectory(prefix="rpn-reference-cache-") as cache:
        start = time.time()
        nested = cross_val_predict(reference_model(n_jobs, cache), Xb, yb, cv=LeaveOneOut())
        seconds = time.time() - start
        final = reference_model(n_jobs, cache).fit(Xb, yb)
    ps = final.predict(Xs)
    published = np.isin(ids_s, PUBLISHED_SAMPLE["szeged"])
    out = {"n_bochum": len(yb), "n_szeged": len(ys), "excluded_motion": excl_b + excl_s,
           "bochum": interval_of_r(yb, nested, folds=np.arange(len(yb))),
           "bochum_p_analytic": analytic_p(yb, nested),
           "szeged": interval_of_r(ys, ps), "szeged_p_analytic": analytic_p(ys, ps),
           "szeged_published_sample": interval_of_r(ys[published], ps[published]),
           "n_szeged_published_sample": int(published.sum()),
           "chosen": {k: v for k, v in final.best_params_.items() if k != "model__l1_ratio"},
           "nested_seconds": seconds, "_szeged_predictions": ps, "_ids_szeged": ids_s}
    # agreement: painplast's elastic net with the same grid and inner leave-one-out, fitted on
    # the same participants, chooses the same (k, alpha) and predicts Szeged alike (a lasso
    # with p > n is not unique, so the solutions differ with the column order; in smaller
    # training sets, at alpha 0.001 with k > n, the two can choose differently)
    ours = cx.ConnectomeRegressor(estimator="elastic_net", k=RPN_GRID["fsel__k"],
                                  alphas=RPN_GRID["model__alpha"], l1_ratio=0.999,
                                  inner_folds=1000).fit(cx.ledoit_wolf_covariances(series_b), yb)
    ours_s = ours.predict(cx.ledoit_wolf_covariances(series_s))
    out["agree"] = {"same_choice": bool(ours.k_ == final.best_params_["fsel__k"] and np.isclose(
                        ours.alpha_, final.best_params_["model__alpha"])),
                    "szeged_prediction_r": float(np.corrcoef(ours_s, ps)[0, 1]),
                    "painplast_szeged_r": float(np.corrcoef(ours_s, ys)[0, 1])}
    summary("reference: Bochum nested LOO", out["bochum"],
            f"  p(analytic) = {out['bochum_p_analytic']:.4f}  n = {len(yb)}  ({seconds:.0f} s)")
    summary("reference: Bochum model -> Szeged", out["szeged"], f"  n = {len(ys)}")
    summary("reference: -> Szeged, published sample", out["szeged_published_sample"],
            f"  n = {int(published.sum())}")
    print(f"reference vs painplast's elastic net on the same data: same (k, alpha) "
          f"{out['agree']['same_choice']}, Szeged predictions correlate "
          f"{out['agree']['szeged_prediction_r']:.3f}", flush=True)
    return out


# ----------------------------------------------------------------------------- (b) painplast


def _painplast(*arguments) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("painplast")), *map(str, arguments)]
    return subprocess.run(command, check=True, capture_output=True, text=True)


def painplast_run(site: str, out: Path, options: dict | None = None) -> Path:
    """``painplast run DATA/rpn_<site> OUT participant --modules connectivity
    --repetition-time 2.5`` (as a user; ``options``: further connectivity options, in a config
    file, for the prototypes)."""
    command = ["run", DATA / f"rpn_{site}", out, "participant", "--modules", "connectivity",
               "--repetition-time", TR, "--quiet"]
    if options:
        config = out.parent / f"{out.name}.json"
        config.write_text(json.dumps({"options": {"connectivity": options}}))
        command += ["--config", config]
    if not (out / "dataset_description.json").exists():
        _painplast(*command)
    return out


def painplast_cli(work: Path, name: str, flags: list, n_permutations: int, n_jobs: int) -> dict:
    """The documented commands: the participant level of both samples, then on Bochum
    ``painplast run ... group --modules connectivity --biomarker pain_sensitivity
    --biomarker-features connectome --exclude-column excluded_by_authors`` + ``flags``, then
    ``painplast predict`` of the saved model on Szeged (all eligible participants, and the
    study's published sample by ``--participant-label``). Figures read from the outputs."""
    base_b = painplast_run("bochum", work / "participant_bochum")
    base_s = painplast_run("szeged", work / "participant_szeged")
    out = work / f"group_{name}"
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(base_b, out)
    start = time.time()
    _painplast("run", DATA / "rpn_bochum", out, "group", "--modules", "connectivity",
               "--repetition-time", TR, "--biomarker", "pain_sensitivity",
               "--biomarker-features", "connectome", "--exclude-column", "excluded_by_authors",
               "--n-permutations", n_permutations, "--n-jobs", n_jobs, "--quiet", *flags)
    seconds = time.time() - start
    result = json.loads((out / "group" / "biomarker_pain_sensitivity.json").read_text())
    figures = {"command_flags": flags, "n_bochum": result["n"], "scheme": result["scheme"],
               "bochum": result["metrics"]["r"], "bochum_p_permutation": result["permutation_p"],
               "bochum_null_ci": (result["permutation"] or {}).get("null_ci"),
               "bochum_null_mean": (result["permutation"] or {}).get("null_mean"),
               "group_seconds": seconds}
    labels = [a for pid in PUBLISHED_SAMPLE["szeged"] for a in ("--participant-label", pid)]
    for key, extra in (("szeged", []), ("szeged_published_sample", labels)):
        target = work / f"predict_{name}_{key}"
        if target.exists():
            shutil.rmtree(target)
        _painplast("predict", out / "models" / "pain_sensitivity", DATA / "rpn_szeged", target,
                   "--repetition-time", TR, "--exclude-column", "excluded_by_authors", *extra)
        valid = json.loads((target / "validation.json").read_text())
        figures[key], figures[f"n_{key}"] = valid["metrics"]["r"], valid["n"]
    p = figures["bochum_p_permutation"]
    summary(f"painplast CLI [{name}]: Bochum", figures["bochum"],
            f"  p(perm, {n_permutations}) = {p:.4f}  n = {figures['n_bochum']}  "
            f"({seconds:.0f} s)" if p is not None else "")
    summary(f"painplast CLI [{name}]: -> Szeged", figures["szeged"], f"  n = {figures['n_szeged']}")
    summary(f"painplast CLI [{name}]: -> Szeged, published sample",
            figures["szeged_published_sample"], f"  n = {figures['n_szeged_published_sample']}")
    return figures


def painplast_data(site: str, out: Path):
    data = cx.read_connectomes(out)
    keep = [i for i, pid in enumerate(data.participant_ids) if pid in participants(site).index]
    ids = [data.participant_ids[i] for i in keep]
    return ids, data.covariances[keep], data


def evaluate(model, covb, yb, covs, ys, ids_s, n_permutations, n_jobs, repeats=10, folds=10,
             name="painplast") -> dict:
    start = time.time()
    res = cx.nested_cv(model, covb, yb, folds=folds, repeats=repeats,
                       n_permutations=n_permutations, n_jobs=n_jobs)
    seconds = time.time() - start
    final = model.fit(covb, yb)
    ps = final.predict(covs)
    published = np.isin(ids_s, PUBLISHED_SAMPLE["szeged"])
    out = {"n_bochum": len(yb), "n_szeged": len(ys), "bochum": res["metrics"]["r"],
           "bochum_p_permutation": res.get("permutation", {}).get("p"),
           "bochum_null_ci": res.get("permutation", {}).get("null_ci"),
           "szeged": interval_of_r(ys, ps), "szeged_p_analytic": analytic_p(ys, ps),
           "szeged_published_sample": interval_of_r(ys[published], ps[published]),
           "n_szeged_published_sample": int(published.sum()),
           "repeat_r": [float(np.corrcoef(p, yb)[0, 1]) for p in res["predictions"]],
           "seconds": seconds, "_result": res, "_final": final}
    p = out["bochum_p_permutation"]
    summary(f"{name}: Bochum nested {folds}-fold x{repeats}", out["bochum"],
            f"  p(perm, {n_permutations}) = {p:.4f}" if p is not None else "")
    summary(f"{name}: Bochum model -> Szeged", out["szeged"], f"  n = {len(ys)}")
    summary(f"{name}: -> Szeged, published sample", out["szeged_published_sample"],
            f"  n = {int(published.sum())}")
    return out


# ----------------------------------------------------------------------------- measurements


def peak_memory_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0


def tsv_versus_npy(cov: np.ndarray, folder: Path) -> dict:
    """Reading 41 participants' 7,503 edges: one wide TSV versus one .npy per participant."""
    edges = cx.upper_triangle(cov)
    ids = [f"sub-{i:03d}" for i in range(len(edges))]
    names = cx.edge_names([f"r{i}" for i in range(cov.shape[1])])
    table = pd.DataFrame(edges, index=pd.Index(ids, name="participant_id"), columns=names)
    tsv = folder / "edges.tsv"
    t0 = time.perf_counter()
    table.to_csv(tsv, sep="\t", float_format="%.8g")
    write_tsv = time.perf_counter() - t0
    t0 = time.perf_counter()
    back = pd.read_csv(tsv, sep="\t", index_col=0)
    read_tsv = time.perf_counter() - t0
    t0 = time.perf_counter()
    for pid, row in zip(ids, edges.astype(np.float32)):
        np.save(folder / f"{pid}.npy", row, allow_pickle=False)
    write_npy = time.perf_counter() - t0
    t0 = time.perf_counter()
    stack = np.stack([np.load(folder / f"{pid}.npy", allow_pickle=False) for pid in ids])
    read_npy = time.perf_counter() - t0
    assert np.allclose(back.to_numpy(), edges, rtol=1e-7) and np.allclose(stack, edges, atol=1e-6)
    return {"tsv_write_s": write_tsv, "tsv_read_s": read_tsv, "npy_write_s": write_npy,
            "npy_read_s": read_npy, "tsv_mb": tsv.stat().st_size / 1e6,
            "npy_mb": sum((folder / f"{p}.npy").stat().st_size for p in ids) / 1e6}


def timing(model, n_jobs, n_permutations) -> dict:
    """Nested 10-fold CV + permutations on 41 participants x 7,503 edges (GlobSig a node)."""
    from sklearn.preprocessing import StandardScaler

    pids = pd.read_csv(DATA / "rpn_bochum" / "participants.tsv", sep="\t")["participant_id"]
    series = []
    for pid in pids:
        values, fd = raw_series("bochum", pid)
        series.append(StandardScaler().fit_transform(values[~(np.nan_to_num(fd) > 0.15)]))
    cov = cx.ledoit_wolf_covariances(series)
    y = np.random.default_rng(0).normal(size=len(cov))  # timing does not depend on the values
    start, cpu = time.time(), time.process_time()
    res = cx.nested_cv(model, cov, y, folds=10, repeats=1, n_permutations=n_permutations,
                       n_jobs=n_jobs)
    wall = time.time() - start
    # CPU time of this process and its finished workers (loky workers stay alive: approximate)
    return {"participants": len(cov), "edges": int(cov.shape[1] * (cov.shape[1] - 1) / 2),
            "permutations": n_permutations, "n_jobs": n_jobs, "wall_s": wall,
            "cpu_s": res["cpu_seconds"] + time.process_time() - cpu,
            "peak_rss_mb": peak_memory_mb(), "worker_peak_rss_mb": res["peak_rss_mb"],
            "p": res["permutation"]["p"], "_cov": cov}


# ----------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--reference-only", action="store_true",
                        help="only the published pipeline's rows")
    parser.add_argument("--variants", action="store_true",
                        help="prototype the connectivity-stage differences one at a time")
    parser.add_argument("--simulator", action="store_true",
                        help="only the simulator measurements (recovery, null calibration)")
    parser.add_argument("--null-permutations", type=int, default=199,
                        help="permutations per null cohort in --simulator")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for painplast's outputs (default: a temporary folder)")
    args = parser.parse_args(argv)
    if not (DATA / "rpn_bochum").is_dir():
        raise SystemExit(f"no data at {DATA}: run from a checkout beside shared/data")
    if args.simulator:
        figures = {"benchmark": "rpn_simulator", **simulator(args),
                   "peak_rss_mb": peak_memory_mb()}
        print(json.dumps(_plain(figures)))
        return figures
    work = args.work or Path(tempfile.mkdtemp(prefix="rpn-"))
    work.mkdir(parents=True, exist_ok=True)
    figures = {"benchmark": "rpn"}

    if not args.skip_reference:
        ref = run_reference(args.n_jobs)
        figures["reference"] = {k: v for k, v in ref.items() if not k.startswith("_")}
        if args.reference_only:
            figures["peak_rss_mb"] = peak_memory_mb()
            print(json.dumps(_plain(figures)))
            return figures

    # (b) painplast as a user runs it: the documented commands, nested leave-one-out (the
    # published scheme) and the default repeated 10-fold; (c) CPM the same way
    for key, name, flags in (("painplast_loo", "ridge_loo", ["--connectome-folds", "loo"]),
                             ("painplast_10fold", "ridge_10fold", []),
                             ("cpm_loo", "cpm_loo", ["--connectome-model", "cpm",
                                                     "--connectome-folds", "loo"]),
                             ("cpm_10fold", "cpm_10fold", ["--connectome-model", "cpm"])):
        figures[key] = painplast_cli(work, name, flags, args.permutations, args.n_jobs)

    # the reference (scikit-learn) and painplast on the same 35 participants and the same
    # repeated 10-fold splits
    figures["paired_10fold"] = paired_kfold(work, args.repeats, args.n_jobs)
    # (the reference's repeats take about 2 minutes each on 2 cores)

    # the target permuted (painplast's default model, leave-one-out as the CLI row): r must stay
    # inside its null interval
    ids_b, covb, _ = painplast_data("bochum", work / "participant_bochum")
    ids_s, covs, _ = painplast_data("szeged", work / "participant_szeged")
    yb, ys = target("bochum", ids_b), target("szeged", ids_s)
    rng = np.random.default_rng(2020)
    shuffled = yb[rng.permutation(len(yb))]
    null = evaluate(cx.ConnectomeRegressor(), covb, shuffled, covs, ys, np.asarray(ids_s),
                    args.permutations, args.n_jobs, repeats=1, folds=len(yb),
                    name="painplast, target permuted (LOO)")
    perm = null["_result"]["permutation"]
    figures["permuted_target"] = {"bochum": null["bochum"], "p": perm["p"],
                                  "null_ci": perm["null_ci"], "null_mean": perm["null_mean"],
                                  "inside_null_interval": bool(
                                      perm["null_ci"][0] <= perm["observed"] <= perm["null_ci"][1])}
    print(f"target permuted: r {perm['observed']:+.3f}, null 95% [{perm['null_ci'][0]:+.2f}, "
          f"{perm['null_ci'][1]:+.2f}], p {perm['p']:.3f}", flush=True)

    if args.variants:
        figures["variants"] = variants(args)

    tim = timing(cx.ConnectomeRegressor(), args.n_jobs, args.permutations)
    figures["timing"] = {k: v for k, v in tim.items() if not k.startswith("_")}
    print(f"timing: {tim['participants']} x {tim['edges']} edges, nested 10-fold + "
          f"{tim['permutations']} permutations on {tim['n_jobs']} workers: {tim['wall_s']:.0f} s "
          f"wall, {tim['cpu_s']:.0f} s CPU (all processes), peak RSS {tim['peak_rss_mb']:.0f} MB "
          f"(main), {tim['worker_peak_rss_mb']:.0f} MB (largest worker)", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        figures["storage"] = tsv_versus_npy(tim["_cov"], Path(folder))
    st = figures["storage"]
    print(f"storage of 41 x 7,503 edges: TSV {st['tsv_mb']:.1f} MB, "
          f"write {st['tsv_write_s']:.2f} s, read {st['tsv_read_s']:.2f} s; .npy per participant "
          f"{st['npy_mb']:.1f} MB, write {st['npy_write_s']:.3f} s, "
          f"read {st['npy_read_s']:.3f} s", flush=True)
    figures["peak_rss_mb"] = peak_memory_mb()
    print(json.dumps(_plain(figures)))
    return figures


def paired_kfold(work: Path, repeats: int, n_jobs: int) -> dict:
    """Repeated 10-fold nested r of the reference pipeline (scikit-learn, as ``reference_model``)
    and of painplast's default on the same 35 participants and the same splits (``repeats``
    repeats, one r per repeat, paired). About 10 grid searches per repeat for the reference."""
    from sklearn.model_selection import cross_val_predict

    from painplast.biomarker.connectome import _outer_folds

    warnings.filterwarnings("ignore")
    ids_p, X, _, _ = reference_features("bochum")
    ids_b, covb, _ = painplast_data("bochum", work / "participant_bochum")
    order = [ids_b.index(pid) for pid in ids_p]          # the same participants, one order
    covb, y = covb[order], target("bochum", ids_p)
    splits = _outer_folds(len(y), 10, repeats, 0)        # nested_cv's splits for random_state 0
    ours = cx.nested_cv(cx.ConnectomeRegressor(), covb, y, folds=10, repeats=repeats,
                        n_permutations=0, n_jobs=n_jobs)
    r_ours = [float(np.corrcoef(p, y)[0, 1]) for p in ours["predictions"]]
    r_ref = []
    with tempfile.TemporaryDirectory(prefix="rpn-reference-cache-") as cache:
        for repeat in splits:
            predicted = cross_val_predict(reference_model(n_jobs, cache), X, y, cv=repeat)
            r_ref.append(float(np.corrcoef(predicted, y)[0, 1]))
    out = {"n": len(y), "repeats": repeats, "reference_r": r_ref, "painplast_r": r_ours,
           "reference_mean": float(np.mean(r_ref)), "painplast_mean": float(np.mean(r_ours)),
           "painplast_higher": int(np.sum(np.array(r_ours) > np.array(r_ref)))}
    print(f"repeated 10-fold ({repeats} repeats, same splits, n {len(y)}): reference mean r "
          f"{out['reference_mean']:+.3f} [{min(r_ref):+.2f}, {max(r_ref):+.2f}], painplast "
          f"{out['painplast_mean']:+.3f} [{min(r_ours):+.2f}, {max(r_ours):+.2f}]; painplast "
          f"higher in {out['painplast_higher']}/{repeats}", flush=True)
    return out


def variants(args) -> dict:
    """Each difference between the connectivity stage's defaults and the paper, one at a time,
    with the reference model (nested LOO, the RPN grid; painplast's elastic net, which equals
    scikit-learn's) and with painplast's default model (repeated 10-fold)."""
    rows = {
        "paper": {},
        "paper, stringent exclusion": {"exclusion": "stringent"},
        "scrub 0.5 mm, segments >= 5": {"fd_threshold": 0.5, "min_segment": 5},
        "no scrubbing": {"fd_threshold": None},
        "global signal dropped": {"global_signal": "drop"},
        "global signal as confound": {"global_signal": "confound"},
        "high-pass 0.01 Hz + detrend": {"high_pass": 0.01},
        "painplast exclusion (mean FD 0.5 mm)": {"exclusion": "painplast"},
        "painplast stage (all of the above)": {"fd_threshold": 0.5, "min_segment": 5,
                                               "global_signal": "drop", "high_pass": 0.01,
                                               "exclusion": "painplast"},
        "painplast stage, paper exclusion": {"fd_threshold": 0.5, "min_segment": 5,
                                             "global_signal": "drop", "high_pass": 0.01},
        "proposed stage": PROPOSED,
        "proposed stage, global signal a node": dict(PROPOSED, global_signal="node"),
    }
    rpn = cx.ConnectomeRegressor(estimator="elastic_net", k=RPN_GRID["fsel__k"],
                                 alphas=RPN_GRID["model__alpha"], l1_ratio=0.999,
                                 inner_folds=1000)
    out = {}
    for name, kwargs in rows.items():
        ids_b, series_b, _ = paper_series("bochum", **kwargs)
        ids_s, series_s, _ = paper_series("szeged", **kwargs)
        covb, covs = cx.ledoit_wolf_covariances(series_b), cx.ledoit_wolf_covariances(series_s)
        yb, ys = target("bochum", ids_b), target("szeged", ids_s)
        row = {"n_bochum": len(yb), "n_szeged": len(ys)}
        for label, model, folds, repeats in (("rpn_loo", rpn, 1000, 1),
                                             ("painplast", cx.ConnectomeRegressor(), 10,
                                              args.repeats)):
            res = evaluate(model, covb, yb, covs, ys, np.asarray(ids_s), 0, args.n_jobs,
                           repeats=repeats, folds=folds, name=f"[{name}] {label}")
            row[label] = {k: res[k] for k in ("bochum", "szeged", "szeged_published_sample")}
        out[name] = row
    return out


def simulator(args) -> dict:
    """The default model and CPM on simulated pain-ROI cohorts (the tests' generator: the
    simulator's resting-state model at ROI level): recovery of the planted component with
    effects (60 participants, seeds 0-9) and permutation p under --null (40 participants,
    20 seeds, ``--null-permutations`` each)."""
    from scipy import stats

    from painplast.simulate import SimulationParameters

    sys.path.insert(0, str(ROOT / "tests"))
    from test_biomarker_connectome import _planted, _roi_cohort

    out = {}
    for name, model in (("painplast", cx.ConnectomeRegressor()), ("cpm", cx.CPMRegressor())):
        rows = []
        for seed in range(10):
            params = SimulationParameters(n_participants=60, seed=seed)
            planted = _planted(params)
            cov, y = _roi_cohort(params)
            res = cx.nested_cv(model, cov, y, folds=10, repeats=1, n_permutations=0,
                               n_jobs=args.n_jobs, random_state=seed)
            kept = res["edges"]["selection_frequency"].to_numpy() >= 0.8
            hits = int((kept & planted).sum())
            rows.append({"seed": seed, "r": res["metrics"]["r"]["estimate"],
                         "kept": int(kept.sum()), "planted_kept": hits,
                         "precision": hits / max(int(kept.sum()), 1),
                         "recall": hits / int(planted.sum()),
                         "p_hypergeometric": float(stats.hypergeom.sf(
                             hits - 1, len(planted), planted.sum(), kept.sum()))})
        p_null, inside = [], 0
        for seed in range(20):
            params = SimulationParameters(n_participants=40, seed=500 + seed, null=True)
            cov, y = _roi_cohort(params)
            res = cx.nested_cv(model, cov, y, folds=10, n_permutations=args.null_permutations,
                               n_jobs=args.n_jobs, random_state=seed)
            perm = res["permutation"]
            p_null.append(perm["p"])
            inside += perm["null_ci"][0] <= perm["observed"] <= perm["null_ci"][1]
        frame = pd.DataFrame(rows)
        out[name] = {"recovery": rows, "mean_r": float(frame["r"].mean()),
                     "mean_precision": float(frame["precision"].mean()),
                     "mean_recall": float(frame["recall"].mean()),
                     "null_p": p_null, "null_p_below_0.05": int(np.sum(np.array(p_null) < 0.05)),
                     "null_observed_inside_95": int(inside),
                     "null_ks_p": float(stats.kstest(p_null, "uniform").pvalue)}
        print(f"simulator, {name}: 60 participants x 10 seeds, planted 29 of 276 edges: mean r "
              f"{out[name]['mean_r']:.3f}, edges kept in >= 80% of folds that are planted "
              f"{out[name]['mean_precision']:.2f}, planted edges kept "
              f"{out[name]['mean_recall']:.2f}; "
              f"--null, 20 seeds: p < 0.05 in {out[name]['null_p_below_0.05']}/20, observed r "
              f"inside the null 95% in {inside}/20, KS p {out[name]['null_ks_p']:.2f}", flush=True)
    return out


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


if __name__ == "__main__":
    main()
