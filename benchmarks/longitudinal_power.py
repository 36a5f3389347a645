"""Power of the longitudinal contrasts at the simulator's default sizes, from its latent model.

usage: python benchmarks/longitudinal_power.py [--participants 120] [--sites 3] [--seeds 200] [--first-seed 0]
                                               [--set PARAMETER=VALUE ...] [--null]

What `benchmarks/power.py` does for the cross-sectional findings, for the longitudinal design:
for each seed it draws the cohort's participants and both sessions' noise-free features exactly
as ``simulate(design="longitudinal")`` does, puts them on the measured scale with the calibrated
measurement model (painplast.simulate.measurement; the a-priori features the latent model does
not have are independent noise), and tests, per module, every a-priori feature with the four
longitudinal contrasts (``time``: one-sample t of the change in treated chronic patients;
``group:time``: change, chronic minus controls, adjusted for age, sex, site;
``change~pain_relief``: partial r within chronic patients; ``persisting-recovering``: baseline,
within subacute patients, with the module's covariates), Holm-corrected over the module's
longitudinal rows (an assumption: the group statistics may choose a different family). It
prints per planted effect the share of seeds in which it is found (right sign, Holm p < 0.05)
and per module the family-wise false-positive rate. The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))

CONTRASTS = ("time", "group:time", "change~pain_relief", "persisting-recovering")


def _p_value(contrast, y, parts, coded, extra_covs, extra):
    """(estimate, p) of one longitudinal contrast with the simulator's estimands."""
    from painplast.simulate import estimands

    spec = estimands.ESTIMANDS[contrast]
    keep = coded.members(spec.who) & np.isfinite(y)
    if contrast == "time":
        t, p = stats.ttest_1samp(y[keep], 0.0)
        return estimands.paired_dz(y[keep]), p
    est = estimands.size(contrast, y, coded, extra_covs, extra)
    x = coded.regressor(spec.column)
    keep &= np.isfinite(x)
    cov = estimands.covariates(coded, tuple(spec.covariates) + tuple(extra_covs), extra)[keep]
    D = np.column_stack([np.ones(int(keep.sum())), x[keep], cov])
    pinv = np.linalg.pinv(D)
    beta = pinv @ y[keep]
    resid = y[keep] - D @ beta
    df = len(resid) - np.linalg.matrix_rank(D)
    t = beta[1] / np.sqrt(resid @ resid / df * (pinv @ pinv.T)[1, 1])
    return est, 2 * stats.t.sf(abs(t), df)


def one_seed(seed, args, tests, planted):
    from painplast.simulate import _cohort, _participants, estimands
    from painplast.simulate.latent import site_effects, truth_features
    from painplast.simulate.measurement import model_for
    from painplast.stats.effects import holm

    params = _params(args, seed)
    clin, lats, ids, _ = _cohort(params)
    model = model_for(params)
    sites = site_effects(params)
    rng = np.random.default_rng([seed, 77])
    scales = []
    for k, lat in enumerate(lats):
        feats = truth_features(lat)
        scales.append(model.measure(feats, clin["site_index"].to_numpy(), sites, rng) if model else feats)
    parts = _participants(clin, ids)
    parts = parts.fillna({"stage": "n/a", "outcome": "n/a", "treatment_response": "n/a"})
    parts["mean_fd"] = clin["mean_fd_target"].to_numpy()
    coded = estimands.Coded(parts)
    out = {}
    for module, features in tests.items():
        rows = []
        for feature in features:
            if feature in scales[0]:
                first, second = scales[0][feature].to_numpy(), scales[1][feature].to_numpy()
            else:  # unplanted a-priori feature: noise with test-retest ICC 0.6
                trait = rng.normal(size=len(parts))
                first, second = (trait + 0.8 * rng.normal(size=len(parts)) for _ in range(2))
            extra = {"gm_total": scales[0]["structure.gm_total"].to_numpy()}
            for contrast in CONTRASTS:
                if contrast == "persisting-recovering":
                    covs = estimands.module_covariates(module, feature, contrast)
                    est, p = _p_value(contrast, first, parts, coded, covs, extra)
                else:
                    est, p = _p_value(contrast, second - first, parts, coded, (), None)
                rows.append((feature, contrast, est, p))
        table = pd.DataFrame(rows, columns=["feature", "contrast", "estimate", "p"])
        table["p_corrected"] = holm(table["p"].to_numpy())
        sig = {(r.feature, r.contrast): np.sign(r.estimate) for r in table.itertuples() if r.p_corrected < 0.05}
        effs = planted.get(module, [])
        hits = [sig.get((e["feature"], e["contrast"])) == e["direction"] for e in effs]
        keys = {(e["feature"], e["contrast"]) for e in effs}
        out[module] = {"hits": hits, "fps": sum(1 for k in sig if k not in keys)}
    return out


def _params(args, seed=0):
    from painplast.simulate import SimulationParameters

    changes = {}
    for item in args.set:
        key, value = item.split("=", 1)
        changes[key] = type(getattr(SimulationParameters(), key))(float(value))
    return SimulationParameters(n_participants=args.participants, n_sites=args.sites, seed=seed,
                                design="longitudinal", null=args.null, **changes)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--participants", type=int, default=120)
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--null", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="PARAMETER=VALUE")
    args = ap.parse_args(argv)

    from power import module_tests

    from painplast.simulate.truth import ground_truth

    truth = ground_truth(_params(args))
    planted: dict[str, list] = {}
    for e in truth["effects"]:
        if e["contrast"] in CONTRASTS:
            planted.setdefault(e["module"], []).append(e)
    tests = {m: list(dict.fromkeys(f for f, _ in rows)) for m, rows in module_tests().items()}
    results = [one_seed(s, args, tests, planted) for s in range(args.first_seed, args.first_seed + args.seeds)]
    summary = {}
    print(f"{args.participants} participants, {args.sites} sites, {args.seeds} seeds, longitudinal"
          f"{', null' if args.null else ''}; measurement: {truth['measurement'] and truth['measurement']['calibration']}")
    for module in tests:
        effs = planted.get(module, [])
        hits = np.array([r[module]["hits"] for r in results], bool).reshape(args.seeds, len(effs))
        fps = np.array([r[module]["fps"] for r in results])
        print(f"\n{module}: {len(tests[module]) * len(CONTRASTS)} rows in the Holm family")
        for j, e in enumerate(effs):
            print(f"  {e['feature']:36} {e['contrast']:22} size {e['size']:.2f} (latent {e['size_latent']:.2f})"
                  f"  found in {hits[:, j].mean():6.1%}")
        print(f"  every planted effect found: {hits.all(axis=1).mean():.1%}; FWER {np.mean(fps > 0):.1%}")
        summary[module] = {"all_found": round(float(hits.all(axis=1).mean()), 3) if effs else None,
                           "min_found": round(float(hits.mean(axis=0).min()), 3) if effs else None,
                           "fwer": round(float(np.mean(fps > 0)), 3)}
    print(json.dumps({"benchmark": "longitudinal_power", "participants": args.participants,
                      "sites": args.sites, "seeds": args.seeds, "null": args.null, "modules": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
