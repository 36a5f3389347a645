"""One participant-session with n_jobs=2: its engine tasks run on threads of this process and write
the same bytes as the serial run (all five modules, real images)."""
from __future__ import annotations

import threading

import pytest

from painplast import engine
from painplast.cohort import Cohort
from painplast.config import Config

MODULES = ("sensitization", "reorganization", "connectivity", "structure", "modulation")


def _outputs(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0].startswith("sub-")}


def test_threads_give_the_serial_bytes(small_cohort, tmp_path, monkeypatch):
    cohort = Cohort.from_bids(small_cohort, participant_label=["002"])
    config = Config(modules=MODULES)
    serial = engine.run_participant_level(cohort, config, tmp_path / "serial", n_jobs=1, progress=False)
    assert not serial.failed and len(serial.done) == len(MODULES)

    threads: list[str] = []
    run_stages = engine.process_stages

    def spy(*args, **kwargs):                 # calls the real stages; records where they ran
        threads.append(threading.current_thread().name)
        return run_stages(*args, **kwargs)

    monkeypatch.setattr(engine, "process_stages", spy)
    both = engine.run_participant_level(cohort, config, tmp_path / "threads", n_jobs=2, progress=False)
    assert not both.failed and sorted(both.done) == sorted(serial.done)
    assert len(threads) == len(MODULES) and all(t.startswith("painplast-task") for t in threads)
    a, b = _outputs(tmp_path / "serial"), _outputs(tmp_path / "threads")
    assert sorted(a) == sorted(b) and len(a) >= 3 * len(MODULES)
    assert [k for k in a if a[k] != b[k]] == []


def test_a_failing_task_is_recorded_and_the_others_finish(small_cohort, tmp_path):
    cohort = Cohort.from_bids(small_cohort, participant_label=["003"])
    # an unknown contrast condition makes reorganization fail with an InputError
    config = Config(modules=("reorganization", "structure", "connectivity"),
                    options={"reorganization": {"affected_condition": "no_such_condition"}})
    summary = engine.run_participant_level(cohort, config, tmp_path / "out", n_jobs=2, progress=False)
    assert [(m, "no_such_condition" in why) for _, m, why in summary.failed] == [("reorganization", True)]
    assert sorted(m for _, m in summary.done) == ["connectivity", "structure"]
