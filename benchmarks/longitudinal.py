"""Recovery of the planted longitudinal effects by painplast's longitudinal group stage.

usage: python benchmarks/longitudinal.py [--seeds 10] [--first-seed 0] [--participants 120]
                                         [--sites 3] [--null] [--level features|images]
                                         [--n-jobs 2] [--work DIR] [--biomarker]

Acceptance of issue 16: on a simulated longitudinal cohort (default sizes, 120 participants, 3
sites) every planted longitudinal effect is found with the right sign at corrected p < 0.05 in
at least 80% of 10 seeds; under ``--null`` (20 seeds) the family-wise false-positive rate per
module stays within the binomial margin of 0.05; the planted ICC lies inside the reported 95%
interval of ICC(3,1) for at least 90% of features across seeds.

Two levels:

* ``--level features`` (default): each seed's participants and both sessions' noise-free
  features are drawn exactly as ``simulate(design="longitudinal")`` draws them and put on the
  measured scale with the simulator's calibrated measurement model
  (painplast.simulate.measurement; a-priori features the latent model lacks are independent
  noise with test-retest ICC 0.6). Those features go through painplast's own group stages as
  the engine calls them: ``plasticity._group.run`` on the baseline session (the cross-sectional
  rows), then ``plasticity._longitudinal.extend`` (the longitudinal rows; Holm over the whole
  table). No image is written, so this measures the statistics, not the image measurement.
* ``--level images``: ``painplast simulate --design longitudinal``, then ``painplast run``
  participant and group levels, per seed (tens of minutes per seed on a shared machine).

Both count, per planted effect of the longitudinal contrasts, the seeds in which its findings
row has the planted sign and ``p_corrected < 0.05``, per module the seeds with any significant
unplanted row (the family-wise false-positive rate; with ``--null`` nothing is planted but the
``age`` effect on total gray matter), and the ICC coverage of the controls' two sessions
(:func:`painplast.stats.reliability.icc`, ICC(3,1), against ground_truth.json's ``icc``). The
last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from painplast.stats.longitudinal import baseline_contrast_for  # noqa: E402

LONGITUDINAL = ("time", "group:time", "change~pain_relief", "persisting-recovering")
SESSIONS = ("baseline", "followup")


class _Cohort:
    """What the group stages read of a Cohort: the participants table."""

    def __init__(self, participants: pd.DataFrame):
        self.participants = participants


def _params(args, seed):
    from painplast.simulate import SimulationParameters

    return SimulationParameters(n_participants=args.participants, n_sites=args.sites, seed=seed,
                                design="longitudinal", null=args.null)


def feature_level(seed: int, args) -> tuple[dict, pd.DataFrame, dict]:
    """(findings per module, controls' long feature table, ground truth) of one seed."""
    from painplast import plasticity
    from painplast.config import Config
    from painplast.plasticity import _group, _longitudinal
    from painplast.results import SubjectResult
    from painplast.simulate import _cohort, _participants
    from painplast.simulate.latent import site_effects, truth_features
    from painplast.simulate.measurement import model_for
    from painplast.simulate.truth import ground_truth

    params = _params(args, seed)
    truth = ground_truth(params)
    clin, lats, ids, _ = _cohort(params)
    model = model_for(params)
    sites = site_effects(params)
    rng = np.random.default_rng([seed, 77])
    scales = []
    for lat in lats:
        feats = truth_features(lat)
        scales.append(model.measure(feats, clin["site_index"].to_numpy(), sites, rng) if model else feats)
    parts = _participants(clin, ids).set_index("participant_id")
    parts["mean_fd"] = clin["mean_fd_target"].to_numpy()      # connectivity's covariate
    cohort = _Cohort(parts)
    config = Config(n_permutations=10)
    n = len(ids)
    findings, longs = {}, []
    for name, declaration in plasticity.available().items():
        features = list(dict.fromkeys(f for f, _ in declaration.a_priori(config)))
        values = []
        for k in range(2):
            values.append({})
        for feature in features:
            if feature in scales[0]:
                for k in range(2):
                    values[k][feature] = scales[k][feature].to_numpy(float)
            else:   # an a-priori feature the latent model does not have: noise, ICC 0.6
                trait = rng.normal(size=n)
                for k in range(2):
                    values[k][feature] = trait + 0.8 * rng.normal(size=n)
        results = [[SubjectResult(name, pid, {f: float(values[k][f][i]) for f in features},
                                  session=SESSIONS[k]) for i, pid in enumerate(ids)]
                   for k in range(2)]
        group = _group.run(declaration, results[0], cohort, config)
        group = _longitudinal.extend(group, declaration, results[0], results[1], cohort, config,
                                     SESSIONS)
        findings[name] = group.findings
        longs.append(group.tables["features_long"].set_index(["participant_id", "session"]))
    long = pd.concat(longs, axis=1).reset_index()
    controls = parts.index[parts["group"] == "control"]
    if getattr(args, "biomarker", False):
        baseline = long[long["session"] == SESSIONS[0]].drop(columns="session").set_index("participant_id")
        baseline["connectivity.mean_fd"] = parts["mean_fd"]
        # the a-priori features of a biomarker of the course, as `painplast run ... --biomarker
        # outcome` chooses them (FeatureTable.a_priori): those the findings test with the
        # baseline contrast of ``outcome`` (the modules' declared prognostic features)
        contrast = baseline_contrast_for("outcome")
        chosen = {f for table in findings.values() for f in table.loc[table.contrast == contrast, "feature"]}
        baseline = baseline[[c for c in baseline.columns if c in chosen or c.endswith(".mean_fd")]]
        truth = {**truth, "_chronification_auc": chronification_auc(baseline, parts, seed)}
    return findings, long[long["participant_id"].isin(controls)], truth


def chronification_auc(baseline: pd.DataFrame, parts: pd.DataFrame, seed: int) -> float:
    """Cross-validated AUC of painplast's biomarker for ``outcome`` (persisting vs recovering)
    from the baseline values of its a-priori features only (the biomarker's defaults: confounds age, sex and head
    motion removed inside the folds; 5 outer folds x 4 repeats, no permutations)."""
    from painplast.biomarker import run_biomarker

    result, _ = run_biomarker(baseline, parts.reset_index(), "outcome", random_state=seed, repeats=4,
                              n_permutations=0, n_bootstrap=100, site_out=False, learning=False)
    return float(result["metrics"]["auc"]["estimate"])


def image_level(seed: int, args, work: Path) -> tuple[dict, pd.DataFrame, dict]:
    """The same from a simulated BIDS cohort run through the command line."""
    root, out = work / f"seed{seed}" / "bids", work / f"seed{seed}" / "out"
    exe = [str(Path(sys.executable).parent / "painplast")]
    if not (root / "derivatives" / "simulation" / "ground_truth.json").exists():
        subprocess.run(exe + ["simulate", str(root), "--design", "longitudinal", "--participants",
                              str(args.participants), "--sites", str(args.sites), "--seed", str(seed),
                              "--n-jobs", str(args.n_jobs), "--quiet"] + (["--null"] if args.null else []),
                       check=True)
    subprocess.run(exe + ["run", str(root), str(out), "participant", "--n-jobs", str(args.n_jobs), "--quiet"],
                   check=True)
    subprocess.run(exe + ["run", str(root), str(out), "group", "--quiet", "--n-permutations",
                          str(args.n_permutations)], check=True)
    truth = json.loads((root / "derivatives" / "simulation" / "ground_truth.json").read_text())
    findings, longs = {}, []
    for path in sorted((out / "group").glob("*_findings.tsv")):
        module = path.name[: -len("_findings.tsv")]
        findings[module] = pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False)
        lpath = out / "group" / f"{module}_features_long.tsv"
        if lpath.exists():
            longs.append(pd.read_csv(lpath, sep="\t", na_values="n/a", keep_default_na=False)
                         .set_index(["participant_id", "session"]))
    parts = pd.read_csv(root / "participants.tsv", sep="\t", index_col="participant_id")
    long = pd.concat(longs, axis=1).reset_index()
    controls = parts.index[parts["group"] == "control"]
    return findings, long[long["participant_id"].isin(controls)], truth


def score(findings: dict, truth: dict, longitudinal_only: bool = False) -> tuple[dict, dict]:
    """({(module, feature, contrast): found}, {module: significant unplanted rows}).

    ``longitudinal_only``: count false positives among the longitudinal rows only (the
    longitudinal ground truth does not list every cross-sectional clinical correlation its
    latent model implies, e.g. default mode-insula coupling with pain duration across chronic
    and subacute patients).
    """
    planted = {(e["feature"], e["contrast"]): e for e in truth["effects"]}
    hits, false_positives = {}, {}
    for module, table in findings.items():
        significant = {(r.feature, r.contrast): np.sign(r.estimate) for r in table.itertuples()
                       if r.p_corrected < 0.05 and (r.contrast in LONGITUDINAL or not longitudinal_only)}
        false_positives[module] = sum(1 for k in significant if k not in planted)
        for (feature, contrast), e in planted.items():
            if e["module"] == module and contrast in LONGITUDINAL:
                hits[(module, feature, contrast)] = significant.get((feature, contrast)) == e["direction"]
    return hits, false_positives


def icc_coverage(long: pd.DataFrame, truth: dict) -> tuple[int, int]:
    """(features whose planted measured ICC lies in the ICC(3,1) 95% interval, features)."""
    from painplast.stats.reliability import icc_from_long

    features = [f for f in truth.get("icc", {}) if f in long]
    table = icc_from_long(long, features, subject="participant_id", session="session",
                          kinds="ICC(3,1)")
    inside = sum(int(r.ci_low <= truth["icc"][r.feature] <= r.ci_high) for r in table.itertuples())
    return inside, len(table)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=None, help="default 10 (20 with --null)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--participants", type=int, default=120)
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--null", action="store_true")
    ap.add_argument("--level", choices=("features", "images"), default="features")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--n-permutations", type=int, default=1000)
    ap.add_argument("--biomarker", action="store_true",
                    help="features: also the baseline-only biomarker for outcome (persisting vs recovering)")
    ap.add_argument("--work", type=Path, default=None, help="images: folder for the cohorts and outputs")
    args = ap.parse_args(argv)
    seeds = args.seeds or (20 if args.null else 10)
    work = args.work or Path(tempfile.mkdtemp(prefix="painplast-longitudinal-"))
    t0 = time.perf_counter()
    all_hits, all_fps, all_fps_long, inside, total, aucs = [], [], [], 0, 0, []
    planted = {}
    for seed in range(args.first_seed, args.first_seed + seeds):
        if args.level == "features":
            findings, long, truth = feature_level(seed, args)
        else:
            findings, long, truth = image_level(seed, args, work)
        hits, fps = score(findings, truth)
        all_hits.append(hits)
        all_fps.append(fps)
        all_fps_long.append(score(findings, truth, longitudinal_only=True)[1])
        if "_chronification_auc" in truth:
            aucs.append((truth["_chronification_auc"], truth["best_auc_deconfounded"]["chronification"],
                         truth["best_auc_measured"]["chronification"]))
        i, t = icc_coverage(long, truth)
        inside, total = inside + i, total + t
        planted.update({(e["module"], e["feature"], e["contrast"]): e for e in truth["effects"]})
        print(f"seed {seed}: found {sum(hits.values())}/{len(hits)}, false positives "
              f"{sum(fps.values())}, ICC coverage {i}/{t} ({time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"\n{args.participants} participants, {args.sites} sites, {seeds} seeds "
          f"({args.first_seed}-{args.first_seed + seeds - 1}), level {args.level}"
          f"{', null' if args.null else ''}")
    rates = {}
    for key in sorted(all_hits[0]):
        rate = float(np.mean([h[key] for h in all_hits]))
        e = planted[key]
        rates["/".join(key)] = round(rate, 3)
        print(f"  {key[1]:36} {key[2]:22} size {e['size']:.2f}  found in {rate:6.1%}")
    fwer = {m: round(float(np.mean([f[m] > 0 for f in all_fps])), 3) for m in all_fps[0]}
    fwer_long = {m: round(float(np.mean([f[m] > 0 for f in all_fps_long])), 3) for m in all_fps_long[0]}
    margin = 1.96 * np.sqrt(0.05 * 0.95 / seeds)
    print("family-wise false-positive rate per module (whole findings table): "
          + ", ".join(f"{m} {v:.2f}" for m, v in fwer.items())
          + f" (binomial margin of 0.05 over {seeds} seeds: <= {0.05 + margin:.3f})")
    print("the same counting only the longitudinal rows: "
          + ", ".join(f"{m} {v:.2f}" for m, v in fwer_long.items()))
    coverage = inside / total if total else float("nan")
    print(f"ICC(3,1) 95% interval covers the planted ICC: {inside}/{total} = {coverage:.1%}")
    chronification = None
    if aucs:
        a = np.array(aucs)
        chronification = {"mean_auc": round(float(a[:, 0].mean()), 3),
                          "best_auc_deconfounded": round(float(a[:, 1].mean()), 3),
                          "best_auc_measured": round(float(a[:, 2].mean()), 3),
                          "aucs": [round(float(v), 3) for v in a[:, 0]]}
        print(f"chronification (baseline only): mean cross-validated AUC {a[:, 0].mean():.3f} over {len(a)} seeds; "
              f"recorded best AUC {a[:, 1].mean():.3f} (deconfounded), {a[:, 2].mean():.3f} (measured scale)")
    print(json.dumps({"benchmark": "longitudinal", "chronification": chronification, "level": args.level, "null": args.null,
                      "participants": args.participants, "sites": args.sites, "seeds": seeds,
                      "first_seed": args.first_seed,
                      "min_found": min(rates.values()) if rates else None,
                      "effects_at_80pct": sum(v >= 0.8 for v in rates.values()), "effects": len(rates),
                      "found": rates, "fwer": fwer, "fwer_longitudinal_rows": fwer_long, "fwer_limit": round(0.05 + margin, 3),
                      "icc_coverage": round(coverage, 3), "seconds": round(time.perf_counter() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
