"""Running the module stages over participants and writing their outputs.

:func:`run_participant_level` maps each module's ``subject`` stage over participants, serially,
with joblib worker processes (``n_jobs``; for a single participant-session, threads of this
process), or on dask.distributed (``scheduler`` address, or ``dask_workers`` for a local
cluster). It streams: a task is one participant-session and one
module, or the few modules of a participant-session that read the same BOLD file
(:func:`engine_tasks`; that file is then read once, :func:`process_stages`). The worker reads
that participant's images, writes the result atomically
(:class:`~painplast.derivatives.Derivatives`) and returns only a short outcome, so one
participant's images are in memory per worker whatever the cohort size.

Resuming. A participant-module pair counts as done when its JSON sidecar (written last) records
the same parameter hash and its files exist; a rerun skips it. A killed run (even SIGKILL)
leaves at most stray temporary files (``.<name>.<random>.tmp``, never a half-written file under
its real name), which the next run removes before it starts; the rerun then writes the same
bytes an uninterrupted run writes. :func:`run_group_level` and :func:`run_biomarker` skip in the
same way when neither their inputs (every participant's features and sidecars, participants.tsv)
nor their parameters changed, so a rerun of a finished job only reads and checks.

One run at a time writes to an output folder (a lock file under ``logs/``; the kernel releases
it when a process dies). Every run logs to ``OUTPUT_DIR/logs/painplast-<time>.log``.

Examples
--------
>>> from painplast.cohort import Cohort
>>> cohort = Cohort.from_bids(bids_dir)         # a BIDS folder with fMRIPrep derivatives
>>> config = Config(modules=("structure",), n_permutations=20)
>>> summary = run_participant_level(cohort, config, "out", progress=False)
>>> groups = run_group_level(cohort, config, "out", progress=False)
>>> sorted(groups), len(summary.done)
(['structure'], 8)
>>> len(run_participant_level(cohort, config, "out", progress=False).skipped_existing)  # a rerun
8
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import nibabel as nib
import pandas as pd

from . import __version__, plasticity
from .cohort import Cohort, Subject
from .config import GROUP_FIELDS, Config
from .derivatives import Derivatives, write_json
from .errors import InputError
from .results import GroupResult, SubjectResult

__all__ = ["Summary", "run_participant_level", "run_group_level", "run_biomarker", "check_group_inputs",
           "clean_temporaries", "process_one", "process_stages", "engine_tasks", "load_subject_results",
           "left_out", "longitudinal_sessions", "group_sessions"]

log = logging.getLogger("painplast")

#: Environment of worker processes: one BLAS/OpenMP thread each (n workers on n cores).
BLAS_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "VECLIB_MAXIMUM_THREADS": "1", "NUMEXPR_NUM_THREADS": "1"}


@dataclass
class Summary:
    """What a participant-level run did.

    Attributes
    ----------
    done : list of (participant_id, module)
        Stages computed by this run.
    skipped_existing : list of (participant_id, module)
        Stages whose outputs already existed with the same parameter hash.
    failed : list of (participant_id, module, reason)
        Stages that raised (missing input: the module's InputError; a bug: the exception,
        with its traceback in the log). Also in ``logs/skipped/`` (``Derivatives.failures``).
    seconds : float
        Wall time of the run.
    removed_temporaries : int
        Stray temporary files of an earlier, killed run that this run removed.
    """

    done: list[tuple[str, str]] = field(default_factory=list)
    skipped_existing: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    seconds: float = 0.0
    removed_temporaries: int = 0


# --------------------------------------------------------------------------------------------
# housekeeping: log file, lock, stray temporaries
# --------------------------------------------------------------------------------------------

def _pin_threads() -> None:
    """One BLAS/OpenMP thread in this process (called in every worker before a stage)."""
    for var, value in BLAS_ENV.items():
        os.environ.setdefault(var, value)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
    except Exception:  # pragma: no cover - threadpoolctl ships with scikit-learn; never fatal
        pass


@contextlib.contextmanager
def _run_log(out_dir: Path) -> Iterator[Path | None]:
    """Log INFO and above of the ``painplast`` logger to ``out_dir/logs/painplast-<time>.log``.

    Does nothing when a file handler already writes into that folder (the CLI sets one up).
    """
    logs = (Path(out_dir) / "logs").resolve()
    for logger in (logging.getLogger(), log):
        for handler in logger.handlers:
            name = getattr(handler, "baseFilename", None)
            if name and Path(name).resolve().parent == logs:
                yield Path(name)
                return
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / f"painplast-{time.strftime('%Y%m%d-%H%M%S')}.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    old_level = log.level
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        yield path
    finally:
        log.removeHandler(handler)
        handler.close()
        log.setLevel(old_level)


@contextlib.contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir/logs/.lock``: one painplast run writes to a folder at a time."""
    import fcntl
    logs = Path(out_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError("another painplast run is writing to this output folder",
                             path=out_dir, fix="wait for it to finish, or give another folder") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def clean_temporaries(out_dir: str | os.PathLike) -> list[Path]:
    """Remove the temporary files a killed run left in ``out_dir``.

    Atomic writes go to ``.<name>.<random>.tmp`` beside their target and are renamed into place;
    a run killed between the two leaves such a file behind (never a partial file under a real
    name). Call this only while holding the folder's lock (the engine does).

    Parameters
    ----------
    out_dir : path
        A painplast output folder.

    Returns
    -------
    list of Path
        The files removed.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / ".features.tsv.abc123.tmp").write_text("half")
    >>> [p.name for p in clean_temporaries(d)]
    ['.features.tsv.abc123.tmp']
    """
    removed = []
    root = Path(out_dir)
    if not root.is_dir():
        return removed
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if name.startswith(".") and name.endswith(".tmp"):
                path = Path(folder) / name
                try:
                    path.unlink()
                    removed.append(path)
                except FileNotFoundError:
                    pass
    return removed


# --------------------------------------------------------------------------------------------
# participant level
# --------------------------------------------------------------------------------------------

def process_one(stage: Callable[[Subject, Config], SubjectResult], subject: Subject, module: str,
                config: Config, out_dir: str, checksums: bool = True,
                task: str | None = None) -> tuple[str, str, str | None, float]:
    """Run one module's subject stage for one participant-session and write its outputs.

    Runs in a worker process: the participant's images are read here and only the outcome
    travels back.

    Parameters
    ----------
    stage : callable
        The module's ``subject`` function (pickled by reference).
    subject : Subject
        One participant and session (:meth:`painplast.cohort.Cohort.units`).
    module : str
    config : Config
    out_dir : str
    checksums : bool
        Record the SHA-256 of every input file in the sidecar.
    task : str, optional
        The task the module reads: its runs are recorded as the runs used when the module's
        result does not list them (``info["runs"]``).

    Returns
    -------
    tuple
        ``(unit, module, error, seconds)``: ``unit`` is ``sub-01`` or ``sub-01 ses-pre``;
        ``error`` is None on success, else the reason (also written to ``logs/skipped/``).
    """
    _pin_threads()
    t0 = time.perf_counter()
    deriv = Derivatives(out_dir)
    pid, ses, unit = subject.participant_id, subject.session, subject.unit
    try:
        result: SubjectResult = stage(subject, config)
        if result.participant_id != pid or result.module != module:
            raise ValueError(f"{module}.subject returned a result for "
                             f"{result.module}/{result.participant_id}")
        if result.session is None and ses is not None:
            result = replace(result, session=ses)
    except InputError as error:
        reason = " ".join(str(error).split())
        deriv.write_failure(pid, module, reason, ses)
        return unit, module, reason, time.perf_counter() - t0
    except Exception as error:  # a bug in a module: record it, keep the other participants going
        reason = f"internal error {type(error).__name__}: {' '.join(str(error).split())}"
        deriv.write_failure(pid, module, reason, ses)
        return unit, module, reason + "\n" + traceback.format_exc(), time.perf_counter() - t0
    runs = result.info.get("runs")
    if runs is None:
        runs = [r.name for r in (subject.runs_for(task) if task else ())]
    # the sidecar is the 'done' marker: remove an old one before any file is replaced, so that a
    # kill during the writes can never leave an old sidecar beside new (or mixed) files
    deriv.sidecar_path(pid, module, ses).unlink(missing_ok=True)
    deriv.write_subject(result, {"config": config.to_dict()}, config.parameter_hash(module),
                        [str(p) for p in subject.files] if checksums else (), runs=runs, space=config.space)
    deriv.clear_failure(pid, module, ses)  # it may have failed in an earlier run and works now
    return unit, module, None, time.perf_counter() - t0


def engine_tasks(todo: Sequence[tuple[Subject, str]],
                 tasks: Mapping[str, str | None]) -> list[tuple[Subject, list[str]]]:
    """Group the stages to run into engine tasks: the modules of one participant-session that read
    a common BOLD file run in one task (which reads the file once), every other stage alone.

    Parameters
    ----------
    todo : sequence of (Subject, module)
        The stages to run, in order.
    tasks : mapping
        ``{module: the task it reads}`` (its declaration's ``task``; None for anatomical data).

    Returns
    -------
    list of (Subject, list of module)
        In the order of each group's first stage; modules in ``todo`` order.

    Examples
    --------
    >>> from painplast.cohort import Cohort
    >>> unit = Cohort.from_bids(bids_dir).units()[0]
    >>> groups = engine_tasks([(unit, "sensitization"), (unit, "structure"), (unit, "modulation")],
    ...                       {"sensitization": "pain", "structure": None, "modulation": "pain"})
    >>> [modules for _, modules in groups]       # both read the pain run: one task
    [['sensitization', 'modulation'], ['structure']]
    """
    groups: list[tuple[Subject, list[str], set]] = []
    open_groups: dict[tuple, list[int]] = {}
    for unit, module in todo:
        task = tasks.get(module)
        files = {str(r.bold) for r in unit.runs_for(task) if r.bold is not None} if task else set()
        key = (unit.participant_id, unit.session)
        shared = [i for i in open_groups.get(key, []) if files & groups[i][2]]
        if not shared:
            open_groups.setdefault(key, []).append(len(groups))
            groups.append((unit, [module], set(files)))
            continue
        first = shared[0]
        groups[first][1].append(module)
        groups[first][2].update(files)
        for i in shared[1:]:             # a module that links two groups joins them
            groups[first][1].extend(groups[i][1])
            groups[first][2].update(groups[i][2])
            groups[i][1].clear()
            open_groups[key].remove(i)
    order = {m: i for i, (_, m) in enumerate(todo)}
    return [(unit, sorted(modules, key=lambda m: order[m])) for unit, modules, _ in groups if modules]


def process_stages(stages: Sequence[tuple[Callable, str, str | None]], subject: Subject, config: Config,
                   out_dir: str, checksums: bool = True) -> list[tuple[str, str, str | None, float]]:
    """Run several modules' subject stages for one participant-session in this process.

    Several stages share the BOLD runs they read (:func:`painplast.plasticity._firstlevel.shared_runs`):
    each image is read once. Each stage writes its own outputs and sidecar exactly as
    :func:`process_one` does alone.

    Parameters
    ----------
    stages : sequence of (stage, module, task)
    subject, config, out_dir, checksums
        As for :func:`process_one`.

    Returns
    -------
    list
        One :func:`process_one` outcome per stage, in order.
    """
    from .plasticity._buffers import reusing
    from .plasticity._firstlevel import shared_runs
    with reusing(), shared_runs():
        return [process_one(stage, subject, module, config, out_dir, checksums, task)
                for stage, module, task in stages]


def _stages(modules: Iterable[str]) -> dict[str, tuple[Callable, str | None]]:
    """The ``subject`` stage and task of each installed module among ``modules`` (imported only here)."""
    out = {}
    for name in modules:
        mod = plasticity.load(name)
        if mod is None:
            log.warning("module %s is not available in this version; not run", name)
        else:
            out[name] = (mod.subject, getattr(mod, "task", None))
    return out


def run_participant_level(cohort: Cohort, config: Config, out_dir: str | os.PathLike, *,
                          n_jobs: int = 1, progress: bool = True, scheduler: str | None = None,
                          dask_workers: int | None = None) -> Summary:
    """Run every configured module's subject stage for every participant and session of ``cohort``.

    Parameters
    ----------
    cohort : Cohort
        Its :meth:`~painplast.cohort.Cohort.units` (participants x sessions) are processed.
    config : Config
        ``config.modules`` selects the modules; modules not installed are logged and left out.
    out_dir : path
        The painplast output folder (created if needed).
    n_jobs : int
        Cores to use (1: serially in this process; -1: one per core). Several participant-sessions
        are spread over joblib worker processes; a single participant-session's independent
        tasks (one per BOLD file it reads) run on threads of this process instead
        (:func:`_run_threads`). The outputs are the same bytes either way.
    progress : bool
        Progress bars over participants and over participant stages.
    scheduler : str, optional
        Address of a dask.distributed scheduler (``tcp://HOST:PORT``); the workers must see
        ``out_dir`` and the input files at the same paths.
    dask_workers : int, optional
        Start a local dask cluster with this many single-threaded worker processes.

    Returns
    -------
    Summary

    Examples
    --------
    >>> from painplast.cohort import Cohort
    >>> cohort = Cohort.from_bids(bids_dir)
    >>> summary = run_participant_level(cohort, Config(modules=("structure",)), "out", progress=False)
    >>> len(summary.done) + len(summary.skipped_existing), len(summary.failed)
    (8, 0)
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    deriv = Derivatives(out_dir)
    deriv.initialise(cohort.root, config.to_dict())
    summary = Summary()
    units = cohort.units()
    with _exclusive(out_dir), _run_log(out_dir) as log_path:
        removed = clean_temporaries(out_dir)
        summary.removed_temporaries = len(removed)
        if removed:
            log.info("removed %d temporary file(s) of an interrupted run", len(removed))
        # what is done is decided from the sidecars alone; a module is imported (which can take
        # seconds) only when it has work left, so the rerun of a finished job stays quick
        pending: list[tuple[Subject, str]] = []
        for unit in units:
            for module in config.modules:
                if deriv.is_done(unit.participant_id, module, config.parameter_hash(module), unit.session):
                    summary.skipped_existing.append((unit.unit, module))
                else:
                    pending.append((unit, module))
        stages = _stages(dict.fromkeys(m for _, m in pending))
        todo: list[tuple[Subject, str]] = [(s, m) for s, m in pending if m in stages]
        remaining: dict[str, int] = {}
        for unit, _ in todo:
            remaining[unit.unit] = remaining.get(unit.unit, 0) + 1
        n_modules = len({m for _, m in summary.skipped_existing} | set(stages))
        log.info("participant level: %d participants, %d participant-sessions x %d modules; %d stages to "
                 "run (%s), %d already done; log %s", len(cohort), len(units), n_modules, len(todo),
                 ", ".join(stages) or "none", len(summary.skipped_existing), log_path)
        from tqdm.auto import tqdm
        bar_p = tqdm(total=len(units), initial=len(units) - len(remaining), desc="participants",
                     unit="session" if cohort.has_sessions else "participant", disable=not progress,
                     position=0)
        bar_s = tqdm(total=len(todo) + len(summary.skipped_existing), initial=len(summary.skipped_existing),
                     desc="stages", unit="stage", disable=not progress, position=1, leave=False)

        def record(outcome) -> None:
            unit, module, error, seconds = outcome
            if error is None:
                summary.done.append((unit, module))
                log.info("%s %s done (%.1f s)", unit, module, seconds)
            else:
                reason = error.split("\n", 1)[0]
                summary.failed.append((unit, module, reason))
                level = logging.ERROR if reason.startswith("internal error") else logging.WARNING
                log.log(level, "%s %s skipped: %s", unit, module, error)
            bar_s.update()
            bar_s.set_postfix_str(f"{unit} {module}", refresh=False)
            remaining[unit] -= 1
            if remaining[unit] == 0:
                bar_p.update()

        tasks = [([(stages[m][0], m, stages[m][1]) for m in modules], unit, config, str(out_dir), True)
                 for unit, modules in engine_tasks(todo, {m: t for m, (_, t) in stages.items()})]
        serial = n_jobs == 1 or len(tasks) <= 1
        try:
            if scheduler or dask_workers:
                _run_dask(tasks, scheduler, dask_workers, record)
            elif serial or len({task[1].unit for task in tasks}) == 1:
                from .plasticity._buffers import reusing
                with reusing():            # the tasks of this process reuse each other's large arrays
                    if serial:
                        for task in tasks:
                            for outcome in process_stages(*task):
                                record(outcome)
                    else:
                        _run_threads(tasks, n_jobs, record)
            else:
                from joblib import Parallel, delayed
                for outcomes in Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
                        delayed(process_stages)(*task) for task in tasks):
                    for outcome in outcomes:
                        record(outcome)
        finally:
            bar_s.close()
            bar_p.close()
        summary.seconds = time.perf_counter() - t0
        log.info("participant level: %d done, %d already done, %d skipped in %.1f s",
                 len(summary.done), len(summary.skipped_existing), len(summary.failed),
                 summary.seconds)
    return summary


def _run_threads(tasks, n_jobs: int, record) -> None:
    """Run the engine tasks of one participant-session on ``n_jobs`` threads of this process.

    One participant-session has a few independent engine tasks (one per BOLD file it reads,
    :func:`engine_tasks`), and nearly all of their time is spent where Python releases the GIL
    (zlib inflation, numpy and BLAS), so threads keep ``n_jobs`` cores busy without starting
    worker processes (each of which imports the toolkit and its dependencies, seconds of CPU) or
    copying anything. Each task computes exactly what it computes alone (single-threaded BLAS, no
    state shared between tasks: :func:`painplast.plasticity._firstlevel.shared_runs` is per
    thread), so the outputs are byte-identical to the serial run's. Tasks start costliest first
    (the modules' declared ``cost`` times the bytes of BOLD they read; anatomical ones are short),
    so the threads finish together, and outcomes are recorded as tasks finish.
    """
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
    from joblib import effective_n_jobs

    def cost(task) -> float:
        # longest first (LPT): each module's declared cost per byte times the bytes of its runs
        unit, total = task[1], 0.0
        for _, module, t in task[0]:
            if not t:
                continue
            declared = plasticity.load(module)
            files = {r.bold for r in unit.runs_for(t) if r.bold is not None}
            size = sum(Path(f).stat().st_size for f in files if Path(f).exists())
            total += float(getattr(declared, "cost", 1.0)) * size
        return total

    order = sorted(tasks, key=cost, reverse=True)        # stable: equal costs keep their order
    n_threads = max(1, min(effective_n_jobs(n_jobs), len(order)))
    with ThreadPoolExecutor(n_threads, thread_name_prefix="painplast-task") as pool:
        pending = {pool.submit(process_stages, *task) for task in order}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    for outcome in future.result():
                        record(outcome)
        except BaseException:
            for future in pending:
                future.cancel()
            raise


@contextlib.contextmanager
def _dask_client(scheduler: str | None, dask_workers: int | None):
    """A dask.distributed client of the scheduler at ``scheduler``, or of a local cluster."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise InputError("dask.distributed is not installed",
                         fix="pip install 'painplast[dask]', or use --n-jobs") from None
    cluster = None
    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as error:
            raise InputError(f"cannot reach the dask scheduler {scheduler} ({error})",
                             fix="check the address (tcp://HOST:PORT) and that the scheduler runs") from None
    else:
        if int(dask_workers) < 1:
            raise InputError("--dask-workers must be at least 1", fix="give a positive number")
        cluster = LocalCluster(n_workers=int(dask_workers), threads_per_worker=1, processes=True,
                               dashboard_address=None, env=dict(BLAS_ENV), silence_logs=logging.ERROR)
        client = Client(cluster)
    try:
        client.run(_pin_threads)
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _run_dask(tasks, scheduler, dask_workers, record) -> None:
    """Run ``process_stages`` tasks on dask.distributed; ``record`` each outcome as it arrives."""
    from dask.distributed import as_completed

    with _dask_client(scheduler, dask_workers) as client:
        futures = [client.submit(process_stages, *task, pure=False) for task in tasks]
        for future in as_completed(futures):
            for outcome in future.result():
                record(outcome)
            future.release()


def _in_order(client):
    """A ``map`` that runs each task on the cluster and returns the results in task order."""
    def executor(function, tasks):
        tasks = list(tasks)
        data = client.scatter(tasks)          # large arrays travel once, not inside the graph
        futures = client.map(function, data, pure=False)
        try:
            return client.gather(futures)
        finally:
            client.cancel(futures + list(data))
    return executor


@contextlib.contextmanager
def _cluster_permutations(scheduler: str | None, dask_workers: int | None):
    """Inside the block, permutation tests run their batches on the dask cluster (if one is given)."""
    if not scheduler and not dask_workers:
        yield
        return
    from .stats.permutation import permutation_executor
    with _dask_client(scheduler, dask_workers) as client:
        n_tasks = max(1, sum(client.nthreads().values()))
        log.info("group level: permutations on %d dask worker thread(s) at %s", n_tasks,
                 client.scheduler.address)
        with permutation_executor(_in_order(client), n_tasks):
            yield


def load_subject_results(cohort: Cohort, module: str, out_dir: str | os.PathLike,
                         parameter_hash: str | None = None,
                         sessions: Mapping[str, str | None] | None = None) -> list[SubjectResult]:
    """Every participant's written result of ``module`` (maps loaded lazily), in cohort order.

    Parameters
    ----------
    cohort : Cohort
    module : str
    out_dir : path
    parameter_hash : str, optional
        Only results written with these parameters (``Config.parameter_hash(module)``); results
        left from a run with other parameters (whose rerun failed) are ignored.
    sessions : mapping, optional
        ``{participant_id: session}``: the one session per participant to read (default
        :meth:`Cohort.cross_sectional_sessions`); participants not in it are left out.

    Returns
    -------
    list of SubjectResult
        One per participant; participants without a (finished) result are left out.
    """
    deriv = Derivatives(out_dir)
    sessions = cohort.cross_sectional_sessions() if sessions is None else sessions
    results = []
    for subject in cohort.subjects:
        pid = subject.participant_id
        if pid not in sessions:
            continue
        ses = sessions[pid]
        if parameter_hash is not None and not deriv.is_done(pid, module, parameter_hash, ses):
            continue
        res = deriv.read_subject(pid, module, ses)
        if res is not None:
            results.append(res)
    return results


def left_out(cohort: Cohort, module: str, out_dir: str | os.PathLike, results: Sequence[SubjectResult],
             sessions: Mapping[str, str | None]) -> list[dict]:
    """Who is not in a module's group statistics, and why (for the notes and the report).

    Returns
    -------
    list of dict
        ``{"participant_id", "session", "reason"}``: listed participants without any file, those
        without data in the session analysed, stages that failed (their recorded reason) or that
        never ran, and participants the module excluded (``info["excluded"]``).
    """
    deriv = Derivatives(out_dir)
    have = {r.participant_id: r for r in results}
    rows = [{"participant_id": pid, "session": None, "reason": reason} for pid, reason in cohort.left_out]
    for subject in cohort.subjects:
        pid = subject.participant_id
        if pid not in sessions:
            rows.append({"participant_id": pid, "session": None,
                         "reason": "no data in the session analysed"})
            continue
        ses = sessions[pid]
        if pid in have:
            if have[pid].excluded:
                rows.append({"participant_id": pid, "session": ses, "reason": f"excluded: {have[pid].excluded}"})
            continue
        failure = deriv._failure_path(pid, module, ses)
        try:
            reason = json.loads(failure.read_text()).get("reason") or "the participant stage failed"
        except (OSError, ValueError):
            reason = "no participant result (participant stage not run)"
        rows.append({"participant_id": pid, "session": ses, "reason": reason})
    return rows


# --------------------------------------------------------------------------------------------
# group level and biomarker: skipped when inputs and parameters are unchanged
# --------------------------------------------------------------------------------------------

def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _participants_bytes(cohort: Cohort) -> bytes:
    return cohort.participants.to_csv(sep="\t", lineterminator="\n").encode()


def _module_inputs(deriv: Derivatives, cohort: Cohort, module: str,
                   sessions: Mapping[str, str | None]) -> list[bytes]:
    parts = []
    for subject in cohort.subjects:
        pid = subject.participant_id
        ses = sessions.get(pid, "none")
        parts.append(f"{pid} {ses}")
        for path in (deriv.sidecar_path(pid, module, ses), deriv.features_path(pid, module, ses)):
            parts.append(path.read_bytes() if path.exists() else b"missing")
    return parts


def group_input_hash(cohort: Cohort, config: Config, module: str, out_dir: str | os.PathLike,
                     sessions: Mapping[str, str | None] | None = None) -> str:
    """Hash of everything a module's group stage reads (for skipping an unchanged rerun).

    Parameters
    ----------
    cohort, config, module, out_dir
        As for :func:`run_group_level`.
    sessions : mapping, optional
        The session read per participant (default :meth:`Cohort.cross_sectional_sessions`).

    Returns
    -------
    str
        16 hex digits over the painplast version, the module's parameter hash, participants.tsv
        and every participant's features file and sidecar.
    """
    deriv = Derivatives(out_dir)
    sessions = cohort.cross_sectional_sessions() if sessions is None else sessions
    group_fields = json.dumps({name: getattr(config, name) for name in GROUP_FIELDS}, sort_keys=True)
    return _digest(__version__, module, config.parameter_hash(module), group_fields,
                   _participants_bytes(cohort), *_module_inputs(deriv, cohort, module, sessions))


def _read_group(deriv: Derivatives, module: str, notes: dict) -> GroupResult:
    g = deriv.group_dir
    read = lambda p: pd.read_csv(p, sep="\t", na_values="n/a", keep_default_na=False)  # noqa: E731
    findings = read(g / f"{module}_findings.tsv")
    clusters, tables, maps, figures = None, {}, {}, {}
    for name in notes.get("files", []):
        path, stem = g / name, name[len(module) + 1:]
        if name in (f"{module}_findings.tsv",):
            continue
        if name == f"{module}_clusters.tsv":
            clusters = read(path)
        elif name.endswith(".tsv"):
            tables[stem[:-4]] = read(path)
        elif name.endswith(".png"):
            figures[stem[:-4]] = path.read_bytes()
        elif name.endswith(".nii.gz"):
            maps[stem[:-7]] = nib.load(path)
    return GroupResult(module, findings, clusters, tables, maps, figures, tuple(notes.get("notes", ())))


def _group_up_to_date(deriv: Derivatives, module: str, input_hash: str) -> dict | None:
    path = deriv.group_dir / f"{module}_notes.json"
    try:
        notes = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if (notes.get("parameters") or {}).get("input_hash") != input_hash:
        return None
    if not all((deriv.group_dir / f).exists() for f in notes.get("files", [])):
        return None
    return notes


def check_group_inputs(cohort: Cohort, config: Config, out_dir: str | os.PathLike,
                       sessions: Mapping[str, str | None] | None = None) -> dict[str, int]:
    """How many participants have results of each module for the group level; stop if none.

    Reads only sidecars, writes nothing, so a group step that cannot run stops before it
    touches the output folder.

    Returns
    -------
    dict
        ``{module: participants with a result written with this config's parameters}``.

    Raises
    ------
    InputError
        No module has any: the message says whether the participant step has not run or ran
        with other options, and which flags to give.
    """
    deriv = Derivatives(out_dir)
    sessions = cohort.cross_sectional_sessions() if sessions is None else sessions
    counts, stale = {}, {}
    for module in config.modules:
        digest = config.parameter_hash(module)
        counts[module] = sum(deriv.is_done(pid, module, digest, ses) for pid, ses in sessions.items())
        stale[module] = sum(deriv.sidecar_path(pid, module, ses).exists() for pid, ses in sessions.items()) \
            - counts[module]
    if any(counts.values()) or not config.modules:
        return counts
    if any(stale.values()):
        raise InputError(f"the participant results in this folder were made with other options than "
                         f"this group step's ({', '.join(m for m, n in stale.items() if n)})", path=out_dir,
                         fix="give the group step the participant step's options (--space, --task-map, "
                             "--repetition-time, --confounds-strategy, --atlas, --config), or rerun the "
                             "participant step with these")
    raise InputError(f"no participant results of {', '.join(config.modules)} in this folder"
                     + (" for the session(s) analysed" if any(sessions.values()) else ""), path=out_dir,
                     fix="run 'painplast run BIDS_DIR OUTPUT_DIR participant' first, with the same --modules "
                         "and --session-label")


def longitudinal_sessions(cohort: Cohort, longitudinal: str | Sequence[str] | None = "auto"
                          ) -> tuple[str, str] | None:
    """The (baseline, follow-up) sessions of the longitudinal group statistics, or None.

    ``"auto"`` (the default of ``painplast run ... group``): longitudinal when the cohort's
    participants have exactly two session labels between them, at least
    :data:`~painplast.plasticity._group.MIN_PARTICIPANTS` participants have both, and
    ``acq_time`` in ``sub-*_sessions.tsv`` orders them; the baseline is the one most
    participants have first. Without ``acq_time`` the order is unknown and nothing is guessed
    (None: name the sessions with ``--longitudinal``). A cohort read with one ``--session-label`` has one session and is cross-sectional.
    ``"none"`` (or None): cross-sectional only. ``"BASE,FOLLOW"`` or a pair: those two sessions
    (``ses-`` optional), which must both exist.

    Returns
    -------
    tuple of str or None

    Raises
    ------
    InputError
        A named session is not in the cohort, or the value is not ``auto``, ``none`` or two
        labels (the fix names ``--longitudinal``).

    Examples
    --------
    >>> from painplast.cohort import Cohort
    >>> longitudinal_sessions(Cohort.from_bids(bids_dir)) is None    # one session per participant
    True
    """
    if longitudinal is None:
        return None
    if isinstance(longitudinal, str):
        text = longitudinal.strip()
        if text.lower() in ("none", "no", "off", ""):
            return None
        if text.lower() != "auto":
            longitudinal = [t for t in text.replace(":", ",").split(",") if t.strip()]
    present = {s for subject in cohort.subjects for s in subject.sessions if s is not None}
    if isinstance(longitudinal, str):          # auto
        if len(present) != 2:
            return None
        firsts: dict[str, int] = {}
        both = 0
        for subject in cohort.subjects:
            own = [s for s in subject.sessions if s is not None]
            if len(own) == 2:
                times = [pd.to_datetime((subject.session_info.get(s) or {}).get("acq_time"), errors="coerce")
                         for s in own]
                if any(pd.isna(t) for t in times):   # order unknown: the user names the sessions
                    return None
                both += 1
                firsts[own[0]] = firsts.get(own[0], 0) + 1
        from .plasticity._group import MIN_PARTICIPANTS
        if both < MIN_PARTICIPANTS:
            return None
        order = sorted(present, key=lambda s: (-firsts.get(s, 0), s))
        return order[0], order[1]
    labels = [str(t).strip() for t in longitudinal]
    labels = [t[4:] if t.startswith("ses-") else t for t in labels]
    if len(labels) != 2 or labels[0] == labels[1]:
        raise InputError(f"--longitudinal needs two different sessions, got {', '.join(labels) or 'none'}",
                         fix="give --longitudinal BASELINE,FOLLOWUP (e.g. --longitudinal baseline,followup), "
                             "auto or none")
    for label in labels:
        if label not in present:
            raise InputError(f"session {label!r} named by --longitudinal is not in the cohort "
                             f"(sessions: {', '.join(sorted(present)) or 'none'})", path=cohort.root,
                             fix="name two sessions the dataset has with --longitudinal BASELINE,FOLLOWUP")
    return labels[0], labels[1]


def group_sessions(cohort: Cohort, session_label: Sequence[str] | str | None = None,
                   pair: tuple[str, str] | None = None) -> dict[str, str | None]:
    """The session per participant of the cross-sectional group statistics.

    The baseline of a longitudinal ``pair`` (participants without it are left out) unless
    ``session_label`` names one; otherwise :meth:`Cohort.cross_sectional_sessions`.
    """
    if pair is not None and not session_label:
        return {s.participant_id: pair[0] for s in cohort.subjects if pair[0] in s.sessions}
    return cohort.cross_sectional_sessions(session_label)


def run_group_level(cohort: Cohort, config: Config, out_dir: str | os.PathLike, *,
                    progress: bool = True, force: bool = False,
                    session_label: Sequence[str] | str | None = None, scheduler: str | None = None,
                    dask_workers: int | None = None,
                    longitudinal: str | Sequence[str] | None = "auto") -> dict[str, GroupResult]:
    """Run each configured module's group stage on the subject results found in ``out_dir``.

    Cross-sectional statistics take one session per participant
    (:meth:`Cohort.cross_sectional_sessions`: the one named, the only one, or the earliest by
    ``acq_time``). A module whose group outputs were written from the same inputs and parameters
    (same :func:`group_input_hash`) is read back instead of recomputed, unless ``force``. Who was
    left out, and why, is written to ``group/<module>_notes.json`` (``left_out``).

    Parameters
    ----------
    cohort : Cohort
    config : Config
    out_dir : path
    progress : bool
    force : bool
        Recompute even when the outputs are up to date.
    session_label : str or list of str, optional
        The session of the cross-sectional statistics (``--session-label``).
    scheduler : str, optional
        Address of a dask.distributed scheduler: the permutations of the voxel-wise tests and of
        the NBS are spread over its workers
        (:func:`painplast.stats.permutation.permutation_executor`); the results are the same as
        in one process.
    dask_workers : int, optional
        The same on a local dask cluster of this many single-threaded workers.
    longitudinal : str or pair of str, optional
        See :func:`longitudinal_sessions` (``--longitudinal``). With two sessions, the
        cross-sectional statistics use the baseline session (unless ``session_label`` names
        another), and each module's findings gain the longitudinal contrasts
        (:func:`painplast.plasticity._longitudinal.extend`).

    Returns
    -------
    dict of str to GroupResult
        One entry per module that has participant results.

    Raises
    ------
    InputError
        No module has participant results (the message says which step or options to use), or
        the session to analyse is not determined (it names ``--session-label``).
    """
    from .plasticity._buffers import release
    release()          # the participant level's buffers kept for a next participant: not needed now
    out_dir = Path(out_dir)
    deriv = Derivatives(out_dir)
    pair = longitudinal_sessions(cohort, longitudinal)
    sessions = group_sessions(cohort, session_label, pair)
    follow = {s.participant_id: pair[1] for s in cohort.subjects if pair[1] in s.sessions} if pair else {}
    check_group_inputs(cohort, config, out_dir, sessions)
    out = {}
    from tqdm.auto import tqdm
    with _exclusive(out_dir), _run_log(out_dir), _cluster_permutations(scheduler, dask_workers):
        clean_temporaries(out_dir)
        for module in tqdm(config.modules, desc="group stages", unit="module", disable=not progress):
            input_hash = group_input_hash(cohort, config, module, out_dir, sessions)
            if pair is not None:
                input_hash = _digest(input_hash, "longitudinal", *pair,
                                     group_input_hash(cohort, config, module, out_dir, follow))
            notes = None if force else _group_up_to_date(deriv, module, input_hash)
            if notes is not None:
                log.info("%s group stage up to date (inputs %s); not recomputed", module, input_hash)
                out[module] = _read_group(deriv, module, notes)
                continue
            mod = plasticity.load(module)
            if mod is None:
                log.warning("module %s is not available in this version; group stage not run", module)
                continue
            results = load_subject_results(cohort, module, out_dir, config.parameter_hash(module), sessions)
            if not results:
                log.warning("%s: no participant results; group stage skipped", module)
                continue
            t0 = time.perf_counter()
            try:
                group = mod.group(results, cohort, config)
            except InputError:
                raise
            except Exception:  # logged with its traceback, then raised: a bug must be seen
                log.error("%s group stage failed:\n%s", module, traceback.format_exc())
                raise
            missing = left_out(cohort, module, out_dir, results, sessions)
            used = sorted({r.session for r in results if r.session})
            extra_notes = []
            if used:
                extra_notes.append(f"cross-sectional statistics on session(s) {', '.join(used)} "
                                   f"(one per participant)")
            if missing:
                extra_notes.append(f"{len(missing)} participant(s) left out (see left_out in "
                                   f"{module}_notes.json): " + "; ".join(
                                       f"{m['participant_id']}: {m['reason']}" for m in missing[:3])
                                   + (" ..." if len(missing) > 3 else ""))
            if pair is not None:
                from .plasticity import _longitudinal
                followup = load_subject_results(cohort, module, out_dir, config.parameter_hash(module), follow)
                group = _longitudinal.extend(group, plasticity.get(module), results, followup, cohort,
                                             config, pair)
            group = replace(group, notes=tuple(group.notes) + tuple(extra_notes))
            (deriv.group_dir / f"{module}_notes.json").unlink(missing_ok=True)  # 'done' marker first
            deriv.write_group(group, {"config": config.to_dict(), "input_hash": input_hash,
                                      "n_participants": len(results)},
                              extra={"left_out": missing,
                                     "sessions": {r.participant_id: r.session for r in results}})
            log.info("%s group stage done: %d participants, %d findings (%.1f s)", module,
                     len(results), len(group.findings), time.perf_counter() - t0)
            out[module] = group
    return out


def run_biomarker(cohort: Cohort, config: Config, out_dir: str | os.PathLike, target: str,
                  runner: Callable[[Cohort, Config, Path, str], object], *, force: bool = False,
                  longitudinal: str | Sequence[str] | None = "auto") -> bool:
    """Run ``runner`` (the biomarker engine) for ``target`` unless its outputs are up to date.

    Parameters
    ----------
    cohort, config : Cohort, Config
    out_dir : path
    target : str
        ``diagnosis``, ``treatment`` or a participants column.
    runner : callable
        ``runner(cohort, config, out_dir, target)`` writes ``group/biomarker_<target>.json``
        from the features of one session per participant
        (:meth:`~painplast.cohort.Cohort.cross_sectional_sessions`).
    force : bool
        Run even when up to date.
    longitudinal : str or pair of str, optional
        As for :func:`run_group_level`. With a baseline and a follow-up session the runner sees
        the cohort restricted to the baseline session (``session_label``), so a follow-up
        outcome (``outcome``: persisting vs recovering, ``pain_relief``) is predicted from
        baseline features only and no follow-up file enters the features or the input hash.

    Returns
    -------
    bool
        True if it ran, False if the outputs were up to date.
    """
    pair = longitudinal_sessions(cohort, longitudinal)
    if pair is not None:
        cohort = replace(cohort, session_label=(pair[0],))
    out_dir = Path(out_dir)
    deriv = Derivatives(out_dir)
    sessions = cohort.cross_sectional_sessions()
    parts = [__version__, target, config.parameter_hash(), _participants_bytes(cohort)]
    for module in config.modules:
        parts += _module_inputs(deriv, cohort, module, sessions)
    input_hash = _digest(*parts)
    stamp = deriv.logs_dir / "stamps" / f"biomarker_{target}.json"
    result_path = deriv.group_dir / f"biomarker_{target}.json"
    if not force and result_path.exists() and stamp.exists():
        try:
            recorded = json.loads(stamp.read_text()).get("input_hash")
            model = json.loads(result_path.read_text()).get("model")
        except ValueError:
            recorded, model = None, None
        model_ok = not model or (out_dir / model).exists() or Path(model).exists()
        if recorded == input_hash and model_ok:
            log.info("biomarker %s up to date (inputs %s); not recomputed", target, input_hash)
            return False
    t0 = time.perf_counter()
    stamp.unlink(missing_ok=True)
    with _run_log(out_dir):
        runner(cohort, config, out_dir, target)
        log.info("biomarker %s done (%.1f s)", target, time.perf_counter() - t0)
    write_json(stamp, {"target": target, "input_hash": input_hash})
    return True
