"""The command line: bad input gives one line on stderr and exit status 2, and touches nothing."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from painplast.cli import main
from painplast.simulate import SimulationParameters, simulate

PREP = "derivatives/fmriprep"
SPACE = "MNI152NLin2009cAsym"
TINY = dict(n_participants=8, n_sites=2, resolution=6, volumes_pain=30, volumes_somatotopy=30,
            volumes_modulation=30, volumes_rest=30, seed=5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return simulate(tmp_path_factory.mktemp("tiny") / "bids", SimulationParameters(**TINY), progress=False)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _participants(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "participants.tsv", sep="\t", dtype=str, keep_default_na=False)


def _save_participants(root: Path, table: pd.DataFrame) -> None:
    table.to_csv(root / "participants.tsv", sep="\t", index=False)


def _gm(root, pid="sub-002"):
    return root / PREP / pid / "anat" / f"{pid}_space-{SPACE}_label-GM_probseg.nii.gz"


def _bold(root, pid="sub-002", task="pain"):
    return root / PREP / pid / "func" / f"{pid}_task-{task}_space-{SPACE}_desc-preproc_bold.nii.gz"


def _missing_participants(root):
    (root / "participants.tsv").unlink()
    return "participants.tsv"


def _missing_id_column(root):
    t = _participants(root).rename(columns={"participant_id": "subject"})
    _save_participants(root, t)
    return "participants.tsv"


def _duplicate_id(root):
    t = _participants(root)
    t.loc[1, "participant_id"] = t.loc[0, "participant_id"]
    _save_participants(root, t)
    return "participants.tsv"


def _path_characters(root):
    t = _participants(root)
    t.loc[0, "participant_id"] = "sub-../../etc"
    _save_participants(root, t)
    return "participants.tsv"


def _bad_group(root):
    t = _participants(root)
    t.loc[0, "group"] = "sick"
    _save_participants(root, t)
    return "participants.tsv"


def _truncated_nifti(root):
    path = _bold(root)
    data = path.read_bytes()
    path.unlink()  # break the hard link to the raw file first: never modify the user's copy
    path.write_bytes(data[: len(data) // 2])
    return path.name


def _unreadable_nifti(root):
    path = _gm(root)
    path.write_bytes(b"this is not a nifti file")
    return path.name


def _other_grid(root):
    path = _gm(root)
    img = nib.load(path)
    data = np.asarray(img.dataobj)[:-1]
    nib.save(nib.Nifti1Image(data, img.affine), path)
    return path.name


def _all_zero(root):
    path = _gm(root)
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.float32), img.affine), path)
    return path.name


def _all_nan(root):
    path = _gm(root)
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.full(img.shape, np.nan, np.float32), img.affine), path)
    return path.name


def _no_confounds(root):
    path = root / PREP / "sub-002" / "func" / "sub-002_task-rest_desc-confounds_timeseries.tsv"
    path.unlink()
    return "sub-002_task-rest"


def _events_without_onset(root):
    path = root / "sub-002" / "func" / "sub-002_task-pain_events.tsv"
    ev = pd.read_csv(path, sep="\t").drop(columns=["onset"])
    ev.to_csv(path, sep="\t", index=False)
    return path.name


CASES = {
    "missing participants.tsv": _missing_participants,
    "missing participant_id": _missing_id_column,
    "duplicate participant": _duplicate_id,
    "path characters in ID": _path_characters,
    "truncated NIfTI": _truncated_nifti,
    "unreadable NIfTI": _unreadable_nifti,
    "grid disagrees": _other_grid,
    "all-zero image": _all_zero,
    "all-NaN image": _all_nan,
    "run without confounds": _no_confounds,
    "events without onset": _events_without_onset,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_no_output(case, tiny, tmp_path, capsys):
    bids = _copy(tiny, tmp_path / "bids")
    named = CASES[case](bids)
    before = _digest(bids)
    out = tmp_path / "out"
    code = main(["run", str(bids), str(out), "participant", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("painplast: error:") and "Traceback" not in err
    assert named in err, err
    assert "fix:" in err
    assert not out.exists()                      # no partial output
    assert _digest(bids) == before               # nothing the user gave is modified


def test_group_codes_are_needed_at_the_group_level_only(tiny, tmp_path, capsys):
    bids = _copy(tiny, tmp_path / "bids")
    _bad_group(bids)
    before = _digest(bids)
    out = tmp_path / "out"
    run = ["run", str(bids), str(out)]
    assert main(run + ["participant", "--modules", "structure", "--quiet"]) == 0
    capsys.readouterr()
    listing = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert main(run + ["group", "--modules", "structure", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'sick'" in err and "--group-map" in err, err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == listing   # the stop wrote nothing
    assert main(run + ["group", "--modules", "structure", "--group-map", "sick=patient", "--quiet",
                       "--n-permutations", "10"]) == 0
    assert (out / "group" / "structure_findings.tsv").exists()
    assert _digest(bids) == before


def test_usage_errors_are_one_line(capsys):
    assert main(["simulate"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["run", "a", "b", "sideways"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["run", "a", "b", "participant", "--modules", "telepathy"]) == 2
    assert "telepathy" in capsys.readouterr().err


def test_help_everywhere(capsys):
    for cmd in ([], ["simulate"], ["run"], ["predict"], ["report"], ["demo"]):
        assert main([*cmd, "--help"]) == 0
        assert "Usage" in capsys.readouterr().out


def test_simulate_command_and_refusal(tmp_path, capsys):
    out = tmp_path / "sim"
    args = ["simulate", str(out), "--participants", "8", "--sites", "2", "--resolution", "6", "--quiet", "--n-jobs", "1"]
    assert main(args) == 0
    assert (out / "derivatives/simulation/ground_truth.json").exists()
    assert main(args) == 2  # refuses to overwrite
    assert "not empty" in capsys.readouterr().err


def test_output_inside_input_is_refused(tiny, tmp_path, capsys):
    bids = _copy(tiny, tmp_path / "bids")
    assert main(["run", str(bids), str(bids), "participant", "--quiet"]) == 2
    assert "output folder is the input dataset" in capsys.readouterr().err
