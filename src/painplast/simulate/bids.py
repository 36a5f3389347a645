"""Writing the simulated cohort as a BIDS dataset with fMRIPrep-style derivatives."""
from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from .. import __version__
from .parameters import SimulationParameters

SPACE = "MNI152NLin2009cAsym"

TASK_DESCRIPTIONS = {
    "pain": "Graded noxious heat (44-49 degC, 6 s) with a pain rating after each trial.",
    "somatotopy": "Blocks of vibrotactile stimulation of the affected and the unaffected hand.",
    "modulation": "Noxious heat (47 degC) with and without an endogenous modulation condition "
                  "(conditioned pain modulation).",
    "rest": "Eyes-open resting state.",
}


def save_nifti(img: nib.Nifti1Image, path: Path) -> None:
    """Write a NIfTI deterministically (gzip with mtime 0: same data, same bytes)."""
    hdr = img.header.copy()
    arr = np.asanyarray(img.dataobj)
    hdr.set_data_dtype(arr.dtype)
    hdr["vox_offset"] = 352
    data = hdr.binaryblock + b"\x00" * 4 + np.asarray(arr, hdr.get_data_dtype()).tobytes(order="F")
    path.parent.mkdir(parents=True, exist_ok=True)
    if str(path).endswith(".gz"):
        data = gzip.compress(data, compresslevel=1, mtime=0)
    path.write_bytes(data)


def nifti(data: np.ndarray, affine: np.ndarray, tr: float | None = None, dtype=None) -> nib.Nifti1Image:
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype or data.dtype), affine)
    hdr = img.header
    hdr.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=4)
    img.set_sform(affine, code=4)
    if tr is not None:
        zooms = tuple(float(z) for z in hdr.get_zooms()[:3]) + (float(tr),)
        hdr.set_zooms(zooms)
    if np.issubdtype(np.dtype(dtype or data.dtype), np.integer):
        hdr.set_slope_inter(1.0, 0.0)
    return img


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_tsv(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, sep="\t", index=False, na_rep="n/a", float_format="%.6g", lineterminator="\n")


def link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


PARTICIPANTS_JSON = {
    "participant_id": {"Description": "Participant identifier"},
    "group": {"Description": "Patient with chronic pain or pain-free control",
              "Levels": {"patient": "chronic pain patient", "control": "pain-free control"}},
    "diagnosis": {"Description": "Chronic pain diagnosis (n/a for controls)",
                  "Levels": {"chronic_back_pain": "chronic low back pain", "fibromyalgia": "fibromyalgia",
                             "crps": "complex regional pain syndrome"}},
    "site": {"Description": "Acquisition site (scanner)"},
    "age": {"Description": "Age at scan", "Units": "year"},
    "sex": {"Description": "Sex", "Levels": {"F": "female", "M": "male"}},
    "pain_intensity": {"Description": "Average clinical pain intensity, numeric rating scale 0-10"},
    "pain_duration_months": {"Description": "Duration of chronic pain", "Units": "month"},
    "affected_side": {"Description": "Side of the body most affected by pain (hand for the somatotopy task)",
                      "Levels": {"left": "left", "right": "right"}},
    "modulation_score": {"Description": "Behavioural conditioned pain modulation: pain rating reduction "
                                        "(0-200 scale) under the conditioning stimulus; higher = stronger modulation"},
    "treatment_response": {"Description": "Response to a standardized therapy after the scan",
                           "Levels": {"responder": ">= 30% pain reduction", "non-responder": "< 30% pain reduction"}},
}

#: participants.json entries of the longitudinal design's columns.
LONGITUDINAL_JSON = {
    "stage": {"Description": "Stage of the pain condition at baseline (n/a for controls)",
              "Levels": {"chronic": "chronic pain, treated between the sessions",
                         "subacute": "subacute pain (1-4 months), followed without treatment"}},
    "pain_relief": {"Description": "Reduction of pain intensity from the baseline to the follow-up "
                                   "session, percent of the baseline value (negative: worse)",
                    "Units": "percent"},
    "outcome": {"Description": "Course of a subacute patient's pain at follow-up (n/a otherwise)",
                "Levels": {"persisting": "pain persisted (< 30% relief)",
                           "recovering": "pain resolved (>= 60% relief)"}},
}

#: sub-*_sessions.json: the columns of sub-*_sessions.tsv (bids-validator 1.x accepts the
#: sidecar beside each table, not at the root).
SESSIONS_JSON = {
    "session_id": {"Description": "Session identifier"},
    "acq_time": {"Description": "Date and time of the session's first scan (simulated dates)"},
    "pain_intensity": {"Description": "Clinical pain intensity at the session, numeric rating scale 0-10"},
    "modulation_score": {"Description": "Behavioural conditioned pain modulation at the session "
                                        "(see participants.json)"},
}


def participants_json(participants: pd.DataFrame, longitudinal: bool) -> dict:
    """participants.json for the columns present (the cross-sectional text is unchanged)."""
    import copy

    table = copy.deepcopy(PARTICIPANTS_JSON)
    if longitudinal:
        table["diagnosis"]["Levels"]["subacute_back_pain"] = "subacute low back pain"
        table["treatment_response"]["Description"] = ("Response of a chronic patient to a "
                                                      "standardized therapy between the sessions")
        table.update(LONGITUDINAL_JSON)
    return {k: v for k, v in table.items() if k in participants}


def write_dataset_files(root: Path, params: SimulationParameters, participants: pd.DataFrame,
                        n_slices: int) -> None:
    write_json(root / "dataset_description.json", {
        "Name": "painplast synthetic chronic-pain cohort",
        "BIDSVersion": "1.8.0",
        "DatasetType": "raw",
        "License": "CC0",
        "Authors": ["painplast developers", "painplast simulator"],
        "HowToAcknowledge": "Synthetic data made by painplast simulate; no real participant.",
        "GeneratedBy": [{"Name": "painplast", "Version": __version__}],
    })
    (root / "README").write_text(
        "Synthetic BIDS dataset made by `painplast simulate`.\n\n"
        "Participants, images and effects are simulated; the planted effects and their sizes are in\n"
        "derivatives/simulation/ground_truth.json. Preprocessed (fMRIPrep-style) images in\n"
        f"{SPACE} space are in derivatives/fmriprep.\n\nParameters: {params.to_json()}\n")
    (root / "CHANGES").write_text(f"1.0.0 {'2026-01-01'}\n  - Simulated by painplast {__version__}.\n")
    write_tsv(root / "participants.tsv", participants)
    write_json(root / "participants.json", participants_json(participants, params.longitudinal))
    for task in params.tasks:
        write_json(root / f"task-{task}_bold.json", {
            "TaskName": task, "RepetitionTime": params.tr, "TaskDescription": TASK_DESCRIPTIONS[task],
            "SliceTiming": [round(i * params.tr / n_slices, 4) for i in range(n_slices)],
            "MagneticFieldStrength": 3,
        })
    for task in [t for t in ("pain", "modulation") if t in params.tasks]:
        write_json(root / f"task-{task}_events.json", {
            "intensity": {"Description": "Thermode temperature", "Units": "degC"},
            "rating": {"Description": "Pain rating after the trial, 0-200 (100 = pain threshold), "
                                      "as in the BMRK3 study"},
        })
    fmriprep = root / "derivatives" / "fmriprep"
    write_json(fmriprep / "dataset_description.json", {
        "Name": "fMRIPrep-style outputs of the painplast simulator", "BIDSVersion": "1.8.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "painplast-simulate", "Version": __version__,
                         "Description": "Images are simulated directly in template space"}],
    })
    sim = root / "derivatives" / "simulation"
    write_json(sim / "dataset_description.json", {
        "Name": "Ground truth of the painplast simulation", "BIDSVersion": "1.8.0",
        "DatasetType": "derivative", "GeneratedBy": [{"Name": "painplast-simulate", "Version": __version__}],
    })
