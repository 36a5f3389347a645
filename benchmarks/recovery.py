"""Recovery of planted effects at default sizes, and false positives under --null.

usage: python benchmarks/recovery.py [--participants 120] [--sites 3] [--seed 0] [--null]
                                     [--modules ...] [--n-jobs 2] [--keep DIR]
                                     [--biomarker diagnosis,treatment]

Simulates a cohort, runs painplast's participant and group levels, and joins the findings with
the simulator's ground truth through ../shared/tools/check_recovery.py, module by module. Prints
found/planted per module, false positives, and whether each planted size lies inside the
reported 95% interval. With ``--biomarker``, builds those biomarkers from the run's features
(5 x 5 nested CV repeated twice, 100 permutations, leave-site-out) and prints the
cross-validated and leave-site-out AUC beside the ground truth's best AUC (acceptance: within
0.05). The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
CHECK = HERE.parents[1] / "shared" / "tools" / "check_recovery.py"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--participants", type=int, default=120)
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--null", action="store_true")
    ap.add_argument("--modules", default=None)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--n-permutations", type=int, default=1000)
    ap.add_argument("--biomarker", default="", help="comma-separated targets, e.g. diagnosis,treatment")
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (reused if it exists)")
    args = ap.parse_args(argv)

    from painplast import engine, plasticity
    from painplast.cohort import Cohort
    from painplast.config import MODULES, Config
    from painplast.simulate import SimulationParameters, simulate

    work = args.keep or Path(tempfile.mkdtemp())
    bids, out = work / "bids", work / "derivatives"
    t0 = time.perf_counter()
    if not (bids / "participants.tsv").exists():
        simulate(bids, SimulationParameters(n_participants=args.participants, n_sites=args.sites,
                                            seed=args.seed, null=args.null),
                 n_jobs=args.n_jobs, progress=False)
    t_sim = time.perf_counter() - t0
    modules = tuple(args.modules.split(",")) if args.modules else tuple(m for m in MODULES if plasticity.load(m))
    config = Config(modules=modules, n_permutations=args.n_permutations, random_state=args.seed)
    cohort = Cohort.from_bids(bids)
    engine.run_participant_level(cohort, config, out, n_jobs=args.n_jobs, progress=False)
    engine.run_group_level(cohort, config, out, progress=False)
    t_run = time.perf_counter() - t0 - t_sim

    truth_path = bids / "derivatives" / "simulation" / "ground_truth.json"
    truth = json.loads(truth_path.read_text())
    summary = {"benchmark": "recovery", "participants": args.participants, "sites": args.sites,
               "seed": args.seed, "null": args.null, "simulate_s": round(t_sim, 1), "run_s": round(t_run, 1),
               "modules": {}}
    for module in modules:
        proc = subprocess.run([sys.executable, str(CHECK), str(truth_path), str(out), f"--modules={module}"],
                              capture_output=True, text=True)
        print(f"== {module}")
        print(proc.stdout.rstrip())
        last = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
        covered = planted = 0
        path = out / "group" / f"{module}_findings.tsv"
        if path.exists():
            findings = pd.read_csv(path, sep="\t")
            for e in truth["effects"]:
                if e["module"] != module:
                    continue
                row = findings[(findings.feature == e["feature"]) & (findings.contrast == e["contrast"])]
                planted += 1
                if len(row):
                    true = e["direction"] * e["size"]
                    covered += bool(row.ci_low.iloc[0] <= true <= row.ci_high.iloc[0])
        last["size_in_ci"] = covered
        if module == "connectivity":
            last["nbs"] = _nbs_overlap(out / "group" / "connectivity_nbs.tsv", truth)
            print(f"NBS: {last['nbs']}")
        summary["modules"][module] = last
    for target in filter(None, args.biomarker.split(",")):
        from painplast.cli import _biomarker
        t0 = time.perf_counter()
        engine.run_biomarker(cohort, config, out, target, force=True, runner=lambda c, k, o, t: _biomarker(
            c, k, o, t, repeats=2, n_permutations=100, n_bootstrap=1000, learning=False, n_jobs=args.n_jobs))
        res = json.loads((out / "group" / f"biomarker_{target}.json").read_text())
        auc = res["metrics"]["auc"]
        site_auc = (res.get("leave_site_out_summary") or {}).get("auc")
        best = truth["best_auc"][target]
        print(f"== biomarker {target}: {res['n']} participants, {res['n_features']} features; "
              f"CV AUC {auc['estimate']:.3f} [{auc['ci_low']:.3f}, {auc['ci_high']:.3f}], "
              f"leave-site-out AUC {site_auc if site_auc is None else round(site_auc, 3)}, "
              f"best AUC {best:.3f}; permutation p {res['permutation_p']} "
              f"({time.perf_counter() - t0:.0f} s)")
        summary.setdefault("biomarkers", {})[target] = {
            "auc": round(auc["estimate"], 4), "ci_low": round(auc["ci_low"], 4),
            "ci_high": round(auc["ci_high"], 4), "leave_site_out_auc": site_auc, "best_auc": best,
            "within_0.05": bool(best - auc["estimate"] <= 0.05 and site_auc is not None
                                and best - site_auc <= 0.05),
            "permutation_p": res["permutation_p"]}
    print(json.dumps(summary))
    return 0


def _nbs_overlap(path: Path, truth: dict) -> dict:
    """The planted NBS component against the significant components found (edges, nodes)."""
    planted = truth.get("connectivity_component") or {}
    edges = {frozenset(e) for e in planted.get("edges", [])}
    if not path.exists() or not edges:
        return {"planted_edges": len(edges), "found": False}
    table = pd.read_csv(path, sep="\t")
    table = table[(table.contrast == planted.get("contrast", "patient-control")) & (table.p_fwe < 0.05)]
    found = {frozenset(e.split("-")) for cell in table.edges.dropna() for e in cell.split(";")}
    hit = edges & found
    return {"planted_edges": len(edges), "component_edges": len(found), "planted_in_component": len(hit),
            "component_edges_planted": round(len(hit) / len(found), 3) if found else None,
            "p_fwe": float(table.p_fwe.min()) if len(table) else None, "found": bool(hit)}


if __name__ == "__main__":
    sys.exit(main())
