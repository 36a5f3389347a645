"""A synthetic BIDS cohort of chronic-pain patients and controls with recorded ground truth.

``simulate(out_dir, params)`` writes raw BIDS (events, BOLD, T1w), fMRIPrep-style derivatives in
MNI152NLin2009cAsym space (preprocessed BOLD, brain masks, confounds, tissue probability maps)
and ``derivatives/simulation/ground_truth.json`` (planted effects, their sizes, best AUCs,
reliabilities) with ``participants_truth.tsv`` (every participant's noise-free feature values,
one row per participant and session). Several sessions (``ses-<label>``, with
``sub-*_sessions.tsv``) and runs (``run-<k>``) are written when asked, named as fMRIPrep names
them (docs/simulator.md).

The same parameters and seed give the same bytes, in serial or parallel.

Examples
--------
>>> from painplast.simulate import SimulationParameters, simulate
>>> import tempfile, pathlib, json
>>> out = pathlib.Path(tempfile.mkdtemp()) / "cohort"
>>> _ = simulate(out, SimulationParameters(n_participants=8, n_sites=2, resolution=6,
...              volumes_pain=40, volumes_somatotopy=40, volumes_modulation=40, volumes_rest=40),
...              progress=False)
>>> truth = json.loads((out / "derivatives/simulation/ground_truth.json").read_text())
>>> [k for k in ("effects", "parameters", "best_auc", "best_auc_deconfounded") if k in truth]
['effects', 'parameters', 'best_auc', 'best_auc_deconfounded']
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from . import images
from .bids import (SESSIONS_JSON, SPACE, link_or_copy, nifti, save_nifti, write_dataset_files,
                   write_json, write_tsv)
from .latent import clinical, session_latents, site_effects, truth_features
from .parameters import TASKS, SimulationParameters
from .truth import ground_truth

__all__ = ["SimulationParameters", "simulate", "latent_cohort", "latent_sessions", "TASKS"]


def _reference_side(participant_id: str) -> str:
    """``left`` if the first byte of sha256(participant_id) is even, else ``right``."""
    return "left" if hashlib.sha256(participant_id.encode()).digest()[0] % 2 == 0 else "right"


def _participants(clin: pd.DataFrame, ids: list[str]) -> pd.DataFrame:
    pat = clin["patient"].to_numpy()
    table = pd.DataFrame({
        "participant_id": ids,
        "group": np.where(pat, "patient", "control"),
        "diagnosis": clin["diagnosis"].where(pat, None),
        "site": [f"site{i + 1}" for i in clin["site_index"]],
        "age": clin["age"].astype(int),
        "sex": clin["sex"],
        "pain_intensity": np.where(pat, clin["pain_intensity"], 0.0),
        "pain_duration_months": np.where(pat, clin["pain_duration_months"], np.nan),
        "affected_side": clin["affected_side"].where(pat, None),
        "modulation_score": clin["modulation_score"],
        "treatment_response": np.where(pat, np.where(clin["responder"], "responder", "non-responder"), None),
    })
    if "stage" in clin:  # longitudinal design
        chronic, subacute = clin["chronic"].to_numpy(), clin["subacute"].to_numpy()
        table["treatment_response"] = np.where(chronic, table["treatment_response"], None)
        table.insert(2, "stage", np.where(pat, clin["stage"], None))
        table["pain_relief"] = np.where(pat, clin["pain_relief"], np.nan)
        table["outcome"] = np.where(subacute, np.where(clin["persisting"], "persisting", "recovering"), None)
    return table


def _sessions_tables(params: SimulationParameters, clin: pd.DataFrame,
                     ids: list[str]) -> dict[str, pd.DataFrame]:
    """``sub-*_sessions.tsv`` of every participant: session_id, acq_time, pain_intensity,
    modulation_score (the first session's values are participants.tsv's)."""
    import datetime as dt

    from .latent import plastic, reversal
    labels = params.sessions()
    rng = np.random.default_rng([params.seed, 2025])
    n = len(clin)
    pain0 = np.where(clin["patient"], clin["pain_intensity"], 0.0)
    relief = np.nan_to_num(clin["pain_relief"].to_numpy(float), nan=0.0) if "pain_relief" in clin else np.zeros(n)
    interval = dt.timedelta(weeks=params.followup_weeks) if params.longitudinal else dt.timedelta(days=14)
    score0 = clin["modulation_score"].to_numpy(float)
    tables = {}
    later_scores = [score0]
    for k in range(1, len(labels)):
        # the behavioural score follows the session's capacity (the treated patients' deficit
        # partly returns), with fresh rating noise
        capacity = clin["capacity"].to_numpy(float)
        if params.longitudinal:
            capacity = capacity + (params.scaled(params.modulation_capacity_deficit) * plastic(clin)
                                   * reversal(params, clin)["modulation"])
        later_scores.append((20 + 8 * (capacity + rng.normal(0, 0.8, n))).round(1))
    for i, pid in enumerate(ids):
        start = dt.datetime(2025, 1, 6, 9, 0) + dt.timedelta(days=3 * i, hours=int(i % 4) * 2)
        rows = []
        for k, label in enumerate(labels):
            pain = pain0[i] if k == 0 or not params.longitudinal else np.clip(pain0[i] * (1 - relief[i] / 100), 0, 10).round(1)
            rows.append({"session_id": f"ses-{label}", "acq_time": (start + k * interval).isoformat(),
                         "pain_intensity": pain, "modulation_score": later_scores[k][i]})
        tables[pid] = pd.DataFrame(rows)
    return tables


@lru_cache(maxsize=8)
def _site_fields(params: SimulationParameters, site: int):
    grid = images.make_grid(params.resolution)
    rng = np.random.default_rng([params.seed, 11, site])
    return (images.smooth_fields(params, grid, params.n_noise_components, params.noise_fwhm_mm, rng),
            images.motion_fields(params, grid, rng))


def _write_subject(root: str, params: SimulationParameters, pid: str, clin_row: pd.Series,
                   lat_rows: list[pd.Series], seed_seq: np.random.SeedSequence) -> None:
    """Every file of one participant (runs in a worker; deterministic given its seed)."""
    sessions = params.sessions()
    if not sessions:
        _write_session(Path(root), params, pid, None, clin_row, lat_rows[0], np.random.default_rng(seed_seq))
        return
    for k, (label, lat_row) in enumerate(zip(sessions, lat_rows)):
        seq = np.random.SeedSequence(seed_seq.entropy, spawn_key=(*seed_seq.spawn_key, 1000 + k))
        _write_session(Path(root), params, pid, label, clin_row, lat_row, np.random.default_rng(seq))


def _write_session(root: Path, params: SimulationParameters, pid: str, session: str | None,
                   clin_row: pd.Series, lat_row: pd.Series, rng: np.random.Generator) -> None:
    """Anatomy and every run of every task of one session (``session`` None: no ses- entity)."""
    grid = images.make_grid(params.resolution)
    sites = site_effects(params)
    site = int(clin_row["site_index"])
    fields, motion_maps = _site_fields(params, site)
    ses = f"_ses-{session}" if session else ""
    raw_dir = root / pid / (f"ses-{session}" if session else "")
    prep = root / "derivatives" / "fmriprep" / pid / (f"ses-{session}" if session else "")
    aff = grid.affine
    # anatomy (per session when there are sessions, as fMRIPrep's sessionwise anatomical
    # reference and CAT12's longitudinal pipeline write it)
    t1 = 1000.0 * grid.t1 * (1 + 0.02 * rng.normal(size=grid.n_voxels))
    save_nifti(nifti(grid.to_volume(t1, np.float32).astype(np.int16), aff, dtype=np.int16),
               raw_dir / "anat" / f"{pid}{ses}_T1w.nii.gz")
    gm = images.gm_map(params, rng, grid, lat_row, site, sites)
    anat = prep / "anat"
    save_nifti(nifti(gm, aff, dtype=np.float32), anat / f"{pid}{ses}_space-{SPACE}_label-GM_probseg.nii.gz")
    save_nifti(nifti(grid.wm_full, aff, dtype=np.float32), anat / f"{pid}{ses}_space-{SPACE}_label-WM_probseg.nii.gz")
    mask_img = nifti(grid.mask.astype(np.uint8), aff, dtype=np.uint8)
    save_nifti(mask_img, anat / f"{pid}{ses}_space-{SPACE}_desc-brain_mask.nii.gz")
    # functional runs: every run of a task shows the session's latents with its own noise
    for task in params.tasks:
        n = params.volumes(task)
        for run in params.runs() or (None,):
            if task == "pain":
                events, sig = images.pain_task(params, rng, lat_row, n)
            elif task == "somatotopy":
                events, sig = images.somatotopy_task(params, rng, lat_row, grid, n)
            elif task == "modulation":
                events, sig = images.modulation_task(params, rng, lat_row, clin_row, n, 1.0)
            else:
                events, sig = images.rest_task(params, rng, lat_row, grid, n)
            raw, pct, mot = images.bold_run(params, rng, grid, sig, site, sites,
                                            float(clin_row["mean_fd_target"]), fields, motion_maps)
            stem = f"{pid}{ses}_task-{task}" + (f"_run-{run}" if run else "")
            bold_path = prep / "func" / f"{stem}_space-{SPACE}_desc-preproc_bold.nii.gz"
            save_nifti(nifti(grid.to_volume(raw, np.int16), aff, tr=params.tr, dtype=np.int16), bold_path)
            write_json(bold_path.with_name(f"{stem}_space-{SPACE}_desc-preproc_bold.json"),
                       {"RepetitionTime": params.tr, "TaskName": task, "SkullStripped": False})
            save_nifti(mask_img, prep / "func" / f"{stem}_space-{SPACE}_desc-brain_mask.nii.gz")
            conf = images.confounds_table(mot, pct, grid)
            write_tsv(prep / "func" / f"{stem}_desc-confounds_timeseries.tsv", conf)
            write_json(prep / "func" / f"{stem}_desc-confounds_timeseries.json",
                       {c: {"Description": "simulated, fMRIPrep naming"} for c in conf.columns[:3]})
            link_or_copy(bold_path, raw_dir / "func" / f"{stem}_bold.nii.gz")
            if events is not None:
                write_tsv(raw_dir / "func" / f"{stem}_events.tsv", events)


def simulate(out_dir: str | os.PathLike, params: SimulationParameters | None = None, *,
             n_jobs: int = 1, progress: bool = True) -> Path:
    """Write a synthetic BIDS cohort to ``out_dir`` (which must not exist, or be empty).

    The dataset is built in a temporary folder beside ``out_dir`` and renamed into place at the
    end, so an interrupted run leaves no partial dataset.

    Parameters
    ----------
    out_dir : path
        Where the dataset goes.
    params : SimulationParameters
        Cohort size, sites, seed, resolution, effect sizes... (defaults: the demo cohort).
    n_jobs : int
        Participants written in parallel (same bytes as serial).
    progress : bool
        Show a progress bar.

    Returns
    -------
    Path
        ``out_dir``.
    """
    params = (params or SimulationParameters()).validate()
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError("output folder exists and is not empty", path=out,
                         fix="give a new folder; painplast never overwrites a dataset")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        _simulate_into(tmp, params, n_jobs, progress)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _cohort(params: SimulationParameters):
    """(clinical table, latents of every session, participant IDs, seed of the image noise)."""
    clin_seq, lat_seq, subj_seq, state_seq = np.random.SeedSequence([params.seed, 2024]).spawn(4)
    n = params.n_participants
    clin = clinical(params, n, np.random.default_rng(clin_seq), exact=True)
    width = max(3, len(str(n)))
    ids = [f"sub-{i + 1:0{width}d}" for i in range(n)]
    # controls have no affected side (n/a in participants.tsv); their "affected_hand" condition
    # is the hand given by the documented pseudo-random rule, so analyses can reproduce it
    controls = ~clin["patient"].to_numpy()
    clin.loc[controls, "affected_side"] = [_reference_side(ids[i]) for i in np.flatnonzero(controls)]
    lats = session_latents(params, clin, np.random.default_rng(lat_seq), site_effects(params),
                           np.random.default_rng(state_seq))
    return clin, lats, ids, subj_seq


def _cohort_latents(params: SimulationParameters):
    """(clinical table, first session's latents, participant IDs, seed of the image noise)."""
    clin, lats, ids, subj_seq = _cohort(params)
    return clin, lats[0], ids, subj_seq


def latent_cohort(params: SimulationParameters,
                  motion: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A cohort's noise-free features and participants table, without writing any image.

    The same participants, with the same values, as :func:`simulate` with ``params`` writes to
    ``participants.tsv`` and ``derivatives/simulation/participants_truth.tsv``; useful for
    testing group statistics and biomarkers quickly.

    Parameters
    ----------
    params : SimulationParameters
    motion : bool
        Add a ``mean_fd`` column to the participants table: the mean framewise displacement
        each participant's BOLD runs are simulated around (``mean_fd_target`` of
        participants_truth.tsv; patients move more, also under ``null``). A run on images
        reads it from the fMRIPrep confounds instead.

    Returns
    -------
    features : DataFrame
        Index participant IDs; one column per feature (``module.feature``).
    participants : DataFrame
        The participants.tsv columns.

    Examples
    --------
    >>> feats, parts = latent_cohort(SimulationParameters(n_participants=8))
    >>> feats.shape[0], list(parts.participant_id[:2])
    (8, ['sub-001', 'sub-002'])
    """
    clin, lat, ids, _ = _cohort_latents(params.validate())
    feats = truth_features(lat)
    feats.index = ids
    parts = _participants(clin, ids)
    if motion:
        parts["mean_fd"] = clin["mean_fd_target"].to_numpy()
    return feats, parts


def latent_sessions(params: SimulationParameters, motion: bool = False, measured: bool = False
                    ) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, dict[str, pd.DataFrame]]:
    """Every session's features of a cohort, without writing any image.

    The participants and values :func:`simulate` writes (``participants_truth.tsv`` has them
    one row per participant and session); for testing longitudinal statistics and reliability
    quickly.

    Parameters
    ----------
    params : SimulationParameters
        With several sessions or ``design="longitudinal"`` (one session works too).
    motion : bool
        Add ``mean_fd`` to the participants table (see :func:`latent_cohort`).
    measured : bool
        Put the features on the measured scale: add the image measurement noise that
        painplast's participant stages leave, from the calibrated model
        (:mod:`painplast.simulate.measurement`; a fixed draw per seed).

    Returns
    -------
    features : dict
        ``{session_id: DataFrame}`` in session order, index participant IDs.
    participants : DataFrame
        The participants.tsv columns.
    sessions : dict
        ``{participant_id: DataFrame}``: each ``sub-*_sessions.tsv`` (empty without sessions).

    Examples
    --------
    >>> feats, parts, _ = latent_sessions(SimulationParameters(n_participants=24, design="longitudinal"))
    >>> list(feats), sorted(parts.stage.dropna().unique())
    (['ses-baseline', 'ses-followup'], ['chronic', 'subacute'])
    """
    from .measurement import model_for

    params = params.validate()
    clin, lats, ids, _ = _cohort(params)
    labels = [f"ses-{s}" for s in params.sessions()] or ["ses-1"]
    model = model_for(params) if measured else None
    out = {}
    for k, (label, lat) in enumerate(zip(labels, lats)):
        feats = truth_features(lat)
        if model is not None:
            feats = model.measure(feats, clin["site_index"].to_numpy(), site_effects(params),
                                  np.random.default_rng([params.seed, 2026, k]))
        feats.index = ids
        out[label] = feats
    parts = _participants(clin, ids)
    if motion:
        parts["mean_fd"] = clin["mean_fd_target"].to_numpy()
    tables = _sessions_tables(params, clin, ids) if params.sessions() else {}
    return out, parts, tables


def _simulate_into(root: Path, params: SimulationParameters, n_jobs: int, progress: bool) -> None:
    clin, lats, ids, subj_seq = _cohort(params)
    n = params.n_participants
    participants = _participants(clin, ids)
    write_dataset_files(root, params, participants, images.make_grid(params.resolution).shape[2])
    sessions = params.sessions()
    if sessions:
        for pid, table in _sessions_tables(params, clin, ids).items():
            write_tsv(root / pid / f"{pid}_sessions.tsv", table)
            write_json(root / pid / f"{pid}_sessions.json", SESSIONS_JSON)
    sim = root / "derivatives" / "simulation"
    truth = ground_truth(params)
    write_json(sim / "ground_truth.json", truth)
    frames = []
    for k, lat in enumerate(lats):
        per_subject = truth_features(lat)
        per_subject.insert(0, "participant_id", ids)
        if sessions:
            per_subject.insert(1, "session_id", f"ses-{sessions[k]}")
        for col in ("responder", "burden", "capacity", "mean_fd_target"):
            per_subject[col] = clin[col].to_numpy()
        frames.append(per_subject)
    per_subject = frames[0] if len(frames) == 1 else (
        pd.concat(frames).sort_values("participant_id", kind="stable"))
    write_tsv(sim / "participants_truth.tsv", per_subject)
    seeds = subj_seq.spawn(n)
    jobs = [(str(root), params, ids[i], clin.iloc[i], [lat.iloc[i] for lat in lats], seeds[i])
            for i in range(n)]
    from tqdm.auto import tqdm
    bar = tqdm(total=n, desc="simulating participants", unit="participant", disable=not progress)
    if n_jobs == 1:
        for job in jobs:
            _write_subject(*job)
            bar.update()
    else:
        from joblib import Parallel, delayed
        for _ in Parallel(n_jobs=n_jobs, return_as="generator_unordered")(delayed(_write_subject)(*j) for j in jobs):
            bar.update()
    bar.close()
