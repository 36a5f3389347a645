"""Endogenous pain modulation: how much a modulating condition reduces the pain response.

Subject stage (``modulation`` task, conditions ``pain_unmodulated`` and ``pain_modulated``; see
:mod:`painplast.plasticity._firstlevel`):

* ``<region>_index`` for :data:`painplast.atlas.PAIN_PROCESSING_REGIONS`: ROI-mean (unsmoothed)
  beta of unmodulated minus modulated pain, % signal;
* generalized psychophysiological interaction (gPPI, McLaren et al. 2012) of three seeds on
  their targets, one model per seed: the seed's ROI-mean time series (confounds and drifts
  regressed out, centred), both psychological regressors (the conditions, HRF-convolved), and
  one interaction per condition: seed x (condition regressor scaled to a maximum of 1). The
  feature is the target's interaction beta, modulated minus unmodulated:
  ``pag_racc_ppi`` (PAG seed -> rACC), ``dlpfc_pag_ppi`` (DLPFC -> PAG), ``pag_rvm_ppi``
  (PAG -> RVM, the descending pathway). The interaction is formed with the BOLD seed, not a
  deconvolved neural estimate (a simplification that matches how the simulator plants it and
  that is common for block-like designs);
* voxel-wise maps (smoothed): ``modulation_beta``/``_t`` of unmodulated minus modulated.

Group stage: findings for the a-priori features with contrasts patient-control,
modulation_score and responder-nonresponder (:func:`painplast.contrasts.findings_table`), and
a figure of each participant's modulation index against the behavioural modulation score.
"""
from __future__ import annotations

from typing import Sequence

import nibabel as nib
import numpy as np
import pandas as pd

from .. import atlas
from ..cohort import Cohort, Subject
from ..config import Config
from ..errors import InputError
from ..results import GroupResult, SubjectResult
from . import Declaration, _figures, _group
from . import _firstlevel as fl

__all__ = ["CONTRASTS", "DECLARATION", "DEFAULTS", "PPI", "a_priori_tests", "group",
           "ppi_regressors", "subject"]

NAME = "modulation"
TASK = "modulation"
UNMODULATED, MODULATED = "pain_unmodulated", "pain_modulated"
#: feature -> (seed region, target region)
PPI = {"pag_racc_ppi": ("pag", "racc"), "dlpfc_pag_ppi": ("dlpfc", "pag"), "pag_rvm_ppi": ("pag", "rvm")}
CONTRASTS = ("patient-control", "modulation_score", "responder-nonresponder")
DEFAULTS = {
    "unmodulated": UNMODULATED,
    "modulated": MODULATED,
    "confounds_strategy": fl.DEFAULT_CONFOUNDS,
    "fd_threshold": 0.5,
    "noise_model": "ar1",
    "voxelwise": True,
}


def ppi_regressors(seed: np.ndarray, design: pd.DataFrame, conditions: Sequence[str],
                   nuisance: Sequence[str] = ()) -> pd.DataFrame:
    """Seed and seed x condition interaction regressors of a generalized PPI.

    Parameters
    ----------
    seed : ndarray, shape (T,)
        Seed ROI time series (% signal).
    design : DataFrame, shape (T, p)
        First-level design holding the HRF-convolved ``conditions`` and the ``nuisance`` columns.
    conditions : sequence of str
        Psychological regressors (design columns).
    nuisance : sequence of str
        Design columns regressed out of the seed first (confounds, drifts, constant).

    Returns
    -------
    DataFrame, shape (T, 1 + len(conditions))
        ``seed`` and ``ppi_<condition>`` = centred seed x (condition / max(condition)).

    Examples
    --------
    >>> X = pd.DataFrame({"a": np.r_[np.zeros(5), np.ones(5)], "constant": 1.0})
    >>> ppi_regressors(np.arange(10.0), X, ["a"], ["constant"]).columns.tolist()
    ['seed', 'ppi_a']
    """
    y = np.asarray(seed, float)
    if nuisance:
        N = design[list(nuisance)].to_numpy(float)
        y = y - N @ np.linalg.lstsq(N, y, rcond=None)[0]
    y = y - y.mean()
    out = {"seed": y}
    for c in conditions:
        psych = design[c].to_numpy(float)
        out[f"ppi_{c}"] = y * psych / max(np.abs(psych).max(), 1e-12)
    return pd.DataFrame(out, index=design.index)


def subject(subject: Subject, config: Config) -> SubjectResult:
    """Modulation-task first level of one participant: modulation indices and gPPI couplings.

    Parameters
    ----------
    subject : Subject
        Needs a ``modulation`` run with BOLD, confounds and events with both conditions.
    config : Config
        ``hrf_model``, ``high_pass``, ``smoothing_fwhm``, ``roi_radius_mm``, ``options["modulation"]``.

    Returns
    -------
    SubjectResult
        ``features``: ``modulation.<region>_index``, ``modulation.<region>_unmodulated``,
        ``modulation.<region>_modulated`` and ``modulation.pag_racc_ppi``, ``dlpfc_pag_ppi``,
        ``pag_rvm_ppi``; ``maps``: ``modulation_beta``, ``modulation_t``.

    Examples
    --------
    >>> res = subject(Cohort.from_bids(bids_dir).subject("sub-001"), Config())
    >>> sorted(k for k in res.features if k.endswith("_ppi"))
    ['modulation.dlpfc_pag_ppi', 'modulation.pag_racc_ppi', 'modulation.pag_rvm_ppi']
    """
    opts = config.module(NAME, DEFAULTS)
    unmod, mod = opts["unmodulated"], opts["modulated"]
    regions = list(atlas.PAIN_PROCESSING_REGIONS)
    ppi_regions = sorted({r for pair in PPI.values() for r in pair})
    runs = fl.task_runs(subject, TASK, NAME)
    fits: dict[str, list] = {"B": [], "maps": [], **{name: [] for name in PPI}}
    n_trials = n_scrubbed = 0
    for run in runs:
        events = run.load_events()
        kinds = events["trial_type"].astype(str) if "trial_type" in events else pd.Series(dtype=str)
        for cond in (unmod, mod):
            if (kinds == cond).sum() < 2:
                raise InputError(f"the events have fewer than 2 '{cond}' trials", path=run.events,
                                 fix="name the conditions in options['modulation'] ('unmodulated', 'modulated')")
        events = events[kinds.isin([unmod, mod])]
        bold = fl.load_bold(run)
        X = fl.design_matrix(run, events, config, n_volumes=bold.n_volumes, modulators=(),
                             confounds_strategy=opts["confounds_strategy"], fd_threshold=opts["fd_threshold"])
        n_trials += int(len(events))
        n_scrubbed += int(sum(c.startswith("spike_") for c in X.columns))
        masks = fl.region_masks(list(dict.fromkeys(regions + ppi_regions)), bold, config.roi_radius_mm)
        ts = fl.roi_timeseries(bold, masks)
        fits["B"].append(fl.fit_timeseries(ts[regions], X, opts["noise_model"]))
        nuisance = [c for c in X.columns if c not in (unmod, mod)]
        for name, (seed, target) in PPI.items():
            extra = ppi_regressors(ts[seed].to_numpy(float), X, [unmod, mod], nuisance)
            fits[name].append(fl.fit_timeseries(ts[[target]], pd.concat([X, extra], axis=1), opts["noise_model"]))
        if opts["voxelwise"]:
            fits["maps"].append(fl.contrast_maps(bold, X, {"modulation": f"{unmod} - {mod}"},
                                                 config.smoothing_fwhm, opts["noise_model"]))
        del bold
    B = fl.fixed_effects_table(fits["B"])
    features: dict[str, float] = {}
    for r in regions:
        features[f"{NAME}.{r}_index"] = float(B.loc[unmod, r] - B.loc[mod, r])
        features[f"{NAME}.{r}_unmodulated"] = float(B.loc[unmod, r])
        features[f"{NAME}.{r}_modulated"] = float(B.loc[mod, r])
    for name, (seed, target) in PPI.items():
        Bp = fl.fixed_effects_table(fits[name])
        features[f"{NAME}.{name}"] = float(Bp.loc[f"ppi_{mod}", target] - Bp.loc[f"ppi_{unmod}", target])
    maps = fl.fixed_effects(fits["maps"]).images(("beta", "t")) if fits["maps"] else {}
    info = {"n_trials": n_trials, "n_scrubbed": n_scrubbed, "runs": [r.name for r in runs]}
    return SubjectResult(NAME, subject.participant_id, features, maps, {}, info)


def a_priori_tests(config: Config | None = None) -> list[tuple[str, str]]:
    """The findings rows: each region's modulation index and the PPIs x :data:`CONTRASTS`.

    Examples
    --------
    >>> len(a_priori_tests())       # (8 regions + 3 PPIs) x 3 contrasts
    33
    """
    tested = [f"{NAME}.{r}_index" for r in atlas.PAIN_PROCESSING_REGIONS] + [f"{NAME}.{p}" for p in PPI]
    return [(f, c) for f in tested for c in CONTRASTS]


def _figure(features: pd.DataFrame, parts: pd.DataFrame, columns: Sequence[str]) -> bytes:
    """Each feature against the behavioural modulation score, per group, with Pearson's r."""
    score = pd.to_numeric(parts["modulation_score"], errors="coerce")
    groups = parts["group"].fillna("all") if "group" in parts else pd.Series("all", index=parts.index)

    def draw(ax, col):
        for g in sorted(groups.unique()):
            sel = (groups == g).to_numpy()
            ax.scatter(score[sel], features[col][sel], s=10, label=g)
        y = features[col].to_numpy(float)
        ok = np.isfinite(y) & np.isfinite(score.to_numpy(float))
        if ok.sum() > 2:
            r = np.corrcoef(score[ok], y[ok])[0, 1]
            ax.set_title(f"{col.split('.', 1)[1]}  r={r:.2f}", fontsize=8)

    return _figures.small_multiples(columns, draw, "behavioural modulation score",
                                    "modulation index / PPI", panel=(3.0, 2.5))


def group(results: list[SubjectResult], cohort: Cohort, config: Config) -> GroupResult:
    """Group statistics of modulation: findings for indices and PPIs, and the index-score figure.

    The findings are the shared stage's (:func:`painplast.plasticity._group.run`).

    Returns
    -------
    GroupResult
        ``findings`` (a-priori features x patient-control, modulation_score,
        responder-nonresponder), ``maps`` (``modulation_mean``: mean of the participants'
        modulation beta maps), ``figures`` (``index_vs_score``).

    Examples
    --------
    >>> cohort, cfg = Cohort.from_bids(bids_dir), Config()
    >>> res = group([subject(s, cfg) for s in cohort], cohort, cfg)
    >>> len(res.findings), sorted(res.findings["contrast"].unique())   # 11 features x 3 contrasts
    (33, ['modulation_score', 'patient-control', 'responder-nonresponder'])
    """
    return _group.run(DECLARATION, results, cohort, config, _group_specific)


def _group_specific(data: _group.GroupData) -> _group.Specific:
    """The index-score figure and the mean modulation map."""
    out = _group.Specific()
    tested = [f for f in dict.fromkeys(f for f, _ in data.declaration.a_priori(data.config))
              if f in data.features]
    if "modulation_score" in data.participants:
        out.figures["index_vs_score"] = _figure(data.features, data.participants, tested)
    imgs = [r.maps.get("modulation_beta") for r in data.results]
    if all(i is not None for i in imgs):
        mean = np.mean([np.asarray(i.dataobj, np.float32) for i in imgs], axis=0)
        out.maps["modulation_mean"] = nib.Nifti1Image(mean, imgs[0].affine)
    return out


DECLARATION = Declaration(
    name=NAME, title="Endogenous pain modulation", task=TASK, bold=True, subject=subject,
    group=group, defaults=DEFAULTS, tests=a_priori_tests,
    description="Aberrant descending modulation: the response difference between unmodulated "
    "and modulated pain, and the psychophysiological interaction of PAG, rostral ACC and DLPFC.")
