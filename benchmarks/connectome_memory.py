"""Benchmark: peak memory of connectome extraction for 40 and 400 participants.

The connectivity module's subject stage holds one participant's 4-D image at a time; what grows
with the cohort is only the small per-participant output (24 x 24 connectomes, cleaned ROI time
series, features). This script measures it: for each size, a fresh Python process runs
``connectivity.subject`` over every participant serially, writes the seed maps to disk and drops
them (as the engine does; the group stage reads them back lazily), keeps everything else in
memory, then runs ``connectivity.group`` (edge GLMs, tangent space, NBS with 1000 permutations,
second-level seed maps), and reports its peak resident set size (``ru_maxrss``).

Simulating 400 participants would take too long and too much disk, so a few participants are
simulated once (or ``--source`` names an existing simulated cohort) and reused: pseudo-participant
``sub-pNNNN`` is a folder of symbolic links to the rest-run files of source participant
``NNNN mod k`` under its own name, with that participant's participants.tsv row. Every
pseudo-participant is processed in full (image read, denoised, connectomes, seed maps); only the
simulation is shared. Group statistics on repeated participants are meaningless and not reported.

Run from the repository root::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/connectome_memory.py

The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

LIMIT_MB = 2048.0
SIZES = (40, 400)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def simulate_source(folder: Path, n: int) -> Path:
    from painplast.simulate import SimulationParameters, simulate

    if (folder / "derivatives" / "simulation" / "ground_truth.json").exists():
        return folder
    simulate(folder, SimulationParameters(n_participants=n, n_sites=2, seed=5), n_jobs=2, progress=False)
    return folder


def pseudo_cohort(source: Path, n: int, out: Path) -> Path:
    """A derivatives-only BIDS tree of ``n`` pseudo-participants linking to ``source``'s rest runs."""
    import pandas as pd

    parts = pd.read_csv(source / "participants.tsv", sep="\t", dtype=str, keep_default_na=False)
    labels = [p[4:] for p in parts.participant_id]
    out.mkdir(parents=True)
    for sidecar in source.glob("task-rest_*.json"):
        shutil.copy(sidecar, out / sidecar.name)
    (out / "dataset_description.json").write_text(json.dumps({"Name": "pseudo", "BIDSVersion": "1.8.0"}))
    rows = []
    for i in range(n):
        src_label = labels[i % len(labels)]
        label = f"p{i:04d}"
        src_func = source / "derivatives" / "fmriprep" / f"sub-{src_label}" / "func"
        dst_func = out / "derivatives" / "fmriprep" / f"sub-{label}" / "func"
        dst_func.mkdir(parents=True)
        for f in src_func.glob(f"sub-{src_label}_task-rest_*"):
            (dst_func / f.name.replace(f"sub-{src_label}", f"sub-{label}")).symlink_to(f.resolve())
        row = parts.iloc[i % len(labels)].copy()
        row["participant_id"] = f"sub-{label}"
        rows.append(row)
    pd.DataFrame(rows).to_csv(out / "participants.tsv", sep="\t", index=False)
    (out / "derivatives" / "fmriprep" / "dataset_description.json").write_text(
        json.dumps({"Name": "fmriprep (links)", "BIDSVersion": "1.8.0", "DatasetType": "derivative"}))
    return out


def worker(root: Path, maps_dir: Path) -> dict:
    """Run in a fresh process: subject stage over everyone, then the group stage."""
    import nibabel as nib

    from painplast.cohort import Cohort
    from painplast.config import Config
    from painplast.plasticity import connectivity
    from painplast.results import SubjectResult

    warnings.simplefilter("ignore")
    base = peak_rss_mb()
    t0 = time.perf_counter()
    cohort = Cohort.from_bids(root)
    config = Config(n_permutations=1000, modules=("connectivity",))
    results = []
    t1 = time.perf_counter()
    for sub in cohort:
        r = connectivity.subject(sub, config)
        maps = {}
        for name, img in r.maps.items():          # written, then read back lazily (as the engine)
            path = maps_dir / f"{sub.participant_id}_{name}.nii.gz"
            nib.save(img, path)
            maps[name] = nib.load(path)
        results.append(SubjectResult(r.module, r.participant_id, r.features, maps, r.arrays, r.info))
    t_subject = time.perf_counter() - t1
    rss_subject = peak_rss_mb()
    t2 = time.perf_counter()
    out = connectivity.group(results, cohort, config)
    t_group = time.perf_counter() - t2
    return {"participants": len(cohort), "peak_rss_mb_subject_stage": round(rss_subject, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1), "rss_after_imports_mb": round(base, 1),
            "subject_seconds": round(t_subject, 1),
            "seconds_per_participant": round(t_subject / len(cohort), 3),
            "group_seconds": round(t_group, 1), "total_seconds": round(time.perf_counter() - t0, 1),
            "edges_rows": int(len(out.tables["edges"])), "group_maps": len(out.maps)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, help="an existing simulated cohort to reuse")
    parser.add_argument("--n-source", type=int, default=8, help="participants to simulate")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        maps_dir = args.worker.parent / (args.worker.name + "_maps")
        maps_dir.mkdir(exist_ok=True)
        print(json.dumps(worker(args.worker, maps_dir)))
        return 0

    work = args.workdir or Path(tempfile.mkdtemp(prefix="painplast-connectome-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    source = args.source or simulate_source(work / "source", args.n_source)
    import pandas as pd
    n_source = len(pd.read_csv(source / "participants.tsv", sep="\t"))
    print(f"source cohort: {source} ({n_source} simulated participants, reused for every size)")
    rows = []
    for n in args.sizes:
        root = work / f"pseudo-{n}"
        if root.exists():
            shutil.rmtree(root)
            shutil.rmtree(work / f"pseudo-{n}_maps", ignore_errors=True)
        pseudo_cohort(source, n, root)
        proc = subprocess.run([sys.executable, __file__, "--worker", str(root)],
                              capture_output=True, text=True, env={**os.environ})
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{n:5d} participants: peak RSS {row['peak_rss_mb']:7.1f} MiB "
              f"(subject stage {row['peak_rss_mb_subject_stage']:.1f} MiB, after imports "
              f"{row['rss_after_imports_mb']:.1f} MiB); subject stage {row['subject_seconds']:.0f} s "
              f"({row['seconds_per_participant']:.2f} s each), group {row['group_seconds']:.0f} s")
        shutil.rmtree(work / f"pseudo-{n}_maps", ignore_errors=True)
    ok = all(r["peak_rss_mb"] < LIMIT_MB for r in rows)
    print(json.dumps({"benchmark": "connectome_memory", "source_participants": n_source,
                      "pseudo_participants_note": "symlinked copies of the source participants' rest runs",
                      "limit_mb": LIMIT_MB, "under_limit": ok, "results": rows,
                      "machine": platform.platform(), "python": platform.python_version()}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
