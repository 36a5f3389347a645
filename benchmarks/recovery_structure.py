"""Recovery of planted gray-matter effects by painplast.plasticity.structure (issue 5).

Two parts:

1. **Recovery** on a simulated cohort at the literature's default effect sizes (120 participants,
   3 sites, 4 mm): runs the structure module's subject and group stages, writes
   ``OUT/group/structure_findings.tsv`` and ``structure_clusters.tsv``, prints
   ``check_recovery.py``'s verdicts, the nearest significant cluster peak to every planted
   sphere (ground truth ``center_mni`` and ``centers_mni``), and the reliability (Pearson r of each
   measured ``gm_<region>`` / ``gm_total`` with ``participants_truth.tsv``).
2. **Null**: the family-wise false-positive rate of the voxel-wise patient-control test (any voxel
   with TFCE FWE p < 0.05) across ``--null-seeds`` null cohorts. Only the GM maps matter to this
   module, so the null cohorts are simulated with 10 volumes per functional run (the GM maps do
   not depend on the run lengths: same distribution, far less time).

usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/recovery_structure.py [--out DIR]
        [--participants 120] [--sites 3] [--seed 2024] [--n-permutations 1000]
        [--null-seeds 20] [--null-participants 40] [--null-permutations 200] [--skip-null]
        [--skip-recovery] [--n-jobs 2]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
import pandas as pd
from scipy import stats

from painplast import atlas
from painplast.cohort import Cohort
from painplast.config import Config
from painplast.derivatives import Derivatives
from painplast.plasticity import structure
from painplast.simulate import SimulationParameters, simulate

CHECK = Path(__file__).resolve().parents[2] / "shared" / "tools" / "check_recovery.py"


def _subject_results(cohort: Cohort, config: Config, n_jobs: int):
    if n_jobs > 1:
        from joblib import Parallel, delayed
        return Parallel(n_jobs=n_jobs)(delayed(structure.subject)(s, config) for s in cohort)
    return [structure.subject(s, config) for s in cohort]


def _ensure(path: Path, params: SimulationParameters, n_jobs: int) -> Path:
    if not (path / "derivatives" / "simulation" / "ground_truth.json").exists():
        simulate(path, params, n_jobs=n_jobs, progress=False)
    return path


def recovery(args) -> int:
    out = Path(args.out)
    params = SimulationParameters(n_participants=args.participants, n_sites=args.sites, seed=args.seed)
    t0 = time.perf_counter()
    root = _ensure(out / f"cohort-n{args.participants}-s{args.sites}-seed{args.seed}", params, args.n_jobs)
    t_sim = time.perf_counter() - t0
    cohort = Cohort.from_bids(root)
    config = Config(modules=("structure",), n_permutations=args.n_permutations, random_state=0)
    t0 = time.perf_counter()
    results = _subject_results(cohort, config, args.n_jobs)
    t_subject = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = structure.group(results, cohort, config)
    t_group = time.perf_counter() - t0
    deriv_dir = out / "derivatives-recovery"
    Derivatives(deriv_dir).write_group(result, {"config": config.to_dict()})
    print(f"timings: simulate {t_sim:.0f} s (0 if cached), subject stage {t_subject:.1f} s "
          f"({len(results)} participants, n_jobs={args.n_jobs}), group stage {t_group:.1f} s "
          f"({args.n_permutations} permutations per contrast)")
    print("\nvoxel-wise summary:")
    print(result.tables["voxelwise"].to_string(index=False))

    truth_path = root / "derivatives" / "simulation" / "ground_truth.json"
    print(f"\n$ check_recovery.py {truth_path} {deriv_dir} --modules=structure")
    check = subprocess.run([sys.executable, str(CHECK), str(truth_path), str(deriv_dir), "--modules=structure"],
                           capture_output=True, text=True)
    print(check.stdout + check.stderr)

    truth = json.loads(truth_path.read_text())
    clusters = result.clusters
    print("planted voxel-wise effects: nearest significant cluster peak of the same sign")
    print(f"{'feature':30} {'contrast':16} {'to center_mni':>14} {'to any sphere':>14} {'p_fwe':>7}  peak")
    for effect in truth["effects"]:
        if effect["module"] != "structure" or not effect.get("centers_mni"):
            continue
        rows = clusters[(clusters.contrast == effect["contrast"]) & (clusters.p_fwe < config.alpha)
                        & (np.sign(clusters.peak_stat) == effect["direction"])]
        if not len(rows):
            print(f"{effect['feature']:30} {effect['contrast']:16} {'none':>14}")
            continue
        peaks = rows[["peak_x", "peak_y", "peak_z"]].to_numpy(float)
        d_first = np.linalg.norm(peaks - np.asarray(effect["center_mni"]), axis=1)
        d_any = np.min([np.linalg.norm(peaks - np.asarray(c), axis=1) for c in effect["centers_mni"]], axis=0)
        j = int(np.argmin(d_any))
        print(f"{effect['feature']:30} {effect['contrast']:16} {d_first.min():14.1f} {d_any[j]:14.1f} "
              f"{rows.p_fwe.iloc[j]:7.4f}  ({peaks[j][0]:.0f}, {peaks[j][1]:.0f}, {peaks[j][2]:.0f}) "
              f"t={rows.peak_stat.iloc[j]:.2f} {rows.label.iloc[j]}")
    age = result.tables["voxelwise"].set_index("contrast").loc["age"] if "age" in set(result.tables["voxelwise"].contrast) else None
    if age is not None:
        print(f"voxel-wise age: {age.n_significant_voxels} of {age.n_voxels} voxels with TFCE FWE p < "
              f"{config.alpha}, t from {age.min_t:.2f} to {age.max_t:.2f}")

    truth_table = pd.read_csv(root / "derivatives" / "simulation" / "participants_truth.tsv", sep="\t",
                              index_col="participant_id")
    features = result.tables["features"].set_index("participant_id")
    print("\nreliability: Pearson r of measured features with participants_truth.tsv")
    for column in features.columns:
        if column in truth_table:
            r = np.corrcoef(features[column], truth_table.loc[features.index, column])[0, 1]
            print(f"  {column:32} r = {r:.4f}")
    return check.returncode


def null_fwe(args) -> None:
    out = Path(args.out) / "null"
    hits, minima, times = [], [], []
    regional_fp = 0
    for k in range(args.null_seeds):
        params = SimulationParameters(n_participants=args.null_participants, n_sites=2, seed=5000 + k, null=True,
                                      volumes_pain=10, volumes_somatotopy=10, volumes_modulation=10,
                                      volumes_rest=10)
        t0 = time.perf_counter()
        root = _ensure(out / f"seed-{5000 + k}", params, args.n_jobs)
        cohort = Cohort.from_bids(root, validate=False)
        config = Config(modules=("structure",), n_permutations=args.null_permutations, random_state=k,
                        options={"structure": {"voxelwise_contrasts": ["patient-control"]}})
        results = _subject_results(cohort, config, args.n_jobs)
        result = structure.group(results, cohort, config)
        summary = result.tables["voxelwise"].set_index("contrast").loc["patient-control"]
        hit = bool(summary.min_p_fwe_tfce < config.alpha)
        findings = result.findings
        fp = findings[(findings.p_corrected < config.alpha) & (findings.contrast != "age")]
        regional_fp += int(len(fp) > 0)
        hits.append(hit)
        minima.append(float(summary.min_p_fwe_tfce))
        times.append(time.perf_counter() - t0)
        print(f"null seed {5000 + k}: min TFCE FWE p = {summary.min_p_fwe_tfce:.3f} "
              f"({'false positive' if hit else 'clean'}), regional false positives {len(fp)}, "
              f"{times[-1]:.0f} s", flush=True)
    n, x = len(hits), int(np.sum(hits))
    lo, hi = stats.binomtest(x, n).proportion_ci(0.95) if n else (math.nan, math.nan)
    upper = int(stats.binom.ppf(0.975, n, 0.05))
    print(f"\nnull: voxel-wise patient-control FWE false-positive rate {x}/{n} = {x / max(n, 1):.3f} "
          f"(95% CI {lo:.3f}-{hi:.3f}); binomial 95% range under 0.05: 0-{upper} of {n}; "
          f"cohorts with any regional false positive (Holm, non-age rows): {regional_fp}/{n}; "
          f"{np.mean(times):.0f} s per cohort")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="/tmp/painplast-bench-structure")
    parser.add_argument("--participants", type=int, default=120)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--n-permutations", type=int, default=1000)
    parser.add_argument("--null-seeds", type=int, default=20)
    parser.add_argument("--null-participants", type=int, default=40)
    parser.add_argument("--null-permutations", type=int, default=200)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--skip-null", action="store_true")
    parser.add_argument("--skip-recovery", action="store_true")
    args = parser.parse_args(argv)
    status = 0
    if not args.skip_recovery:
        status = recovery(args)
    if not args.skip_null:
        null_fwe(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
