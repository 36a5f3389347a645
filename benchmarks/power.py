"""Power of the a-priori findings tables at the simulator's default sizes, from its latent model.

usage: python benchmarks/power.py [--participants 120] [--sites 3] [--seeds 200]
                                  [--reliability-from DIR] [--effect-scale 1.0]

A full recovery run (``benchmarks/recovery.py``) simulates images and takes ~10 minutes for one
seed, so it cannot say how often a planted effect is found. This script answers that for many
seeds in seconds: for each seed it draws the cohort's participants exactly as ``simulate`` does
(:func:`painplast.simulate.latent_cohort`), degrades each noise-free feature to the reliability
that painplast's measurement reaches on simulated images (correlation of the measured feature
with ``participants_truth.tsv``; defaults below were measured at 4 mm on 120 participants, or read
from a finished recovery run with ``--reliability-from``), fills the a-priori features the
latent model leaves unplanted with independent noise, and builds each module's findings table
with the same tests, covariates and Holm family as the module's group stage. It prints, per
planted effect, the share of seeds in which it is found (right sign, Holm p < 0.05) and, per
module, the share of seeds in which every planted effect is found and the share with any false
positive; and how often each planted size lies inside the reported 95% interval (``--perfect``:
the same without measurement error, i.e. what sampling alone allows). The last line is one JSON
object.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

# correlation of painplast's measurement with the noise-free truth, by feature kind (4 mm, 120
# participants, seed 0: medians over the features of each kind in benchmarks/recovery.py --keep)
RELIABILITY = {"response": 0.95, "slope": 0.88, "index": 0.90, "ppi": 0.79, "shift_mm": 0.87,
               "asymmetry": 0.84, "coupling": 0.92, "gm": 0.99}


def _kind(feature: str) -> str:
    name = feature.split(".", 1)[1]
    if feature.startswith("connectivity."):
        return "coupling"
    if feature.startswith("structure."):
        return "gm"
    for k in ("response", "slope", "index", "ppi", "shift_mm", "asymmetry"):
        if name.endswith(k):
            return k
    raise KeyError(feature)


def module_tests() -> dict[str, list[tuple[str, str]]]:
    """Each module's findings rows, as the modules declare them (no signature configured)."""
    from painplast import plasticity

    return {name: d.a_priori() for name, d in plasticity.available().items()}


def measured_reliability(run_dir: Path) -> dict[str, float]:
    """Correlation of measured features (a finished run) with participants_truth.tsv."""
    from painplast.biomarker.features import from_derivatives

    truth = pd.read_csv(run_dir / "bids" / "derivatives" / "simulation" / "participants_truth.tsv",
                        sep="\t", index_col="participant_id")
    measured = from_derivatives(run_dir / "derivatives").data
    rel = {}
    for col in measured.columns.intersection(truth.columns):
        s, t = measured[col], truth.loc[measured.index, col]
        ok = np.isfinite(s) & np.isfinite(t)
        if ok.sum() > 10 and np.std(t[ok]) > 0:
            rel[col] = float(np.corrcoef(s[ok], t[ok])[0, 1])
    return rel


def one_seed(seed: int, args, tests, planted, rel_by_feature) -> dict:
    from painplast import contrasts
    from painplast.simulate import SimulationParameters, _cohort_latents, _participants
    from painplast.simulate.latent import truth_features

    params = _params(args, seed)
    # the same participants as simulate(params) and latent_cohort(params) give
    clin, lat, ids, _ = _cohort_latents(params)
    feats = truth_features(lat)
    feats.index = ids
    parts = _participants(clin, ids).set_index("participant_id")
    rng = np.random.default_rng([seed, 2024])
    out = {}
    for module, rows in tests.items():
        cols = {}
        for feature in dict.fromkeys(f for f, _ in rows):
            if feature in feats:
                y = feats[feature].to_numpy(float)
                r = 1.0 if args.perfect else rel_by_feature.get(feature, RELIABILITY[_kind(feature)])
                sd = np.std(y) * np.sqrt(max(1.0 / r ** 2 - 1.0, 0.0))
                cols[feature] = y + rng.normal(0, sd, len(y))
            else:
                cols[feature] = rng.normal(0, 1, len(feats))
        table = pd.DataFrame(cols, index=feats.index)
        extra = pd.DataFrame({"gm_total": feats["structure.gm_total"],
                              # the simulator's mean FD target (patients move a little more)
                              "mean_fd": clin["mean_fd_target"].to_numpy()}, index=feats.index)
        covs = {f: contrasts.module_covariates(module, f) for f in table}
        found = contrasts.findings_table(table, parts, rows, extra_covariates=covs, extra=extra)
        sig = found[found["p_corrected"] < 0.05]
        keys = {(f, c): np.sign(e) for f, c, e in zip(sig["feature"], sig["contrast"], sig["estimate"])}
        rows_by_key = found.set_index(["feature", "contrast"])
        hits, covered, fps = [], [], 0
        for eff in planted.get(module, []):
            key = (eff["feature"], eff["contrast"])
            hits.append(keys.get(key) == eff["direction"])
            true = eff["direction"] * eff["size"]
            covered.append(bool(rows_by_key.loc[key, "ci_low"] <= true <= rows_by_key.loc[key, "ci_high"]))
        planted_keys = {(e["feature"], e["contrast"]) for e in planted.get(module, [])}
        fps = sum(1 for k in keys if k not in planted_keys)
        out[module] = {"hits": hits, "covered": covered, "false_positives": fps}
    return out


def _params(args, seed: int = 0):
    from painplast.simulate import SimulationParameters

    changes = {}
    for item in args.set:
        key, value = item.split("=", 1)
        changes[key] = float(value)
    return SimulationParameters(n_participants=args.participants, n_sites=args.sites, seed=seed,
                                effect_scale=args.effect_scale, null=args.null, **changes)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--participants", type=int, default=120)
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--effect-scale", type=float, default=1.0)
    ap.add_argument("--null", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="PARAMETER=VALUE",
                    help="override a SimulationParameters field (what-if for the defaults)")
    ap.add_argument("--reliability-from", type=Path, default=None,
                    help="a recovery.py --keep folder: use its measured reliabilities")
    ap.add_argument("--perfect", action="store_true",
                    help="noise-free measurement (reliability 1): what sampling alone allows")
    args = ap.parse_args(argv)

    from painplast.simulate.truth import ground_truth

    truth = ground_truth(_params(args))
    planted: dict[str, list] = {}
    for e in truth["effects"]:
        planted.setdefault(e["module"], []).append(e)
    rel = measured_reliability(args.reliability_from) if args.reliability_from else {}
    tests = module_tests()
    results = [one_seed(s, args, tests, planted, rel) for s in range(args.seeds)]

    summary = {}
    print(f"{args.participants} participants, {args.sites} sites, {args.seeds} seeds, "
          f"effect scale {args.effect_scale}{', null' if args.null else ''}")
    for module in tests:
        effs = planted.get(module, [])
        hits = np.array([r[module]["hits"] for r in results], bool).reshape(args.seeds, len(effs))
        cover = np.array([r[module]["covered"] for r in results], bool).reshape(args.seeds, len(effs))
        fps = np.array([r[module]["false_positives"] for r in results])
        print(f"\n{module}: {len(tests[module])} rows in the Holm family")
        for j, e in enumerate(effs):
            print(f"  {e['feature']:<38} {e['contrast']:<24} size {e['size']:.2f}  "
                  f"found in {hits[:, j].mean():6.1%}  size in CI {cover[:, j].mean():6.1%}")
        all_found = float(hits.all(axis=1).mean()) if effs else None
        all_ok = float((hits & cover).all(axis=1).mean()) if effs else None
        print(f"  every planted effect found: {all_found if all_found is None else f'{all_found:.1%}'}; "
              f"found with its size in the CI: {all_ok if all_ok is None else f'{all_ok:.1%}'}; "
              f"runs with a false positive: {np.mean(fps > 0):.1%}")
        summary[module] = {"rows": len(tests[module]), "all_found": all_found,
                           "all_found_and_covered": all_ok,
                           "per_effect": {f"{e['feature']}|{e['contrast']}": round(float(hits[:, j].mean()), 3)
                                          for j, e in enumerate(effs)},
                           "coverage": {f"{e['feature']}|{e['contrast']}": round(float(cover[:, j].mean()), 3)
                                        for j, e in enumerate(effs)},
                           "fwer": round(float(np.mean(fps > 0)), 3)}
        per_seed_ok = (hits & cover).all(axis=1) & (fps == 0) if effs else fps == 0
        joint = per_seed_ok if module == next(iter(tests)) else joint & per_seed_ok
    print(f"\nevery module at once (all planted effects found with sizes in CIs, no false positive): "
          f"{joint.mean():.1%}")
    task = [m for m in ("sensitization", "reorganization", "modulation") if m in summary]
    issue3 = np.ones(args.seeds, bool)
    for m in task:
        effs = planted.get(m, [])
        h = np.array([r[m]["hits"] for r in results], bool).reshape(args.seeds, len(effs))
        c = np.array([r[m]["covered"] for r in results], bool).reshape(args.seeds, len(effs))
        issue3 &= (h & c).all(axis=1)
    print(f"the three task modules at once (found, sizes in CIs): {issue3.mean():.1%}")
    summary["task_modules_all_found_and_covered"] = round(float(issue3.mean()), 3)
    print(json.dumps({"benchmark": "power", "participants": args.participants, "sites": args.sites,
                      "seeds": args.seeds, "effect_scale": args.effect_scale, "null": args.null,
                      "modules": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
