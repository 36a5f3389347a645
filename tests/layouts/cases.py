"""The cases: one builder per real layout, with the steps a user takes and what each must give.

Conventions (see :mod:`layouts`): a case folder holds the raw dataset at ``bids/``; derivatives
sit under ``bids/derivatives/<pipeline>`` unless the case is about them being elsewhere. Two
participants per case unless the case needs more; 60 volumes of 2 s per run (painplast's
connectivity keeps a participant with at least 50 volumes after censoring). Group steps pass
``--n-permutations 50`` only at the group level, as BIDS-Apps users pass group options; the
participant outputs must survive it (issue 14, point 5).

Every case's ``source`` (one line, in :data:`CASES`) says where its names come from; the
builders' docstrings say what they write.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import SUBJECT_LEVEL, Case, Group, Participant, Sidecar, Step, Stop
from . import _ds000001_names as DS1
from . import _files as F
from . import _images as I
from . import _pipelines as P

GROUP_OPTIONS = ("--n-permutations", "50")
TWO = ("01", "02")
GM_24 = "anat/sub-{s}_space-MNI152NLin2009cAsym_res-2_label-GM_probseg.nii.gz"


# ------------------------------------------------------------------------------ shared pieces

def _table(subs, **columns) -> pd.DataFrame:
    return pd.DataFrame({"participant_id": [f"sub-{s}" for s in subs], **columns})


def _default_table(subs=TWO) -> pd.DataFrame:
    """participants.tsv as painplast documents it: age, sex M/F, group patient/control."""
    n = len(subs)
    return _table(subs, age=[34 + 7 * i for i in range(n)], sex=(["F", "M"] * n)[:n],
                  group=(["patient", "control"] * n)[:n])


def _raw(root: Path, name: str, table: pd.DataFrame, sidecar: dict | None = None,
         tasks: dict[str, str] | None = None) -> Path:
    """The raw dataset's top level: description, README, participants, task sidecars."""
    bids = root / "bids"
    P.raw_description(bids, name)
    F.text(bids / "README", f"{name}: a painplast test layout (tiny images, the pipeline's real file names).\n")
    P.participants(bids, table, sidecar)
    for task, task_name in (tasks if tasks is not None else {"rest": "resting state"}).items():
        P.task_sidecar(bids, task, task_name)
    return bids


def _rest_and_anat(root: Path, prep: P.FMRIPrep, subs=TWO, task: str = "rest", n_nonsteady: int = 0,
                   runs=(None,)) -> None:
    """Raw T1w and rest runs, and fMRIPrep's outputs for them."""
    bids = root / "bids"
    prep.describe(source="../..")
    for s in subs:
        P.raw_anat(bids, s)
        for run in runs:
            P.raw_bold(bids, s, None, task, run)
            prep.func(s, None, task, run, n_nonsteady=n_nonsteady)
        prep.anat(s)
        prep.report(s)


PREP = "bids/derivatives/fmriprep"
SPACE_24 = "space-MNI152NLin2009cAsym_res-2"


def _run_inputs(prep: str, s: str, ses: str | None, task: str, run: str | None, space: str = SPACE_24,
                confounds: str = "desc-confounds_timeseries", events: bool = False) -> tuple[str, ...]:
    """The files of one fMRIPrep run a sidecar must list: the preprocessed BOLD and its confounds
    (so that neither the confounds file nor another pipeline's file stands in for the run), and
    the raw events of a task run."""
    stem = P.entities(s, ses, task, run)
    func = f"{prep}/sub-{s}/" + (f"ses-{ses}/" if ses else "") + "func"
    files = (f"{func}/{stem}_{space}_desc-preproc_bold.nii.gz", f"{func}/{stem}_{confounds}.tsv")
    if events:
        files += ("bids/" + f"sub-{s}/" + (f"ses-{ses}/" if ses else "") + f"func/{stem}_events.tsv",)
    return files


def _runs_sidecar(prep: str, s: str, ses: str | None, task: str, runs=(None,), **kwargs) -> Sidecar:
    """A sidecar listing ``runs`` of ``task`` (named as painplast's ``Run.name``) and their files."""
    names = tuple(P.entities(s, ses, task, run).split("_", 1)[1] for run in runs)
    files = tuple(f for run in runs for f in _run_inputs(prep, s, ses, task, run, **kwargs))
    return Sidecar(runs=names, inputs=files)


def _connectivity_and_structure(subs, gm: str, prep: str = PREP, runs=(None,), **kwargs) -> dict:
    """Expected sidecars: connectivity on the rest ``runs``, structure on the GM map ``gm``."""
    out = {}
    for s in subs:
        out[f"sub-{s}", None, "connectivity"] = _runs_sidecar(prep, s, None, "rest", runs, **kwargs)
        out[f"sub-{s}", None, "structure"] = Sidecar(inputs=(f"{prep}/sub-{s}/{gm.format(s=s)}",))
    return out


# ------------------------------------------------------------------------------ fMRIPrep versions

def build_ds000001(root: Path) -> None:
    """bids-examples' ds001 (raw) and ds000001-fmriprep (fMRIPrep 20.2.0rc0), every name copied."""
    bids = root / "bids"
    subs = tuple(DS1.PARTICIPANTS)
    P.raw_description(bids, "Balloon Analog Risk-taking Task", BIDSVersion="1.0.0",
                      DatasetDOI="10.18112/openneuro.ds000001.v1.0.0")
    F.text(bids / "README", "ds000001 as bids-examples' ds001 (four participants; tiny images).\n")
    P.participants(bids, _table(subs, sex=[DS1.PARTICIPANTS[s][0] for s in subs],
                                age=[DS1.PARTICIPANTS[s][1] for s in subs]),
                   {"age": {"Description": "Age of the participant", "Units": "year"},
                    "sex": {"Description": "Sex of the participant", "Levels": {"M": "Male", "F": "Female"}}})
    P.task_sidecar(bids, "balloonanalogrisktask", "balloon analog risk task")
    n = 20
    for s in subs:
        P.raw_anat(bids, s)
        grid = I.native_grid((20, 24, 20), (8.0, 8.0, 8.0))
        F.nifti(bids / f"sub-{s}/anat/sub-{s}_inplaneT2.nii.gz", I.anatomy(grid, F.rng_for(s, "t2")),
                grid.affine, template=False)
        for run in ("01", "02", "03"):
            P.raw_bold(bids, s, None, "balloonanalogrisktask", run, n_volumes=n,
                       events=P.bart_events(f"{s}{run}", n_volumes=n))
    _write_ds000001_fmriprep(bids / "derivatives" / "fmriprep", subs, n)


def _write_ds000001_fmriprep(prep: Path, subs, n_volumes: int) -> None:
    """Every file of bids-examples' ds000001-fmriprep: real NIfTIs on the grid its space names,
    its JSON sidecars, confounds made from the BOLD series, empty files for the rest."""
    F.text(prep / ".bidsignore", "*.html\nlogs/\nfigures/\n*_xfm.*\n*.surf.gii\n*_boldref.nii.gz\n"
                                 "*_bold.func.gii\n*_mixing.tsv\n*_AROMAnoiseICs.csv\n*_timeseries.tsv\n")
    F.placeholder(prep / ".SKIP_VALIDATION")
    F.text(prep / "README", "Outputs of fMRIPrep 20.2.0rc0 on four participants of OpenNeuro ds000001 "
                            "(bids-examples ds000001-fmriprep), with tiny images.\n")
    P.FMRIPrep(prep, "20.2.0rc0").describe()
    for name in ("desc-aparcaseg_dseg.tsv", "desc-aseg_dseg.tsv"):
        F.text(prep / name, 'index\tname\tcolor\n0\t"Unknown"\t#000000\n1\t"Left-Cerebral-Exterior"\t#4682b4\n'
                            '2\t"Left-Cerebral-White-Matter"\t#f5f5f5\n3\t"Left-Cerebral-Cortex"\t#cd3e4e\n')
    for name in ("logs/CITATION.bib", "logs/CITATION.html", "logs/CITATION.md", "logs/CITATION.tex"):
        F.placeholder(prep / name)
    for s in subs:
        F.placeholder(prep / f"sub-{s}.html")
        F.placeholder(prep / f"sub-{s}" / "log" / DS1.LOG_RUNS[s] / "fmriprep.toml")
        bolds = {}
        for template in DS1.SUBJECT:
            path = prep / f"sub-{s}" / template.format(sub=s)
            name = path.name
            space = next((sp for sp in I.TEMPLATES if f"space-{sp}_" in name), None)
            grid = I.template_grid(space) if space else I.template_grid("MNI152NLin2009cAsym", 12.0)
            rng = F.rng_for(s, name)
            if name.endswith("_bold.nii.gz"):
                data = I.bold(grid, n_volumes, rng)
                if "desc-preproc" in name:
                    bolds[name.split("_space-")[0]] = (grid, data)
                F.nifti(path, data, grid.affine, tr=2.0)
            elif name.endswith("_mask.nii.gz"):
                F.nifti(path, I.mask(grid), grid.affine)
            elif name.endswith("_probseg.nii.gz"):
                F.nifti(path, I.probability(grid, rng), grid.affine)
            elif name.endswith("_dseg.nii.gz"):
                F.nifti(path, I.dseg(grid, rng), grid.affine)
            elif name.endswith(".nii.gz"):                  # _T1w, _boldref
                F.nifti(path, I.anatomy(grid, rng), grid.affine)
            elif name.endswith(".json"):
                F.json_file(path, _ds000001_sidecar(s, name))
            elif not name.endswith("_desc-confounds_timeseries.tsv"):
                F.placeholder(path)                         # reports, transforms, surfaces, MELODIC
        for stem, (grid, data) in bolds.items():
            F.tsv(prep / f"sub-{s}" / "func" / f"{stem}_desc-confounds_timeseries.tsv",
                  P.confounds("20.2.0rc0", data, grid, 0, stem))


def _ds000001_sidecar(sub: str, name: str) -> dict:
    """The JSON sidecars of ds000001-fmriprep (their keys and values; raw sources with run-0N)."""
    raw_run = f"sub-{sub}/func/{name.split('_space-')[0].replace('_run-', '_run-0')}_bold.nii.gz"
    if name.endswith("desc-confounds_timeseries.json"):
        return P.compcor_metadata()
    if "_task-" in name and name.endswith("desc-preproc_bold.json"):
        return {"RepetitionTime": 2.0, "SkullStripped": False, "TaskName": "balloon analog risk task",
                "Resolution": "2mm, isotropic"}
    if "_task-" in name:                                    # run brain mask
        return {"RawSources": [raw_run], "Resolution": "2mm, isotropic"}
    if "space-" in name and name.endswith("desc-brain_mask.json"):
        return {"RawSources": "tpl-MNI152NLin2009cAsym/tpl-MNI152NLin2009cAsym_res-02_desc-brain_mask.nii.gz",
                "Type": "Brain", "Resolution": "2mm, isotropic"}
    if "space-" in name:
        return {"SkullStripped": True, "Resolution": "2mm, isotropic"}
    if name.endswith("desc-brain_mask.json"):
        return {"RawSources": [f"sub-{sub}/anat/sub-{sub}_T1w.nii.gz"], "Type": "Brain"}
    return {"SkullStripped": False}


def build_fmriprep_1_1(root: Path) -> None:
    """fMRIPrep 1.1.8: ``_bold_space-<space>_preproc``, ``_bold_confounds.tsv`` (CamelCase columns)."""
    _raw(root, "fMRIPrep 1.1 outputs", _default_table())
    prep = P.FMRIPrep(root / "bids" / "derivatives" / "fmriprep", "1.1.8", spaces=("MNI152NLin2009cAsym",))
    _rest_and_anat(root, prep, n_nonsteady=1)


def build_fmriprep_1_5(root: Path) -> None:
    """fMRIPrep 1.5.10: ``desc-confounds_regressors.tsv`` without derivative or quadratic columns."""
    _raw(root, "fMRIPrep 1.5 outputs", _default_table())
    prep = P.FMRIPrep(root / "bids" / "derivatives" / "fmriprep", "1.5.10", spaces=("MNI152NLin2009cAsym",))
    _rest_and_anat(root, prep, n_nonsteady=2)


def build_fmriprep_20_2(root: Path) -> None:
    """fMRIPrep 20.2.7 in two spaces, two rest runs; raw ``run-01`` named ``run-1`` by fMRIPrep."""
    _raw(root, "fMRIPrep 20.2 outputs", _default_table())
    prep = P.FMRIPrep(root / "bids" / "derivatives" / "fmriprep", "20.2.7",
                      spaces=("MNI152NLin2009cAsym:res-2", "MNI152NLin6Asym:res-2"))
    _rest_and_anat(root, prep, n_nonsteady=1, runs=("01", "02"))


def build_fmriprep_24_sessions(root: Path) -> None:
    """fMRIPrep 24.1.1, two sessions with a T1w each: one anatomy without ``ses``; sessions.tsv."""
    bids = _raw(root, "fMRIPrep 24.1 outputs, two sessions", _default_table())
    prep = P.FMRIPrep(bids / "derivatives" / "fmriprep-24.1.1", "24.1.1")
    prep.describe(source="../..")
    for s in TWO:
        for ses in ("1", "2"):
            P.raw_anat(bids, s, ses)
            P.raw_bold(bids, s, ses, "rest", None)
            prep.func(s, ses, "rest", None, n_nonsteady=3)
        P.sessions_tsv(bids, s, {"1": "2021-03-02T09:12:00", "2": "2021-09-14T10:40:00"})
        prep.anat(s)            # several T1w: fMRIPrep's anatomical reference carries no session
        prep.report(s)


def build_sessions_runs(root: Path) -> None:
    """fMRIPrep 25.2.5, anatomy per session; ses-pre/ses-post x two rest runs, two pain runs in ses-pre."""
    bids = _raw(root, "Two sessions, two runs", _default_table(),
                tasks={"rest": "resting state", "pain": "graded heat pain"})
    F.json_file(bids / "task-pain_events.json",
                {"intensity": {"Description": "Thermode temperature", "Units": "degC"},
                 "rating": {"Description": "Pain rating, 0-200 (100 = pain threshold)"}})
    prep = P.FMRIPrep(bids / "derivatives" / "fmriprep", "25.2.5")
    prep.describe(source="../..")
    for s in TWO:
        for ses in ("pre", "post"):
            P.raw_anat(bids, s, ses)
            for run in ("1", "2"):
                P.raw_bold(bids, s, ses, "rest", run)
                prep.func(s, ses, "rest", run, n_nonsteady=2)
                if ses == "pre":            # the pain task at baseline only
                    P.raw_bold(bids, s, ses, "pain", run, events=P.pain_events(f"{s}{ses}{run}"))
                    prep.func(s, ses, "pain", run, n_nonsteady=2)
            prep.anat(s, ses)
        prep.report(s)


def build_nlin6_only(root: Path) -> None:
    """fMRIPrep 23.2.3 with ``--output-spaces MNI152NLin6Asym:res-2`` only."""
    _raw(root, "fMRIPrep 23.2, NLin6Asym only", _default_table())
    prep = P.FMRIPrep(root / "bids" / "derivatives" / "fmriprep", "23.2.3", spaces=("MNI152NLin6Asym:res-2",))
    _rest_and_anat(root, prep, n_nonsteady=1)


def build_outside(root: Path) -> None:
    """fMRIPrep 24.1.1 written outside the raw dataset: ``fmriprep bids/ elsewhere/fmriprep participant``."""
    _raw(root, "Raw dataset, derivatives elsewhere", _default_table())
    prep = P.FMRIPrep(root / "elsewhere" / "fmriprep", "24.1.1")
    _rest_and_anat(root, prep)


def build_restingstate(root: Path) -> None:
    """fMRIPrep 24.1.1 on a dataset whose rest task is labelled ``restingstate``."""
    _raw(root, "task-restingstate", _default_table(), tasks={"restingstate": "resting state"})
    prep = P.FMRIPrep(root / "bids" / "derivatives" / "fmriprep", "24.1.1")
    _rest_and_anat(root, prep, task="restingstate")


# ------------------------------------------------------------------------------ other pipelines

def build_cat12(root: Path) -> None:
    """CAT12 in BIDS mode, one T1w per session; sessions.tsv whose order is not the labels' order."""
    bids = _raw(root, "CAT12 per session", _default_table(), tasks={})
    cat = bids / "derivatives" / "cat12-12.6_vbm"
    for s in TWO:
        for ses in ("pre", "post"):
            P.raw_anat(bids, s, ses)
            P.cat12_session(cat, s, ses)
        # acquisition order is not the sessions' lexical order ("post" < "pre")
        P.sessions_tsv(bids, s, {"pre": "2020-01-15T08:30:00", "post": "2020-07-20T08:45:00"})


def build_xcpd(root: Path) -> None:
    """XCP-D 0.10.6 in ``linc`` mode beside the fMRIPrep 24.1.1 outputs it read."""
    bids = _raw(root, "fMRIPrep and XCP-D", _default_table())
    prep = P.FMRIPrep(bids / "derivatives" / "fmriprep", "24.1.1")
    _rest_and_anat(root, prep, n_nonsteady=2)
    xcpd = bids / "derivatives" / "xcp_d"
    P.xcpd_description(xcpd)
    for s in TWO:
        P.xcpd_run(xcpd, s, None, "rest", None)
        P.xcpd_anat(xcpd, s)
        F.placeholder(xcpd / f"sub-{s}.html")


def build_roi_timeseries(root: Path) -> None:
    """ROI time series and framewise displacement only, no repetition time anywhere."""
    bids = root / "bids"
    P.raw_description(bids, "ROI time series only")
    P.participants(bids, _default_table())
    for s in TWO:
        P.roi_timeseries(bids / "derivatives" / "timeseries", s)


# ------------------------------------------------------------------------------ participants.tsv as written

def _anat_only(root: Path, name: str, table: pd.DataFrame, sidecar: dict | None = None,
               with_files=None) -> None:
    """fMRIPrep 24.1.1 ``--anat-only`` outputs for the participants that have files."""
    bids = _raw(root, name, table, sidecar, tasks={})
    prep = P.FMRIPrep(bids / "derivatives" / "fmriprep", "24.1.1")
    prep.describe(source="../..")
    subs = with_files if with_files is not None else [pid[4:] for pid in table["participant_id"]]
    for s in subs:
        P.raw_anat(bids, s)
        prep.anat(s)
        prep.report(s)


def _structure(subs) -> dict:
    return {(f"sub-{s}", None, "structure"): Sidecar(inputs=(f"{PREP}/sub-{s}/{GM_24.format(s=s)}",))
            for s in subs}


THREE = ("01", "02", "03")
LEVELS_CLBP = {"group": {"Description": "Diagnosis",
                         "Levels": {"CLBP": "Chronic low back pain patient", "HC": "Healthy control"}}}


def build_clbp_levels(root: Path) -> None:
    """``group`` coded CLBP/HC, decoded by participants.json ``Levels``."""
    _anat_only(root, "CLBP/HC with Levels", _table(TWO, group=["CLBP", "HC"], age=[41, 39], sex=["F", "M"]),
               LEVELS_CLBP)


def build_clbp_no_levels(root: Path) -> None:
    """``group`` coded CLBP/HC, no participants.json."""
    _anat_only(root, "CLBP/HC", _table(TWO, group=["CLBP", "HC"], age=[41, 39], sex=["F", "M"]))


def build_group_na(root: Path) -> None:
    """A participant whose ``group`` is n/a."""
    _anat_only(root, "group n/a", _table(THREE, group=["patient", "control", np.nan],
                                         age=[41, 39, 50], sex=["F", "M", "F"]))


def build_dropout(root: Path) -> None:
    """A listed participant without any file (a dropout)."""
    _anat_only(root, "dropout", _table(THREE, group=["patient", "control", "patient"],
                                       age=[41, 39, 50], sex=["F", "M", "F"]), with_files=TWO)


def build_sex_12(root: Path) -> None:
    """``sex`` coded 1/2, no participants.json."""
    _anat_only(root, "sex 1/2", _table(TWO, group=["patient", "control"], age=[41, 39], sex=[1, 2]))


def build_sex_12_levels(root: Path) -> None:
    """``sex`` coded 1/2 with participants.json ``Levels`` {"1": "male", "2": "female"}."""
    _anat_only(root, "sex 1/2 with Levels", _table(TWO, group=["patient", "control"], age=[41, 39], sex=[1, 2]),
               {"sex": {"Description": "sex of the participant", "Levels": {"1": "male", "2": "female"}}})


def build_capitalised(root: Path) -> None:
    """``Age`` and ``Gender`` capitalised."""
    _anat_only(root, "Age/Gender", _table(TWO, group=["patient", "control"], Age=[41, 39], Gender=["F", "M"]))


def build_age_na(root: Path) -> None:
    """A participant whose ``age`` is n/a."""
    _anat_only(root, "age n/a", _table(THREE, group=["patient", "control", "control"],
                                       age=[41, np.nan, 50], sex=["F", "M", "F"]))


# ------------------------------------------------------------------------------ the cases

def _p(*args: str, out: str = "out", expect) -> Step:
    return Step("participant", args, expect, out)


def _g(*args: str, out: str = "out", expect) -> Step:
    return Step("group", args + GROUP_OPTIONS, expect, out)


CONN = ("--modules", "connectivity")
STRUCT = ("--modules", "structure")
CONN_STRUCT = ("--modules", "connectivity,structure")
BOTH = Group(("connectivity", "structure"))
TASKS = ("--modules", "connectivity,structure,sensitization")
XCPD_TS = "sub-{s}_task-rest_space-MNI152NLin2009cAsym_seg-4S156Parcels_stat-mean_timeseries.tsv"
PARTICIPANTS_SPEC = "BIDS 1.8 'Tabular files' and participants.tsv (n/a, Levels)"


def _participants_case(name: str, build, source: str, group_steps=None, participants=TWO) -> Case:
    """A participants.tsv variant on anatomy-only fMRIPrep 24.1.1 outputs: the structure module."""
    return Case(name, source, build, (
        _p(*STRUCT, expect=Participant(_structure(participants))),
        *(group_steps or (_g(*STRUCT, expect=Group(("structure",))),)),
    ))


CASES: tuple[Case, ...] = (
    Case("ds000001-fmriprep",
         "bids-examples ds000001-fmriprep (fMRIPrep 20.2.0rc0 on OpenNeuro ds000001) and ds001, names copied",
         build_ds000001, (
             _p(*STRUCT, expect=Participant({
                 (f"sub-{s}", None, "structure"): Sidecar(inputs=(
                     f"{PREP}/sub-{s}/anat/sub-{s}_space-MNI152NLin2009cAsym_res-2_label-GM_probseg.nii.gz",))
                 for s in DS1.PARTICIPANTS})),
             _g(*STRUCT, expect=Group(("structure",))),
             # no resting-state run: a connectivity-only run has nothing to do
             _p(*CONN, out="out-rest", expect=Stop(("--task-map", "--modules"))),
         )),
    Case("fmriprep-1.1", "fMRIPrep 1.1.8 docs/outputs.rst and fmriprep/utils/bids.py (tag 1.1.8)",
         build_fmriprep_1_1, (
             _p(*CONN_STRUCT, expect=Stop((), says=r"fmriprep.*(not supported|unsupported)"
                                                    r"|(not supported|unsupported).*fmriprep")),
         )),
    Case("fmriprep-1.5", "fMRIPrep 1.5 docs/outputs.rst (tag 1.5.0): names and the confounds example",
         build_fmriprep_1_5, (
             _p(*CONN_STRUCT, expect=Participant(_connectivity_and_structure(
                 TWO, "anat/sub-{s}_space-MNI152NLin2009cAsym_label-GM_probseg.nii.gz",
                 space="space-MNI152NLin2009cAsym", confounds="desc-confounds_regressors"))),
             _g(*CONN_STRUCT, expect=BOTH),
         )),
    Case("fmriprep-20.2", "fMRIPrep 20.2 docs/outputs.rst (tag 20.2.0); run-01 -> run-1 as in ds000001-fmriprep",
         build_fmriprep_20_2, (
             _p(*CONN_STRUCT, expect=Participant(_connectivity_and_structure(TWO, GM_24, runs=("1", "2")))),
             _g(*CONN_STRUCT, expect=BOTH),
         )),
    Case("fmriprep-24.1-sessions",
         "fMRIPrep 24.1 docs/outputs.rst (tag 24.1.0); one anatomy across sessions: fmriprep/interfaces/bids.py",
         build_fmriprep_24_sessions, (
             _p(*CONN_STRUCT, expect=Participant({
                 **{(f"sub-{s}", ses, "connectivity"): _runs_sidecar(f"{PREP}-24.1.1", s, ses, "rest")
                    for s in TWO for ses in ("1", "2")},
                 **{(f"sub-{s}", SUBJECT_LEVEL, "structure"): Sidecar(inputs=(
                     f"{PREP}-24.1.1/sub-{s}/{GM_24.format(s=s)}",)) for s in TWO}},
                 sessions={f"sub-{s}": ("1", "2") for s in TWO})),
             _g(*CONN_STRUCT, expect=BOTH),      # one session per participant: the earliest acq_time
         )),
    Case("sessions-x-runs",
         "fMRIPrep 25.2 --subject-anatomical-reference sessionwise (docs/workflows.rst, interfaces/bids.py)",
         build_sessions_runs, (
             _p(*TASKS, expect=Participant({
                 **{(f"sub-{s}", ses, "connectivity"): _runs_sidecar(PREP, s, ses, "rest", ("1", "2"))
                    for s in TWO for ses in ("pre", "post")},
                 **{(f"sub-{s}", ses, "structure"): Sidecar(inputs=(
                     f"{PREP}/sub-{s}/ses-{ses}/anat/"
                     f"sub-{s}_ses-{ses}_space-MNI152NLin2009cAsym_res-2_label-GM_probseg.nii.gz",))
                    for s in TWO for ses in ("pre", "post")},
                 **{(f"sub-{s}", "pre", "sensitization"): _runs_sidecar(PREP, s, "pre", "pain", ("1", "2"),
                                                                        events=True)
                    for s in TWO}})),
             # two sessions, no sessions.tsv: a cross-sectional group stage must be told which
             _g(*TASKS, expect=Stop(("--session-label",))),
             _g(*TASKS, "--session-label", "pre", expect=Group(("connectivity", "structure", "sensitization"))),
         )),
    Case("nlin6-res2-only", "fMRIPrep 23.2 docs/spaces.rst and docs/outputs.rst (tag 23.2.0)",
         build_nlin6_only, (
             _p(*CONN_STRUCT, out="out-default-space", expect=Stop(("--space",))),
             _p(*CONN_STRUCT, "--space", "MNI152NLin6Asym:res-2", expect=Participant(_connectivity_and_structure(
                 TWO, "anat/sub-{s}_space-MNI152NLin6Asym_res-2_label-GM_probseg.nii.gz",
                 space="space-MNI152NLin6Asym_res-2"))),
             _g(*CONN_STRUCT, "--space", "MNI152NLin6Asym:res-2", expect=BOTH),
         )),
    Case("derivatives-elsewhere", "fMRIPrep 24.1 docs/usage.rst: fmriprep <bids_dir> <output_dir> participant",
         build_outside, (
             _p(*CONN_STRUCT, out="out-no-derivatives", expect=Stop(("--derivatives",))),
             _p(*CONN_STRUCT, "--derivatives", "{root}/elsewhere/fmriprep", expect=Participant(
                 _connectivity_and_structure(TWO, GM_24, prep="elsewhere/fmriprep"))),
             _g(*CONN_STRUCT, "--derivatives", "{root}/elsewhere/fmriprep", expect=BOTH),
         )),
    Case("task-restingstate",
         "fMRIPrep 24.1 names; task label 'restingstate' as in BrainSuite BFP's sub-0001_task-restingstate_bold",
         build_restingstate, (
             _p(*CONN, out="out-no-map", expect=Stop(("--task-map",))),
             _p(*CONN, "--task-map", "rest=restingstate", expect=Participant({
                 (f"sub-{s}", None, "connectivity"): _runs_sidecar(PREP, s, None, "restingstate") for s in TWO})),
             _g(*CONN, "--task-map", "rest=restingstate", expect=Group(("connectivity",))),
         )),
    Case("cat12-sessions",
         "CAT12 12.6 BIDS output: derivatives/cat12-12.6_vbm/sub-*/ses-*/anat/mri/mwp1*.nii (neurospin ns-datasets)",
         build_cat12, (
             _p(*STRUCT, expect=Participant({
                 (f"sub-{s}", ses, "structure"): Sidecar(inputs=(
                     f"bids/derivatives/cat12-12.6_vbm/sub-{s}/ses-{ses}/anat/mri/mwp1sub-{s}_ses-{ses}_T1w.nii",))
                 for s in TWO for ses in ("pre", "post")})),
             _g(*STRUCT, expect=Group(("structure",))),   # sessions.tsv: ses-pre was acquired first
         )),
    Case("xcpd-beside-fmriprep", "XCP-D 0.10 docs/outputs.rst (tag 0.10.0) and workflows/bold/outputs.py",
         build_xcpd, (
             _p(*CONN, out="out-both", expect=Stop(("--derivatives",))),
             _p(*CONN, "--derivatives", "{root}/bids/derivatives/fmriprep", expect=Participant(
                 {(f"sub-{s}", None, "connectivity"): _runs_sidecar(PREP, s, None, "rest") for s in TWO},
                 not_from=("bids/derivatives/xcp_d",))),
             _g(*CONN, "--derivatives", "{root}/bids/derivatives/fmriprep", expect=Group(("connectivity",))),
             _p(*CONN, "--derivatives", "{root}/bids/derivatives/xcp_d", out="out-xcpd", expect=Participant(
                 {(f"sub-{s}", None, "connectivity"): Sidecar(runs=("task-rest",), inputs=(
                     f"bids/derivatives/xcp_d/sub-{s}/func/{XCPD_TS.format(s=s)}",)) for s in TWO},
                 not_from=("bids/derivatives/fmriprep",))),
             _g(*CONN, "--derivatives", "{root}/bids/derivatives/xcp_d", out="out-xcpd",
                expect=Group(("connectivity",))),
         )),
    Case("roi-timeseries-no-tr",
         "../shared/data/rpn_szeged (Spisak et al. 2020, RPN-signature), published without a repetition time",
         build_roi_timeseries, (
             _p(*CONN, out="out-no-tr", expect=Stop(("--repetition-time",))),
             _p(*CONN, "--repetition-time", "2.5", expect=Participant({
                 (f"sub-{s}", None, "connectivity"): Sidecar(runs=("task-rest",), inputs=(
                     f"bids/derivatives/timeseries/sub-{s}/func/sub-{s}_task-rest_atlas-MIST122_timeseries.tsv",))
                 for s in TWO})),
             _g(*CONN, "--repetition-time", "2.5", expect=Group(("connectivity",))),
         )),
    _participants_case("participants-clbp-levels", build_clbp_levels,
                       f"{PARTICIPANTS_SPEC}; group coded CLBP/HC as chronic-pain studies write it"),
    _participants_case("participants-clbp-no-levels", build_clbp_no_levels,
                       f"{PARTICIPANTS_SPEC}; CLBP/HC without participants.json (issue 14)", (
                           _g(*STRUCT, expect=Stop(("--group-map",))),
                           _g(*STRUCT, "--group-map", "CLBP=patient,HC=control", expect=Group(("structure",))),
                       )),
    _participants_case("participants-group-na", build_group_na, f"{PARTICIPANTS_SPEC}; group n/a (issue 14)",
                       participants=THREE),
    _participants_case("participants-dropout", build_dropout,
                       f"{PARTICIPANTS_SPEC}; a listed participant without files, as BIDS Apps skip them", (
                           _g(*STRUCT, expect=Group(("structure",))),
                           # --strict makes the dropout an error; naming who has data fixes it
                           _p(*STRUCT, "--strict", out="out-strict",
                              expect=Stop(("--participant-label", "--strict"))),
                           _p(*STRUCT, "--strict", "--participant-label", "01", "--participant-label", "02",
                              out="out-strict", expect=Participant(_structure(TWO))),
                       )),
    _participants_case("participants-sex-12", build_sex_12,
                       f"{PARTICIPANTS_SPEC}; sex coded 1/2 as SPSS/REDCap exports write it", (
                           _g(*STRUCT, expect=Stop(("--sex-map",))),
                           _g(*STRUCT, "--sex-map", "1=M,2=F", expect=Group(("structure",))),
                       )),
    _participants_case("participants-sex-12-levels", build_sex_12_levels,
                       f"{PARTICIPANTS_SPEC}; sex 1/2 decoded by Levels"),
    _participants_case("participants-capitalised", build_capitalised,
                       f"{PARTICIPANTS_SPEC}; Age/Gender capitalised as spreadsheets export them (issue 14)"),
    _participants_case("participants-age-na", build_age_na, f"{PARTICIPANTS_SPEC}; age n/a (issue 14)",
                       participants=THREE),
)
