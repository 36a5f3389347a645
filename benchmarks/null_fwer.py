"""Family-wise false-positive rate of a module's findings under --null, across seeds.

usage: python benchmarks/null_fwer.py --module connectivity[,modulation,...] [--seeds 20]
                                     [--participants 40]

Simulates ``--seeds`` null cohorts (no group, clinical or responder effect; site, age, noise and
motion remain) and runs the modules' participant and group stages on each (several modules share
each simulated cohort; each module's rate is counted on its own). A run counts as a
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

    import shutil

    import pandas as pd

    modules = tuple(args.module.split(","))
    from painplast import plasticity
    keep = {plasticity.get(m).task for m in modules}       # the tasks the modules declare they read
    volumes = {f"volumes_{t}": 10 for t in ("pain", "somatotopy", "modulation", "rest") if t not in keep}
    hits, t0 = {m: [] for m in modules}, time.perf_counter()
    for seed in range(args.seeds):
        work = Path(tempfile.mkdtemp())
        params = SimulationParameters(n_participants=args.participants, n_sites=args.sites, seed=1000 + seed,
                                      null=True, **volumes)
        simulate(work / "bids", params, n_jobs=args.n_jobs, progress=False)
        cohort = Cohort.from_bids(work / "bids")
        config = Config(modules=modules, n_permutations=args.n_permutations, random_state=seed)
        engine.run_participant_level(cohort, config, work / "out", n_jobs=args.n_jobs, progress=False)
        engine.run_group_level(cohort, config, work / "out", progress=False)
        for module in modules:
            findings = pd.read_csv(Derivatives(work / "out").group_dir / f"{module}_findings.tsv", sep="\t")
            significant = findings[(findings.p_corrected < 0.05) & (findings.contrast != "age")]
            hits[module].append(len(significant) > 0)
            print(f"seed {1000 + seed} {module}: {len(findings)} tests, {len(significant)} corrected false "
                  "positive(s)" + (f" ({', '.join(significant.feature + ' ' + significant.contrast)})"
                                   if len(significant) else ""), flush=True)
        shutil.rmtree(work, ignore_errors=True)
    summary = {}
    for module in modules:
        k, n = sum(hits[module]), len(hits[module])
        ci = stats.binomtest(k, n).proportion_ci(0.95)
        # within the margin: k is not significantly above 5% (one-sided exact binomial, 2.5%)
        within = bool(stats.binom.sf(k - 1, n, 0.05) >= 0.025)
        print(f"{module}: family-wise false-positive rate {k}/{n} = {k / n:.3f} [{ci.low:.3f}, {ci.high:.3f}]")
        summary[module] = {"runs_with_false_positive": k, "rate": round(k / n, 3), "ci_low": round(ci.low, 3),
                           "ci_high": round(ci.high, 3), "within_margin": within}
    print(f"{time.perf_counter() - t0:.0f} s")
    out = {"benchmark": "null_fwer", "seeds": args.seeds, "participants": args.participants}
    if len(modules) == 1:
        out.update({"module": modules[0], **summary[modules[0]]})
    else:
        out.update({"modules": summary, "within_margin": all(v["within_margin"] for v in summary.values())})
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
