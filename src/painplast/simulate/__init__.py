"""A synthetic BIDS cohort of chronic-pain patients and controls with recorded ground truth.

``simulate(out_dir, params)`` writes raw BIDS (events, BOLD, T1w), fMRIPrep-style derivatives in
MNI152NLin2009cAsym space (preprocessed BOLD, brain masks, confounds, tissue probability maps)
and ``derivatives/simulation/ground_truth.json`` (planted effects, their sizes, best AUCs) with
``participants_truth.tsv`` (every participant's noise-free feature values).

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
>>> sorted(truth)[:3]
['best_auc', 'best_auc_method', 'connectivity_component']
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
from .bids import (SPACE, link_or_copy, nifti, save_nifti, write_dataset_files, write_json,
                   write_tsv)
from .latent import clinical, latents, site_effects, truth_features
from .parameters import TASKS, SimulationParameters
from .truth import ground_truth

__all__ = ["SimulationParameters", "simulate", "latent_cohort", "TASKS"]


def _reference_side(participant_id: str) -> str:
    """``left`` if the first byte of sha256(participant_id) is even, else ``right``."""
    return "left" if hashlib.sha256(participant_id.encode()).digest()[0] % 2 == 0 else "right"


def _participants(clin: pd.DataFrame, ids: list[str]) -> pd.DataFrame:
    pat = clin["patient"].to_numpy()
    return pd.DataFrame({
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


@lru_cache(maxsize=8)
def _site_fields(params: SimulationParameters, site: int):
    grid = images.make_grid(params.resolution)
    rng = np.random.default_rng([params.seed, 11, site])
    return (images.smooth_fields(params, grid, params.n_noise_components, params.noise_fwhm_mm, rng),
            images.motion_fields(params, grid, rng))


def _write_subject(root: str, params: SimulationParameters, pid: str, clin_row: pd.Series,
                   lat_row: pd.Series, seed_seq: np.random.SeedSequence) -> None:
    """Every file of one participant (runs in a worker; deterministic given its seed)."""
    root = Path(root)
    rng = np.random.default_rng(seed_seq)
    grid = images.make_grid(params.resolution)
    sites = site_effects(params)
    site = int(clin_row["site_index"])
    fields, motion_maps = _site_fields(params, site)
    raw_dir = root / pid
    prep = root / "derivatives" / "fmriprep" / pid
    aff = grid.affine
    # anatomy
    t1 = 1000.0 * grid.t1 * (1 + 0.02 * rng.normal(size=grid.n_voxels))
    save_nifti(nifti(grid.to_volume(t1, np.float32).astype(np.int16), aff, dtype=np.int16),
               raw_dir / "anat" / f"{pid}_T1w.nii.gz")
    gm = images.gm_map(params, rng, grid, lat_row, site, sites)
    anat = prep / "anat"
    save_nifti(nifti(gm, aff, dtype=np.float32), anat / f"{pid}_space-{SPACE}_label-GM_probseg.nii.gz")
    save_nifti(nifti(grid.wm_full, aff, dtype=np.float32), anat / f"{pid}_space-{SPACE}_label-WM_probseg.nii.gz")
    mask_img = nifti(grid.mask.astype(np.uint8), aff, dtype=np.uint8)
    save_nifti(mask_img, anat / f"{pid}_space-{SPACE}_desc-brain_mask.nii.gz")
    # functional runs
    for task in TASKS:
        n = params.volumes(task)
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
        stem = f"{pid}_task-{task}"
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


def _cohort_latents(params: SimulationParameters):
    """(clinical table, latents, participant IDs, seed of the image noise) of a cohort."""
    clin_seq, lat_seq, subj_seq = np.random.SeedSequence([params.seed, 2024]).spawn(3)
    n = params.n_participants
    clin = clinical(params, n, np.random.default_rng(clin_seq), exact=True)
    width = max(3, len(str(n)))
    ids = [f"sub-{i + 1:0{width}d}" for i in range(n)]
    # controls have no affected side (n/a in participants.tsv); their "affected_hand" condition
    # is the hand given by the documented pseudo-random rule, so analyses can reproduce it
    controls = ~clin["patient"].to_numpy()
    clin.loc[controls, "affected_side"] = [_reference_side(ids[i]) for i in np.flatnonzero(controls)]
    lat = latents(params, clin, np.random.default_rng(lat_seq), site_effects(params))
    return clin, lat, ids, subj_seq


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


def _simulate_into(root: Path, params: SimulationParameters, n_jobs: int, progress: bool) -> None:
    clin, lat, ids, subj_seq = _cohort_latents(params)
    n = params.n_participants
    participants = _participants(clin, ids)
    write_dataset_files(root, params, participants, images.make_grid(params.resolution).shape[2])
    sim = root / "derivatives" / "simulation"
    truth = ground_truth(params)
    write_json(sim / "ground_truth.json", truth)
    per_subject = truth_features(lat)
    per_subject.insert(0, "participant_id", ids)
    for col in ("responder", "burden", "capacity", "mean_fd_target"):
        per_subject[col] = clin[col].to_numpy()
    write_tsv(sim / "participants_truth.tsv", per_subject)
    seeds = subj_seq.spawn(n)
    jobs = [(str(root), params, ids[i], clin.iloc[i], lat.iloc[i], seeds[i]) for i in range(n)]
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
