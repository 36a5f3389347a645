"""plasticity._firstlevel: design, confounds, ROI and voxel-wise fits against nilearn and the simulator's truth."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from painplast import atlas
from painplast.cohort import Cohort
from painplast.config import Config
from painplast.errors import InputError
from painplast.plasticity import _firstlevel as fl


@pytest.fixture(scope="module")
def cohort(small_cohort):
    return Cohort.from_bids(small_cohort)


@pytest.fixture(scope="module")
def truth(small_cohort):
    return pd.read_csv(small_cohort / "derivatives" / "simulation" / "participants_truth.tsv",
                       sep="\t", index_col="participant_id")


def test_design_matrix_columns_and_centred_modulator(cohort):
    run = cohort.subject("sub-001").run("pain")
    events = run.load_events()
    X = fl.design_matrix(run, events, Config(), n_volumes=120)
    assert X.shape[0] == 120
    assert {"pain", "pain_x_intensity", "trans_x_derivative1_power2", "white_matter", "csf",
            "constant"} <= set(X.columns)
    assert any(c.startswith("drift_") for c in X.columns)
    # the modulator equals an independent HRF convolution of the centred intensities
    from nilearn.glm.first_level.hemodynamic_models import compute_regressor
    amp = events["intensity"] - events["intensity"].mean()
    ref, _ = compute_regressor(np.vstack([events.onset, events.duration, amp]), "glover",
                               np.arange(120) * run.repetition_time, oversampling=16)
    assert np.corrcoef(ref[:, 0], X["pain_x_intensity"])[0, 1] > 0.999
    # spikes: one regressor per volume with FD > 0.5 mm
    fd = pd.to_numeric(run.load_confounds()["framewise_displacement"], errors="coerce").fillna(0)
    assert sum(c.startswith("spike_") for c in X.columns) == int((fd > 0.5).sum())
    # one condition per intensity level
    Xl = fl.design_matrix(run, events, Config(), n_volumes=120, modulators=(), split_by="intensity")
    assert {f"pain_{t}" for t in range(44, 50)} <= set(Xl.columns)


def test_confounds_strategies_and_errors(cohort):
    run = cohort.subject("sub-002").run("pain")
    assert fl.confounds(run, "motion6").shape == (120, 6)
    assert fl.confounds(run, "motion24+wm_csf").shape == (120, 26)
    assert np.isfinite(fl.confounds(run, "motion24").to_numpy()).all()
    with pytest.raises(InputError, match="unknown confound strategy"):
        fl.confounds(run, "motion12")
    with pytest.raises(InputError, match="onset"):
        fl.design_matrix(run, pd.DataFrame({"duration": [1.0]}), Config(), n_volumes=120)


def test_percent_signal():
    y = np.array([[99.0, 0.0], [101.0, 0.0]])
    assert np.allclose(fl.percent_signal(y), [[-1.0, 0.0], [1.0, 0.0]])


def test_roi_betas_recover_truth(cohort, truth):
    est, true = [], []
    for sub in list(cohort)[:6]:
        run = sub.run("pain")
        bold = fl.load_bold(run)
        X = fl.design_matrix(run, run.load_events(), Config(), n_volumes=bold.n_volumes)
        B = fl.fit_roi(bold, X, fl.region_masks(atlas.PAIN_PROCESSING_REGIONS, bold))
        for r in atlas.PAIN_PROCESSING_REGIONS:
            est.append((B.loc["pain", r], B.loc["pain_x_intensity", r]))
            true.append((truth.loc[sub.participant_id, f"sensitization.{r}_response"],
                         truth.loc[sub.participant_id, f"sensitization.{r}_slope"]))
    est, true = np.array(est), np.array(true)
    assert np.corrcoef(est[:, 0], true[:, 0])[0, 1] > 0.9
    assert np.corrcoef(est[:, 1], true[:, 1])[0, 1] > 0.75
    # unbiased in % signal units: mean error small against the mean planted value
    assert abs(est[:, 0].mean() - true[:, 0].mean()) < 0.08
    assert abs(est[:, 1].mean() - true[:, 1].mean()) < 0.03


def test_voxelwise_matches_nilearn_first_level_model(cohort):
    from nilearn.glm.first_level import FirstLevelModel
    import nibabel as nib

    run = cohort.subject("sub-003").run("modulation")
    bold = fl.load_bold(run)
    X = fl.design_matrix(run, run.load_events(), Config(), n_volumes=bold.n_volumes, modulators=())
    ours = fl.fit_voxelwise(bold, X, {"mi": "pain_unmodulated - pain_modulated"}, None, noise_model="ols")
    flm = FirstLevelModel(t_r=run.repetition_time, mask_img=nib.load(run.mask), noise_model="ols",
                          signal_scaling=0, smoothing_fwhm=None, minimize_memory=True)
    flm.fit(str(run.bold), design_matrices=X)
    ref = flm.compute_contrast("pain_unmodulated - pain_modulated", output_type="effect_size")
    a = ours["mi_beta"].get_fdata()[bold.mask]
    b = ref.get_fdata()[bold.mask]
    assert np.allclose(a, b, atol=1e-4 * np.abs(b).max())
    # ROI-mean beta (OLS) is exactly the mean of the voxel betas
    masks = fl.region_masks(["dacc"], bold)
    B = fl.fit_roi(bold, X, masks, noise_model="ols")
    roi_mean = ours["mi_beta"].get_fdata()[masks["dacc"]].mean()
    assert B.loc["pain_unmodulated", "dacc"] - B.loc["pain_modulated", "dacc"] == pytest.approx(roi_mean, rel=1e-4)
    # smoothed and AR(1), as the modules fit their maps: the same maps as nilearn's (the simulated
    # images are zero outside the brain mask, where painplast does not smooth in other signal)
    ours = fl.fit_voxelwise(bold, X, {"mi": "pain_unmodulated - pain_modulated"}, 6.0)
    flm = FirstLevelModel(t_r=run.repetition_time, mask_img=nib.load(run.mask), noise_model="ar1",
                          signal_scaling=0, smoothing_fwhm=6.0, minimize_memory=True)
    flm.fit(str(run.bold), design_matrices=X)
    ref = flm.compute_contrast("pain_unmodulated - pain_modulated", output_type="effect_size")
    b = ref.get_fdata()[bold.mask]
    diff = np.abs(ours["mi_beta"].get_fdata()[bold.mask] - b) / np.abs(b).max()
    # run_glm bins AR(1) coefficients in steps of 0.01: rounding may move the odd voxel at a bin
    # edge into the next bin (~2e-3); every other voxel agrees to 1e-5
    assert np.mean(diff < 1e-5) > 0.999 and diff.max() < 1e-2, np.sort(diff)[-5:]


@pytest.mark.parametrize("block, most", [(1 << 17, 1 << 20), (1000, 777), (64, 1 << 20), (1 << 22, 5)])
def test_inflate_reads_every_member_exactly(tmp_path, block, most):
    """_Inflate against gzip.decompress: several members, reads and outputs of any size."""
    import gzip
    rng = np.random.default_rng(0)
    raw = (rng.normal(size=200_000) * 40).astype(np.int16).tobytes() + bytes(50_000)
    cuts = [0, 1, 1000, 150_001, len(raw)]
    path = tmp_path / "members.gz"
    path.write_bytes(b"".join(gzip.compress(raw[a:b], compresslevel=1) for a, b in zip(cuts, cuts[1:])))
    with open(path, "rb") as handle:
        reader = fl._Inflate(handle, block=block, most=most)
        out = bytearray(len(raw) + 10)
        view, n = memoryview(out), 0
        while (k := reader.readinto(view[n:n + 70_001])):
            n += k
    assert n == len(raw) and bytes(out[:n]) == raw


def test_load_bold_equals_nibabel_on_a_multi_member_file_and_refuses_a_truncated_one(tmp_path):
    import gzip
    from types import SimpleNamespace
    import nibabel as nib
    rng = np.random.default_rng(1)
    data = (1000 + rng.normal(size=(14, 13, 12, 30)) * 20).astype(np.float32)   # ~260 KB compressed
    mask = np.zeros(data.shape[:3], np.uint8)
    mask[2:12, 1:11, 3:10] = 1
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    raw = nib.Nifti1Image(data, affine).to_bytes()
    bold, mask_path = tmp_path / "bold.nii.gz", tmp_path / "mask.nii.gz"
    bold.write_bytes(gzip.compress(raw[:200_001]) + gzip.compress(raw[200_001:]))
    nib.save(nib.Nifti1Image(mask, affine), mask_path)
    run = SimpleNamespace(bold=bold, mask=mask_path, repetition_time=2.0, name="task-pain")
    got = fl.load_bold(run)
    assert np.array_equal(got.data, data[mask > 0].T)
    bold.write_bytes(gzip.compress(raw[:-4000]))
    with pytest.raises(InputError, match="shorter than its header"):
        fl.load_bold(run)
