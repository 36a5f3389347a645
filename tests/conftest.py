"""Shared fixtures: simulated cohorts, made once per parameter set and reused across workers."""
from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

CACHE = Path(os.environ.get("PAINPLAST_TEST_CACHE", Path(__file__).resolve().parents[1] / ".pytest_cache" / "painplast-sim"))
SIMULATOR = Path(__file__).resolve().parents[1] / "src" / "painplast" / "simulate"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def simulated(**kwargs) -> Path:
    """Path of a simulated cohort with these SimulationParameters (cached on disk, read-only use)."""
    from painplast.simulate import SimulationParameters, simulate

    params = SimulationParameters(**kwargs)
    # the key covers the parameters and the simulator's code, so a changed simulator re-simulates
    code = b"".join(p.read_bytes() for p in sorted(SIMULATOR.glob("*.py")))
    key = hashlib.sha256(params.to_json().encode() + code).hexdigest()[:12]
    out = CACHE / f"cohort-{key}"
    done = out / "derivatives" / "simulation" / "ground_truth.json"
    if done.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    # one simulation per cohort even with several pytest-xdist workers: the others wait for it
    with open(CACHE / f"cohort-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not done.exists():
                simulate(out, params, n_jobs=2, progress=False)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return out


#: The cohort most module tests share: 32 participants, 2 sites, effects at 2.5x default size.
SMALL = dict(n_participants=32, n_sites=2, seed=11, resolution=4, effect_scale=2.5)
#: Its null twin: no group, clinical or responder effect.
SMALL_NULL = dict(SMALL, null=True, effect_scale=1.0)


#: The few participants the docstring examples run on (tests/test_docstrings.py).
DOCS = dict(n_participants=8, n_sites=2, seed=5, resolution=4, effect_scale=2.5)


@pytest.fixture(scope="session")
def small_cohort() -> Path:
    """32 participants, 2 sites, 4 mm, effects x2.5 (see SMALL)."""
    return simulated(**SMALL)


@pytest.fixture(scope="session")
def null_cohort() -> Path:
    """Like small_cohort but with --null."""
    return simulated(**SMALL_NULL)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real data for tests; read-only)."""
    return SHARED_DATA
