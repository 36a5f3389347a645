"""Running the module stages over participants and writing their outputs.

``run_participant_level`` maps each module's ``subject`` stage over participants (serially or
with joblib worker processes, one participant's images in memory per worker), writes each
result atomically, and skips participant-module pairs whose outputs exist with the same
parameter hash (so a rerun of a finished or killed job only does what is missing).
``run_group_level`` reads the subject results back and runs each module's ``group`` stage.
"""
from __future__ import annotations

import logging
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from . import plasticity
from .cohort import Cohort, Subject
from .config import Config
from .derivatives import Derivatives
from .errors import InputError
from .results import GroupResult, SubjectResult

log = logging.getLogger("painplast")


@dataclass
class Summary:
    """What a participant-level run did."""

    done: list[tuple[str, str]] = field(default_factory=list)
    skipped_existing: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    seconds: float = 0.0


def _subject_inputs(subject: Subject) -> list[str]:
    files = []
    for run in subject.runs:
        for p in (run.bold, run.confounds, run.events, run.timeseries):
            if p is not None:
                files.append(str(p))
    if subject.gm is not None:
        files.append(str(subject.gm))
    return files


def _pin_threads() -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
    except Exception:  # pragma: no cover - threadpoolctl is a dependency, but never fatal
        pass


def process_one(subject: Subject, module: str, config: Config, out_dir: str,
                checksums: bool = True) -> tuple[str, str, str | None]:
    """Run one module's subject stage for one participant and write it. Returns an outcome."""
    _pin_threads()
    deriv = Derivatives(out_dir)
    mod = plasticity.load(module)
    try:
        result: SubjectResult = mod.subject(subject, config)
    except InputError as error:
        deriv.write_failure(subject.participant_id, module, str(error))
        return subject.participant_id, module, str(error)
    params = {"config": config.to_dict()}
    deriv.write_subject(result, params, config.parameter_hash(module),
                        _subject_inputs(subject) if checksums else ())
    return subject.participant_id, module, None


def run_participant_level(cohort: Cohort, config: Config, out_dir: str | os.PathLike, *,
                          n_jobs: int = 1, progress: bool = True, scheduler: str | None = None,
                          dask_workers: int | None = None) -> Summary:
    """Run every configured module's subject stage for every participant of ``cohort``."""
    t0 = time.perf_counter()
    deriv = Derivatives(out_dir)
    deriv.initialise(cohort.root, config.to_dict())
    modules = [m for m in config.modules if plasticity.load(m) is not None]
    summary = Summary()
    todo = []
    for subject in cohort.subjects:
        for module in modules:
            if deriv.is_done(subject.participant_id, module, config.parameter_hash(module)):
                summary.skipped_existing.append((subject.participant_id, module))
            else:
                todo.append((subject, module))
    from tqdm.auto import tqdm
    bar = tqdm(total=len(todo), desc="participant stages", unit="stage", disable=not progress)
    outcomes = []
    if scheduler or dask_workers:
        outcomes = _run_dask(todo, config, str(out_dir), scheduler, dask_workers, bar)
    elif n_jobs == 1 or len(todo) <= 1:
        for subject, module in todo:
            bar.set_postfix_str(f"{subject.participant_id} {module}")
            outcomes.append(process_one(subject, module, config, str(out_dir)))
            bar.update()
    else:
        from joblib import Parallel, delayed
        gen = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
            delayed(process_one)(s, m, config, str(out_dir)) for s, m in todo)
        for outcome in gen:
            outcomes.append(outcome)
            bar.update()
    bar.close()
    for pid, module, error in outcomes:
        if error is None:
            summary.done.append((pid, module))
        else:
            summary.failed.append((pid, module, error))
            log.warning("%s %s skipped: %s", pid, module, error)
    summary.seconds = time.perf_counter() - t0
    return summary


def _run_dask(todo, config, out_dir, scheduler, dask_workers, bar):
    from dask.distributed import Client, LocalCluster, as_completed
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(n_workers=int(dask_workers), threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    try:
        futures = [client.submit(process_one, s, m, config, out_dir, pure=False) for s, m in todo]
        outcomes = []
        for fut in as_completed(futures):
            outcomes.append(fut.result())
            bar.update()
        return outcomes
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def load_subject_results(cohort: Cohort, module: str, out_dir: str | os.PathLike) -> list[SubjectResult]:
    deriv = Derivatives(out_dir)
    results = []
    for subject in cohort.subjects:
        res = deriv.read_subject(subject.participant_id, module)
        if res is not None:
            results.append(res)
    return results


def run_group_level(cohort: Cohort, config: Config, out_dir: str | os.PathLike, *,
                    progress: bool = True) -> dict[str, GroupResult]:
    """Run each configured module's group stage on the subject results found in ``out_dir``."""
    deriv = Derivatives(out_dir)
    out = {}
    from tqdm.auto import tqdm
    modules = [m for m in config.modules if plasticity.load(m) is not None]
    for module in tqdm(modules, desc="group stages", unit="module", disable=not progress):
        results = load_subject_results(cohort, module, out_dir)
        if not results:
            log.warning("%s: no participant results; group stage skipped", module)
            continue
        mod = plasticity.load(module)
        try:
            group = mod.group(results, cohort, config)
        except InputError:
            raise
        except Exception:  # a bug in one module must not hide the others' results
            log.error("%s group stage failed:\n%s", module, traceback.format_exc())
            raise
        deriv.write_group(group, {"config": config.to_dict()})
        out[module] = group
    return out
