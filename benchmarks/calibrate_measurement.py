"""Calibrate (and check) the simulator's model of painplast's image measurement.

usage: python benchmarks/calibrate_measurement.py [--seeds 0,1] [--participants 120] [--sites 3]
           [--set volumes_rest=90 ...] [--name NAME] [--work DIR] [--n-jobs 2] [--write]
       python benchmarks/calibrate_measurement.py --verify [--participants 120] [--sites 3]
           [--seed 7] [--set ...] [--work DIR]

The ground truth puts effect sizes, ICCs and best AUCs on the measured scale with a per-feature
model of painplast's measurement (painplast.simulate.measurement):

    measured = alpha_site + beta * truth + factor_site * sigma * noise

Calibration: simulates one cross-sectional cohort per seed with the given acquisition, runs
painplast's participant level (every module) on its images, and fits the model per feature by
least squares of the measured feature on its noise-free value (participants_truth.tsv) with an
intercept per site and seed; ``sigma`` pools the residual variance over sites after dividing by
each site's image-noise factor (BOLD features: ``noise_scale``; gray matter: ``gm_gain``). It
prints, per feature, beta, sigma, the measured reliability (squared correlation with the truth)
and the residual's correlation with mean framewise displacement (the model assumes none), and
with ``--write`` stores the fit in src/painplast/simulate/_calibration.py under ``--name``.

Verification (``--verify``): simulates a cross-sectional cohort with two sessions (test-retest
noise and independent images), measures each session with painplast's participant level, and
compares per feature the ICC(3,1) of the controls' measured features across the sessions with
the ICC the ground truth records, and the measured reliability of each session with the one
the model predicts. The sessions are measured one at a time through a single-session view of
the dataset (symbolic links without the ``ses-`` entity), so the check does not depend on the
engine's session support.

The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
TARGET = HERE.parent / "src" / "painplast" / "simulate" / "_calibration.py"


def _params(args, seed, **extra):
    from painplast.simulate import SimulationParameters

    changes = {}
    for item in args.set:
        key, value = item.split("=", 1)
        changes[key] = type(getattr(SimulationParameters(), key))(float(value))
    return SimulationParameters(n_participants=args.participants, n_sites=args.sites, seed=seed,
                                **changes, **extra)


def _measure(bids: Path, out: Path, n_jobs: int) -> pd.DataFrame:
    """painplast's participant level on ``bids``; the features table (participant rows)."""
    from painplast import engine, plasticity
    from painplast.biomarker.features import from_derivatives
    from painplast.cohort import Cohort
    from painplast.config import MODULES, Config

    modules = tuple(m for m in MODULES if plasticity.load(m))
    engine.run_participant_level(Cohort.from_bids(bids), Config(modules=modules, random_state=0), out,
                                 n_jobs=n_jobs, progress=False)
    return from_derivatives(out).data


def _cohort(args, seed, work: Path, **extra):
    from painplast.simulate import simulate

    params = _params(args, seed, **extra)
    bids = work / "bids"
    if not (bids / "participants.tsv").exists():
        simulate(bids, params, n_jobs=args.n_jobs, progress=False)
    return params, bids


def _fit(rows: list[tuple]) -> dict:
    """Per feature: beta, sigma (per unit site factor), reliability, residual-FD correlation.

    ``rows``: per cohort (measured features, participants_truth, site effects, site index).
    """
    from painplast.simulate.measurement import site_factor

    out = {}
    features = sorted(set.intersection(*(set(m.columns) & set(t.columns) for m, t, _, _ in rows)))
    for feature in features:
        y, x, groups, factor, fd = [], [], [], [], []
        for k, (measured, truth, sites, index) in enumerate(rows):
            ok = (measured[feature].notna() & truth[feature].notna()).to_numpy()
            y.append(measured.loc[ok, feature].to_numpy(float))
            x.append(truth.loc[ok, feature].to_numpy(float))
            groups += [f"{k}:{s}" for s in truth.loc[ok, "site"]]
            factor.append(site_factor(feature, sites, index)[ok])
            fd.append(truth.loc[ok, "mean_fd_target"].to_numpy(float))
        y, x, factor, fd = (np.concatenate(v) for v in (y, x, factor, fd))
        groups = np.asarray(groups)
        levels = sorted(set(groups))
        D = np.column_stack([x] + [(groups == g).astype(float) for g in levels])
        coef, *_ = np.linalg.lstsq(D, y, rcond=None)
        resid = y - D @ coef
        dof = len(y) - D.shape[1]
        sigma2 = float(np.sum((resid / factor) ** 2) / dof)
        # reliability: correlation with the truth after removing site means from both
        xs = x - np.array([x[groups == g].mean() for g in groups])
        ys = y - np.array([y[groups == g].mean() for g in groups])
        out[feature] = {"beta": float(coef[0]), "sigma": float(np.sqrt(sigma2)),
                        "reliability": float(np.corrcoef(xs, ys)[0, 1] ** 2),
                        "resid_fd_r": float(np.corrcoef(resid, fd)[0, 1]), "n": int(len(y))}
    return out


def _truth_and_factors(bids: Path, params, session: str | None = None):
    """participants_truth (with the site) and each site's index into site_effects."""
    from painplast.simulate.latent import site_effects

    truth = pd.read_csv(bids / "derivatives" / "simulation" / "participants_truth.tsv", sep="\t")
    if session is not None:
        truth = truth[truth.session_id == f"ses-{session}"]
    truth = truth.set_index("participant_id")
    parts = pd.read_csv(bids / "participants.tsv", sep="\t", index_col="participant_id")
    truth["site"] = parts.loc[truth.index, "site"]
    index = parts.loc[truth.index, "site"].str.replace("site", "").astype(int).to_numpy() - 1
    return truth, site_effects(params), index


def calibrate(args) -> dict:
    rows = []
    for seed in args.seeds:
        work = args.work / f"seed-{seed}"
        params, bids = _cohort(args, seed, work)
        t0 = time.perf_counter()
        measured = _measure(bids, work / "derivatives", args.n_jobs)
        print(f"seed {seed}: measured {len(measured)} participants in {time.perf_counter() - t0:.0f} s")
        truth, sites, index = _truth_and_factors(bids, params)
        rows.append((measured.reindex(truth.index), truth, sites, index))
    return {"params": params, "features": _fit(rows)}


def _write(name: str, params, fit: dict, source: str) -> None:
    from painplast.simulate.measurement import ACQUISITION

    namespace: dict = {}
    exec(compile(TARGET.read_text(), str(TARGET), "exec"), namespace)  # our own generated file
    table = namespace["CALIBRATIONS"]
    table[name] = {"acquisition": {k: getattr(params, k) for k in ACQUISITION}, "source": source,
                   "features": {f: {"beta": round(v["beta"], 6), "sigma": round(v["sigma"], 6)}
                                for f, v in sorted(fit.items())}}
    lines = ['"""Measurement calibrations (generated by benchmarks/calibrate_measurement.py; do not edit).',
             "", "One entry per acquisition: its settings, where the fit came from, and per feature the",
             "``beta`` and ``sigma`` of painplast.simulate.measurement.MeasurementModel.", '"""', "",
             "CALIBRATIONS: dict = {"]
    for key, entry in sorted(table.items()):
        lines.append(f"    {key!r}: {{")
        lines.append(f"        \"acquisition\": {entry['acquisition']!r},")
        lines.append(f"        \"source\": {entry['source']!r},")
        lines.append("        \"features\": {")
        for feature, v in entry["features"].items():
            lines.append(f"            {feature!r}: {v!r},")
        lines.append("        },")
        lines.append("    },")
    lines.append("}")
    TARGET.write_text("\n".join(lines) + "\n")


def _session_view(bids: Path, session: str, view: Path) -> Path:
    """A single-session BIDS folder of links to one session's files (no ses- entity)."""
    tag, folder = f"_ses-{session}", f"ses-{session}"
    for path in bids.rglob("*"):
        rel = path.relative_to(bids)
        if path.is_dir() or "simulation" in rel.parts:
            continue
        if any(p.startswith("ses-") for p in rel.parts) and folder not in rel.parts:
            continue
        if rel.name.endswith(("_sessions.tsv", "_sessions.json")):
            continue
        target = view / Path(*[p for p in rel.parts if p != folder]).with_name(rel.name.replace(tag, ""))
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(path.resolve(), target)
    sim = view / "derivatives" / "simulation"
    sim.mkdir(parents=True, exist_ok=True)
    truth = pd.read_csv(bids / "derivatives/simulation/participants_truth.tsv", sep="\t")
    truth[truth.session_id == f"ses-{session}"].drop(columns="session_id").to_csv(
        sim / "participants_truth.tsv", sep="\t", index=False)
    return view


def _icc31(values: np.ndarray) -> float:
    n, k = values.shape
    grand = values.mean()
    msr = k * ((values.mean(1) - grand) ** 2).sum() / (n - 1)
    resid = values - values.mean(1, keepdims=True) - values.mean(0) + grand
    mse = (resid**2).sum() / ((n - 1) * (k - 1))
    return float((msr - mse) / (msr + (k - 1) * mse))


def verify(args) -> dict:
    from scipy import stats

    from painplast.simulate import SimulationParameters
    from painplast.simulate.truth import ground_truth

    _, bids = _cohort(args, args.seed, args.work / f"verify-{args.seed}", n_sessions=2)
    # the cohort's own parameters (it may have been simulated earlier), the truth with the
    # calibration in place now
    stored = json.loads((bids / "derivatives/simulation/ground_truth.json").read_text())["parameters"]
    params = SimulationParameters(**stored)
    truth = ground_truth(params)
    sessions = {}
    for session in params.sessions():
        view = args.work / f"verify-{args.seed}" / f"view-{session}"
        if not view.exists():
            _session_view(bids, session, view)
        sessions[session] = _measure(view, args.work / f"verify-{args.seed}" / f"out-{session}", args.n_jobs)
    parts = pd.read_csv(bids / "participants.tsv", sep="\t", index_col="participant_id")
    controls = parts.index[parts.group == "control"]
    a, b = (sessions[s].reindex(controls) for s in params.sessions())
    rows = []
    for feature, recorded in sorted(truth["icc"].items()):
        if feature not in a or feature not in b:
            continue
        values = np.column_stack([a[feature], b[feature]]).astype(float)
        values = values[np.all(np.isfinite(values), axis=1)]
        icc = _icc31(values)
        n = len(values)
        # 95% interval of ICC(3,1) with k = 2 (McGraw & Wong 1996, F distribution)
        f_obs = (1 + icc) / (1 - icc)
        lo_f, hi_f = f_obs / stats.f.ppf(0.975, n - 1, n - 1), f_obs * stats.f.ppf(0.975, n - 1, n - 1)
        lo, hi = (lo_f - 1) / (lo_f + 1), (hi_f - 1) / (hi_f + 1)
        rows.append({"feature": feature, "icc_recorded": recorded, "icc_images": round(icc, 3),
                     "ci_low": round(lo, 3), "ci_high": round(hi, 3), "covered": bool(lo <= recorded <= hi)})
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    diff = table.icc_images - table.icc_recorded
    print(f"{table.covered.sum()} of {len(table)} recorded ICCs inside the 95% interval of the image ICC "
          f"({len(controls)} controls); mean difference images - recorded {diff.mean():+.3f}, "
          f"mean |difference| {diff.abs().mean():.3f}")
    return {"controls": int(len(controls)), "features": int(len(table)), "covered": int(table.covered.sum()),
            "mean_difference": round(float(diff.mean()), 4), "mean_abs_difference": round(float(diff.abs().mean()), 4)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--seed", type=int, default=7, help="cohort seed of --verify")
    ap.add_argument("--participants", type=int, default=120)
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], metavar="PARAMETER=VALUE")
    ap.add_argument("--name", default=None, help="calibration name (default: <resolution>mm plus the --set items)")
    ap.add_argument("--work", type=Path, default=None, help="work folder (kept, reused)")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--write", action="store_true", help="store the fit in simulate/_calibration.py")
    ap.add_argument("--verify", action="store_true")
    args = ap.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.work = args.work or Path(tempfile.mkdtemp(prefix="calibrate-"))
    if args.verify:
        summary = verify(args)
        print(json.dumps({"benchmark": "calibrate_measurement", "mode": "verify", **summary}))
        return 0
    result = calibrate(args)
    fit = result["features"]
    print(f"{'feature':42} {'beta':>8} {'sigma':>9} {'reliab.':>8} {'r(resid,FD)':>11}")
    for feature, v in sorted(fit.items()):
        print(f"{feature:42} {v['beta']:8.4f} {v['sigma']:9.5f} {v['reliability']:8.3f} {v['resid_fd_r']:11.3f}")
    params = result["params"]
    name = args.name or f"{params.resolution}mm" + "".join(f"-{s}" for s in args.set)
    if args.write:
        import painplast
        source = (f"painplast {painplast.__version__}, seeds {','.join(map(str, args.seeds))}, "
                  f"{args.participants} participants x {len(args.seeds)}, {args.sites} sites")
        _write(name, params, fit, source)
        print(f"wrote calibration {name!r} to {TARGET}")
    print(json.dumps({"benchmark": "calibrate_measurement", "mode": "calibrate", "name": name,
                      "participants": args.participants * len(args.seeds),
                      "reliability": {f: round(v["reliability"], 3) for f, v in sorted(fit.items())}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
