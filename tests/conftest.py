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
    """../shared/data (real data for tests; read-only).

    A missing folder fails the test that asks for it (never a skip): a suite that skips its
    real-data tests where the data is absent would be green without having tested them.
    """
    assert SHARED_DATA.is_dir(), (
        f"the shared real data is missing: {SHARED_DATA} (the repository's ../shared/data); "
        "link it beside the repository, e.g. ln -s /path/to/shared ../shared")
    return SHARED_DATA


#: Significance level of single-draw "no false positive" checks on findings tables. Holm's
#: correction keeps P(any p_corrected <= a) <= a for every a, so a correct method passes
#: "no unplanted row below 0.001" with probability >= 0.999 on any one cohort; at 0.05 it would
#: fail one cohort in twenty. The 5% family-wise rate itself is checked as a rate over many
#: draws (tests/test_calibration.py). Only for parametric p-values: a permutation p below 0.001
#: needs 1000 permutations.
ONE_DRAW_ALPHA = 0.001


def seed_offset() -> int:
    """``PAINPLAST_SEED_OFFSET`` (default 0): shifts the fixed seeds of the statistical tests.

    The tests marked ``statistical`` draw their data from fixed seeds, so the suite is
    deterministic; their thresholds are binomial bounds a correct method passes with probability
    >= 0.999 on any seeds. Running them with other offsets (``PAINPLAST_SEED_OFFSET=7 pytest -m
    statistical``) checks that claim (benchmarks/RESULTS.md).
    """
    return int(os.environ.get("PAINPLAST_SEED_OFFSET", "0"))


def record_figures(test: str, **figures) -> None:
    """Append a statistical test's figures (counts, rates) as one JSON line to the file named by
    ``PAINPLAST_CALIBRATION_LOG``, if set; the repeated runs in benchmarks/RESULTS.md read them."""
    target = os.environ.get("PAINPLAST_CALIBRATION_LOG")
    if target:
        import json

        with open(target, "a") as handle:
            handle.write(json.dumps({"test": test, "seed_offset": seed_offset(), **figures},
                                    default=float) + "\n")


def shared_once(tmp_path_factory, name: str, build) -> Path:
    """A folder built once per test session, even with several pytest-xdist workers.

    ``build(path)`` fills ``path``; every worker that asks for ``name`` gets the same folder
    (the others wait for the first). This is pytest-xdist's documented pattern for session
    fixtures, with a lock beside the workers' temporary folders; the result lives only as long
    as the session's temporary folder, so it always tests the code of this session.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this session only
    out = root / f"shared-{name}"
    done = root / f"shared-{name}.done"
    failed = root / f"shared-{name}.failed"
    with open(root / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if failed.exists():
                pytest.fail(f"building {name} failed in another worker: {failed.read_text()}")
            if not done.exists():
                try:
                    out.mkdir(exist_ok=True)
                    build(out)
                except BaseException as error:
                    failed.write_text(f"{type(error).__name__}: {error}"[:2000])
                    raise
                done.touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return out
