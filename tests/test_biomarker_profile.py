"""Plasticity profiles: normative z-scores of patients against controls, on the five axes."""
from __future__ import annotations

import numpy as np
import pandas as pd

from painplast.biomarker.features import from_frame
from painplast.biomarker.profile import plasticity_profiles, write_profiles


def _cohort(**kwargs):
    from painplast.simulate import SimulationParameters, latent_cohort

    return latent_cohort(SimulationParameters(**kwargs))


def test_patient_zscores_recover_planted_group_effects(tmp_path):
    feats, parts = _cohort(n_participants=240, n_sites=3, seed=2)
    profiles = plasticity_profiles(from_frame(feats), parts)
    z = profiles.zscores
    assert len(z) == 120 and list(profiles.axes.columns) == [
        "sensitization", "reorganization", "connectivity", "structure", "modulation"]
    # controls' leave-one-out z is standard normal for every feature
    sd = profiles.control_zscores.std()
    assert sd.between(0.8, 1.25).all(), sd.sort_values()
    # planted shifts (ground truth direction): patients' mean z moves that way, by about d
    planted = {"connectivity.mpfc_nacc": +1, "structure.gm_dlpfc": -1,
               "sensitization.dacc_slope": +1, "modulation.dacc_index": -1,
               "reorganization.shift_mm": +1}
    for feature, direction in planted.items():
        assert direction * z[feature].mean() > 0.4, (feature, z[feature].mean())
    unplanted = ["sensitization.s2_response", "structure.gm_pcc", "modulation.s2_index"]
    assert (z[unplanted].mean().abs() < 0.35).all(), z[unplanted].mean()
    # axes: patients deviate more than the controls' reference (RMS z about 1)
    control_axes = np.sqrt((profiles.control_zscores ** 2).T.groupby(
        pd.Series(profiles.provenance)).mean().T)
    for axis in ("reorganization", "connectivity", "modulation"):
        assert profiles.axes[axis].mean() > control_axes[axis].mean() + 0.1, axis
    files = write_profiles(profiles, tmp_path, figures=False)
    assert len(files) == 2 * 120
    pid = z.index[0]
    table = pd.read_csv(tmp_path / pid / f"{pid}_desc-plasticity_profile.tsv", sep="\t")
    np.testing.assert_allclose(table.set_index("feature")["z"], z.loc[pid])
    png = write_profiles(type(profiles)(z.iloc[:1], profiles.axes.iloc[:1], profiles.provenance,
                                        profiles.control_zscores, profiles.covariates), tmp_path)
    assert png[-1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
