"""All settings of the synthetic cohort, in one frozen dataclass."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

from ..errors import InputError

TASKS = ("pain", "somatotopy", "modulation", "rest")
DESIGNS = ("cross-sectional", "longitudinal")
#: Session labels of a longitudinal cohort (``ses-baseline``, ``ses-followup``).
LONGITUDINAL_SESSIONS = ("baseline", "followup")

#: Group means of the BMRK3 heat-pain ratings at 44-49 degC (0-200 scale, 100 = pain threshold),
#: from 33 participants (Wager et al. 2013 NEJM study 2; Woo et al. 2015 PLoS Biol), the real
#: stimulus-rating curve the simulated pain task follows. Between-participant SD of the
#: rating-temperature slope there: 7.4 per degC.
BMRK3_TEMPERATURES = (44.0, 45.0, 46.0, 47.0, 48.0, 49.0)
BMRK3_MEAN_RATINGS = (48.89, 56.60, 74.19, 99.44, 133.46, 159.26)


@dataclass(frozen=True)
class SimulationParameters:
    """Every setting of :func:`painplast.simulate.simulate`.

    Effect sizes are standardized, in the units that ground_truth.json reports them (Cohen's d
    for group contrasts, r for correlations); the recorded size of each effect is then computed
    by Monte Carlo on the latent model with the same estimator the findings tables use, so
    heterogeneity (effects that scale with pain intensity, duration or disease burden) is
    accounted for. ``effect_scale`` multiplies every planted shift; ``null`` removes every
    group, clinical, responder and longitudinal effect (site, age and noise remain).

    Sessions and runs: ``n_sessions`` repeated sessions (``ses-1``, ``ses-2``, ...) of the same
    state in a cross-sectional design (each session's latents are the participant's trait plus
    independent test-retest noise, ``retest_icc_*``), ``n_runs`` runs of every task per session
    (the same latent responses, independent image noise and trial orders). With one session
    and one run nothing changes: no ``ses-``/``run-`` entity and the same bytes as before these
    options existed. ``design="longitudinal"`` writes ``ses-baseline`` and ``ses-followup``
    (docs/simulator.md): chronic patients treated in between, a subacute arm and controls.

    Examples
    --------
    >>> p = SimulationParameters(n_participants=20, effect_scale=2.0)
    >>> p.scaled(1.0)
    2.0
    """

    n_participants: int = 40
    n_sites: int = 2
    seed: int = 0
    resolution: int = 4
    effect_scale: float = 1.0
    null: bool = False
    #: 0 balances patients and controls in every site; 1 puts most patients in the last sites.
    site_confound: float = 0.0
    patient_fraction: float = 0.5
    responder_fraction: float = 0.5

    # layout
    design: str = "cross-sectional"
    n_sessions: int = 1
    n_runs: int = 1
    #: Tasks written (a subset of TASKS; the longitudinal demo may leave some out).
    tasks: tuple[str, ...] = TASKS

    # acquisition
    tr: float = 2.0
    volumes_pain: int = 120
    volumes_somatotopy: int = 100
    volumes_modulation: int = 112
    volumes_rest: int = 130

    # noise (percent signal change units)
    noise_percent: float = 1.0
    smooth_noise_fraction: float = 0.5
    noise_fwhm_mm: float = 10.0
    noise_ar1: float = 0.35
    n_noise_components: int = 24
    motion_artifact: float = 0.4

    # planted group effects: patient shift in SD units of the (control) latent. The defaults
    # give recorded sizes of d 1.06-1.25 (patient-control), r 0.45-0.60 (clinical correlations)
    # and d 1.34-1.43 (responder-nonresponder, tested within patients only), so that 120
    # participants find each planted effect in >= 83% of cohorts (benchmarks/power.py;
    # docs/architecture.md, "Decisions").
    sensitization_slope_insula_posterior: float = 1.3
    sensitization_slope_dacc: float = 1.3
    sensitization_response_thalamus: float = 1.2
    reorganization_shift_mm: float = 3.0       # mean shift of the affected-hand map in patients
    reorganization_shrink: float = 0.12        # fractional shrinkage of the affected-hand map
    reorganization_shift_cv: float = 0.15      # between-patient spread of the shift at equal pain
    connectivity_mpfc_nacc: float = 1.3
    connectivity_dmn_insula: float = 1.3
    gm_loss_dlpfc: float = 1.6
    gm_loss_insula_anterior: float = 1.4
    gm_loss_thalamus: float = 1.3
    gm_loss_dacc: float = 1.4
    modulation_capacity_deficit: float = 1.7   # patients' lower endogenous modulation (SD units)
    modulation_ppi_coupling: float = 1.1       # loading of the PAG-rACC PPI on modulation capacity
    # baseline differences between later responders and non-responders (SD units)
    responder_mpfc_nacc: float = -1.6
    responder_dacc_index: float = 1.45
    responder_gm_dlpfc: float = 1.8
    # age: gray-matter fraction lost per year (realistic, present also under null)
    gm_age_slope: float = 0.0035

    # longitudinal design (design="longitudinal"): shares of the cohort (the rest are controls).
    # The longitudinal defaults are at the upper end of what longitudinal pain studies report
    # (benchmarks/longitudinal_power.py, docs/simulator.md): chosen so that 120 participants
    # can find the planted changes; lower them for a harder, more typical cohort.
    chronic_fraction: float = 0.45             # chronic patients, treated between the sessions
    subacute_fraction: float = 0.2             # subacute patients, followed without treatment
    persisting_fraction: float = 0.5           # subacute patients whose pain persists
    followup_weeks: float = 26.0
    # share of a treated patient's plasticity that reverses per 100% pain relief, capped at all
    # of it (2.0: responders with >= 50% relief return to the controls' state, the others part
    # of the way; non-responders' plasticity mostly persists); sensitization does not reverse
    # by default (the longitudinal findings that define the field are GM, S1, connectivity and
    # modulation: Rodriguez-Raecke 2009, Seminowicz 2011, Maihofner 2004)
    reversal_structure: float = 2.0
    reversal_reorganization: float = 2.0
    reversal_connectivity: float = 2.0
    reversal_modulation: float = 2.0
    reversal_sensitization: float = 0.0
    # baseline mPFC-NAcc coupling of subacute patients whose pain persists, minus that of those
    # who recover (SD units; Baliki et al. 2012: ~81-85% accuracy, i.e. d ~ 1.8-2.1 measured)
    persisting_mpfc_nacc: float = 2.6
    # test-retest reliability of the noise-free features between sessions (ICC of people who
    # do not change): each session adds within-person noise with variance (1 - icc) / icc of
    # the between-person variance. The measured feature's ICC is lower (image measurement
    # noise): ground_truth.json records both.
    retest_icc_response: float = 0.9           # regional pain responses (NPS within a day: 0.84)
    retest_icc_slope: float = 0.85             # stimulus-response slopes
    retest_icc_modulation: float = 0.9         # modulation indices and PPI
    retest_icc_coupling: float = 0.9           # ROI-pair couplings (single edges: ~0.3)
    retest_icc_gm: float = 0.97                # regional gray matter
    retest_icc_somatotopy: float = 0.95        # hand-map positions and extents

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(self.tasks))

    def scaled(self, value: float) -> float:
        """A planted shift times ``effect_scale`` (0 under ``null``)."""
        return 0.0 if self.null else value * self.effect_scale

    def volumes(self, task: str) -> int:
        return int(getattr(self, f"volumes_{task}"))

    @property
    def longitudinal(self) -> bool:
        return self.design == "longitudinal"

    def sessions(self) -> tuple[str, ...]:
        """Session labels: ``()`` for one cross-sectional session (no ``ses-`` entity).

        Examples
        --------
        >>> SimulationParameters().sessions(), SimulationParameters(n_sessions=2).sessions()
        ((), ('1', '2'))
        >>> SimulationParameters(design="longitudinal").sessions()
        ('baseline', 'followup')
        """
        if self.longitudinal:
            return LONGITUDINAL_SESSIONS
        return tuple(str(k + 1) for k in range(self.n_sessions)) if self.n_sessions > 1 else ()

    def runs(self) -> tuple[int, ...]:
        """Run indices: ``()`` for one run per task (no ``run-`` entity)."""
        return tuple(range(1, self.n_runs + 1)) if self.n_runs > 1 else ()

    def validate(self) -> "SimulationParameters":
        problems = []
        if self.n_sites < 1:
            problems.append("--sites must be at least 1")
        if self.n_participants < 4 * self.n_sites:
            problems.append("--participants must be at least 4 per site (2 patients, 2 controls)")
        if self.resolution not in (2, 3, 4, 5, 6):
            problems.append("--resolution must be 2, 3, 4, 5 or 6 mm")
        if self.effect_scale < 0:
            problems.append("--effect-scale must be >= 0")
        if not 0 <= self.site_confound <= 1:
            problems.append("site_confound must lie in [0, 1]")
        if self.design not in DESIGNS:
            problems.append(f"--design must be one of {', '.join(DESIGNS)}")
        if self.n_sessions < 1 or self.n_runs < 1:
            problems.append("--sessions and --runs must be at least 1")
        if self.longitudinal and self.n_sessions not in (1, 2):
            problems.append("--design longitudinal writes two sessions (baseline, followup): "
                            "leave --sessions out or give 2")
        bad = [t for t in self.tasks if t not in TASKS]
        if bad or not self.tasks or len(set(self.tasks)) != len(self.tasks):
            problems.append(f"--tasks must be distinct names among {', '.join(TASKS)}")
        if self.longitudinal:
            shares = (self.chronic_fraction, self.subacute_fraction)
            if min(shares) <= 0 or sum(shares) >= 1:
                problems.append("chronic_fraction and subacute_fraction must be > 0 and leave "
                                "room for controls (sum < 1)")
            if self.n_participants < 6 * self.n_sites:
                problems.append("--participants must be at least 6 per site in a longitudinal "
                                "design (2 chronic, 2 subacute, 2 controls)")
        for name in ("response", "slope", "modulation", "coupling", "gm", "somatotopy"):
            if not 0 < getattr(self, f"retest_icc_{name}") <= 1:
                problems.append(f"retest_icc_{name} must lie in (0, 1]")
        if problems:
            raise InputError("; ".join(problems), fix="change the simulation options")
        return self

    def to_dict(self) -> dict:
        out = asdict(self)
        out["tasks"] = list(self.tasks)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **changes) -> "SimulationParameters":
        return replace(self, **changes)
