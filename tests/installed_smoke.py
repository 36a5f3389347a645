"""Run a tiny simulated cohort through every module with an installed painplast (no extras).

usage: VENV/bin/python tests/installed_smoke.py WORK_DIR

``make wheel-check`` (part of ``make test``, so of CI) builds the wheel, installs it into a
fresh virtual environment without extras and runs this script with that environment's Python:
it simulates 8 participants, runs the participant and group levels of all five modules with
the installed ``painplast`` command and checks that every module wrote its findings and that no
participant stage failed. A runtime dependency declared only in an extra (the case of bctpy,
imported by the connectivity module) makes a stage fail here. Not collected by pytest (it runs
without pytest, which the fresh environment does not have).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MODULES = ("sensitization", "reorganization", "connectivity", "structure", "modulation")


def main(work: Path) -> int:
    import painplast

    venv = Path(sys.executable).parent
    where = Path(painplast.__file__).resolve()
    # the installed copy, not the repository's src/ (an editable or path install would hide a
    # file missing from the wheel)
    assert "site-packages" in where.parts, f"painplast imported from {where}, not the wheel"
    command = str(venv / "painplast")
    bids, out = work / "bids", work / "out"
    steps = [
        [command, "simulate", str(bids), "--participants", "8", "--sites", "2", "--resolution",
         "6", "--seed", "3", "--effect-scale", "2", "--n-jobs", "2", "--quiet"],
        [command, "run", str(bids), str(out), "participant", "--n-jobs", "2", "--quiet",
         "--n-permutations", "20"],
        [command, "run", str(bids), str(out), "group", "--quiet", "--n-permutations", "20"],
    ]
    for step in steps:
        print("+", " ".join(step[1:4]), flush=True)
        subprocess.run(step, check=True)
    skipped = sorted((out / "logs" / "skipped").glob("*")) if (out / "logs" / "skipped").exists() else []
    assert not skipped, "participant stages failed: " + "; ".join(
        p.read_text()[:300] for p in skipped)
    import pandas as pd

    for module in MODULES:
        findings = pd.read_csv(out / "group" / f"{module}_findings.tsv", sep="\t")
        features = sorted(out.glob(f"sub-*/*_desc-{module}_features.tsv"))
        assert len(features) == 8, (module, len(features))
        assert len(findings) > 0 and findings["p"].notna().all(), (module, findings)
        print(f"{module}: 8 participants, {len(findings)} findings rows")
    assert (out / "report.html").exists()
    print(f"installed painplast {painplast.__version__} ({where.parent}) ran every module")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
