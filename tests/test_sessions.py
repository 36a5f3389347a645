"""Sessions and runs are first-class: discovery, combination across runs, per-session outputs.

Datasets are built from the simulated DOCS cohort (tests/conftest.py): its participants' files are
copied into ``ses-*`` / ``run-*`` names, the second run of a task made distinct by added noise, so
that what painplast does with several runs can be checked against nilearn and against each run
alone.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from conftest import DOCS, simulated
from painplast import engine
from painplast.cli import main
from painplast.cohort import Cohort, Needs, Space, expand_confounds
from painplast.config import Config
from painplast.errors import InputError
from painplast.plasticity import _firstlevel as fl
from painplast.plasticity import connectivity as conn

SPACE = "MNI152NLin2009cAsym"


@pytest.fixture(scope="module")
def docs_cohort() -> Path:
    return simulated(**DOCS)


def _noisy_copy(src: Path, dst: Path, seed: int, scale: float = 0.5) -> None:
    """A BOLD series with independent noise added (a second run of the same task)."""
    img = nib.load(src)
    data = np.asarray(img.dataobj, np.float32)
    rng = np.random.default_rng(seed)
    temporal_sd = data.std(axis=-1, keepdims=True)         # noise as large as half the run's own
    noisy = data + rng.normal(0, scale, data.shape).astype(np.float32) * temporal_sd
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(noisy, img.affine, img.header), dst)


def sessions_dataset(source: Path, root: Path, labels=("001", "002", "003", "004"), tasks=("rest", "pain"),
                     acq_time: bool = False, anat_per_session: bool = True) -> Path:
    """``ses-pre``/``ses-post`` x ``run-1``/``run-2`` of every task, from the simulated cohort's files."""
    parts = pd.read_csv(source / "participants.tsv", sep="\t", dtype=str)
    parts = parts[parts.participant_id.isin([f"sub-{x}" for x in labels])]
    root.mkdir(parents=True)
    parts.to_csv(root / "participants.tsv", sep="\t", index=False)
    shutil.copy(source / "dataset_description.json", root)
    for sidecar in source.glob("task-*_bold.json"):
        shutil.copy(sidecar, root)
    prep_src = source / "derivatives" / "fmriprep"
    prep = root / "derivatives" / "fmriprep"
    prep.mkdir(parents=True)
    shutil.copy(prep_src / "dataset_description.json", prep)
    for k, label in enumerate(labels):
        sub = f"sub-{label}"
        if acq_time:
            (root / sub).mkdir(parents=True, exist_ok=True)
            (root / sub / f"{sub}_sessions.tsv").write_text(
                "session_id\tacq_time\nses-post\t2021-06-01T10:00:00\nses-pre\t2021-01-01T10:00:00\n")
        for s, ses in enumerate(("pre", "post")):
            for task in tasks:
                raw = source / sub / "func" / f"{sub}_task-{task}_bold.nii.gz"
                for run in ("1", "2"):
                    stem = f"{sub}_ses-{ses}_task-{task}_run-{run}"
                    func = root / sub / f"ses-{ses}" / "func"
                    func.mkdir(parents=True, exist_ok=True)
                    shutil.copy(raw, func / f"{stem}_bold.nii.gz")
                    events = source / sub / "func" / f"{sub}_task-{task}_events.tsv"
                    if events.exists():
                        shutil.copy(events, func / f"{stem}_events.tsv")
                    dsrc = prep_src / sub / "func"
                    ddst = prep / sub / f"ses-{ses}" / "func"
                    ddst.mkdir(parents=True, exist_ok=True)
                    bold = dsrc / f"{sub}_task-{task}_space-{SPACE}_desc-preproc_bold.nii.gz"
                    target = ddst / f"{stem}_space-{SPACE}_desc-preproc_bold.nii.gz"
                    if run == "1" and ses == "pre":
                        shutil.copy(bold, target)
                    else:
                        _noisy_copy(bold, target, seed=100 * k + 10 * s + int(run))
                    shutil.copy(dsrc / f"{sub}_task-{task}_space-{SPACE}_desc-brain_mask.nii.gz",
                                ddst / f"{stem}_space-{SPACE}_desc-brain_mask.nii.gz")
                    shutil.copy(dsrc / f"{sub}_task-{task}_desc-confounds_timeseries.tsv",
                                ddst / f"{stem}_desc-confounds_timeseries.tsv")
            anat_src = prep_src / sub / "anat"
            anat = prep / sub / (f"ses-{ses}/anat" if anat_per_session else "anat")
            anat.mkdir(parents=True, exist_ok=True)
            for f in anat_src.glob(f"{sub}_space-*"):
                name = f.name.replace(f"{sub}_", f"{sub}_ses-{ses}_") if anat_per_session else f.name
                shutil.copy(f, anat / name)
    return root


@pytest.fixture(scope="module")
def two_sessions(docs_cohort, tmp_path_factory) -> Path:
    return sessions_dataset(docs_cohort, tmp_path_factory.mktemp("ses") / "bids")


# --------------------------------------------------------------------------------------------
# discovery
# --------------------------------------------------------------------------------------------

def test_every_session_and_run_is_a_unit_with_its_own_anatomy(two_sessions):
    cohort = Cohort.from_bids(two_sessions)
    assert len(cohort) == 4 and cohort.has_sessions
    units = cohort.units()
    assert [(u.participant_id, u.session) for u in units][:2] == [("sub-001", "post"), ("sub-001", "pre")]
    assert len(units) == 8
    for unit in units:
        assert [r.name for r in unit.runs_for("rest")] == [
            f"ses-{unit.session}_task-rest_run-1", f"ses-{unit.session}_task-rest_run-2"]
        assert unit.gm is not None and f"_ses-{unit.session}_" in unit.gm.name
    # the whole participant: both sessions' runs, and no single GM map when anatomy is per session
    whole = cohort.subject("001")
    assert len(whole.runs_for("rest")) == 4 and whole.gm is None
    assert cohort.subject("001", "ses-pre").session == "pre"
    assert Cohort.from_bids(two_sessions, session_label=["pre"]).units()[0].session == "pre"
    assert len(Cohort.from_bids(two_sessions, session_label="pre").units()) == 4


def test_the_session_of_cross_sectional_statistics(docs_cohort, tmp_path):
    root = sessions_dataset(docs_cohort, tmp_path / "bids", labels=("001", "002"), tasks=("rest",))
    cohort = Cohort.from_bids(root)
    with pytest.raises(InputError, match="--session-label") as info:
        cohort.cross_sectional_sessions()
    assert "\n" not in str(info.value) and "acq_time" in str(info.value)
    assert cohort.cross_sectional_sessions("pre") == {"sub-001": "pre", "sub-002": "pre"}
    assert Cohort.from_bids(root, session_label="post").cross_sectional_sessions() == {
        "sub-001": "post", "sub-002": "post"}
    timed = sessions_dataset(docs_cohort, tmp_path / "timed", labels=("001", "002"), tasks=("rest",),
                             acq_time=True)
    cohort = Cohort.from_bids(timed)
    assert cohort.subject("001").sessions == ("pre", "post")    # by acq_time, not by label
    assert cohort.cross_sectional_sessions() == {"sub-001": "pre", "sub-002": "pre"}


def test_anatomy_per_subject_is_shared_by_the_sessions(docs_cohort, tmp_path):
    root = sessions_dataset(docs_cohort, tmp_path / "bids", labels=("001",), tasks=("rest",),
                            anat_per_session=False)
    units = Cohort.from_bids(root).units()
    assert len(units) == 2 and units[0].gm == units[1].gm is not None


def test_space_syntax_and_resolution(tmp_path):
    assert Space.parse("MNI152NLin6Asym:res-2").bids == "space-MNI152NLin6Asym_res-2"
    assert Space.parse("MNI152NLin2009cAsym").matches({"space": "MNI152NLin2009cAsym", "res": "2"})
    with pytest.raises(InputError, match="--space"):
        Space.parse("MNI152NLin6Asym:2mm")


def test_old_confounds_get_their_expansions():
    table = pd.DataFrame({"trans_x": [0.0, 0.5, 0.25], "csf": [1.0, 2.0, 4.0],
                          "csf_derivative1": [np.nan, 9.0, 9.0]})
    out = expand_confounds(table)
    assert out["trans_x_derivative1"].tolist()[1:] == [0.5, -0.25]
    assert out["trans_x_power2"].tolist() == [0.0, 0.25, 0.0625]
    assert out["csf_derivative1"].tolist()[1:] == [9.0, 9.0]    # what the file has is kept
    assert "csf_derivative1" in table.columns and "trans_x_power2" not in table.columns  # input intact


def test_nothing_to_run_names_the_flag(docs_cohort, tmp_path):
    root = sessions_dataset(docs_cohort, tmp_path / "bids", labels=("001",), tasks=("rest",))
    cohort = Cohort.from_bids(root, task_map={"pain": "painful"})
    with pytest.raises(InputError) as info:
        cohort.check_inputs([Needs("sensitization", task="pain", events=True)])
    assert "task" in str(info.value)
    counts = cohort.check_inputs([Needs("connectivity", task="rest", timeseries=True),
                                  Needs("sensitization", task="pain", events=True)])
    assert counts == {"connectivity": 2, "sensitization": 0}
    renamed = tmp_path / "renamed"
    shutil.copytree(root, renamed)
    for path in sorted(renamed.rglob("*task-rest*"), key=lambda p: -len(p.parts)):
        path.rename(path.with_name(path.name.replace("task-rest", "task-restingstate")))
    with pytest.raises(InputError, match="--task-map rest=restingstate"):
        Cohort.from_bids(renamed).check_inputs([Needs("connectivity", task="rest", timeseries=True)])
    mapped = Cohort.from_bids(renamed, task_map={"rest": "restingstate"})
    unit = mapped.units()[0]
    assert unit.runs[0].task == "rest" and unit.runs[0].name.endswith("task-restingstate_run-1")


# --------------------------------------------------------------------------------------------
# combining runs
# --------------------------------------------------------------------------------------------

def test_fixed_effects_over_runs_match_nilearn(two_sessions):
    """Two runs of a task, combined: nilearn's FirstLevelModel with a list of runs."""
    from nilearn.glm.first_level import FirstLevelModel

    unit = Cohort.from_bids(two_sessions).subject("003", "post")
    task_runs = unit.runs_for("pain")
    assert len(task_runs) == 2
    designs, maps = [], []
    for run in task_runs:
        bold = fl.load_bold(run)
        X = fl.design_matrix(run, run.load_events(), Config(), n_volumes=bold.n_volumes, modulators=())
        designs.append(X)
        maps.append(fl.contrast_maps(bold, X, {"pain": "pain"}, None, noise_model="ols"))
    ours = fl.fixed_effects(maps)
    flm = FirstLevelModel(t_r=task_runs[0].repetition_time, mask_img=nib.load(task_runs[0].mask),
                          noise_model="ols", signal_scaling=0, smoothing_fwhm=None, minimize_memory=True)
    flm.fit([str(r.bold) for r in task_runs], design_matrices=designs)
    mask = ours.mask
    for stat, key in (("effect_size", "pain_beta"), ("stat", "pain_t")):
        ref = flm.compute_contrast("pain", stat_type="t", output_type=stat).get_fdata()[mask]
        got = ours.images(("beta", "t"))[key].get_fdata()[mask]
        assert np.allclose(got, ref, atol=1e-4 * np.abs(ref).max()), stat


def test_task_features_combine_every_run(two_sessions):
    from painplast.plasticity import sensitization

    unit = Cohort.from_bids(two_sessions).subject("001", "pre")
    both = sensitization.subject(unit, Config())
    assert both.info["runs"] == ["ses-pre_task-pain_run-1", "ses-pre_task-pain_run-2"]
    singles = []
    for run in unit.runs_for("pain"):
        one = type(unit)(unit.participant_id, unit.label, unit.info, (run,), unit.gm, unit.anat_mask, "pre")
        singles.append(sensitization.subject(one, Config()).features)
    for name in ("sensitization.thalamus_response", "sensitization.dacc_slope"):
        assert both.features[name] == pytest.approx(np.mean([s[name] for s in singles]), rel=1e-9)


def test_connectome_of_several_runs_is_their_volume_weighted_average(two_sessions):
    cfg = Config(options={"connectivity": {"seed_maps": False}})
    unit = Cohort.from_bids(two_sessions).subject("002", "post")
    both = conn.subject(unit, cfg)
    assert both.info["runs"] == ["ses-post_task-rest_run-1", "ses-post_task-rest_run-2"]
    rs, weights = [], []
    for run in unit.runs_for("rest"):
        one = conn.subject(type(unit)(unit.participant_id, unit.label, unit.info, (run,), session="post"), cfg)
        rs.append(np.tanh(one.arrays["pain_connectome"].astype(float)))
        weights.append(one.info["n_volumes_kept"] - 1)
    expected = np.average(np.stack(rs), axis=0, weights=weights)
    got = np.tanh(both.arrays["pain_connectome"].astype(float))
    off = ~np.eye(len(got), dtype=bool)
    assert np.allclose(got[off], expected[off], atol=1e-5)
    assert both.info["n_volumes_kept"] == sum(w + 1 for w in weights)


# --------------------------------------------------------------------------------------------
# end to end
# --------------------------------------------------------------------------------------------

def test_two_sessions_two_runs_end_to_end(two_sessions, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["run", str(two_sessions), str(out)]
    opts = ["--modules", "connectivity,structure", "--quiet"]
    assert main(args + ["participant"] + opts) == 0
    for label in ("001", "004"):
        for ses in ("pre", "post"):
            side = out / f"sub-{label}" / f"ses-{ses}" / f"sub-{label}_ses-{ses}_desc-connectivity_features.json"
            meta = json.loads(side.read_text())
            assert meta["session"] == ses
            assert meta["runs"] == [f"ses-{ses}_task-rest_run-1", f"ses-{ses}_task-rest_run-2"]
            assert sum("_task-rest_run-" in p for p in meta["input_checksums"]) >= 4
            table = pd.read_csv(side.with_suffix(".tsv"), sep="\t")
            assert table["session_id"].tolist() == [f"ses-{ses}"]
    capsys.readouterr()
    # no acq_time and two sessions: the group level names the flag, writes nothing
    assert main(args + ["group"] + opts) == 2
    err = capsys.readouterr().err.strip()
    assert "--session-label" in err and len(err.splitlines()) == 1
    assert not (out / "group").exists()
    # a group-only option (permutations) does not invalidate the participant outputs
    assert main(args + ["group", "--session-label", "pre", "--n-permutations", "20"] + opts) == 0
    notes = json.loads((out / "group" / "connectivity_notes.json").read_text())
    assert set(notes["sessions"].values()) == {"pre"} and notes["left_out"] == []
    assert any("session(s) pre" in n for n in notes["notes"])
    report = (out / "report.html").read_text()
    assert "Sessions and runs used by each analysis" in report
    assert "ses-post_task-rest_run-1, ses-post_task-rest_run-2" in report   # every session's runs
    summary = _html_table(report, "Sessions and runs used by each analysis")
    row = next(r for r in summary if r["module"] == "connectivity")
    assert row["participant-sessions"] == "8" and row["sessions"] == "post, pre"
    assert row["runs per participant-session"] == "2" and row["session of the group statistics"] == "pre"


def _html_table(page: str, caption: str) -> list[dict]:
    """The rows of the report table with this caption, as {header: cell text}."""
    from html.parser import HTMLParser

    class Tables(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tables, self.cell, self.where = [], None, None

        def handle_starttag(self, tag, attrs):
            if tag == "table":
                self.tables.append({"caption": "", "rows": []})
            elif tag == "tr" and self.tables:
                self.tables[-1]["rows"].append([])
            elif tag in ("td", "th", "caption"):
                self.cell, self.where = "", tag

        def handle_endtag(self, tag):
            if tag in ("td", "th") and self.cell is not None:
                self.tables[-1]["rows"][-1].append(self.cell.strip())
                self.cell = None
            elif tag == "caption" and self.cell is not None:
                self.tables[-1]["caption"] = self.cell.strip()
                self.cell = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell += data

    parser = Tables()
    parser.feed(page)
    found = next(t for t in parser.tables if t["caption"].startswith(caption))
    header, *rows = [r for r in found["rows"] if r]
    return [dict(zip(header, r)) for r in rows]


def test_group_level_options_never_invalidate_participant_outputs():
    base = Config(modules=("connectivity", "structure"))
    group_only = Config(modules=("connectivity", "structure"), n_permutations=50, alpha=0.01, random_state=3,
                        options={"connectivity": {"nbs_threshold": 2.5, "nbs_contrasts": ["age"]},
                                 "structure": {"tfce_connectivity": 6, "voxelwise_contrasts": ["age"]}})
    for module in ("connectivity", "structure"):
        assert base.parameter_hash(module) == group_only.parameter_hash(module)
        assert base.parameter_hash() != group_only.parameter_hash()
    participant = Config(modules=("connectivity",), options={"connectivity": {"fd_threshold": 0.2}})
    assert participant.parameter_hash("connectivity") != base.parameter_hash("connectivity")
    assert Config(repetition_time=2.5).parameter_hash("connectivity") != base.parameter_hash("connectivity")


def test_simulated_sessions_and_runs_through_every_module(tmp_path, capsys):
    """The simulator's two-session, two-run layout (``painplast simulate --sessions 2 --runs 2``)
    through all five modules: every participant-session is a unit, every task module combines
    both runs of its task, and the group level of one session runs on the per-session results."""
    from conftest import simulated

    bids = simulated(n_participants=8, n_sites=2, seed=7, resolution=4, n_sessions=2, n_runs=2)
    out = tmp_path / "out"
    assert main(["run", str(bids), str(out), "participant", "--quiet"]) == 0
    capsys.readouterr()
    sidecars = sorted(out.glob("sub-*/ses-*/*_features.json"))
    modules = {json.loads(p.read_text())["module"] for p in sidecars}
    assert modules == {"sensitization", "reorganization", "connectivity", "structure", "modulation"}
    participants = {p.parts[-3] for p in sidecars}
    assert len(participants) == 8
    for side in sidecars:
        meta = json.loads(side.read_text())
        ses = side.parts[-2][len("ses-"):]
        assert meta["session"] == ses
        if meta["module"] != "structure":   # anatomy has no runs; every functional module uses both
            tasks = {r.split("_run-")[0] for r in meta["runs"]}
            assert all(f"{t}_run-1" in meta["runs"] and f"{t}_run-2" in meta["runs"] for t in tasks)
            assert all(r.startswith(f"ses-{ses}_") for r in meta["runs"])
    assert len(sidecars) == 8 * 2 * 5
    assert main(["run", str(bids), str(out), "group", "--session-label", "1", "--quiet"]) == 0
    for module in modules:
        notes = json.loads((out / "group" / f"{module}_notes.json").read_text())
        assert set(notes["sessions"].values()) == {"1"}, (module, notes["sessions"])
        assert len(notes["sessions"]) == 8
