"""Time and disk of simulating the demo cohort (40 participants, 2 sites, 4 mm) on 2 workers.

usage: python benchmarks/simulate.py [--participants N] [--sites S] [--resolution MM] [--n-jobs J]
                                    [--design longitudinal] [--sessions N] [--runs M] [--tasks a,b]

Target (issue 2): under 90 s on 2 cores and under 1 GB of disk. There is no peer library that
simulates BIDS cohorts with planted effects, so this benchmark compares against the targets only.
The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--participants", type=int, default=40)
    ap.add_argument("--sites", type=int, default=2)
    ap.add_argument("--resolution", type=int, default=4)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--design", default="cross-sectional")
    ap.add_argument("--sessions", type=int, default=1)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--tasks", default=None)
    args = ap.parse_args(argv)
    from painplast.simulate import SimulationParameters, simulate
    tmp = Path(tempfile.mkdtemp())
    out = tmp / "demo"
    t0 = time.perf_counter()
    extra = {"tasks": tuple(args.tasks.split(","))} if args.tasks else {}
    params = SimulationParameters(n_participants=args.participants, n_sites=args.sites,
                                  resolution=args.resolution, design=args.design,
                                  n_sessions=args.sessions, n_runs=args.runs, **extra)
    simulate(out, params, n_jobs=args.n_jobs, progress=False)
    seconds = time.perf_counter() - t0
    from joblib.externals.loky import get_reusable_executor
    get_reusable_executor().shutdown(wait=True)   # workers joined: their CPU time is counted
    usage = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum(u.ru_utime + u.ru_stime for u in usage)   # load-independent (the machine is shared)
    du = subprocess.run(["du", "-sb", str(out)], capture_output=True, text=True).stdout.split()[0]
    disk_mb = int(du) / 1e6
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rss_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    shutil.rmtree(tmp)
    print(f"simulated {args.participants} participants, {args.sites} sites, {args.resolution} mm, "
          f"{args.design}, sessions {len(params.sessions()) or 1}, runs {args.runs}, tasks "
          f"{','.join(params.tasks)} in {seconds:.1f} s ({cpu:.0f} CPU s) with {args.n_jobs} workers; {disk_mb:.0f} MB on disk")
    print(json.dumps({"benchmark": "simulate", "participants": args.participants,
                      "design": args.design, "sessions": len(params.sessions()) or 1, "runs": args.runs,
                      "tasks": list(params.tasks),
                      "resolution_mm": args.resolution, "seconds": round(seconds, 1),
                      "cpu_seconds": round(cpu, 1), "load_average": round(os.getloadavg()[0], 1),
                      "disk_mb": round(disk_mb), "peak_rss_mb": round(max(rss, rss_children)),
                      "meets_targets": seconds < 90 and disk_mb < 1000}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
