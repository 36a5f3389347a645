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
from dataclasses import dataclass, field
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
    return F.json_file(root / "dataset_description.json",
                       {"Name": name, "BIDSVersion": "1.8.0", "DatasetType": "raw", **extra})


def participants(root: Path, table: pd.DataFrame, sidecar: Mapping | None = None) -> None:
    F.tsv(root / "participants.tsv", table)
    if sidecar is not None:
        F.json_file(root / "participants.json", sidecar)


def task_sidecar(root: Path, task: str, task_name: str, tr: float = TR) -> Path:
    """Root-level ``task-<t>_bold.json`` (BIDS inheritance: applies to every run of the task)."""
    return F.json_file(root / f"task-{task}_bold.json", {"RepetitionTime": tr, "TaskName": task_name})


def raw_anat(root: Path, sub: str, ses: str | None = None) -> Path:
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
    table = pd.DataFrame({"session_id": [f"ses-{s}" for s in acq_times], "acq_time": list(acq_times.values())})
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

def _motion(rng: np.random.Generator, n: int) -> pd.DataFrame:
    steps = rng.normal(0, 0.02, (n, 6)) * np.array([1, 1, 1, 0.001, 0.001, 0.001])
    steps[0] = 0
    return pd.DataFrame(np.cumsum(steps, axis=0), columns=["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"])


def _first_na(x: np.ndarray) -> np.ndarray:
    out = np.asarray(x, float).copy()
    out[0] = np.nan
    return out


def confounds(version: str, data: np.ndarray, grid: I.Grid, n_nonsteady: int, seed: str) -> pd.DataFrame:
    """The confounds table fMRIPrep ``version`` writes for a BOLD series ``data`` (X, Y, Z, T).

    - fMRIPrep < 1.2 (``_bold_confounds.tsv``; 1.1.8 docs/outputs.rst): ``CSF``, ``WhiteMatter``,
      ``GlobalSignal``, ``stdDVARS``, ``non-stdDVARS``, ``vx-wisestdDVARS``,
      ``FramewiseDisplacement``, ``tCompCorXX``, ``aCompCorXX``, ``NonSteadyStateOutlierXX``,
      ``X Y Z RotX RotY RotZ``;
    - fMRIPrep 1.2-1.5 (``desc-confounds_regressors.tsv``; 1.5.0 docs/outputs.rst): snake case,
      no ``_derivative1``/``_power2`` expansions;
    - fMRIPrep 20.x and later (``desc-confounds_timeseries.tsv``; 20.2.0 and 24.1.0
      docs/outputs.rst): expansions ``_derivative1``, ``_power2``, ``_derivative1_power2`` of the
      motion parameters and of ``csf``, ``white_matter``, ``global_signal``; ``rmsd``,
      ``c_comp_cor``/``w_comp_cor``, ``motion_outlierXX`` columns.

    ``non_steady_state_outlierXX`` columns (one per leading non-steady-state volume, ``1`` at that
    volume) are written when ``n_nonsteady`` > 0, as fMRIPrep does.
    """
    major = _major(version)
    n = data.shape[-1]
    rng = F.rng_for(seed, "confounds")
    inside = I.brain(grid)
    series = data[inside].astype(float)                  # (V, T)
    order = rng.permutation(series.shape[0])
    wm = series[order[: len(order) // 4]].mean(0)
    csf = series[order[len(order) // 4: len(order) // 3]].mean(0)
    glob = series.mean(0)
    dv = np.r_[np.nan, np.sqrt(np.mean(np.diff(series, axis=1) ** 2, axis=0))]
    motion = _motion(rng, n)
    diffs = np.abs(np.diff(motion.to_numpy(), axis=0))
    fd = np.r_[np.nan, diffs[:, :3].sum(1) + 50 * diffs[:, 3:].sum(1)]
    comp = lambda k: rng.standard_normal((n, k)) / np.sqrt(n)  # noqa: E731
    spikes = [np.eye(n)[i] for i in range(n_nonsteady)]

    if major < 1.2:                                     # CamelCase names of fMRIPrep 1.0-1.1
        table = {"CSF": csf, "WhiteMatter": wm, "GlobalSignal": glob, "stdDVARS": dv / np.nanmedian(dv),
                 "non-stdDVARS": dv, "vx-wisestdDVARS": dv / np.nanmedian(dv) * 1.1, "FramewiseDisplacement": fd}
        table.update({f"tCompCor{i:02d}": c for i, c in enumerate(comp(6).T)})
        table.update({f"aCompCor{i:02d}": c for i, c in enumerate(comp(6).T)})
        table.update({f"NonSteadyStateOutlier{i:02d}": s for i, s in enumerate(spikes)})
        for old, new in zip(("X", "Y", "Z", "RotX", "RotY", "RotZ"), motion.columns):
            table[old] = motion[new].to_numpy()
        return pd.DataFrame(table)

    expand = major >= 20
    table = {}
    for name, x in (("csf", csf), ("white_matter", wm), ("global_signal", glob)):
        table[name] = x
        if expand:
            d = _first_na(np.r_[0.0, np.diff(x)])
            table.update({f"{name}_derivative1": d, f"{name}_power2": x ** 2, f"{name}_derivative1_power2": d ** 2})
    table.update({"std_dvars": dv / np.nanmedian(dv), "dvars": dv, "framewise_displacement": fd})
    if expand:
        table["rmsd"] = _first_na(fd / 3)
    table.update({f"t_comp_cor_{i:02d}": c for i, c in enumerate(comp(6).T)})
    if expand:
        table.update({f"c_comp_cor_{i:02d}": c for i, c in enumerate(comp(5).T)})
        table.update({f"w_comp_cor_{i:02d}": c for i, c in enumerate(comp(5).T)})
    table.update({f"a_comp_cor_{i:02d}": c for i, c in enumerate(comp(6).T)})
    table["cosine00"] = np.cos(np.pi * (np.arange(n) + 0.5) / n)
    table.update({f"non_steady_state_outlier{i:02d}": s for i, s in enumerate(spikes)})
    for col in motion.columns:
        x = motion[col].to_numpy()
        table[col] = x
        if expand:
            d = _first_na(np.r_[0.0, np.diff(x)])
            table.update({f"{col}_derivative1": d, f"{col}_power2": x ** 2, f"{col}_derivative1_power2": d ** 2})
    return pd.DataFrame(table)


def _major(version: str) -> float:
    """``"1.5.10"`` -> 1.5, ``"20.2.0rc0"`` -> 20.2, ``"24.1.1"`` -> 24.1."""
    match = re.match(r"(\d+)\.(\d+)", version)
    return float(f"{match.group(1)}.{match.group(2)}")


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
        (``desc-preproc_bold``, ``desc-confounds_regressors``), 20.x (``desc-confounds_timeseries``),
        21.0+ (``--output-layout bids``), 23.2+ (``desc-hmc``/``desc-coreg`` boldrefs and xfms).
    spaces : tuple of str
        ``--output-spaces``, in fMRIPrep's syntax (``MNI152NLin2009cAsym:res-2``).
    """

    root: Path
    version: str
    spaces: tuple[str, ...] = ("MNI152NLin2009cAsym:res-2",)
    n_volumes: int = N_VOLUMES
    tr: float = TR
    written: list[Path] = field(default_factory=list)

    @property
    def major(self) -> float:
        return _major(self.version)

    def describe(self, source: str | None = None) -> Path:
        """``dataset_description.json`` as this version writes it (fmriprep/utils/bids.py)."""
        url = f"https://github.com/{'nipreps' if self.major >= 21 else 'poldracklab'}/fmriprep/archive/{self.version}.tar.gz"
        if self.major < 1.2:
            desc = {"Name": "fMRIPrep output", "BIDSVersion": "1.1.1",
                    "PipelineDescription": {"Name": "fMRIPrep", "Version": self.version, "CodeURL": url},
                    "CodeURL": "https://github.com/poldracklab/fmriprep"}
        elif self.major < 20:
            desc = {"Name": "fMRIPrep - fMRI PREProcessing workflow", "BIDSVersion": "1.1.1",
                    "PipelineDescription": {"Name": "fMRIPrep", "Version": self.version, "CodeURL": url},
                    "CodeURL": "https://github.com/poldracklab/fmriprep"}
        else:
            desc = {"Name": "fMRIPrep - fMRI PREProcessing workflow", "BIDSVersion": "1.4.0",
                    "DatasetType": "derivative",
                    "GeneratedBy": [{"Name": "fMRIPrep", "Version": self.version, "CodeURL": url}]}
            if self.major >= 23 and source:
                desc["DatasetLinks"] = {"raw": source}
        desc["HowToAcknowledge"] = ("Please cite our paper (https://doi.org/10.1038/s41592-018-0235-4), and "
                                    "include the generated citation boilerplate within the Methods section of the text.")
        return F.json_file(self.root / "dataset_description.json", desc)

    def _nii(self, path: Path, data, grid: I.Grid, tr=None) -> Path:
        self.written.append(path)
        return F.nifti(path, data, grid.affine, tr=tr)

    def _empty(self, path: Path) -> Path:
        self.written.append(path)
        return F.placeholder(path)

    def func(self, sub: str, ses: str | None, task: str, run: str | None, n_nonsteady: int = 0,
             space: str | None = None) -> Run:
        """One BOLD run in every output space; returns the files of ``space`` (default: the first)."""
        run_label = str(int(run)) if (run and run.isdigit() and self.major >= 20) else run
        stem = entities(sub, ses, task, run_label)
        folder = subject_dir(self.root, sub, ses, "func")
        chosen = space or self.spaces[0]
        used = Run(name=entities(sub, ses, task, run_label).split("_", 1)[1])
        chosen_grid = chosen_data = None
        for sp in self.spaces:
            grid = I.template_grid(sp.split(":")[0])
            data = I.bold(grid, self.n_volumes, F.rng_for(stem, sp), n_nonsteady)
            ent = space_entities(sp)
            if self.major < 1.2:
                name_sp = ent.replace("_res-2", "")
                bold = self._nii(folder / f"{stem}_bold_{name_sp}_preproc.nii.gz", data, grid, self.tr)
                mask = self._nii(folder / f"{stem}_bold_{name_sp}_brainmask.nii.gz", I.mask(grid), grid)
            else:
                bold = self._nii(folder / f"{stem}_{ent}_desc-preproc_bold.nii.gz", data, grid, self.tr)
                mask = self._nii(folder / f"{stem}_{ent}_desc-brain_mask.nii.gz", I.mask(grid), grid)
                self._nii(folder / f"{stem}_{ent}_boldref.nii.gz", I.anatomy(grid, F.rng_for(stem, sp, "ref")), grid)
                if self.major >= 1.4:
                    F.json_file(folder / f"{stem}_{ent}_desc-preproc_bold.json",
                                {"RepetitionTime": self.tr, "SkullStripped": False, "TaskName": task,
                                 **({"Resolution": "2mm, isotropic"} if "res-2" in ent else {})})
            if sp == chosen:
                used.bold, used.mask, chosen_grid, chosen_data = bold, mask, grid, data
        table = confounds(self.version, chosen_data, chosen_grid, n_nonsteady, stem)
        if self.major < 1.2:
            used.confounds = F.tsv(folder / f"{stem}_bold_confounds.tsv", table)
        elif self.major < 20:
            used.confounds = F.tsv(folder / f"{stem}_desc-confounds_regressors.tsv", table)
            if self.major >= 1.5:
                F.json_file(folder / f"{stem}_desc-confounds_regressors.json", _compcor_metadata())
        else:
            used.confounds = F.tsv(folder / f"{stem}_desc-confounds_timeseries.tsv", table)
            F.json_file(folder / f"{stem}_desc-confounds_timeseries.json", _compcor_metadata())
        self.written.append(used.confounds)
        # outputs painplast never reads: transforms, reports (empty, as in bids-examples)
        if self.major >= 23.2:
            self._nii(folder / f"{stem}_desc-hmc_boldref.nii.gz", I.anatomy(I.native_grid(), F.rng_for(stem, "hmc")),
                      I.native_grid())
            self._nii(folder / f"{stem}_desc-coreg_boldref.nii.gz", I.anatomy(I.native_grid(), F.rng_for(stem, "coreg")),
                      I.native_grid())
            self._empty(folder / f"{stem}_from-orig_to-boldref_mode-image_desc-hmc_xfm.txt")
            self._empty(folder / f"{stem}_from-boldref_to-T1w_mode-image_desc-coreg_xfm.txt")
        elif self.major >= 20:
            self._empty(folder / f"{stem}_from-scanner_to-T1w_mode-image_xfm.txt")
            self._empty(folder / f"{stem}_from-T1w_to-scanner_mode-image_xfm.txt")
        figures = self.root / f"sub-{sub}" / "figures"
        for kind in ("carpetplot", "confoundcorr", "rois", "summary"):
            self._empty(figures / f"{stem}_desc-{kind}_bold.{'html' if kind == 'summary' else 'svg'}")
        return used

    def anat(self, sub: str, ses: str | None = None, space: str | None = None) -> Path:
        """Anatomical outputs (T1w space and every output space); returns the GM map of ``space``."""
        stem = entities(sub, ses)
        folder = subject_dir(self.root, sub, ses, "anat")
        native = I.template_grid("MNI152NLin2009cAsym", 12.0)   # "T1w space": another grid
        chosen = space or self.spaces[0]
        gm_used = None
        if self.major < 1.2:
            self._nii(folder / f"{stem}_T1w_preproc.nii.gz", I.anatomy(native, F.rng_for(stem, "t1")), native)
            self._nii(folder / f"{stem}_T1w_brainmask.nii.gz", I.mask(native), native)
            self._nii(folder / f"{stem}_T1w_class-GM_probtissue.nii.gz", I.probability(native, F.rng_for(stem, "gmn")), native)
            for sp in self.spaces:
                grid = I.template_grid(sp.split(":")[0])
                ent = space_entities(sp).replace("_res-2", "")
                gm = self._nii(folder / f"{stem}_T1w_{ent}_class-GM_probtissue.nii.gz",
                               I.probability(grid, F.rng_for(stem, sp, "gm")), grid)
                self._nii(folder / f"{stem}_T1w_{ent}_class-WM_probtissue.nii.gz",
                          I.probability(grid, F.rng_for(stem, sp, "wm")), grid)
                self._nii(folder / f"{stem}_T1w_{ent}_brainmask.nii.gz", I.mask(grid), grid)
                self._nii(folder / f"{stem}_T1w_{ent}_preproc.nii.gz", I.anatomy(grid, F.rng_for(stem, sp, "t1")), grid)
                self._empty(folder / f"{stem}_T1w_target-{sp.split(':')[0]}_warp.h5")
                if sp == chosen:
                    gm_used = gm
            return gm_used
        self._nii(folder / f"{stem}_desc-preproc_T1w.nii.gz", I.anatomy(native, F.rng_for(stem, "t1")), native)
        self._nii(folder / f"{stem}_desc-brain_mask.nii.gz", I.mask(native), native)
        self._nii(folder / f"{stem}_dseg.nii.gz", I.dseg(native, F.rng_for(stem, "dseg")), native)
        for label in ("CSF", "GM", "WM"):
            self._nii(folder / f"{stem}_label-{label}_probseg.nii.gz",
                      I.probability(native, F.rng_for(stem, label)), native)
        for sp in self.spaces:
            grid = I.template_grid(sp.split(":")[0])
            ent = space_entities(sp)
            tpl = sp.split(":")[0]
            self._nii(folder / f"{stem}_{ent}_desc-preproc_T1w.nii.gz", I.anatomy(grid, F.rng_for(stem, sp, "t1")), grid)
            self._nii(folder / f"{stem}_{ent}_desc-brain_mask.nii.gz", I.mask(grid), grid)
            self._nii(folder / f"{stem}_{ent}_dseg.nii.gz", I.dseg(grid, F.rng_for(stem, sp, "dseg")), grid)
            for label in ("CSF", "GM", "WM"):
                path = self._nii(folder / f"{stem}_{ent}_label-{label}_probseg.nii.gz",
                                 I.probability(grid, F.rng_for(stem, sp, label)), grid)
                if label == "GM" and sp == chosen:
                    gm_used = path
            self._empty(folder / f"{stem}_from-{tpl}_to-T1w_mode-image_xfm.h5")
            self._empty(folder / f"{stem}_from-T1w_to-{tpl}_mode-image_xfm.h5")
        self._empty(folder / f"{stem}_from-T1w_to-fsnative_mode-image_xfm.txt")
        self._empty(folder / f"{stem}_from-fsnative_to-T1w_mode-image_xfm.txt")
        for hemi in ("L", "R"):
            for surf in ("midthickness", "pial", "smoothwm" if self.major < 23 else "white"):
                self._empty(folder / f"{stem}_hemi-{hemi}_{surf}.surf.gii")
        return gm_used

    def report(self, sub: str) -> Path:
        return self._empty(self.root / f"sub-{sub}.html")


def _compcor_metadata() -> dict:
    return {f"a_comp_cor_{i:02d}": {"Mask": "combined", "Method": "aCompCor", "Retained": True,
                                     "VarianceExplained": round(0.1 / (i + 1), 4)} for i in range(6)}


# ------------------------------------------------------------------------------ CAT12

def cat12_session(root: Path, sub: str, ses: str | None) -> Path:
    """CAT12 output of one T1w in BIDS mode: ``<root>/sub-X/[ses-Y/]anat/mri/mwp1sub-X_[ses-Y_]T1w.nii``.

    Folder and names as CAT12 12.6+ writes them for BIDS input (e.g.
    ``derivatives/cat12-12.6_vbm/sub-ICAAR017/ses-V1/anat/mri/mwp1sub-ICAAR017_ses-V1_acq-s03_T1w.nii``
    in neurospin's ns-datasets); images uncompressed ``.nii``, on CAT12's flipped-x grid.
    Returns the ``mwp1`` map (modulated, normalised gray matter).
    """
    stem = entities(sub, ses) + "_T1w"
    anat = subject_dir(root, sub, ses, "anat")
    grid = I.cat12_grid()
    native = I.native_grid((20, 24, 20), (8.0, 8.0, 8.0))
    mwp1 = F.nifti(anat / "mri" / f"mwp1{stem}.nii", I.probability(grid, F.rng_for(stem, "mwp1")), grid.affine)
    F.nifti(anat / "mri" / f"mwp2{stem}.nii", I.probability(grid, F.rng_for(stem, "mwp2")), grid.affine)
    F.nifti(anat / "mri" / f"wm{stem}.nii", I.anatomy(grid, F.rng_for(stem, "wm")), grid.affine)
    F.nifti(anat / "mri" / f"p0{stem}.nii", I.dseg(native, F.rng_for(stem, "p0")).astype(np.float32),
            native.affine, template=False)
    F.text(anat / "report" / f"cat_{stem}.xml", f"<?xml version=\"1.0\"?>\n<S><filedata><fname>{stem}.nii</fname>"
           "</filedata><subjectmeasures><vol_TIV>1500.0</vol_TIV></subjectmeasures></S>\n")
    F.text(anat / "report" / f"catlog_{stem}.txt", "CAT12.8.2 r2170\n")
    F.text(anat / "label" / f"catROI_{stem}.xml", "<?xml version=\"1.0\"?>\n<S></S>\n")
    return mwp1


# ------------------------------------------------------------------------------ XCP-D

#: XCP-D 0.10 region names for a small parcellation (the real 4S156Parcels has 156 columns).
XCPD_REGIONS = ("LH_Vis_1", "LH_SomMot_1", "LH_DorsAttn_1", "LH_SalVentAttn_1", "LH_Default_1",
                "RH_Vis_1", "RH_SomMot_1", "RH_DorsAttn_1", "RH_SalVentAttn_1", "RH_Default_1",
                "LH-Thalamus", "RH-Thalamus")


def xcpd_description(root: Path, version: str = "0.10.6") -> Path:
    F.json_file(root / "atlases" / "dataset_description.json",
                {"Name": "XCP-D atlases", "BIDSVersion": "1.9.0", "DatasetType": "atlas"})
    for ext, content in (("tsv", "index\tname\n" + "".join(f"{i}\t{r}\n" for i, r in enumerate(XCPD_REGIONS, 1))),
                         ("json", "{}\n")):
        F.text(root / "atlases" / "atlas-4S156Parcels" / f"atlas-4S156Parcels_dseg.{ext}", content)
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
    ts = pd.DataFrame(rng.standard_normal((kept, len(XCPD_REGIONS))) @ (np.eye(len(XCPD_REGIONS)) + 0.3),
                      columns=list(XCPD_REGIONS))
    used = Run(name=entities(sub, ses, task, run).split("_", 1)[1])
    seg = f"{stem}_space-{space}_seg-4S156Parcels"
    used.timeseries = F.tsv(folder / f"{seg}_stat-mean_timeseries.tsv", ts.round(4))
    F.json_file(folder / f"{seg}_stat-mean_timeseries.json", {"SamplingFrequency": "TR", "Sources": [
        f"bids:xcp_d:{'/'.join(folder.relative_to(root).parts)}/{stem}_space-{space}_desc-denoised_bold.nii.gz"]})
    F.tsv(folder / f"{seg}_stat-coverage_bold.tsv", pd.DataFrame({"Node": XCPD_REGIONS, "coverage": 1.0}))
    corr = np.corrcoef(ts.to_numpy().T)
    F.tsv(folder / f"{seg}_stat-pearsoncorrelation_relmat.tsv",
          pd.DataFrame(corr, columns=XCPD_REGIONS).assign(Node=list(XCPD_REGIONS))[["Node", *XCPD_REGIONS]])
    motion = _motion(rng, after_dummy)
    diffs = np.abs(np.diff(motion.to_numpy(), axis=0))
    motion["framewise_displacement"] = np.r_[0.0, diffs[:, :3].sum(1) + 50 * diffs[:, 3:].sum(1)]
    F.tsv(folder / f"{stem}_motion.tsv", motion)
    outliers = np.zeros(after_dummy, int)
    outliers[rng.choice(np.arange(5, after_dummy), n_censored, replace=False)] = 1
    F.tsv(folder / f"{stem}_outliers.tsv", pd.DataFrame({"framewise_displacement": outliers}))
    F.tsv(folder / f"{stem}_design.tsv", motion.drop(columns="framewise_displacement"))
    F.tsv(folder / f"{stem}_space-{space}_desc-linc_qc.tsv",
          pd.DataFrame({"sub": [sub], "task": [task], "meanFD": [float(motion["framewise_displacement"].mean())]}))
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
    stem = entities(sub, ses)
    folder = subject_dir(root, sub, ses, "anat")
    grid = I.template_grid(space)
    F.nifti(folder / f"{stem}_space-{space}_desc-preproc_T1w.nii.gz", I.anatomy(grid, F.rng_for(stem, "xt1")), grid.affine)
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
    used.confounds = F.tsv(folder / f"{stem}_desc-confounds_timeseries.tsv", pd.DataFrame({"framewise_displacement": fd}))
    return used
