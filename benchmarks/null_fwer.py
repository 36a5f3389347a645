"""Family-wise false-positive rate of a module's findings under --null, across seeds.

usage: python benchmarks/null_fwer.py --module connectivity [--seeds 20] [--participants 40]

Simulates ``--seeds`` null cohorts (no group, clinical or responder effect; site, age, noise and
motion remain) and runs one module's participant and group stages on each. A run counts as a
family-wise false positive when any findings row has ``p_corrected < 0.05`` for a contrast other
than ``age`` (age is planted in every cohort). Tasks the module does not read are simulated with
10 volumes to save time. Prints the rate with its exact binomial 95% interval; the expectation is
at most 0.05 (for 20 seeds, 0-3 runs lie within the binomial margin). The last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

TASK_OF = {"sensitization": "pain", "reorganization": "somatotopy", "modulation": "modulation",
           "connectivity": "rest", "structure": None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--module", required=True)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--participants", type=int, default=40)
    ap.add_argument("--sites", type=int, default=2)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--n-permutations", type=int, default=200)
    args = ap.parse_args(argv)
    from scipy import stats
    from painplast import engine
    from painplast.cohort import Cohort
    from painplast.config import Config
    from painplast.derivatives import Derivatives
    from painplast.simulate import SimulationParameters, simulate

    keep = TASK_OF[args.module]
    volumes = {f"volumes_{t}": 10 for t in ("pain", "somatotopy", "modulation", "rest") if t != keep}
    hits, t0 = [], time.perf_counter()
    for seed in range(args.seeds):
        work = Path(tempfile.mkdtemp())
        params = SimulationParameters(n_participants=args.participants, n_sites=args.sites, seed=1000 + seed,
                                      null=True, **volumes)
        simulate(work / "bids", params, n_jobs=args.n_jobs, progress=False)
        cohort = Cohort.from_bids(work / "bids")
        config = Config(modules=(args.module,), n_permutations=args.n_permutations, random_state=seed)
        engine.run_participant_level(cohort, config, work / "out", n_jobs=args.n_jobs, progress=False)
        engine.run_group_level(cohort, config, work / "out", progress=False)
        import pandas as pd
        findings = pd.read_csv(Derivatives(work / "out").group_dir / f"{args.module}_findings.tsv", sep="\t")
        significant = findings[(findings.p_corrected < 0.05) & (findings.contrast != "age")]
        hits.append(len(significant) > 0)
        print(f"seed {1000 + seed}: {len(findings)} tests, {len(significant)} corrected false positive(s)"
              + (f" ({', '.join(significant.feature + ' ' + significant.contrast)})" if len(significant) else ""))
    k, n = sum(hits), len(hits)
    ci = stats.binomtest(k, n).proportion_ci(0.95)
    # within the margin: k is not significantly above 5% (one-sided exact binomial, 2.5%)
    within = bool(stats.binom.sf(k - 1, n, 0.05) >= 0.025)
    print(f"{args.module}: family-wise false-positive rate {k}/{n} = {k / n:.3f} "
          f"[{ci.low:.3f}, {ci.high:.3f}] ({time.perf_counter() - t0:.0f} s)")
    print(json.dumps({"benchmark": "null_fwer", "module": args.module, "seeds": n, "participants": args.participants,
                      "runs_with_false_positive": k, "rate": round(k / n, 3),
                      "ci_low": round(ci.low, 3), "ci_high": round(ci.high, 3), "within_margin": bool(within)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
