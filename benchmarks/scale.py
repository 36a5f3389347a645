"""Scaling of the participant level: wall time and peak memory for 40, 80 and 160 participants.

The engine streams (one participant's images in memory per worker), so time should grow about
linearly with the number of participants and peak memory should stay flat.

To keep this feasible on a small machine the benchmark simulates one small base cohort once
(8 participants, 6 mm voxels, 60 volumes per task) and builds the larger cohorts from it:
pseudo-participant ``sub-pNNNN`` is a set of symbolic links to base participant ``NNNN mod 8``'s
files under its own name, with its own row in participants.tsv. Every pseudo-participant is
processed in full by the engine (nothing is cached between participants), so the work per
participant is real; only the simulation is shared.

Each size runs ``painplast run BIDS OUT participant --n-jobs J`` in a fresh process; the
benchmark samples the resident memory of that process and all its children (joblib workers)
every 0.1 s and reports the peak of their sum and the peak of the largest single process, and the
CPU seconds of the process and its workers (which the machine's other load does not inflate, as it
inflates wall time). It then reruns the same command on the finished folder (everything skipped).

With ``--dask``, each size is also run on a dask.distributed cluster of two single-threaded
workers started from the command line (``dask scheduler`` and two ``dask worker`` processes on
127.0.0.1, as README's "Running on a cluster" shows) with ``painplast run ... --scheduler
tcp://...``; its memory is that of the painplast process plus the worker processes (the
workers' own memory before the run is included: they stay up between sizes). The outputs of the
two runs are compared file by file (participant outputs and failure records: the same bytes).

Usage::

    python benchmarks/scale.py [--sizes 40 80 160] [--n-jobs 2] [--modules structure,connectivity]
                               [--workdir DIR] [--dask]
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil

BASE = dict(n_participants=8, n_sites=2, seed=3, resolution=6, volumes_pain=60,
            volumes_somatotopy=60, volumes_modulation=60, volumes_rest=60)


def base_cohort(workdir: Path) -> Path:
    """Simulate the small base cohort once (reused by later invocations)."""
    from painplast.simulate import SimulationParameters, simulate
    out = workdir / "base"
    if not (out / "derivatives" / "simulation" / "ground_truth.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        simulate(out, SimulationParameters(**BASE), n_jobs=2, progress=False)
        print(f"simulated the base cohort ({BASE['n_participants']} participants) in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
    return out


def pseudo_cohort(base: Path, n: int, workdir: Path) -> Path:
    """A BIDS dataset of ``n`` pseudo-participants made of symbolic links to the base cohort."""
    root = workdir / f"cohort-{n}"
    if (root / "participants.tsv").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    parts = pd.read_csv(base / "participants.tsv", sep="\t", dtype=str, keep_default_na=False)
    source_ids = parts["participant_id"].tolist()
    for path in base.iterdir():  # dataset-level files (task JSON, description)
        if path.is_file() and path.name != "participants.tsv":
            root.mkdir(parents=True, exist_ok=True)
            os.symlink(path.resolve(), root / path.name)
    rows = []
    for i in range(n):
        src = source_ids[i % len(source_ids)]
        new = f"sub-p{i + 1:04d}"
        row = parts[parts["participant_id"] == src].iloc[0].copy()
        row["participant_id"] = new
        rows.append(row)
        for top in (base, base / "derivatives" / "fmriprep"):
            for path in (top / src).rglob("*"):
                if path.is_file():
                    rel = path.relative_to(top / src)
                    target = (root if top == base else root / "derivatives" / "fmriprep") / new / \
                        str(rel).replace(src, new)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(path.resolve(), target)
    fmriprep_desc = base / "derivatives" / "fmriprep" / "dataset_description.json"
    if fmriprep_desc.exists():
        os.symlink(fmriprep_desc.resolve(), root / "derivatives" / "fmriprep" / "dataset_description.json")
    pd.DataFrame(rows).to_csv(root / "participants.tsv", sep="\t", index=False)
    return root


def _cpu(procs) -> float:
    """CPU seconds used so far by running processes and their running children."""
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            for p in [proc] + proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    times = p.cpu_times()
                    total += times.user + times.system
    return total


def measure(cmd: list[str], env: dict, also: tuple[int, ...] = ()) -> tuple[float, float, float, int, float]:
    """Run ``cmd``; return (seconds, peak total RSS MiB, peak single-process RSS MiB, exit code,
    CPU seconds).

    ``also``: further process ids (dask workers) whose memory and CPU time, and their children's,
    count. CPU seconds are those of ``cmd`` and every process it waited for (joblib's workers),
    plus what the ``also`` processes used meanwhile: the machine's other load does not inflate
    them, as it inflates wall time.
    """
    import resource
    others = [psutil.Process(pid) for pid in also]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0 = _cpu(others)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    peak_total = peak_single = 0
    while proc.poll() is None:
        try:
            procs = [root] + root.children(recursive=True)
            for other in others:
                with contextlib.suppress(psutil.Error):
                    procs += [other] + other.children(recursive=True)
            rss = []
            for p in procs:
                try:
                    rss.append(p.memory_info().rss)
                except psutil.Error:
                    pass
            peak_total = max(peak_total, sum(rss))
            peak_single = max(peak_single, max(rss, default=0))
        except psutil.Error:
            pass
        time.sleep(0.1)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) + _cpu(others) - cpu0
    if proc.returncode:
        sys.stderr.write(proc.stderr.read()[-3000:])
    return seconds, peak_total / 2**20, peak_single / 2**20, proc.returncode, cpu


@contextlib.contextmanager
def dask_cluster(workdir: Path, env: dict, n_workers: int = 2):
    """``dask scheduler`` and ``n_workers`` ``dask worker`` processes on 127.0.0.1.

    Yields (address, worker process ids); every process is stopped by its process group id.
    """
    dask = Path(sys.executable).with_name("dask")
    info = workdir / "scheduler.json"
    info.unlink(missing_ok=True)
    procs = []

    def start(args, name):
        with open(workdir / f"{name}.log", "w") as log:
            procs.append(subprocess.Popen([str(dask), *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))

    try:
        start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
               "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(info)], "scheduler")
        deadline = time.monotonic() + 120
        while not info.exists():
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise RuntimeError("the dask scheduler did not start: " + (workdir / "scheduler.log").read_text())
            time.sleep(0.2)
        time.sleep(0.2)
        address = json.loads(info.read_text())["address"]
        for i in range(n_workers):
            start(["worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--nworkers", "1",
                   "--no-dashboard", "--dashboard-address", "127.0.0.1:0", "--name", f"w{i + 1}",
                   "--local-directory", str(workdir / f"w{i + 1}")], f"worker-{i + 1}")
        from dask.distributed import Client
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(n_workers, timeout=180)
        yield address, tuple(p.pid for p in procs[1:])
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)


def participant_outputs(out: Path) -> dict[str, str]:
    """SHA-256 of every participant output and failure record, by relative path."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()
            and (p.relative_to(out).parts[0].startswith("sub-") or str(p.relative_to(out)).startswith("logs/skipped"))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[40, 80, 160])
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--modules", default=None, help="comma-separated modules (default: all available)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--dask", action="store_true", help="also run each size on a 2-worker dask cluster")
    args = ap.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="painplast-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "MPLBACKEND": "Agg"}
    base = base_cohort(workdir)
    exe = [sys.executable, "-m", "painplast.cli"]
    print(f"participant level, --n-jobs {args.n_jobs}, modules: {args.modules or 'all available'}; "
          f"base cohort {BASE}")
    print(f"{'participants':>12} {'workers':>16} {'seconds':>9} {'s/participant':>13} {'peak RSS total MiB':>19} "
          f"{'peak RSS 1 proc MiB':>20} {'rerun s':>8} {'CPU s':>7}")
    rows, dask_rows = [], []
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(dask_cluster(workdir, env)) if args.dask else None
        for n in args.sizes:
            bids = pseudo_cohort(base, n, workdir)
            runs = [("joblib", ["--n-jobs", str(args.n_jobs)], ())]
            if cluster:
                runs.append(("dask", ["--scheduler", cluster[0]], cluster[1]))
            for kind, flags, also in runs:
                out = workdir / f"out-{n}-{kind}"
                shutil.rmtree(out, ignore_errors=True)
                cmd = exe + ["run", str(bids), str(out), "participant", *flags, "--quiet"]
                if args.modules:
                    cmd += ["--modules", args.modules]
                seconds, total, single, code, cpu = measure(cmd, env, also)
                if code:
                    print(f"{n:>12} {kind} failed (exit {code})")
                    return code
                rerun = measure(cmd, env, also)[0]
                label = f"joblib {args.n_jobs} procs" if kind == "joblib" else "dask 2 workers"
                (rows if kind == "joblib" else dask_rows).append((n, seconds, total, single, rerun, cpu))
                print(f"{n:>12} {label:>16} {seconds:>9.1f} {seconds / n:>13.2f} {total:>19.0f} {single:>20.0f} "
                      f"{rerun:>8.1f} {cpu:>7.1f}", flush=True)
            if cluster:
                a, b = participant_outputs(workdir / f"out-{n}-joblib"), participant_outputs(workdir / f"out-{n}-dask")
                same = sorted(a) == sorted(b) and all(a[k] == b[k] for k in a)
                dask_rows[-1] += (same,)
                print(f"{n:>12} dask outputs {'identical to' if same else 'DIFFER from'} joblib's "
                      f"({len(a)} files)", flush=True)
                if not same:
                    return 1
    if len(rows) > 1:
        (n0, s0, *_), (n1, s1, *_) = rows[0], rows[-1]
        print(f"time ratio {s1 / s0:.2f} for {n1 / n0:.0f}x participants; peak total RSS "
              f"{rows[0][2]:.0f} -> {rows[-1][2]:.0f} MiB")
    print(f"work folder: {workdir}")
    print(json.dumps({"benchmark": "scale", "sizes": [r[0] for r in rows],
                      "seconds": [round(r[1], 1) for r in rows],
                      "seconds_per_participant": [round(r[1] / r[0], 3) for r in rows],
                      "peak_rss_total_mb": [round(r[2]) for r in rows],
                      "rerun_seconds": [round(r[4], 1) for r in rows],
                      "cpu_seconds": [round(r[5], 1) for r in rows],
                      **({"dask_2_workers": {"seconds": [round(r[1], 1) for r in dask_rows],
                                             "cpu_seconds": [round(r[5], 1) for r in dask_rows],
                                             "peak_rss_total_mb": [round(r[2]) for r in dask_rows],
                                             "rerun_seconds": [round(r[4], 1) for r in dask_rows],
                                             "identical_to_joblib": all(r[6] for r in dask_rows)}}
                         if dask_rows else {})}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
