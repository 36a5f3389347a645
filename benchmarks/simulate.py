"""Time and disk of simulating the demo cohort (40 participants, 2 sites, 4 mm) on 2 workers.

usage: python benchmarks/simulate.py [--participants N] [--resolution MM] [--n-jobs J]

Target (issue 2): under 90 s on 2 cores and under 1 GB of disk. There is no peer library that
simulates BIDS cohorts with planted effects, so this benchmark compares against the targets only.
The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
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
    args = ap.parse_args(argv)
    from painplast.simulate import SimulationParameters, simulate
    tmp = Path(tempfile.mkdtemp())
    out = tmp / "demo"
    t0 = time.perf_counter()
    simulate(out, SimulationParameters(n_participants=args.participants, n_sites=args.sites,
                                       resolution=args.resolution), n_jobs=args.n_jobs, progress=False)
    seconds = time.perf_counter() - t0
    du = subprocess.run(["du", "-sb", str(out)], capture_output=True, text=True).stdout.split()[0]
    disk_mb = int(du) / 1e6
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rss_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    shutil.rmtree(tmp)
    print(f"simulated {args.participants} participants, {args.sites} sites, {args.resolution} mm "
          f"in {seconds:.1f} s with {args.n_jobs} workers; {disk_mb:.0f} MB on disk")
    print(json.dumps({"benchmark": "simulate", "participants": args.participants,
                      "resolution_mm": args.resolution, "seconds": round(seconds, 1),
                      "disk_mb": round(disk_mb), "peak_rss_mb": round(max(rss, rss_children)),
                      "meets_targets": seconds < 90 and disk_mb < 1000}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
