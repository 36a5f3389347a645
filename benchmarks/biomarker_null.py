"""The biomarker under --null: permutation p-values and AUC intervals across seeds.

usage: OMP_NUM_THREADS=1 python benchmarks/biomarker_null.py [--seeds 20] [--participants 120]
                                            [--permutations 100] [--repeats 5] [--n-jobs 2]
                                            [--start 2000] [--no-motion]
                                            [--noise-features 0] [--confounds-keep-target]

For each seed, a null cohort (no group, clinical or responder effect; site, age, noise and the
patients' greater head motion remain) is drawn from the simulator's latent model
(:func:`painplast.simulate.latent_cohort`: the noise-free per-participant features of
``participants_truth.tsv``, without images, with each participant's mean framewise displacement
as the motion confound; ``--no-motion`` leaves it out), and the
diagnosis biomarker is validated exactly as ``painplast run --biomarker diagnosis`` does (5 x 5
nested cross-validation with in-fold ComBat, confound regression, screening and penalty choice;
a permutation test of the whole pipeline; bootstrap 95% interval of the AUC). Acceptance (issue
6): at most 3 of 20 permutation p-values below 0.05, and the AUC interval covering 0.5 in at
least 18 of 20. ``--permutations 0`` checks the intervals only (the p-values do not depend on
them; same cohorts and folds). ``--noise-features N`` adds N pure-noise BOLD features
(``connectivity.noise*``); ``--confounds-keep-target`` fits the confound regression with the
target as a covariate (the option the model leaves off: with motion differing between groups
it lifts the null AUC). The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--participants", type=int, default=120)
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--permutations", type=int, default=100)
    ap.add_argument("--target", default="diagnosis")
    ap.add_argument("--repeats", type=int, default=5, help="repeats of the outer CV (CLI default 5)")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--start", type=int, default=2000, help="first seed (the issue's: 2000)")
    ap.add_argument("--no-motion", action="store_true",
                    help="leave out the motion confound (mean_fd), which differs between groups")
    ap.add_argument("--noise-features", type=int, default=0,
                    help="add this many pure-noise BOLD features")
    ap.add_argument("--confounds-keep-target", action="store_true",
                    help="estimate confound effects with the target as a covariate")
    args = ap.parse_args(argv)

    from painplast.biomarker.features import from_frame
    from painplast.biomarker.model import BiomarkerModel, design, resolve_target
    from painplast.biomarker.validate import validate
    from painplast.simulate import SimulationParameters, latent_cohort

    p_values, covered, aucs = [], [], []
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        params = SimulationParameters(n_participants=args.participants, n_sites=args.sites,
                                      seed=args.start + seed, null=True)
        feats, parts = latent_cohort(params, motion=not args.no_motion)
        if args.noise_features:
            noise = np.random.default_rng([args.start + seed, 17]).normal(
                size=(len(feats), args.noise_features))
            feats = feats.join(pd.DataFrame(noise, index=feats.index, columns=[
                f"connectivity.noise{j}" for j in range(args.noise_features)]))
        X = design(from_frame(feats), parts)
        target = resolve_target(parts, args.target)
        model = BiomarkerModel(inner_folds=5, random_state=seed,
                               confounds_keep_target=args.confounds_keep_target)
        result = validate(X, target, model, folds=5, inner_folds=5, repeats=args.repeats,
                          n_permutations=args.permutations, n_bootstrap=1000, site_out=False,
                          learning=False, random_state=seed, n_jobs=args.n_jobs)
        auc = result["metrics"]["auc"]
        p_values.append(result["permutation_p"])
        covered.append(bool(auc["ci_low"] <= 0.5 <= auc["ci_high"]))
        aucs.append(auc["estimate"])
        p_text = "not run" if result["permutation_p"] is None else f"{result['permutation_p']:.3f}"
        print(f"seed {args.start + seed}: AUC {auc['estimate']:.3f} [{auc['ci_low']:.3f}, "
              f"{auc['ci_high']:.3f}], permutation p {p_text} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    if args.permutations == 0:  # intervals only
        p_values = [1.0] * len(p_values)
    below = int(sum(p < 0.05 for p in p_values))
    ok = below <= 3 and sum(covered) >= 18 * args.seeds / 20
    print(f"{args.target} under --null, {args.seeds} seeds x {args.participants} participants: "
          f"{below} permutation p < 0.05 (target <= 3), AUC interval covers 0.5 in "
          f"{sum(covered)} (target >= 18); mean AUC {np.mean(aucs):.3f}")
    print(json.dumps({"benchmark": "biomarker_null", "target": args.target, "seeds": args.seeds,
                      "start": args.start, "participants": args.participants,
                      "motion": not args.no_motion, "noise_features": args.noise_features,
                      "confounds_keep_target": args.confounds_keep_target,
                      "permutations": args.permutations,
                      "p_below_0.05": below, "ci_covers_0.5": int(sum(covered)),
                      "mean_auc": round(float(np.mean(aucs)), 4),
                      "p_values": [round(p, 4) for p in p_values], "meets_targets": bool(ok)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
