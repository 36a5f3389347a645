"""The statistical tests run again on other fixed seeds: does a correct method pass every time?

The tests marked ``statistical`` (calibration of the permutation p, interval coverage, null
family-wise error, ICC coverage...) assert binomial bounds that a correct method passes with
probability >= 0.999 at any seeds; the suite runs them at one set of seeds. This script runs
``pytest -m statistical`` ``--runs`` times with ``PAINPLAST_SEED_OFFSET`` = 1, 2, ... (each
offset shifts every test's seeds), collects each test's outcome per run and the figures the
tests log through ``PAINPLAST_CALIBRATION_LOG`` (counts, rates), and prints a summary.

Usage::

    python benchmarks/statistical_repeats.py --runs 20 [--first 1] [--log runs.jsonl]

The last line printed is one JSON object: runs, failures per test, and the figures' ranges.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_run(offset: int, log: Path, n_workers: int) -> dict[str, str]:
    """Outcome (passed/failed/error) of every statistical test at this seed offset."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        env = {**os.environ, "PAINPLAST_SEED_OFFSET": str(offset),
               "PAINPLAST_CALIBRATION_LOG": str(log), "OMP_NUM_THREADS": "1",
               "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "pytest", "-m", "statistical", "-q", "-p", "no:cacheprovider",
               f"--junitxml={report}", str(ROOT / "tests")]
        if n_workers > 1:
            cmd[3:3] = ["-n", str(n_workers)]
        subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        outcomes = {}
        for case in ET.parse(report).getroot().iter("testcase"):
            name = f"{case.get('classname')}::{case.get('name')}"
            outcomes[name] = ("failed" if case.find("failure") is not None else
                              "error" if case.find("error") is not None else
                              "skipped" if case.find("skipped") is not None else "passed")
        return outcomes


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--first", type=int, default=1, help="first seed offset")
    parser.add_argument("--n-workers", type=int, default=1)
    parser.add_argument("--log", type=Path, default=None, help="JSON lines of the tests' figures")
    args = parser.parse_args(argv)
    log = args.log or Path(tempfile.mkdtemp()) / "figures.jsonl"
    failures, runs = defaultdict(list), []
    t0 = time.perf_counter()
    for offset in range(args.first, args.first + args.runs):
        start = time.perf_counter()
        outcomes = one_run(offset, log, args.n_workers)
        bad = sorted(t for t, o in outcomes.items() if o != "passed")
        for test in bad:
            failures[test].append(offset)
        runs.append({"offset": offset, "tests": len(outcomes), "not_passed": bad,
                     "seconds": round(time.perf_counter() - start, 1)})
        print(json.dumps(runs[-1]), flush=True)
    figures = defaultdict(lambda: defaultdict(list))
    if log.exists():
        for line in log.read_text().splitlines():
            row = json.loads(line)
            for key, value in row.items():
                if key not in ("test", "seed_offset") and isinstance(value, (int, float)):
                    figures[row["test"]][key].append(value)
    ranges = {test: {k: [min(v), max(v)] for k, v in keys.items()} for test, keys in figures.items()}
    for test, keys in ranges.items():
        print(test, ", ".join(f"{k} {lo:g}-{hi:g}" for k, (lo, hi) in keys.items()))
    summary = {"benchmark": "statistical_repeats", "runs": len(runs),
               "offsets": [args.first, args.first + args.runs - 1],
               "tests_per_run": max((r["tests"] for r in runs), default=0),
               "runs_all_passed": sum(not r["not_passed"] for r in runs),
               "failures": {t: o for t, o in failures.items()}, "figure_ranges": ranges,
               "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
