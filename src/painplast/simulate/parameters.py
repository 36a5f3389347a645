"""All settings of the synthetic cohort, in one frozen dataclass."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

from ..errors import InputError

TASKS = ("pain", "somatotopy", "modulation", "rest")

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
    group, clinical and responder effect (site, age and noise remain).

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

    def scaled(self, value: float) -> float:
        """A planted shift times ``effect_scale`` (0 under ``null``)."""
        return 0.0 if self.null else value * self.effect_scale

    def volumes(self, task: str) -> int:
        return int(getattr(self, f"volumes_{task}"))

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
        if problems:
            raise InputError("; ".join(problems), fix="change the simulation options")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **changes) -> "SimulationParameters":
        return replace(self, **changes)
