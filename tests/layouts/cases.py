"""The cases: one builder per real layout, with the steps a user takes and what each must give.

Conventions (see :mod:`layouts`): a case folder holds the raw dataset at ``bids/``; derivatives
sit under ``bids/derivatives/<pipeline>`` unless the case is about them being elsewhere. Two
participants per case unless the case needs more; 60 volumes of 2 s per run (painplast's
connectivity keeps a participant with at least 50 volumes after censoring). Group steps pass
``--n-permutations 50`` only at the group level, as BIDS-Apps users pass group options; the
participant outputs must survive it (issue 14, point 5).

Every builder's first line says where its names come from.
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
    groups = ["patient", "control"] * len(subs)
    return _table(subs, age=[34 + 7 * i for i in range(len(subs))], sex=["F", "M"] * (len(subs) // 2) + ["F"] * (len(subs) % 2),
                  group=groups[: len(subs)])


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


def _connectivity_and_structure(subs, runs, gm: str, prefix: str = "bids/derivatives/fmriprep") -> dict:
    """Expected sidecars: connectivity with ``runs``, structure with the GM map ``gm``."""
    out = {}
    for s in subs:
        out[f"sub-{s}", None, "connectivity"] = Sidecar(runs=tuple(runs))
        out[f"sub-{s}", None, "structure"] = Sidecar(inputs=(f"{prefix}/sub-{s}/{gm.format(s=s)}",))
    return out


# ------------------------------------------------------------------------------ fMRIPrep versions

def build_ds000001(root: Path) -> None:
    """bids-examples ds001 (raw) + ds000001-fmriprep (fMRIPrep 20.2.0rc0): every derivative name copied."""
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
        F.nifti(bids / f"sub-{s}/anat/sub-{s}_inplaneT2.nii.gz", I.anatomy(grid, F.rng_for(s, "t2")), grid.affine,
                template=False)
        for run in ("01", "02", "03"):
            P.raw_bold(bids, s, None, "balloonanalogrisktask", run, n_volumes=n,
                       events=P.bart_events(f"{s}{run}", n_volumes=n))
    _write_ds000001_fmriprep(bids / "derivatives" / "fmriprep", subs, n)


def _write_ds000001_fmriprep(prep: Path, subs, n_volumes: int) -> None:
    F.text(prep / ".bidsignore", "*.html\nlogs/\nfigures/\n*_xfm.*\n*.surf.gii\n*_boldref.nii.gz\n*_bold.func.gii\n"
                                 "*_mixing.tsv\n*_AROMAnoiseICs.csv\n*_timeseries.tsv\n")
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
            rel = template.format(sub=s)
            path = prep / f"sub-{s}" / rel
            name = path.name
            space = next((sp for sp in I.TEMPLATES if f"space-{sp}_" in name), None)
            grid = I.template_grid(space) if space else I.template_grid("MNI152NLin2009cAsym", 12.0)
            rng = F.rng_for(s, name)
            if name.endswith(".nii.gz"):
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
                else:                                   # _T1w, _boldref
                    F.nifti(path, I.anatomy(grid, rng), grid.affine)
            elif name.endswith(".json"):
                F.json_file(path, _ds000001_sidecar(s, name))
            elif not name.endswith("_desc-confounds_timeseries.tsv"):
                F.placeholder(path)                     # reports, transforms, surfaces, MELODIC
        for stem, (grid, data) in bolds.items():
            F.tsv(prep / f"sub-{s}" / "func" / f"{stem}_desc-confounds_timeseries.tsv",
                  P.confounds("20.2.0rc0", data, grid, 0, stem))


def _ds000001_sidecar(sub: str, name: str) -> dict:
    """The JSON sidecars of ds000001-fmriprep (their keys and values; raw sources with run-0N)."""
    raw_run = f"sub-{sub}/func/{name.split('_space-')[0].replace('_run-', '_run-0')}_bold.nii.gz"
    if name.endswith("desc-confounds_timeseries.json"):
        return P._compcor_metadata()
    if "_task-" in name and name.endswith("desc-preproc_bold.json"):
        return {"RepetitionTime": 2.0, "SkullStripped": False, "TaskName": "balloon analog risk task",
                "Resolution": "2mm, isotropic"}
    if "_task-" in name:                                  # run brain mask
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
    """fMRIPrep 1.1.8 names (docs/outputs.rst at tag 1.1.8): ``_bold_space-MNI152NLin2009cAsym_preproc``, ``_bold_confounds.tsv``."""
    _raw(root, "fMRIPrep 1.1 outputs", _default_table())
    prep = P.FMRIPrep(root / "bids" / "derivatives" / "fmriprep", "1.1.8", spaces=("MNI152NLin2009cAsym",))
    _rest_and_anat(root, prep, n_nonsteady=1)


def build_fmriprep_1_5(root: Path) -> None:
    """fMRIPrep 1.5.10 names (docs/outputs.rst at 1.5.0): ``desc-confounds_regressors.tsv``, no ``_derivative1``/``_power2`` columns."""
    _raw(root, "fMRIPrep 1.5 outputs", _default_table())
    prep = P.FMRIPrep(root / "bids" / "derivatives" / "fmriprep", "1.5.10", spaces=("MNI152NLin2009cAsym",))
    _rest_and_anat(root, prep, n_nonsteady=2)


def build_fmriprep_20_2(root: Path) -> None:
    """fMRIPrep 20.2.7 names (docs/outputs.rst at 20.2.0): ``res-2``, ``desc-confounds_timeseries``; raw ``run-01`` -> ``run-1``."""
    _raw(root, "fMRIPrep 20.2 outputs", _default_table())
    prep = P.FMRIPrep(root / "bids" / "derivatives" / "fmriprep", "20.2.7",
                      spaces=("MNI152NLin2009cAsym:res-2", "MNI152NLin6Asym:res-2"))
    _rest_and_anat(root, prep, n_nonsteady=1, runs=("01", "02"))


def build_fmriprep_24_sessions(root: Path) -> None:
    """fMRIPrep 24.1.1 (docs/outputs.rst at 24.1.0, ``--output-layout bids``): T1w in both sessions -> one anatomy without ``ses``; ``non_steady_state_outlierXX``."""
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
    """fMRIPrep 25.2.5 ``--subject-anatomical-reference sessionwise`` (docs/workflows.rst, fmriprep/interfaces/bids.py): anatomy per session; ses-pre/ses-post x run-1/run-2 of rest, run-1/run-2 of pain in ses-pre."""
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
    """fMRIPrep 23.2.3 with ``--output-spaces MNI152NLin6Asym:res-2`` only (docs/spaces.rst, docs/outputs.rst at 23.2.0)."""
    _raw(root, "fMRIPrep 23.2, NLin6Asym only", _default_table())
    prep = P.FMRIPrep(root / "bids" / "derivatives" / "fmriprep", "23.2.3", spaces=("MNI152NLin6Asym:res-2",))
    _rest_and_anat(root, prep, n_nonsteady=1)


def build_outside(root: Path) -> None:
    """fMRIPrep 24.1.1 written to a folder outside the raw dataset (``fmriprep bids/ /elsewhere/fmriprep participant``)."""
    _raw(root, "Raw dataset, derivatives elsewhere", _default_table())
    prep = P.FMRIPrep(root / "elsewhere" / "fmriprep", "24.1.1")
    _rest_and_anat(root, prep)


def build_restingstate(root: Path) -> None:
    """fMRIPrep 24.1.1 on a raw dataset whose rest task is labelled ``restingstate`` (e.g. BrainSuite BFP's documented ``sub-0001_task-restingstate_bold.nii.gz``)."""
    _raw(root, "task-restingstate", _default_table(), tasks={"restingstate": "resting state"})
    prep = P.FMRIPrep(root / "bids" / "derivatives" / "fmriprep", "24.1.1")
    _rest_and_anat(root, prep, task="restingstate")


# ------------------------------------------------------------------------------ other pipelines

def build_cat12(root: Path) -> None:
    """CAT12 12.6+ in BIDS mode, one T1w per session (``derivatives/cat12-12.6_vbm/sub-X/ses-Y/anat/mri/mwp1sub-X_ses-Y_T1w.nii``, neurospin ns-datasets)."""
    bids = _raw(root, "CAT12 per session", _default_table(), tasks={})
    cat = bids / "derivatives" / "cat12-12.6_vbm"
    for s in TWO:
        for ses in ("pre", "post"):
            P.raw_anat(bids, s, ses)
            P.cat12_session(cat, s, ses)
        # acquisition order is not the sessions' lexical order ("post" < "pre")
        P.sessions_tsv(bids, s, {"pre": "2020-01-15T08:30:00", "post": "2020-07-20T08:45:00"})


def build_xcpd(root: Path) -> None:
    """XCP-D 0.10.6 (docs/outputs.rst at 0.10.0, ``linc`` mode) beside the fMRIPrep 24.1.1 outputs it read."""
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
    """ROI time series without any repetition time, in the form of ``../shared/data/rpn_szeged`` (Spisak et al. 2020, RPN-signature)."""
    bids = root / "bids"
    P.raw_description(bids, "ROI time series only")
    P.participants(bids, _default_table())
    for s in TWO:
        P.roi_timeseries(bids / "derivatives" / "timeseries", s)


# ------------------------------------------------------------------------------ participants.tsv as written

def _anat_only(root: Path, name: str, table: pd.DataFrame, sidecar: dict | None = None, with_files=None) -> None:
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
    return {(f"sub-{s}", None, "structure"):
            Sidecar(inputs=(f"bids/derivatives/fmriprep/sub-{s}/{GM_24.format(s=s)}",)) for s in subs}


LEVELS_CLBP = {"group": {"Description": "Diagnosis",
                         "Levels": {"CLBP": "Chronic low back pain patient", "HC": "Healthy control"}}}


def build_clbp_levels(root: Path) -> None:
    """participants.tsv ``group`` coded CLBP/HC, decoded by participants.json ``Levels`` (BIDS tabular sidecars)."""
    _anat_only(root, "CLBP/HC with Levels", _table(TWO, group=["CLBP", "HC"], age=[41, 39], sex=["F", "M"]),
               LEVELS_CLBP)


def build_clbp_no_levels(root: Path) -> None:
    """participants.tsv ``group`` coded CLBP/HC without participants.json (as chronic-pain studies export it)."""
    _anat_only(root, "CLBP/HC", _table(TWO, group=["CLBP", "HC"], age=[41, 39], sex=["F", "M"]))


def build_group_na(root: Path) -> None:
    """participants.tsv with a participant whose group is ``n/a`` (BIDS: n/a for missing values)."""
    _anat_only(root, "group n/a", _table(("01", "02", "03"), group=["patient", "control", np.nan],
                                         age=[41, 39, 50], sex=["F", "M", "F"]))


def build_dropout(root: Path) -> None:
    """participants.tsv listing a participant who has no files (a dropout, as OpenNeuro datasets keep them)."""
    _anat_only(root, "dropout", _table(("01", "02", "03"), group=["patient", "control", "patient"],
                                       age=[41, 39, 50], sex=["F", "M", "F"]), with_files=("01", "02"))


def build_sex_12(root: Path) -> None:
    """participants.tsv ``sex`` coded 1/2 (SPSS/REDCap exports), no participants.json."""
    _anat_only(root, "sex 1/2", _table(TWO, group=["patient", "control"], age=[41, 39], sex=[1, 2]))


def build_sex_12_levels(root: Path) -> None:
    """participants.tsv ``sex`` coded 1/2 with participants.json ``Levels`` {"1": "male", "2": "female"}."""
    _anat_only(root, "sex 1/2 with Levels", _table(TWO, group=["patient", "control"], age=[41, 39], sex=[1, 2]),
               {"sex": {"Description": "sex of the participant", "Levels": {"1": "male", "2": "female"}}})


def build_capitalised(root: Path) -> None:
    """participants.tsv with ``Age`` and ``Gender`` capitalised, as spreadsheets export them (issue 14)."""
    _anat_only(root, "Age/Gender", _table(TWO, group=["patient", "control"], Age=[41, 39], Gender=["F", "M"]))


def build_age_na(root: Path) -> None:
    """participants.tsv with ``age`` n/a for one participant."""
    _anat_only(root, "age n/a", _table(("01", "02", "03"), group=["patient", "control", "control"],
                                       age=[41, np.nan, 50], sex=["F", "M", "F"]))


# ------------------------------------------------------------------------------ the cases

def _p(*args: str, out: str = "out", expect) -> Step:
    return Step("participant", args, expect, out)


def _g(*args: str, out: str = "out", expect) -> Step:
    return Step("group", args + GROUP_OPTIONS, expect, out)


CONN_STRUCT = ("--modules", "connectivity,structure")
BOTH = Group(("connectivity", "structure"))
STRUCT = ("--modules", "structure")


def _participants_case(name: str, source_builder, steps_extra=(), participants=TWO) -> Case:
    return Case(name, source_builder.__doc__, source_builder, (
        _p(*STRUCT, expect=Participant(_structure(participants))),
        *(steps_extra or (_g(*STRUCT, expect=Group(("structure",))),)),
    ))


CASES: tuple[Case, ...] = (
    Case("ds000001-fmriprep", build_ds000001.__doc__, build_ds000001, (
        _p(*STRUCT, expect=Participant({
            (f"sub-{s}", None, "structure"): Sidecar(inputs=(
                f"bids/derivatives/fmriprep/sub-{s}/anat/sub-{s}_space-MNI152NLin2009cAsym_res-2_label-GM_probseg.nii.gz",))
            for s in DS1.PARTICIPANTS})),
        _g(*STRUCT, expect=Group(("structure",))),
        # no resting-state run: a connectivity-only run has nothing to do
        _p("--modules", "connectivity", out="out-rest", expect=Stop(("--task-map", "--modules"))),
    )),
    Case("fmriprep-1.1", build_fmriprep_1_1.__doc__, build_fmriprep_1_1, (
        _p(*CONN_STRUCT, expect=Stop((), says=r"fmriprep.*(not supported|unsupported)"
                                               r"|(not supported|unsupported).*fmriprep")),
    )),
    Case("fmriprep-1.5", build_fmriprep_1_5.__doc__, build_fmriprep_1_5, (
        _p(*CONN_STRUCT, expect=Participant(_connectivity_and_structure(
            TWO, ["task-rest"], "anat/sub-{s}_space-MNI152NLin2009cAsym_label-GM_probseg.nii.gz"))),
        _g(*CONN_STRUCT, expect=BOTH),
    )),
    Case("fmriprep-20.2", build_fmriprep_20_2.__doc__, build_fmriprep_20_2, (
        _p(*CONN_STRUCT, expect=Participant(_connectivity_and_structure(
            TWO, ["task-rest_run-1", "task-rest_run-2"], GM_24))),
        _g(*CONN_STRUCT, expect=BOTH),
    )),
    Case("fmriprep-24.1-sessions", build_fmriprep_24_sessions.__doc__, build_fmriprep_24_sessions, (
        _p(*CONN_STRUCT, expect=Participant({
            **{(f"sub-{s}", ses, "connectivity"): Sidecar(runs=(f"ses-{ses}_task-rest",))
               for s in TWO for ses in ("1", "2")},
            **{(f"sub-{s}", SUBJECT_LEVEL, "structure"): Sidecar(inputs=(
                f"bids/derivatives/fmriprep-24.1.1/sub-{s}/{GM_24.format(s=s)}",)) for s in TWO}},
            sessions={f"sub-{s}": ("1", "2") for s in TWO})),
        _g(*CONN_STRUCT, expect=BOTH),          # one session per participant: the earliest acq_time
    )),
    Case("sessions-x-runs", build_sessions_runs.__doc__, build_sessions_runs, (
        _p("--modules", "connectivity,structure,sensitization", expect=Participant({
            key: value for s in TWO for ses in ("pre", "post") for key, value in (
                ((f"sub-{s}", ses, "connectivity"), Sidecar(runs=(f"ses-{ses}_task-rest_run-1", f"ses-{ses}_task-rest_run-2"))),
                ((f"sub-{s}", ses, "structure"), Sidecar(inputs=(
                    f"bids/derivatives/fmriprep/sub-{s}/ses-{ses}/anat/"
                    f"sub-{s}_ses-{ses}_space-MNI152NLin2009cAsym_res-2_label-GM_probseg.nii.gz",))),
            )} | {
            (f"sub-{s}", "pre", "sensitization"): Sidecar(runs=("ses-pre_task-pain_run-1", "ses-pre_task-pain_run-2"))
            for s in TWO})),
        # two sessions, no sessions.tsv: a cross-sectional group stage needs to be told which
        _g("--modules", "connectivity,structure,sensitization", expect=Stop(("--session-label",))),
        _g("--modules", "connectivity,structure,sensitization", "--session-label", "pre",
           expect=Group(("connectivity", "structure", "sensitization"))),
    )),
    Case("nlin6-res2-only", build_nlin6_only.__doc__, build_nlin6_only, (
        _p(*CONN_STRUCT, out="out-default-space", expect=Stop(("--space",))),
        _p(*CONN_STRUCT, "--space", "MNI152NLin6Asym:res-2", expect=Participant(_connectivity_and_structure(
            TWO, ["task-rest"], "anat/sub-{s}_space-MNI152NLin6Asym_res-2_label-GM_probseg.nii.gz"))),
        _g(*CONN_STRUCT, "--space", "MNI152NLin6Asym:res-2", expect=BOTH),
    )),
    Case("derivatives-elsewhere", build_outside.__doc__, build_outside, (
        _p(*CONN_STRUCT, out="out-no-derivatives", expect=Stop(("--derivatives",))),
        _p(*CONN_STRUCT, "--derivatives", "{root}/elsewhere/fmriprep", expect=Participant(
            _connectivity_and_structure(TWO, ["task-rest"], GM_24, prefix="elsewhere/fmriprep"))),
        _g(*CONN_STRUCT, "--derivatives", "{root}/elsewhere/fmriprep", expect=BOTH),
    )),
    Case("task-restingstate", build_restingstate.__doc__, build_restingstate, (
        _p("--modules", "connectivity", out="out-no-map", expect=Stop(("--task-map",))),
        _p("--modules", "connectivity", "--task-map", "rest=restingstate", expect=Participant({
            (f"sub-{s}", None, "connectivity"): Sidecar(runs=("task-restingstate",)) for s in TWO})),
        _g("--modules", "connectivity", "--task-map", "rest=restingstate", expect=Group(("connectivity",))),
    )),
    Case("cat12-sessions", build_cat12.__doc__, build_cat12, (
        _p(*STRUCT, expect=Participant({
            (f"sub-{s}", ses, "structure"): Sidecar(inputs=(
                f"bids/derivatives/cat12-12.6_vbm/sub-{s}/ses-{ses}/anat/mri/mwp1sub-{s}_ses-{ses}_T1w.nii",))
            for s in TWO for ses in ("pre", "post")})),
        _g(*STRUCT, expect=Group(("structure",))),   # sessions.tsv: ses-pre was acquired first
    )),
    Case("xcpd-beside-fmriprep", build_xcpd.__doc__, build_xcpd, (
        _p("--modules", "connectivity", out="out-both", expect=Stop(("--derivatives",))),
        _p("--modules", "connectivity", "--derivatives", "{root}/bids/derivatives/fmriprep", expect=Participant(
            {(f"sub-{s}", None, "connectivity"): Sidecar(runs=("task-rest",), inputs=(
                f"bids/derivatives/fmriprep/sub-{s}/func/sub-{s}_task-rest_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz",
                f"bids/derivatives/fmriprep/sub-{s}/func/sub-{s}_task-rest_desc-confounds_timeseries.tsv"))
             for s in TWO}, not_from=("bids/derivatives/xcp_d",))),
        _g("--modules", "connectivity", "--derivatives", "{root}/bids/derivatives/fmriprep",
           expect=Group(("connectivity",))),
        _p("--modules", "connectivity", "--derivatives", "{root}/bids/derivatives/xcp_d", out="out-xcpd",
           expect=Participant({(f"sub-{s}", None, "connectivity"): Sidecar(runs=("task-rest",), inputs=(
               f"bids/derivatives/xcp_d/sub-{s}/func/"
               f"sub-{s}_task-rest_space-MNI152NLin2009cAsym_seg-4S156Parcels_stat-mean_timeseries.tsv",))
               for s in TWO}, not_from=("bids/derivatives/fmriprep",))),
        _g("--modules", "connectivity", "--derivatives", "{root}/bids/derivatives/xcp_d", out="out-xcpd",
           expect=Group(("connectivity",))),
    )),
    Case("roi-timeseries-no-tr", build_roi_timeseries.__doc__, build_roi_timeseries, (
        _p("--modules", "connectivity", out="out-no-tr", expect=Stop(("--repetition-time",))),
        _p("--modules", "connectivity", "--repetition-time", "2.5", expect=Participant({
            (f"sub-{s}", None, "connectivity"): Sidecar(runs=("task-rest",), inputs=(
                f"bids/derivatives/timeseries/sub-{s}/func/sub-{s}_task-rest_atlas-MIST122_timeseries.tsv",))
            for s in TWO})),
        _g("--modules", "connectivity", "--repetition-time", "2.5", expect=Group(("connectivity",))),
    )),
    _participants_case("participants-clbp-levels", build_clbp_levels),
    _participants_case("participants-clbp-no-levels", build_clbp_no_levels, (
        _g(*STRUCT, expect=Stop(("--group-map",))),
        _g(*STRUCT, "--group-map", "CLBP=patient,HC=control", expect=Group(("structure",))),
    )),
    _participants_case("participants-group-na", build_group_na, participants=("01", "02", "03")),
    _participants_case("participants-dropout", build_dropout, (
        _g(*STRUCT, expect=Group(("structure",))),
        # --strict: the dropout is an error; naming the participants who have data fixes it
        _p(*STRUCT, "--strict", out="out-strict", expect=Stop(("--participant-label", "--strict"))),
        _p(*STRUCT, "--strict", "--participant-label", "01", "--participant-label", "02", out="out-strict",
           expect=Participant(_structure(TWO))),
    )),
    _participants_case("participants-sex-12", build_sex_12, (
        _g(*STRUCT, expect=Stop(("--sex-map",))),
        _g(*STRUCT, "--sex-map", "1=M,2=F", expect=Group(("structure",))),
    )),
    _participants_case("participants-sex-12-levels", build_sex_12_levels),
    _participants_case("participants-capitalised", build_capitalised),
    _participants_case("participants-age-na", build_age_na, participants=("01", "02", "03")),
)
