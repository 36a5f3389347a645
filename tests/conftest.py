"""Shared fixtures: simulated cohorts, made once per parameter set and reused across workers."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

CACHE = Path(os.environ.get("PAINPLAST_TEST_CACHE", Path(__file__).resolve().parents[1] / ".pytest_cache" / "painplast-sim"))
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def simulated(**kwargs) -> Path:
    """Path of a simulated cohort with these SimulationParameters (cached on disk, read-only use)."""
    from painplast.simulate import SimulationParameters, simulate

    params = SimulationParameters(**kwargs)
    key = hashlib.sha256(params.to_json().encode()).hexdigest()[:12]
    out = CACHE / f"cohort-{key}"
    if (out / "derivatives" / "simulation" / "ground_truth.json").exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    try:
        simulate(out, params, n_jobs=1, progress=False)
    except Exception:
        # another worker may have finished the same cohort first
        if (out / "derivatives" / "simulation" / "ground_truth.json").exists():
            return out
        raise
    return out


#: The cohort most module tests share: 24 participants, 2 sites, effects at 3x default size.
SMALL = dict(n_participants=24, n_sites=2, seed=11, resolution=4, effect_scale=3.0)
#: Its null twin: no group, clinical or responder effect.
SMALL_NULL = dict(SMALL, null=True, effect_scale=1.0)


@pytest.fixture(scope="session")
def small_cohort() -> Path:
    """24 participants, 2 sites, 4 mm, effects x3 (see SMALL)."""
    return simulated(**SMALL)


@pytest.fixture(scope="session")
def null_cohort() -> Path:
    """Like small_cohort but with --null."""
    return simulated(**SMALL_NULL)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real data for tests; read-only)."""
    return SHARED_DATA
