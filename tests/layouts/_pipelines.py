"""Writers for a raw BIDS dataset and for the outputs of fMRIPrep, CAT12 and XCP-D, name for name.

Each writer reproduces the file names (and the metadata painplast may read) of one pipeline
version, from that version's documentation; the sources are cited at each writer. Images are
tiny (:mod:`._images`), tables are short but well-formed, and outputs that painplast never
needs to read (reports, figures, surfaces, ``.h5`` transforms) are empty files, as in
bids-examples' ``ds000001-fmriprep``. Every writer returns the paths painplast should use, so a
case can say which inputs each features sidecar must list.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from . import _files as F
from . import _images as I

TR = 2.0
N_VOLUMES = 60


# ------------------------------------------------------------------------------ names

def entities(sub: str, ses: str | None = None, task: str | None = None, run: str | None = None) -> str:
    """``sub-01_ses-pre_task-rest_run-1`` (the entities that lead every name, BIDS order)."""
    parts = [f"sub-{sub}"]
    if ses:
        parts.append(f"ses-{ses}")
    if task:
        parts.append(f"task-{task}")
    if run:
        parts.append(f"run-{run}")
    return "_".join(parts)


def subject_dir(root: Path, sub: str, ses: str | None, datatype: str) -> Path:
    """``root/sub-<sub>/[ses-<ses>/]<datatype>``."""
    path = root / f"sub-{sub}"
    if ses:
        path = path / f"ses-{ses}"
    return path / datatype


def space_entities(space: str) -> str:
    """fMRIPrep's ``--output-spaces`` syntax to name entities: ``MNI152NLin6Asym:res-2`` ->
    ``space-MNI152NLin6Asym_res-2``."""
    name, *mods = space.split(":")
    return "_".join([f"space-{name}"] + [m for m in mods])


# ------------------------------------------------------------------------------ raw BIDS

def raw_description(root: Path, name: str, **extra) -> Path:
    """The raw dataset's ``dataset_description.json``."""
    return F.json_file(root / "dataset_description.json",
                       {"Name": name, "BIDSVersion": "1.8.0", "DatasetType": "raw", **extra})


def participants(root: Path, table: pd.DataFrame, sidecar: Mapping | None = None) -> None:
    """``participants.tsv`` and, when given, ``participants.json``."""
    F.tsv(root / "participants.tsv", table)
    if sidecar is not None:
        F.json_file(root / "participants.json", sidecar)


def task_sidecar(root: Path, task: str, task_name: str, tr: float = TR) -> Path:
    """Root-level ``task-<t>_bold.json`` (BIDS inheritance: applies to every run of the task)."""
    return F.json_file(root / f"task-{task}_bold.json", {"RepetitionTime": tr, "TaskName": task_name})


def raw_anat(root: Path, sub: str, ses: str | None = None) -> Path:
    """A raw T1w image (scanner space)."""
    name = entities(sub, ses) + "_T1w.nii.gz"
    path = subject_dir(root, sub, ses, "anat") / name
    grid = I.native_grid((20, 24, 20), (8.0, 8.0, 8.0))
    return F.nifti(path, I.anatomy(grid, F.rng_for(path.name)), grid.affine, template=False)


def raw_bold(root: Path, sub: str, ses: str | None, task: str, run: str | None,
             n_volumes: int = N_VOLUMES, tr: float = TR, events: pd.DataFrame | None = None) -> Path:
    """A raw run (``func/…_bold.nii.gz``) and its events when given."""
    stem = entities(sub, ses, task, run)
    folder = subject_dir(root, sub, ses, "func")
    path = F.nifti(folder / f"{stem}_bold.nii.gz", I.raw_bold(n_volumes, F.rng_for(stem, "raw")),
                   I.native_grid().affine, tr=tr, template=False)
    if events is not None:
        F.tsv(folder / f"{stem}_events.tsv", events)
    return path


def sessions_tsv(root: Path, sub: str, acq_times: Mapping[str, str]) -> Path:
    """``sub-<l>/sub-<l>_sessions.tsv`` with ``session_id`` and ``acq_time``."""
    table = pd.DataFrame({"session_id": [f"ses-{s}" for s in acq_times],
                          "acq_time": list(acq_times.values())})
    return F.tsv(root / f"sub-{sub}" / f"sub-{sub}_sessions.tsv", table)


def pain_events(seed: str, n_volumes: int = N_VOLUMES, tr: float = TR) -> pd.DataFrame:
    """Graded heat pain: 6 s stimuli at 44-49 degC with a rating after each (painplast's ``pain``
    task, as its simulator writes it)."""
    rng = F.rng_for(seed, "events")
    n_trials = int((n_volumes * tr - 20) // 12)
    onsets = 8.0 + 12.0 * np.arange(n_trials) + rng.uniform(0, 2, n_trials)
    temps = rng.permutation(np.resize([44.0, 45.0, 46.0, 47.0, 48.0, 49.0], n_trials))
    ratings = np.clip(100 + 25 * (temps - 46.5) + rng.normal(0, 10, n_trials), 0, 200)
    return pd.DataFrame({"onset": onsets.round(2), "duration": 6.0, "trial_type": "pain",
                         "intensity": temps, "rating": ratings.round(1)})


def bart_events(seed: str, n_volumes: int = N_VOLUMES, tr: float = TR) -> pd.DataFrame:
    """OpenNeuro ds000001's balloon analog risk task events (its columns and trial types)."""
    rng = F.rng_for(seed, "events")
    kinds = ["control_pumps_demean", "pumps_demean", "explode_demean", "cash_demean"]
    n = int(n_volumes * tr // 4)
    onsets = np.sort(rng.uniform(0, n_volumes * tr - 4, n)).round(3)
    trial = rng.choice(kinds, n)
    table = pd.DataFrame({"onset": onsets, "duration": 0.772, "trial_type": trial})
    for kind in sorted(kinds):
        table[kind] = np.where(trial == kind, rng.choice([-1.5, -0.5, 0.5, 1.5], n), np.nan)
    table["response_time"] = rng.uniform(0.8, 1.6, n).round(3)
    return table


# ------------------------------------------------------------------------------ fMRIPrep

MOTION = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")


def version_tuple(version: str) -> tuple[int, int]:
    """``"1.5.10"`` -> (1, 5), ``"20.2.0rc0"`` -> (20, 2), ``"24.1.1"`` -> (24, 1)."""
    major, minor = re.match(r"(\d+)\.(\d+)", version).groups()
    return int(major), int(minor)


def _motion(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Realignment parameters (mm, radians) of a still participant: mean FD about 0.05 mm."""
    steps = rng.normal(0, 0.02, (n, 6)) * np.array([1, 1, 1, 0.001, 0.001, 0.001])
    steps[0] = 0
    return pd.DataFrame(np.cumsum(steps, axis=0), columns=list(MOTION))


def _expansions(name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    """fMRIPrep's ``_derivative1``, ``_power2`` and ``_derivative1_power2`` of a column (n/a first)."""
    d = np.r_[np.nan, np.diff(x)]
    return {f"{name}_derivative1": d, f"{name}_power2": x ** 2, f"{name}_derivative1_power2": d ** 2}


def confounds(version: str, data: np.ndarray, grid: I.Grid, n_nonsteady: int, seed: str) -> pd.DataFrame:
    """The confounds table fMRIPrep ``version`` writes for a BOLD series ``data`` (X, Y, Z, T).

    - < 1.2 (``_bold_confounds.tsv``; docs/outputs.rst at 1.1.8): ``CSF``, ``WhiteMatter``,
      ``GlobalSignal``, ``stdDVARS``, ``non-stdDVARS``, ``vx-wisestdDVARS``,
      ``FramewiseDisplacement``, ``tCompCorXX``, ``aCompCorXX``, ``NonSteadyStateOutlierXX``,
      ``X Y Z RotX RotY RotZ``;
    - 1.2-1.5 (``desc-confounds_regressors.tsv``; docs/outputs.rst at 1.5.0): the same in snake
      case (``trans_x`` ... ``rot_z``, ``t_comp_cor_00``, ``cosine00``), no expansions;
    - 20.x and later (``desc-confounds_timeseries.tsv``; docs/outputs.rst at 20.2.0 and 24.1.0):
      ``_derivative1``, ``_power2``, ``_derivative1_power2`` of the motion parameters and of
      ``csf``, ``white_matter``, ``global_signal``; ``rmsd``; ``c_comp_cor``/``w_comp_cor``.

    ``non_steady_state_outlierXX`` (one column per leading non-steady-state volume, 1 at that
    volume) when ``n_nonsteady`` > 0, as fMRIPrep writes them; ``n/a`` where fMRIPrep writes it
    (first row of differences).
    """
    n = data.shape[-1]
    rng = F.rng_for(seed, "confounds")
    series = data[I.brain(grid)].astype(float)          # (V, T)
    order = rng.permutation(series.shape[0])
    wm = series[order[: len(order) // 4]].mean(0)
    csf = series[order[len(order) // 4: len(order) // 3]].mean(0)
    glob = series.mean(0)
    dvars = np.r_[np.nan, np.sqrt(np.mean(np.diff(series, axis=1) ** 2, axis=0))]
    std_dvars = dvars / np.nanmedian(dvars)
    motion = _motion(rng, n)
    step = np.abs(np.diff(motion.to_numpy(), axis=0))
    fd = np.r_[np.nan, step[:, :3].sum(1) + 50 * step[:, 3:].sum(1)]   # Power et al. 2012, 50 mm head

    def components(prefix: str, k: int) -> dict[str, np.ndarray]:
        return {f"{prefix}{i:02d}": c for i, c in enumerate(rng.standard_normal((k, n)) / np.sqrt(n))}

    spikes = {i: np.eye(n)[i] for i in range(n_nonsteady)}
    if version_tuple(version) < (1, 2):                 # CamelCase names of fMRIPrep 1.0-1.1
        table = {"CSF": csf, "WhiteMatter": wm, "GlobalSignal": glob, "stdDVARS": std_dvars,
                 "non-stdDVARS": dvars, "vx-wisestdDVARS": std_dvars * 1.1, "FramewiseDisplacement": fd,
                 **components("tCompCor", 6), **components("aCompCor", 6),
                 **{f"NonSteadyStateOutlier{i:02d}": x for i, x in spikes.items()}}
        table.update({old: motion[new].to_numpy() for old, new in zip(("X", "Y", "Z", "RotX", "RotY", "RotZ"),
                                                                       MOTION)})
        return pd.DataFrame(table)
    expand = version_tuple(version) >= (20, 0)
    table = {}
    for name, x in (("csf", csf), ("white_matter", wm), ("global_signal", glob)):
        table[name] = x
        table.update(_expansions(name, x) if expand else {})
    table.update({"std_dvars": std_dvars, "dvars": dvars, "framewise_displacement": fd})
    if expand:
        table["rmsd"] = np.r_[np.nan, fd[1:] / 3]
    table.update(components("t_comp_cor_", 6))
    if expand:
        table.update({**components("c_comp_cor_", 5), **components("w_comp_cor_", 5)})
    table.update(components("a_comp_cor_", 6))
    table["cosine00"] = np.cos(np.pi * (np.arange(n) + 0.5) / n)
    table.update({f"non_steady_state_outlier{i:02d}": x for i, x in spikes.items()})
    for name in MOTION:
        x = motion[name].to_numpy()
        table[name] = x
        table.update(_expansions(name, x) if expand else {})
    return pd.DataFrame(table)


@dataclass
class Run:
    """The files of one preprocessed run painplast should use (paths absolute)."""

    name: str                       # painplast's Run.name: ses-pre_task-rest_run-1
    bold: Path | None = None
    confounds: Path | None = None
    mask: Path | None = None
    timeseries: Path | None = None


@dataclass
class FMRIPrep:
    """One fMRIPrep output dataset of a given version, written file name for file name.

    Parameters
    ----------
    root : Path
        The folder holding ``sub-*`` (``<output dir>/fmriprep`` up to 20.x, the output directory
        itself from 21.0 on: ``--output-layout bids``).
    version : str
        The fMRIPrep version whose names are written: < 1.2 (``bold_space-…_preproc``), 1.2-1.5
        (``desc-preproc_bold``, ``desc-confounds_regressors``), 20.x (``desc-confounds_timeseries``,
        ``run-01`` written ``run-1``), 23.2+ (``desc-hmc``/``desc-coreg`` boldrefs and transforms).
    spaces : tuple of str
        ``--output-spaces``, in fMRIPrep's syntax (``MNI152NLin2009cAsym:res-2``); the first is the
        one whose files :meth:`func` and :meth:`anat` return.
    """

    root: Path
    version: str
    spaces: tuple[str, ...] = ("MNI152NLin2009cAsym:res-2",)
    n_volumes: int = N_VOLUMES
    tr: float = TR

    @property
    def v(self) -> tuple[int, int]:
        return version_tuple(self.version)

    def describe(self, source: str | None = None) -> Path:
        """``dataset_description.json`` as this version writes it (fmriprep/utils/bids.py)."""
        org = "nipreps" if self.v >= (21, 0) else "poldracklab"
        url = f"https://github.com/{org}/fmriprep/archive/{self.version}.tar.gz"
        pipeline = {"Name": "fMRIPrep", "Version": self.version, "CodeURL": url}
        if self.v < (20, 0):                            # BIDS-Derivatives RC1: PipelineDescription
            desc = {"Name": "fMRIPrep output" if self.v < (1, 2) else "fMRIPrep - fMRI PREProcessing workflow",
                    "BIDSVersion": "1.1.1", "PipelineDescription": pipeline,
                    "CodeURL": "https://github.com/poldracklab/fmriprep"}
        else:
            desc = {"Name": "fMRIPrep - fMRI PREProcessing workflow", "BIDSVersion": "1.4.0",
                    "DatasetType": "derivative", "GeneratedBy": [pipeline]}
            if self.v >= (23, 0) and source:
                desc["DatasetLinks"] = {"raw": source}
        desc["HowToAcknowledge"] = ("Please cite our paper (https://doi.org/10.1038/s41592-018-0235-4), and "
                                    "include the generated citation boilerplate within the Methods section "
                                    "of the text.")
        return F.json_file(self.root / "dataset_description.json", desc)

    def func(self, sub: str, ses: str | None, task: str, run: str | None, n_nonsteady: int = 0) -> Run:
        """One BOLD run in every output space; returns the files of the first space."""
        if run and run.isdigit() and self.v >= (20, 0):
            run = str(int(run))                         # fMRIPrep 20+ writes the run index unpadded
        stem = entities(sub, ses, task, run)
        folder = subject_dir(self.root, sub, ses, "func")
        used = Run(name=stem.split("_", 1)[1])
        first = None
        for sp in self.spaces:
            grid = I.template_grid(sp.split(":")[0])
            data = I.bold(grid, self.n_volumes, F.rng_for(stem, sp), n_nonsteady)
            if self.v < (1, 2):
                ent = space_entities(sp.split(":")[0])
                bold = F.nifti(folder / f"{stem}_bold_{ent}_preproc.nii.gz", data, grid.affine, tr=self.tr)
                mask = F.nifti(folder / f"{stem}_bold_{ent}_brainmask.nii.gz", I.mask(grid), grid.affine)
            else:
                ent = space_entities(sp)
                bold = F.nifti(folder / f"{stem}_{ent}_desc-preproc_bold.nii.gz", data, grid.affine, tr=self.tr)
                mask = F.nifti(folder / f"{stem}_{ent}_desc-brain_mask.nii.gz", I.mask(grid), grid.affine)
                F.nifti(folder / f"{stem}_{ent}_boldref.nii.gz", I.anatomy(grid, F.rng_for(stem, sp, "ref")),
                        grid.affine)
                if self.v >= (1, 4):
                    F.json_file(folder / f"{stem}_{ent}_desc-preproc_bold.json",
                                {"RepetitionTime": self.tr, "SkullStripped": False, "TaskName": task,
                                 **({"Resolution": "2mm, isotropic"} if "res-2" in ent else {})})
            if first is None:
                used.bold, used.mask, first = bold, mask, (grid, data)
        table = confounds(self.version, first[1], first[0], n_nonsteady, stem)
        if self.v < (1, 2):
            used.confounds = F.tsv(folder / f"{stem}_bold_confounds.tsv", table)
        elif self.v < (20, 0):
            used.confounds = F.tsv(folder / f"{stem}_desc-confounds_regressors.tsv", table)
            if self.v >= (1, 5):
                F.json_file(folder / f"{stem}_desc-confounds_regressors.json", compcor_metadata())
        else:
            used.confounds = F.tsv(folder / f"{stem}_desc-confounds_timeseries.tsv", table)
            F.json_file(folder / f"{stem}_desc-confounds_timeseries.json", compcor_metadata())
        # what painplast never reads: references in the scanner grid, transforms, figures
        native = I.native_grid()
        if self.v >= (23, 2):
            for desc in ("hmc", "coreg"):
                F.nifti(folder / f"{stem}_desc-{desc}_boldref.nii.gz", I.anatomy(native, F.rng_for(stem, desc)),
                        native.affine, template=False)
            F.placeholder(folder / f"{stem}_from-orig_to-boldref_mode-image_desc-hmc_xfm.txt")
            F.placeholder(folder / f"{stem}_from-boldref_to-T1w_mode-image_desc-coreg_xfm.txt")
        elif self.v >= (20, 0):
            F.placeholder(folder / f"{stem}_from-scanner_to-T1w_mode-image_xfm.txt")
            F.placeholder(folder / f"{stem}_from-T1w_to-scanner_mode-image_xfm.txt")
        for kind, ext in (("carpetplot", "svg"), ("confoundcorr", "svg"), ("rois", "svg"), ("summary", "html")):
            F.placeholder(self.root / f"sub-{sub}" / "figures" / f"{stem}_desc-{kind}_bold.{ext}")
        return used

    def anat(self, sub: str, ses: str | None = None) -> Path:
        """Anatomical outputs (T1w space and every output space); returns the first space's GM map."""
        stem = entities(sub, ses)
        folder = subject_dir(self.root, sub, ses, "anat")
        t1w = I.template_grid("MNI152NLin2009cAsym", 12.0)          # "T1w space": another grid

        def nii(name: str, data, grid: I.Grid) -> Path:
            return F.nifti(folder / f"{stem}_{name}.nii.gz", data, grid.affine)

        def rng(*parts):
            return F.rng_for(stem, *parts)

        gm = []
        if self.v < (1, 2):
            nii("T1w_preproc", I.anatomy(t1w, rng("t1")), t1w)
            nii("T1w_brainmask", I.mask(t1w), t1w)
            nii("T1w_class-GM_probtissue", I.probability(t1w, rng("gm")), t1w)
            for sp in self.spaces:
                tpl = sp.split(":")[0]
                grid = I.template_grid(tpl)
                gm.append(nii(f"T1w_space-{tpl}_class-GM_probtissue", I.probability(grid, rng(sp, "gm")), grid))
                nii(f"T1w_space-{tpl}_class-WM_probtissue", I.probability(grid, rng(sp, "wm")), grid)
                nii(f"T1w_space-{tpl}_brainmask", I.mask(grid), grid)
                nii(f"T1w_space-{tpl}_preproc", I.anatomy(grid, rng(sp, "t1")), grid)
                F.placeholder(folder / f"{stem}_T1w_target-{tpl}_warp.h5")
                F.placeholder(folder / f"{stem}_T1w_space-{tpl}_target-T1w_warp.h5")
            return gm[0]
        nii("desc-preproc_T1w", I.anatomy(t1w, rng("t1")), t1w)
        nii("desc-brain_mask", I.mask(t1w), t1w)
        nii("dseg", I.dseg(t1w, rng("dseg")), t1w)
        for label in ("CSF", "GM", "WM"):
            nii(f"label-{label}_probseg", I.probability(t1w, rng(label)), t1w)
        for sp in self.spaces:
            tpl, ent = sp.split(":")[0], space_entities(sp)
            grid = I.template_grid(tpl)
            nii(f"{ent}_desc-preproc_T1w", I.anatomy(grid, rng(sp, "t1")), grid)
            nii(f"{ent}_desc-brain_mask", I.mask(grid), grid)
            nii(f"{ent}_dseg", I.dseg(grid, rng(sp, "dseg")), grid)
            for label in ("CSF", "GM", "WM"):
                path = nii(f"{ent}_label-{label}_probseg", I.probability(grid, rng(sp, label)), grid)
                gm += [path] if label == "GM" else []
            F.placeholder(folder / f"{stem}_from-{tpl}_to-T1w_mode-image_xfm.h5")
            F.placeholder(folder / f"{stem}_from-T1w_to-{tpl}_mode-image_xfm.h5")
        F.placeholder(folder / f"{stem}_from-T1w_to-fsnative_mode-image_xfm.txt")
        F.placeholder(folder / f"{stem}_from-fsnative_to-T1w_mode-image_xfm.txt")
        for hemi in ("L", "R"):
            for surf in ("midthickness", "pial", "smoothwm" if self.v < (23, 0) else "white"):
                F.placeholder(folder / f"{stem}_hemi-{hemi}_{surf}.surf.gii")
        return gm[0]

    def report(self, sub: str) -> Path:
        """The participant's HTML report (empty)."""
        return F.placeholder(self.root / f"sub-{sub}.html")


def compcor_metadata() -> dict:
    """Confounds JSON of fMRIPrep >= 1.5: aCompCor components and their metadata (abridged)."""
    return {f"a_comp_cor_{i:02d}": {"Mask": "combined", "Method": "aCompCor", "Retained": True,
                                     "VarianceExplained": round(0.1 / (i + 1), 4)} for i in range(6)}


# ------------------------------------------------------------------------------ CAT12

def cat12_session(root: Path, sub: str, ses: str | None) -> Path:
    """CAT12 output of one T1w in BIDS mode: ``sub-X/[ses-Y/]anat/mri/mwp1sub-X_[ses-Y_]T1w.nii``.

    Folder and names as CAT12 12.6+ writes them for BIDS input (e.g. ``derivatives/cat12-12.6_vbm/
    sub-ICAAR017/ses-V1/anat/mri/mwp1sub-ICAAR017_ses-V1_acq-s03_T1w.nii`` in neurospin's
    ns-datasets); images uncompressed ``.nii`` on CAT12's flipped-x grid, beside ``mwp2`` (white
    matter), ``wm`` (normalised T1w), ``p0`` (native label image) and the XML/text reports.
    Returns the ``mwp1`` map (modulated, normalised gray matter).
    """
    stem = entities(sub, ses) + "_T1w"
    anat = subject_dir(root, sub, ses, "anat")
    grid = I.cat12_grid()
    native = I.native_grid((20, 24, 20), (8.0, 8.0, 8.0))
    mri = anat / "mri"
    mwp1 = F.nifti(mri / f"mwp1{stem}.nii", I.probability(grid, F.rng_for(stem, "mwp1")), grid.affine)
    F.nifti(mri / f"mwp2{stem}.nii", I.probability(grid, F.rng_for(stem, "mwp2")), grid.affine)
    F.nifti(mri / f"wm{stem}.nii", I.anatomy(grid, F.rng_for(stem, "wm")), grid.affine)
    F.nifti(mri / f"p0{stem}.nii", I.dseg(native, F.rng_for(stem, "p0")).astype(np.float32),
            native.affine, template=False)
    F.text(anat / "report" / f"cat_{stem}.xml",
           f"<?xml version=\"1.0\"?>\n<S><filedata><fname>{stem}.nii</fname></filedata>"
           "<subjectmeasures><vol_TIV>1500.0</vol_TIV></subjectmeasures></S>\n")
    F.text(anat / "report" / f"catlog_{stem}.txt", "CAT12.8.2 r2170\n")
    F.text(anat / "label" / f"catROI_{stem}.xml", "<?xml version=\"1.0\"?>\n<S></S>\n")
    return mwp1


# ------------------------------------------------------------------------------ XCP-D

#: XCP-D 0.10 region names for a small parcellation (the real 4S156Parcels has 156 columns).
XCPD_REGIONS = ("LH_Vis_1", "LH_SomMot_1", "LH_DorsAttn_1", "LH_SalVentAttn_1", "LH_Default_1",
                "RH_Vis_1", "RH_SomMot_1", "RH_DorsAttn_1", "RH_SalVentAttn_1", "RH_Default_1",
                "LH-Thalamus", "RH-Thalamus")


def xcpd_description(root: Path, version: str = "0.10.6") -> Path:
    """XCP-D's ``dataset_description.json`` and its ``atlases/`` dataset (BEP038)."""
    atlases = root / "atlases"
    F.json_file(atlases / "dataset_description.json",
                {"Name": "XCP-D atlases", "BIDSVersion": "1.9.0", "DatasetType": "atlas"})
    labels = "index\tname\n" + "".join(f"{i}\t{r}\n" for i, r in enumerate(XCPD_REGIONS, 1))
    F.text(atlases / "atlas-4S156Parcels" / "atlas-4S156Parcels_dseg.tsv", labels)
    F.json_file(atlases / "atlas-4S156Parcels" / "atlas-4S156Parcels_dseg.json", {})
    return F.json_file(root / "dataset_description.json", {
        "Name": "XCP-D: A Robust Postprocessing Pipeline of fMRI data", "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "xcp_d", "Version": version,
                         "CodeURL": f"https://github.com/PennLINC/xcp_d/archive/{version}.tar.gz"}],
        "DatasetLinks": {"preprocessed": "../fmriprep", "atlases": "atlases"}})


def xcpd_run(root: Path, sub: str, ses: str | None, task: str, run: str | None,
             space: str = "MNI152NLin2009cAsym", n_volumes: int = N_VOLUMES, n_dummy: int = 2,
             n_censored: int = 2) -> Run:
    """One run of XCP-D 0.10 in ``linc`` mode (docs/outputs.rst at 0.10.0): dummy volumes dropped,
    high-motion volumes censored from the time series and the denoised BOLD; ``motion.tsv``,
    ``outliers.tsv`` and ``design.tsv`` keep every volume after the dummies."""
    stem = entities(sub, ses, task, run)
    folder = subject_dir(root, sub, ses, "func")
    rng = F.rng_for(stem, "xcpd")
    kept = n_volumes - n_dummy - n_censored
    after_dummy = n_volumes - n_dummy
    mixing = np.eye(len(XCPD_REGIONS)) + 0.3
    ts = pd.DataFrame(rng.standard_normal((kept, len(XCPD_REGIONS))) @ mixing, columns=list(XCPD_REGIONS))
    used = Run(name=stem.split("_", 1)[1])
    seg = f"{stem}_space-{space}_seg-4S156Parcels"
    used.timeseries = F.tsv(folder / f"{seg}_stat-mean_timeseries.tsv", ts.round(4))
    denoised = f"{'/'.join(folder.relative_to(root).parts)}/{stem}_space-{space}_desc-denoised_bold.nii.gz"
    # XCP-D writes the string "TR" here (DerivativesDataSink(SamplingFrequency='TR')), not a number
    F.json_file(folder / f"{seg}_stat-mean_timeseries.json",
                {"SamplingFrequency": "TR", "Sources": [f"bids:xcp_d:{denoised}"]})
    F.tsv(folder / f"{seg}_stat-coverage_bold.tsv", pd.DataFrame({"Node": XCPD_REGIONS, "coverage": 1.0}))
    corr = np.corrcoef(ts.to_numpy().T)
    F.tsv(folder / f"{seg}_stat-pearsoncorrelation_relmat.tsv",
          pd.DataFrame({"Node": XCPD_REGIONS, **dict(zip(XCPD_REGIONS, corr))}))
    motion = _motion(rng, after_dummy)
    diffs = np.abs(np.diff(motion.to_numpy(), axis=0))
    motion["framewise_displacement"] = np.r_[0.0, diffs[:, :3].sum(1) + 50 * diffs[:, 3:].sum(1)]
    F.tsv(folder / f"{stem}_motion.tsv", motion)
    outliers = np.zeros(after_dummy, int)
    outliers[rng.choice(np.arange(5, after_dummy), n_censored, replace=False)] = 1
    F.tsv(folder / f"{stem}_outliers.tsv", pd.DataFrame({"framewise_displacement": outliers}))
    F.tsv(folder / f"{stem}_design.tsv", motion.drop(columns="framewise_displacement"))
    mean_fd = float(motion["framewise_displacement"].mean())
    F.tsv(folder / f"{stem}_space-{space}_desc-linc_qc.tsv", pd.DataFrame({"sub": [sub], "task": [task],
                                                                           "meanFD": [mean_fd]}))
    grid = I.template_grid(space)
    F.nifti(folder / f"{stem}_space-{space}_desc-denoised_bold.nii.gz",
            I.bold(grid, kept, F.rng_for(stem, "denoised")), grid.affine, tr=TR)
    F.json_file(folder / f"{stem}_space-{space}_desc-denoised_bold.json",
                {"RepetitionTime": TR, "NuisanceParameters": "36P", "TaskName": task})
    for stat in ("reho", "alff"):
        F.nifti(folder / f"{stem}_space-{space}_stat-{stat}_boldmap.nii.gz",
                I.probability(grid, F.rng_for(stem, stat)), grid.affine)
    return used


def xcpd_anat(root: Path, sub: str, ses: str | None = None, space: str = "MNI152NLin2009cAsym") -> None:
    """XCP-D's anatomical outputs in the template space."""
    stem = entities(sub, ses)
    folder = subject_dir(root, sub, ses, "anat")
    grid = I.template_grid(space)
    F.nifti(folder / f"{stem}_space-{space}_desc-preproc_T1w.nii.gz", I.anatomy(grid, F.rng_for(stem, "xt1")),
            grid.affine)
    F.nifti(folder / f"{stem}_space-{space}_dseg.nii.gz", I.dseg(grid, F.rng_for(stem, "xdseg")), grid.affine)


# ------------------------------------------------------------------------------ ROI time series

def roi_timeseries(root: Path, sub: str, task: str = "rest", atlas: str = "MIST122",
                   n_volumes: int = 80, regions: Sequence[str] | None = None) -> Run:
    """ROI time series extracted elsewhere, as ``../shared/data/rpn_szeged`` carries them:
    ``sub-X/func/sub-X_task-rest_atlas-<A>_timeseries.tsv`` (first column ``GlobSig``, then MIST
    region names; here the first 12) and a ``desc-confounds_timeseries.tsv`` with
    ``framewise_displacement`` (``n/a`` first); no JSON, no repetition time anywhere."""
    regions = tuple(regions or ("GlobSig", "CER6_p", "CER7ab", "R_CERCR2_p", "CER9_v", "CER6_a", "L_CERCR2_a",
                                "CER9_d", "CER9_m", "CER7b_m", "L_CERCR2_p", "CER7b_l", "N"))
    stem = entities(sub, None, task)
    folder = subject_dir(root, sub, None, "func")
    rng = F.rng_for(stem, atlas)
    latent = rng.standard_normal((n_volumes, 3))
    values = latent @ rng.standard_normal((3, len(regions))) + rng.standard_normal((n_volumes, len(regions)))
    used = Run(name=f"task-{task}")
    used.timeseries = F.tsv(folder / f"{stem}_atlas-{atlas}_timeseries.tsv",
                            pd.DataFrame(values.round(4), columns=list(regions)))
    fd = np.r_[np.nan, np.abs(rng.normal(0.08, 0.03, n_volumes - 1))]
    used.confounds = F.tsv(folder / f"{stem}_desc-confounds_timeseries.tsv",
                           pd.DataFrame({"framewise_displacement": fd}))
    return used
