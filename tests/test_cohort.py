"""Tests of painplast.cohort: discovery, validation and the real rpn_szeged dataset.

Every fixture is a tiny BIDS tree written into ``tmp_path`` (6x7x5 voxels, 10 volumes).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from painplast.cohort import Cohort, Run, Subject
from painplast.errors import InputError, MissingColumnError

SPACE = "MNI152NLin2009cAsym"
SHAPE = (6, 7, 5)
N_VOLUMES = 10
AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])
AFFINE[:3, 3] = (-12, -14, -10)


# --------------------------------------------------------------------------------------------
# Fixture builders
# --------------------------------------------------------------------------------------------

def write_nifti(path: Path, shape=SHAPE, volumes: int | None = None, fill=None, affine=AFFINE,
                tr: float | None = None, dtype=np.float32) -> Path:
    """A small image with smooth non-zero values (or ``fill``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    full = shape + ((volumes,) if volumes else ())
    if fill is None:
        data = (np.arange(np.prod(full), dtype=np.float64).reshape(full) % 7 + 1).astype(dtype)
    else:
        data = np.full(full, fill, dtype=dtype)
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm", "sec")
    if tr is not None:
        image.header.set_zooms(image.header.get_zooms()[:3] + (tr,))
    nib.save(image, path)
    return path


def write_tsv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def confounds_text(rows: int = N_VOLUMES) -> str:
    lines = ["framewise_displacement\ttrans_x"] + ["n/a\t0.0"] + [f"0.{i:02d}\t0.1" for i in range(1, rows)]
    return "\n".join(lines) + "\n"


EVENTS = "onset\tduration\ttrial_type\tintensity\n0\t2\tpain\t6\n8\t2\tpain\tn/a\n"


def make_dataset(root: Path, labels=("01", "02", "03", "04"), tasks=("pain", "rest"),
                 groups=("Patient", "control", "CONTROL", "patient"), gm=True) -> Path:
    """A raw dataset with fMRIPrep derivatives: every participant has a pain and a rest run."""
    rows = ["participant_id\tgroup\tage"]
    rows += [f"sub-{label}\t{group}\t{30 + i if i != 1 else 'n/a'}"
             for i, (label, group) in enumerate(zip(labels, groups * len(labels)))]
    write_tsv(root / "participants.tsv", "\n".join(rows) + "\n")
    (root / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.8.0"}))
    for task in tasks:
        (root / f"task-{task}_bold.json").write_text(json.dumps({"RepetitionTime": 2.0, "TaskName": task}))
    prep = root / "derivatives" / "fmriprep"
    prep.mkdir(parents=True)
    (prep / "dataset_description.json").write_text(
        json.dumps({"Name": "fMRIPrep", "DatasetType": "derivative"}))
    for label in labels:
        func = root / f"sub-{label}" / "func"
        for task in tasks:
            stem = f"sub-{label}_task-{task}"
            write_nifti(func / f"{stem}_bold.nii.gz", shape=(2, 2, 2), volumes=N_VOLUMES)
            if task != "rest":
                write_tsv(func / f"{stem}_events.tsv", EVENTS)
            dfunc = prep / f"sub-{label}" / "func"
            write_nifti(dfunc / f"{stem}_space-{SPACE}_desc-preproc_bold.nii.gz", volumes=N_VOLUMES)
            write_nifti(dfunc / f"{stem}_space-{SPACE}_desc-brain_mask.nii.gz", fill=1, dtype=np.uint8)
            write_tsv(dfunc / f"{stem}_desc-confounds_timeseries.tsv", confounds_text())
        if gm:
            anat = prep / f"sub-{label}" / "anat"
            write_nifti(anat / f"sub-{label}_space-{SPACE}_label-GM_probseg.nii.gz")
            write_nifti(anat / f"sub-{label}_space-{SPACE}_desc-brain_mask.nii.gz", fill=1, dtype=np.uint8)
    return root


def preproc(root: Path, label: str = "02", task: str = "pain", kind: str = "desc-preproc_bold") -> Path:
    ext = ".tsv" if kind.endswith("confounds_timeseries") else ".nii.gz"
    space = "" if ext == ".tsv" else f"_space-{SPACE}"
    folder = root / "derivatives" / "fmriprep" / f"sub-{label}" / "func"
    return folder / f"sub-{label}_task-{task}{space}_{kind}{ext}"


def gm_map(root: Path, label: str = "03") -> Path:
    folder = root / "derivatives" / "fmriprep" / f"sub-{label}" / "anat"
    return folder / f"sub-{label}_space-{SPACE}_label-GM_probseg.nii.gz"


def snapshot(root: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


def raises_input_error(root: Path, name: str, *args, error=InputError, **kwargs) -> str:
    """Load, expect ``error`` whose one-line message names the file ``name``; return the message."""
    with pytest.raises(error) as info:
        Cohort.from_bids(root, *args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert name in message, message
    return message


@pytest.fixture()
def dataset(tmp_path) -> Path:
    return make_dataset(tmp_path / "bids")


# --------------------------------------------------------------------------------------------
# A good cohort
# --------------------------------------------------------------------------------------------

def test_good_cohort_is_found_and_described(dataset):
    # a run-level sidecar overrides the top-level task-pain_bold.json (BIDS inheritance)
    (dataset / "sub-01" / "func" / "sub-01_task-pain_bold.json").write_text('{"RepetitionTime": 1.5}')
    before = snapshot(dataset)
    cohort = Cohort.from_bids(dataset)
    assert snapshot(dataset) == before  # nothing written or touched

    assert len(cohort) == 4 and [s.participant_id for s in cohort] == ["sub-01", "sub-02", "sub-03", "sub-04"]
    assert cohort.root == dataset.resolve() and cohort.space == SPACE
    assert cohort.derivatives == ((dataset / "derivatives" / "fmriprep").resolve(),)
    assert cohort.participants.index.name == "participant_id"
    assert list(cohort.groups) == ["patient", "control", "control", "patient"]
    assert list(cohort.sites) == ["site-1"] * 4

    sub = cohort.subject("01")
    assert sub is cohort.subject("sub-01") and sub.label == "01" and sub.tasks == ("pain", "rest")
    pain, rest = sub.run("pain"), sub.run("rest")
    assert pain.bold.name == f"sub-01_task-pain_space-{SPACE}_desc-preproc_bold.nii.gz"
    assert pain.mask.name.endswith("desc-brain_mask.nii.gz")
    assert pain.confounds.name.endswith("confounds_timeseries.tsv")
    assert pain.events.name == "sub-01_task-pain_events.tsv" and rest.events is None
    assert pain.repetition_time == 1.5 and rest.repetition_time == 2.0
    assert cohort.subject("02").run("pain").repetition_time == 2.0
    assert sub.gm.name.endswith("label-GM_probseg.nii.gz")
    assert sub.anat_mask.name.endswith("desc-brain_mask.nii.gz")
    assert sub.runs_for("somatotopy") == () and sub.run("somatotopy") is None

    events = pain.load_events()
    assert list(events.columns[:2]) == ["onset", "duration"] and math.isnan(events["intensity"].iloc[1])
    confounds = pain.load_confounds()
    fd = confounds["framewise_displacement"]
    assert fd.dtype == float and math.isnan(fd.iloc[0]) and fd.iloc[1] == 0.01
    assert math.isnan(cohort.subject("02").info["age"]) and cohort.subject("03").info["group"] == "control"


def test_require_and_has(dataset):
    cohort = Cohort.from_bids(dataset)
    assert cohort.has("age") and not cohort.has("pain_intensity")
    assert list(cohort.require("group", "the patient-control contrast")) == list(cohort.groups)
    with pytest.raises(MissingColumnError) as info:
        cohort.require("pain_intensity", "the pain-intensity correlation")
    message = str(info.value)
    assert "participants.tsv" in message and "pain_intensity" in message
    assert "pain-intensity correlation" in message
    with pytest.raises(InputError, match="sub-99"):
        cohort.subject("99")


def test_participant_label_selects_rows_without_changing_the_argument(dataset):
    labels = ["sub-03", "01"]
    cohort = Cohort.from_bids(dataset, participant_label=labels)
    assert labels == ["sub-03", "01"]
    assert [s.participant_id for s in cohort] == ["sub-01", "sub-03"]
    assert list(cohort.participants.index) == ["sub-01", "sub-03"]
    raises_input_error(dataset, "participants.tsv", participant_label=["07"])
    with pytest.raises(InputError, match="malformed"):
        Cohort.from_bids(dataset, participant_label=["../01"])


def test_no_group_column_and_sites(tmp_path):
    root = make_dataset(tmp_path / "bids", labels=("a1", "b2"))
    write_tsv(root / "participants.tsv", "participant_id\tsite\nsub-a1\tbochum\nsub-b2\tszeged\n")
    cohort = Cohort.from_bids(root)
    assert cohort.groups is None and not cohort.has("group")
    assert list(cohort.sites) == ["bochum", "szeged"]
    with pytest.raises(MissingColumnError, match="group"):
        cohort.require("group", "the patient-control contrast")


def test_unlisted_folder_is_ignored_with_a_warning(dataset):
    write_tsv(dataset / "participants.tsv",
              "participant_id\tgroup\nsub-01\tpatient\nsub-02\tcontrol\nsub-03\tcontrol\n")
    with pytest.warns(UserWarning, match="sub-04"):
        cohort = Cohort.from_bids(dataset)
    assert len(cohort) == 3


# --------------------------------------------------------------------------------------------
# participants.tsv errors
# --------------------------------------------------------------------------------------------

def test_missing_participants_tsv(dataset):
    (dataset / "participants.tsv").unlink()
    raises_input_error(dataset, "participants.tsv")


@pytest.mark.parametrize("text", [
    "subject\tgroup\nsub-01\tpatient\n",                                    # no participant_id column
    "participant_id\tgroup\nsub-01\tpatient\nsub-01\tcontrol\n",            # duplicate
    "participant_id\tgroup\nsub-01\tpatient\nsub-../02\tcontrol\n",         # path characters
    "participant_id\tgroup\nsub-01\tpatient\n../sub-02\tcontrol\n",
    "participant_id\tgroup\nsub-01\tpatient\nsub-0/2\tcontrol\n",
    "participant_id\tgroup\nsub-01\tpatient\nsub-0 2\tcontrol\n",           # space
    "participant_id\tgroup\nsub-01\tpatient\n02\tcontrol\n",                # no sub- prefix
    "participant_id\tgroup\nsub-01\tpatient\nsub-02_x\tcontrol\n",
    "participant_id\tgroup\nsub-01\tpatient\nn/a\tcontrol\n",
    "participant_id\tgroup\n",                                              # no rows
])
def test_bad_participants_table(dataset, text):
    write_tsv(dataset / "participants.tsv", text)
    raises_input_error(dataset, "participants.tsv")
    raises_input_error(dataset, "participants.tsv", validate=False)  # IDs are checked in any case


@pytest.mark.parametrize("value", ["pt", "healthy", "CLBP"])
def test_group_codes_that_say_nothing_stop_and_name_the_flag(dataset, value):
    write_tsv(dataset / "participants.tsv",
              f"participant_id\tgroup\nsub-01\tpatient\nsub-02\tcontrol\nsub-03\t{value}\nsub-04\tcontrol\n")
    message = raises_input_error(dataset, "participants.tsv")
    assert "sub-03" in message and "patient or control" in message and "--group-map" in message
    cohort = Cohort.from_bids(dataset, group_map={value: "patient"})
    assert cohort.participants["group"].tolist() == ["patient", "control", "patient", "control"]


def test_group_na_leaves_the_participant_out_of_group_analyses_with_a_note(dataset):
    write_tsv(dataset / "participants.tsv",
              "participant_id\tgroup\nsub-01\tpatient\nsub-02\tcontrol\nsub-03\tn/a\nsub-04\tcontrol\n")
    cohort = Cohort.from_bids(dataset)
    assert len(cohort) == 4 and cohort.participants["group"].isna().tolist() == [False, False, True, False]
    assert any("group is n/a for sub-03" in note for note in cohort.notes)


def test_site_na_is_an_error(dataset):
    write_tsv(dataset / "participants.tsv",
              "participant_id\tsite\nsub-01\ta\nsub-02\tn/a\nsub-03\ta\nsub-04\tb\n")
    assert "sub-02" in raises_input_error(dataset, "participants.tsv")


def test_listed_participant_without_any_file(dataset):
    with open(dataset / "participants.tsv", "a") as handle:
        handle.write("sub-05\tcontrol\t40\n")
    with pytest.warns(UserWarning, match="sub-05"):
        cohort = Cohort.from_bids(dataset)   # a dropout is left out, as BIDS Apps do
    assert [s.participant_id for s in cohort] == ["sub-01", "sub-02", "sub-03", "sub-04"]
    assert cohort.left_out == (("sub-05", "no file found (listed in participants.tsv)"),)
    assert "sub-05" in cohort.participants.index        # still in the table
    message = raises_input_error(dataset, "participants.tsv", strict=True)
    assert "sub-05" in message and "--participant-label" in message


# --------------------------------------------------------------------------------------------
# Image errors
# --------------------------------------------------------------------------------------------

def test_truncated_gzip_nifti(dataset):
    bold = preproc(dataset)
    data = bold.read_bytes()
    bold.write_bytes(data[: len(data) // 2])
    assert "truncated" in raises_input_error(dataset, bold.name)
    assert Cohort.from_bids(dataset, validate=False).subject("02").run("pain").bold == bold.resolve()


def test_truncated_gzip_nifti_with_intact_stream(dataset):
    # a complete gzip stream of too little data: ISIZE disagrees with the header, decompression confirms
    bold = preproc(dataset)
    raw = gzip.decompress(bold.read_bytes())
    bold.write_bytes(gzip.compress(raw[:-500]))
    assert "truncated" in raises_input_error(dataset, bold.name)


def test_multi_member_gzip_is_accepted(dataset):
    bold = preproc(dataset)
    raw = gzip.decompress(bold.read_bytes())
    bold.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    Cohort.from_bids(dataset)


def test_truncated_plain_nifti(tmp_path):
    root = make_dataset(tmp_path / "bids", gm=False)
    for label in ("01", "02", "03", "04"):
        write_nifti(root / "derivatives" / "cat12" / f"sub-{label}" / "mri" / f"mwp1sub-{label}_T1w.nii")
    odd = root / "derivatives" / "cat12" / "sub-02" / "mri" / "mwp1sub-02_T1w.nii"
    odd.write_bytes(odd.read_bytes()[:-40])
    assert "truncated" in raises_input_error(root, odd.name)


def test_unreadable_nifti_header(dataset):
    mask = preproc(dataset, kind="desc-brain_mask")
    mask.write_bytes(gzip.compress(b"not a nifti header at all" * 3))
    assert "cannot read" in raises_input_error(dataset, mask.name)


def test_bold_grid_disagrees(dataset):
    odd = write_nifti(preproc(dataset, "03", "rest"), shape=(6, 7, 6), volumes=N_VOLUMES)
    message = raises_input_error(dataset, odd.name)
    assert message.startswith(str(odd))  # the odd file is the one named first
    assert "grid 6x7x6" in message and "majority" in message and "6x7x5 voxels of 4x4x4 mm" in message


def test_bold_affine_disagrees(dataset):
    shifted = AFFINE.copy()
    shifted[0, 3] += 2
    odd = write_nifti(preproc(dataset, "04", "pain"), volumes=N_VOLUMES, affine=shifted)
    assert "origin (-10, -14, -10)" in raises_input_error(dataset, odd.name)
    tiny = AFFINE.copy()
    tiny[0, 3] += 1e-5  # within tolerance
    write_nifti(preproc(dataset, "04", "pain"), volumes=N_VOLUMES, affine=tiny)
    Cohort.from_bids(dataset)


def test_mask_grid_disagrees_with_its_bold(dataset):
    mask = preproc(dataset, "01", "rest", "desc-brain_mask")
    write_nifti(mask, shape=(5, 7, 5), fill=1, dtype=np.uint8)
    raises_input_error(dataset, mask.name)


def test_single_run_mask_disagrees(tmp_path):
    root = make_dataset(tmp_path / "bids", labels=("01",), tasks=("rest",), gm=False)
    mask = write_nifti(preproc(root, "01", "rest", "desc-brain_mask"), affine=np.diag([8.0, 8.0, 8.0, 1.0]),
                       fill=1, dtype=np.uint8)
    raises_input_error(root, mask.name)


def test_gm_grid_disagrees(dataset):
    write_nifti(gm_map(dataset, "02"), shape=(7, 7, 5))
    assert "6x7x5" in raises_input_error(dataset, gm_map(dataset, "02").name)


@pytest.mark.parametrize("fill", [0.0, np.nan])
def test_empty_gm_map(dataset, fill):
    write_nifti(gm_map(dataset), fill=fill)
    assert "all zero or NaN" in raises_input_error(dataset, gm_map(dataset).name)


def test_bold_with_empty_first_volume(dataset):
    bold = preproc(dataset, "01", "rest")
    data = np.ones(SHAPE + (N_VOLUMES,), dtype=np.float32)
    data[..., 0] = 0
    nib.save(nib.Nifti1Image(data, AFFINE), bold)
    assert "first volume" in raises_input_error(dataset, bold.name)


def test_three_dimensional_bold(dataset):
    bold = write_nifti(preproc(dataset, "02", "rest"))
    assert "4-D" in raises_input_error(dataset, bold.name)


# --------------------------------------------------------------------------------------------
# Events, confounds, time series, sidecars
# --------------------------------------------------------------------------------------------

def test_task_run_without_events(dataset):
    (dataset / "sub-02" / "func" / "sub-02_task-pain_events.tsv").unlink()
    message = raises_input_error(dataset, "sub-02_task-pain_bold.nii.gz")
    assert "events" in message
    Cohort.from_bids(dataset, validate=False)


@pytest.mark.parametrize("text", ["time\tduration\n0\t2\n", "onset\tlength\n0\t2\n",
                                  "onset\tduration\nsoon\t2\n"])
def test_bad_events(dataset, text):
    events = write_tsv(dataset / "sub-03" / "func" / "sub-03_task-pain_events.tsv", text)
    raises_input_error(dataset, events.name)


def test_events_inherited_from_the_top_level(dataset):
    for label in ("01", "02", "03", "04"):
        (dataset / f"sub-{label}" / "func" / f"sub-{label}_task-pain_events.tsv").unlink()
    write_tsv(dataset / "task-pain_events.tsv", EVENTS)
    cohort = Cohort.from_bids(dataset)
    assert cohort.subject("04").run("pain").events == (dataset / "task-pain_events.tsv").resolve()


def test_bold_without_confounds(dataset):
    preproc(dataset, "04", "rest", "desc-confounds_timeseries").unlink()
    assert "confounds" in raises_input_error(dataset, "sub-04_task-rest_space")


def test_confounds_rows_disagree_with_bold(dataset):
    confounds = write_tsv(preproc(dataset, "01", "pain", "desc-confounds_timeseries"), confounds_text(9))
    assert "9 rows" in raises_input_error(dataset, confounds.name)


def test_older_fmriprep_confounds_name(dataset):
    old = preproc(dataset, "01", "pain", "desc-confounds_timeseries")
    old.rename(old.with_name("sub-01_task-pain_desc-confounds_regressors.tsv"))
    assert Cohort.from_bids(dataset).subject("01").run("pain").confounds.name.endswith("regressors.tsv")


@pytest.mark.parametrize("text", ['{"RepetitionTime": 0}', '{"RepetitionTime": "2s"}', "{not json"])
def test_bad_repetition_time_sidecar(dataset, text):
    (dataset / "task-rest_bold.json").write_text(text)
    raises_input_error(dataset, "task-rest_bold.json")


def test_repetition_time_from_the_header(dataset):
    for task in ("pain", "rest"):
        (dataset / f"task-{task}_bold.json").unlink()
    bold = preproc(dataset, "01", "rest")
    image = nib.load(bold)
    image = nib.Nifti1Image(np.asanyarray(image.dataobj), image.affine, image.header)
    image.header.set_xyzt_units("mm", "msec")
    image.header.set_zooms((4.0, 4.0, 4.0, 800.0))
    nib.save(image, bold)
    cohort = Cohort.from_bids(dataset)
    assert cohort.subject("01").run("rest").repetition_time == pytest.approx(0.8)


def test_two_pipelines_for_the_same_run_are_ambiguous(dataset):
    other = dataset / "derivatives" / "fmriprep-old" / "sub-01" / "func"
    write_nifti(other / f"sub-01_task-rest_space-{SPACE}_desc-preproc_bold.nii.gz", volumes=N_VOLUMES)
    raises_input_error(dataset, "desc-preproc_bold")
    cohort = Cohort.from_bids(dataset, derivatives=[dataset / "derivatives" / "fmriprep"])
    assert len(cohort) == 4


def test_other_spaces_and_painplast_outputs_are_ignored(dataset):
    func = dataset / "derivatives" / "fmriprep" / "sub-01" / "func"
    write_nifti(func / "sub-01_task-rest_space-T1w_desc-preproc_bold.nii.gz", shape=(3, 3, 3),
                volumes=N_VOLUMES)
    out = dataset / "derivatives" / "painplast" / "sub-01"
    write_tsv(out / "sub-01_task-rest_desc-connectivity_timeseries.tsv", "a\n1\n")
    cohort = Cohort.from_bids(dataset)
    assert cohort.subject("01").run("rest").timeseries is None
    assert all(d.name == "fmriprep" for d in cohort.derivatives)


def test_timeseries_keep_repeated_region_names(tmp_path):
    root = tmp_path / "bids"
    write_tsv(root / "participants.tsv", "participant_id\nsub-1\n")
    func = root / "derivatives" / "ts" / "sub-1" / "func"
    write_tsv(func / "sub-1_task-rest_atlas-A_timeseries.tsv", "GlobSig\tPRC_d\tPRC_d\n1\t2\t3\nn/a\t5\t6\n")
    write_tsv(func / "sub-1_task-rest_desc-confounds_timeseries.tsv", "framewise_displacement\nn/a\n0.1\n")
    (func / "sub-1_task-rest_atlas-A_timeseries.json").write_text('{"SamplingFrequency": 0.5}')
    run = Cohort.from_bids(root).subject("1").run("rest")
    series = run.load_timeseries()
    assert list(series.columns) == ["GlobSig", "PRC_d", "PRC_d"]
    assert series.iloc[:, 2].tolist() == [3.0, 6.0] and math.isnan(series.iloc[1, 0])
    assert run.bold is None and run.repetition_time == 2.0
    # rows of time series and confounds must agree
    write_tsv(func / "sub-1_task-rest_desc-confounds_timeseries.tsv", "framewise_displacement\nn/a\n0.1\n0.2\n")
    raises_input_error(root, "sub-1_task-rest")


# --------------------------------------------------------------------------------------------
# Discovery: sessions, runs, CAT12
# --------------------------------------------------------------------------------------------

def test_sessions_and_runs(tmp_path):
    root = tmp_path / "bids"
    write_tsv(root / "participants.tsv", "participant_id\tgroup\nsub-p1\tpatient\nsub-c1\tcontrol\n")
    (root / "task-pain_bold.json").write_text('{"RepetitionTime": 2.0}')
    prep = root / "derivatives" / "fmriprep"
    for label in ("p1", "c1"):
        (root / f"sub-{label}" / "ses-post").mkdir(parents=True)
        # a session-level sidecar overrides the top level for that session only
        (root / f"sub-{label}" / "ses-post" / f"sub-{label}_ses-post_task-pain_bold.json").write_text(
            '{"RepetitionTime": 1.0}')
        for ses in ("pre", "post"):
            for run in ("1", "2", "10"):
                stem = f"sub-{label}_ses-{ses}_task-pain_run-{run}"
                write_nifti(root / f"sub-{label}" / f"ses-{ses}" / "func" / f"{stem}_bold.nii", shape=(2, 2, 2),
                            volumes=N_VOLUMES)
                write_tsv(root / f"sub-{label}" / f"ses-{ses}" / "func" / f"{stem}_events.tsv", EVENTS)
                dfunc = prep / f"sub-{label}" / f"ses-{ses}" / "func"
                write_nifti(dfunc / f"{stem}_space-{SPACE}_desc-preproc_bold.nii", volumes=N_VOLUMES)
                write_tsv(dfunc / f"{stem}_desc-confounds_timeseries.tsv", confounds_text())
        write_nifti(prep / f"sub-{label}" / "anat" / f"sub-{label}_space-{SPACE}_label-GM_probseg.nii.gz")
    cohort = Cohort.from_bids(root)
    sub = cohort.subject("p1")
    assert [(r.session, r.run) for r in sub.runs] == [
        ("post", "1"), ("post", "2"), ("post", "10"), ("pre", "1"), ("pre", "2"), ("pre", "10")]
    assert [r.repetition_time for r in sub.runs] == [1.0] * 3 + [2.0] * 3
    assert all(r.bold.suffix == ".nii" for r in sub.runs)
    assert all(r.events.name.startswith(f"sub-p1_ses-{r.session}_task-pain_run-{r.run}_") for r in sub.runs)
    assert sub.runs[2].name == "ses-post_task-pain_run-10" and sub.gm is not None


def test_cat12_gray_matter(tmp_path):
    root = make_dataset(tmp_path / "bids", gm=False)
    cat = root / "derivatives" / "cat12"
    for label in ("01", "02", "03"):
        write_nifti(cat / f"sub-{label}" / "mri" / f"mwp1sub-{label}_T1w.nii")
    write_nifti(cat / "mri" / "mwp1sub-04_T1w.nii.gz")  # a flat CAT12 layout
    write_tsv(cat / "sub-01" / "report" / "cat_sub-01_T1w.xml", "<xml/>")
    cohort = Cohort.from_bids(root)
    expected = [f"mwp1sub-0{i}_T1w.nii" for i in (1, 2, 3)] + ["mwp1sub-04_T1w.nii.gz"]
    assert [s.gm.name for s in cohort] == expected


def test_cat12_and_fmriprep_gray_matter(tmp_path):
    root = make_dataset(tmp_path / "bids")
    cat = root / "derivatives" / "cat12"
    write_nifti(cat / "sub-01" / "mri" / "mwp1sub-01_T1w.nii")
    raises_input_error(root, "mwp1sub-01_T1w.nii")  # two GM maps for one participant
    only_cat = make_dataset(tmp_path / "mixed", gm=False)
    for label in ("01", "02", "03", "04"):
        (only_cat / "derivatives" / "fmriprep" / f"sub-{label}" / "anat").mkdir(parents=True)
    write_nifti(only_cat / "derivatives" / "cat12" / "sub-01" / "mri" / "mwp1sub-01_T1w.nii")
    write_nifti(gm_map(only_cat, "02"))
    assert "mix" in raises_input_error(only_cat, "sub-0")


# --------------------------------------------------------------------------------------------
# Real data and speed
# --------------------------------------------------------------------------------------------

def test_real_rpn_szeged_dataset(shared_data):
    root = shared_data / "rpn_szeged"
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    message = raises_input_error(root, "timeseries.tsv")   # the time series carry no TR
    assert "--repetition-time" in message
    cohort = Cohort.from_bids(root, repetition_time=2.5)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
    assert len(cohort) == 29 and cohort.groups is None
    assert set(cohort.sites) == {"szeged"} and cohort.has("pain_sensitivity")
    assert cohort.participants["age"].dtype == float
    for subject in cohort:
        assert subject.tasks == ("rest",)
        run = subject.run("rest")
        assert run.bold is None and run.timeseries.name.endswith("_task-rest_atlas-MIST122_timeseries.tsv")
        assert run.confounds.name.endswith("_task-rest_desc-confounds_timeseries.tsv")
        assert run.repetition_time == 2.5
    run = cohort.subject("szeged001").run("rest")
    series, confounds = run.load_timeseries(), run.load_confounds()
    assert series.shape[1] == 123 and series.columns[0] == "GlobSig"
    assert series.columns.duplicated().any()  # repeated region names kept by position
    assert len(confounds) == len(series) and confounds["framewise_displacement"].dtype == float


def test_validation_reads_headers_not_data(tmp_path, monkeypatch):
    """160 runs of 40 participants are checked by headers and gzip trailers: no file is
    decompressed in full and each image is opened once (the speed this buys is a benchmark's
    business, not a wall-clock assert that a busy machine can fail)."""
    labels = [f"{i:02d}" for i in range(40)]
    root = tmp_path / "bids"
    write_tsv(root / "participants.tsv", "participant_id\tgroup\n" + "".join(
        f"sub-{label}\t{'patient' if i % 2 else 'control'}\n" for i, label in enumerate(labels)))
    (root / "task-pain_bold.json").write_text('{"RepetitionTime": 2.0}')
    # one set of files, copied: the speed of writing is not under test
    bold = write_nifti(tmp_path / "b.nii.gz", volumes=N_VOLUMES).read_bytes()
    mask = write_nifti(tmp_path / "m.nii.gz", fill=1, dtype=np.uint8).read_bytes()
    prep = root / "derivatives" / "fmriprep"
    for label in labels:
        dfunc = prep / f"sub-{label}" / "func"
        dfunc.mkdir(parents=True)
        (root / f"sub-{label}" / "func").mkdir(parents=True)
        for run in "1234":
            stem = f"sub-{label}_task-pain_run-{run}"
            (dfunc / f"{stem}_space-{SPACE}_desc-preproc_bold.nii.gz").write_bytes(bold)
            (dfunc / f"{stem}_space-{SPACE}_desc-brain_mask.nii.gz").write_bytes(mask)
            (dfunc / f"{stem}_desc-confounds_timeseries.tsv").write_text(confounds_text())
            (root / f"sub-{label}" / "func" / f"{stem}_events.tsv").write_text(EVENTS)
    def no_decompression(path, *args):
        raise AssertionError(f"{path} was decompressed: the gzip-trailer check should have sufficed")

    monkeypatch.setattr("painplast.cohort._gunzip_size", no_decompression)
    opened: list[str] = []
    load = nib.load

    def counting_load(path, *args, **kwargs):
        opened.append(Path(path).name)
        return load(path, *args, **kwargs)

    monkeypatch.setattr(nib, "load", counting_load)
    cohort = Cohort.from_bids(root)
    assert sum(len(s.runs) for s in cohort) == 160
    images = [p.name for p in prep.rglob("*.nii.gz")]
    assert len(images) == 320 and sorted(opened) == sorted(images), (len(opened), len(images))


def test_records_are_frozen_and_picklable(dataset):
    import pickle

    cohort = Cohort.from_bids(dataset)
    copy = pickle.loads(pickle.dumps(cohort))
    assert copy.subject("01").runs == cohort.subject("01").runs
    with pytest.raises(AttributeError):
        cohort.subject("01").run("pain").task = "rest"
    assert isinstance(hash(cohort.subject("01")), int) and isinstance(cohort.subjects[0], Subject)
    assert isinstance(cohort.subjects[0].runs[0], Run)
    assert isinstance(cohort.participants, pd.DataFrame)
