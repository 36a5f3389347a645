"""Benchmark: nested CV with in-fold ComBat on 200 participants x 35,000 connectivity edges.

Times one fit of the in-fold ComBat step (painplast.stats.harmonize via ComBatTransformer)
against neuroHarmonize's harmonizationLearn on the same training fold, then the whole
5 x 5 nested cross-validation (BiomarkerModel: ComBat, confound regression, scaling, logistic
regression with 6 penalties, penalty path per inner fold) on 2 cores.

Run: OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/biomarker.py
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd


def make(n=200, p=35_000, seed=0):
    rng = np.random.default_rng(seed)
    site = np.array([f"site{i % 4 + 1}" for i in range(n)])
    group = np.where(rng.random(n) < 0.5, "patient", "control")
    age = rng.uniform(20, 70, n)
    sex = (rng.random(n) < 0.5).astype(float)
    site_index = np.unique(site, return_inverse=True)[1]
    shift = rng.normal(0, 0.3, (4, p))[site_index]
    scale = rng.uniform(0.8, 1.25, (4, p))[site_index]
    Y = 0.3 + shift + scale * rng.normal(0, 0.25, (n, p))
    Y[:, :200] += 0.08 * (group == "patient")[:, None]
    X = pd.DataFrame(Y, columns=[f"connectivity.edge{i}" for i in range(p)],
                     index=[f"sub-{i:03d}" for i in range(n)])
    X["site"], X["age"], X["sex"] = site, age, sex
    return X, group


def main():
    from painplast.biomarker.combat import ComBatTransformer
    from painplast.biomarker.model import BiomarkerModel
    from painplast.biomarker.validate import cross_validate, metrics

    X, y = make()
    train = X.iloc[:160]
    t = time.perf_counter()
    ComBatTransformer(covariates=("age", "sex")).fit_transform(train)
    ours = time.perf_counter() - t
    try:
        from neuroHarmonize import harmonizationLearn
        covars = pd.DataFrame({"SITE": train["site"].to_numpy(), "age": train["age"].to_numpy(),
                               "sex": train["sex"].to_numpy()})
        features = train.drop(columns=["site", "age", "sex"]).to_numpy()
        t = time.perf_counter()
        harmonizationLearn(features, covars)
        theirs = time.perf_counter() - t
    except ImportError:
        theirs = float("nan")
    print(f"ComBat fit+apply, 160 x 35,000: painplast {ours:.2f} s, neuroHarmonize {theirs:.2f} s")
    t = time.perf_counter()
    cv = cross_validate(BiomarkerModel(inner_folds=5), X, y, folds=5, repeats=1, n_jobs=2)
    total = time.perf_counter() - t
    auc = metrics(y, cv, n_bootstrap=500)["auc"]
    print(f"5 x 5 nested CV with in-fold ComBat, 200 x 35,000, 2 jobs: {total:.1f} s "
          f"(AUC {auc['estimate']:.3f} [{auc['ci_low']:.3f}, {auc['ci_high']:.3f}])")


if __name__ == "__main__":
    main()
