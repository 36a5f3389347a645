"""Images of one simulated participant, made from that participant's latent truths.

Signal model (percent signal change, on a brain-masked grid of V voxels, T volumes):

* task responses: HRF-convolved (nilearn's Glover model, as the analysis uses) condition and
  parametric-modulator regressors, scaled per region by the participant's latent amplitudes;
* resting fluctuations: band-limited (0.01-0.2 Hz) network factors loaded by the pain ROIs and
  the Seitzman (2018) network spheres, with the planted couplings as extra shared factors;
* noise: spatially smooth (low-rank, ``noise_fwhm_mm``) and voxel-wise parts, both AR(1) in time,
  scaled per site; motion: six realignment parameters whose linear imprint and spikes enter the
  BOLD, so that fMRIPrep-style confound regression and scrubbing matter.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import ndimage, signal

from .. import atlas
from .latent import GM_REGIONS, GM_SCALE, PAIN_REGIONS, rating_curve
from .parameters import BMRK3_TEMPERATURES, SimulationParameters


@dataclass(frozen=True)
class Grid:
    shape: tuple[int, int, int]
    affine: np.ndarray
    mask: np.ndarray          # bool, shape
    xyz: np.ndarray           # (V, 3) mm of mask voxels
    gm: np.ndarray            # (V,) template GM probability
    wm: np.ndarray            # (V,)
    csf: np.ndarray           # (V,)
    t1: np.ndarray            # (V,) template T1 intensity
    gm_full: np.ndarray       # full-grid GM template (for writing)
    wm_full: np.ndarray

    @property
    def n_voxels(self) -> int:
        return int(self.mask.sum())

    def to_volume(self, values: np.ndarray, dtype=np.float32) -> np.ndarray:
        """(V,) or (T, V) masked values -> (X, Y, Z) or (X, Y, Z, T) array."""
        values = np.asarray(values)
        if values.ndim == 1:
            out = np.zeros(self.shape, dtype)
            out[self.mask] = values
            return out
        out = np.zeros(self.shape + (values.shape[0],), dtype)
        out[self.mask] = values.T
        return out


@lru_cache(maxsize=4)
def make_grid(resolution: int) -> Grid:
    """The MNI152 grid at ``resolution`` mm with nilearn's (offline) templates."""
    mask_img = atlas.brain_mask(resolution)
    mask = mask_img.get_fdata() > 0.5
    affine = mask_img.affine.copy()
    gm = np.clip(atlas.gm_template(resolution).get_fdata(), 0, 1)
    from nilearn.datasets import load_mni152_wm_template
    wm = np.clip(load_mni152_wm_template(resolution=resolution).get_fdata(), 0, 1)
    t1 = atlas.template(resolution).get_fdata()
    csf = np.clip(1.0 - gm - wm, 0, 1)
    xyz = atlas.voxel_coordinates(mask.shape, affine)[mask]
    return Grid(mask.shape, affine, mask, xyz, gm[mask], wm[mask], csf[mask], t1[mask],
                gm.astype(np.float32), wm.astype(np.float32))


@lru_cache(maxsize=8)
def region_profiles(resolution: int, radius: float = 6.0) -> dict[str, np.ndarray]:
    """(V,) 0/1 membership of each pain ROI sphere and each region (union of its spheres)."""
    g = make_grid(resolution)
    out = {}
    for roi in atlas.PAIN_ROIS:
        out[roi.name] = atlas.sphere_mask(roi.center, (g.shape, g.affine), radius)[g.mask].astype(np.float32)
    for region, names in atlas.REGIONS.items():
        out.setdefault(region, np.clip(sum(out[n] for n in names), 0, 1).astype(np.float32))
    return out


@lru_cache(maxsize=8)
def smooth_region_profiles(resolution: int, radius: float = 6.0) -> dict[str, np.ndarray]:
    """Region profiles with soft edges (Gaussian, sigma 2 mm): gray-matter effects are blobs."""
    g = make_grid(resolution)
    out = {}
    for region in GM_REGIONS:
        vol = atlas.region_mask(region, (g.shape, g.affine), radius).astype(float)
        vol = ndimage.gaussian_filter(vol, 2.0 / resolution)
        vol /= max(vol.max(), 1e-9)
        out[region] = vol[g.mask].astype(np.float32)
    return out


@lru_cache(maxsize=4)
def network_loadings(resolution: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """(V, F) loadings of voxels in Seitzman network spheres on their network factor.

    Spheres that touch a pain ROI are left out: there, the pain ROI's own model applies.
    """
    g = make_grid(resolution)
    table = atlas.coords_atlas("seitzman")
    table = table[table.network != "unassigned"]
    nets = tuple(sorted(table.network.unique()))
    pain = np.zeros(g.n_voxels, bool)
    for prof in region_profiles(resolution).values():
        pain |= prof > 0
    L = np.zeros((g.n_voxels, len(nets)), np.float32)
    for row in table.itertuples():
        d = np.linalg.norm(g.xyz - np.array([row.x, row.y, row.z]), axis=1)
        sphere = d <= max(float(row.radius), resolution * 0.9)
        if not sphere.any() or (sphere & pain).any():
            continue
        L[sphere, nets.index(row.network)] = 0.7
    return L, nets


def smooth_fields(params: SimulationParameters, grid: Grid, k: int, fwhm: float, rng) -> np.ndarray:
    """k spatially smooth random fields, (k, V), scaled so sum_k field**2 = 1 in every voxel."""
    sigma = fwhm / 2.3548 / params.resolution
    out = np.empty((k, grid.n_voxels), np.float32)
    for i in range(k):
        vol = ndimage.gaussian_filter(rng.normal(size=grid.shape), sigma)
        out[i] = vol[grid.mask]
    out /= np.sqrt(np.sum(out**2, axis=0, keepdims=True)) + 1e-12
    return out


def motion_fields(params: SimulationParameters, grid: Grid, rng) -> np.ndarray:
    """(6, V) smooth maps of how each realignment parameter imprints on the BOLD (unit RMS)."""
    sigma = 20.0 / 2.3548 / params.resolution
    out = np.empty((6, grid.n_voxels), np.float32)
    for i in range(6):
        vol = ndimage.gaussian_filter(rng.normal(size=grid.shape), sigma)[grid.mask]
        out[i] = vol / vol.std()
    return out


def ar1(rng, shape, rho: float) -> np.ndarray:
    """AR(1) noise along axis 0 with unit marginal variance."""
    e = rng.normal(size=shape) * np.sqrt(1 - rho**2)
    e[0] /= np.sqrt(1 - rho**2)
    return signal.lfilter([1.0], [1.0, -rho], e, axis=0)


def bandlimited(rng, n_time: int, n_series: int, tr: float, low=0.01, high=0.2) -> np.ndarray:
    """(T, n) unit-variance noise restricted to [low, high] Hz."""
    spec = np.fft.rfft(rng.normal(size=(n_time * 2, n_series)), axis=0)
    freqs = np.fft.rfftfreq(n_time * 2, tr)
    spec[(freqs < low) | (freqs > high)] = 0
    x = np.fft.irfft(spec, axis=0)[:n_time]
    x -= x.mean(0)
    return x / (x.std(0) + 1e-12)


def frame_times(n: int, tr: float) -> np.ndarray:
    return np.arange(n) * tr


def regressor(onsets, durations, amplitudes, ft) -> np.ndarray:
    from nilearn.glm.first_level.hemodynamic_models import compute_regressor
    cond = np.vstack([np.asarray(onsets, float), np.asarray(durations, float), np.asarray(amplitudes, float)])
    reg, _ = compute_regressor(cond, "glover", ft, oversampling=16)
    return reg[:, 0]


def _trial_onsets(rng, n_volumes: int, tr: float, n_trials: int, duration: float) -> np.ndarray:
    total = n_volumes * tr - 14.0
    iti = rng.uniform(7.0, 11.0, n_trials)
    onsets = 4.0 + np.concatenate([[0.0], np.cumsum(duration + iti[:-1])])
    return onsets * min(1.0, (total - duration - 4.0) / (onsets[-1] - 4.0 + 1e-9))


# ----------------------------------------------------------------------------- motion


def motion(params: SimulationParameters, rng, n: int, mean_fd: float) -> pd.DataFrame:
    """Realignment parameters (mm, rad) with framewise displacement near ``mean_fd``."""
    steps = rng.standard_t(4, size=(n, 6)) * np.array([1, 1, 1, 0.02, 0.02, 0.02])
    steps[0] = 0
    # occasional spikes, as in real data
    n_spikes = rng.poisson(max(n * mean_fd / 0.12 * 0.012, 0.0))
    for t in rng.choice(np.arange(5, n), size=min(n_spikes, n - 6), replace=False):
        steps[t] *= 12
    def fd_of(st):
        return np.abs(st[:, :3]).sum(1) + 50 * np.abs(st[:, 3:]).sum(1)
    scale = mean_fd / max(fd_of(steps)[1:].mean(), 1e-9)
    steps *= scale
    params6 = np.cumsum(steps, axis=0)
    # slow drift of head position
    params6 += np.linspace(0, 1, n)[:, None] * rng.normal(0, 0.1, 6) * np.array([1, 1, 1, 0.01, 0.01, 0.01])
    names = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
    return pd.DataFrame(params6, columns=names)


def confounds_table(mot: pd.DataFrame, bold_pct: np.ndarray, grid: Grid) -> pd.DataFrame:
    """fMRIPrep-style confounds from the motion parameters and the simulated BOLD (T, V)."""
    out = {}
    for c in mot.columns:
        x = mot[c].to_numpy()
        d = np.r_[np.nan, np.diff(x)]
        out[c] = x
        out[f"{c}_derivative1"] = d
        out[f"{c}_power2"] = x**2
        out[f"{c}_derivative1_power2"] = d**2
    st = np.diff(mot.to_numpy(), axis=0)
    fd = np.abs(st[:, :3]).sum(1) + 50 * np.abs(st[:, 3:]).sum(1)
    out["framewise_displacement"] = np.r_[np.nan, fd]
    wm = grid.wm > 0.9
    csf = grid.csf > 0.6
    for name, sel in (("white_matter", wm), ("csf", csf), ("global_signal", slice(None))):
        x = bold_pct[:, sel].mean(1)
        out[name] = x
        out[f"{name}_derivative1"] = np.r_[np.nan, np.diff(x)]
    dv = np.sqrt(np.mean(np.diff(bold_pct, axis=0) ** 2, axis=1))
    out["dvars"] = np.r_[np.nan, dv]
    out["std_dvars"] = np.r_[np.nan, dv / (np.median(dv) + 1e-12)]
    noise_roi = bold_pct[:, wm | csf].astype(np.float64)
    noise_roi = noise_roi - noise_roi.mean(0)
    evals, evecs = np.linalg.eigh(noise_roi @ noise_roi.T)  # T x T: cheap left singular vectors
    for i in range(5):
        out[f"a_comp_cor_{i:02d}"] = evecs[:, -1 - i]
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------- tasks


def pain_task(params, rng, lat: pd.Series, n: int):
    temps = np.repeat(BMRK3_TEMPERATURES, 3)
    temps = rng.permutation(temps)
    onsets = _trial_onsets(rng, n, params.tr, len(temps), 6.0)
    ratings = rating_curve(temps, lat["rating_offset"], lat["rating_slope"]) + rng.normal(0, 12, len(temps))
    events = pd.DataFrame({"onset": onsets.round(2), "duration": 6.0, "trial_type": "pain",
                           "intensity": temps, "rating": np.clip(ratings, 0, 200).round(1)})
    ft = frame_times(n, params.tr)
    reg_c = regressor(onsets, np.full(len(temps), 6.0), np.ones(len(temps)), ft)
    reg_p = regressor(onsets, np.full(len(temps), 6.0), temps - temps.mean(), ft)
    prof = region_profiles(params.resolution)
    sig = np.zeros((n, len(next(iter(prof.values())))), np.float32)
    for r in PAIN_REGIONS:
        sig += np.outer(lat[f"resp_{r}"] * reg_c + lat[f"slope_{r}"] * reg_p, prof[r]).astype(np.float32)
    return events, sig


def somatotopy_task(params, rng, lat: pd.Series, grid: Grid, n: int):
    cycle, block = 40.0, 10.0
    starts = np.arange(4.0, n * params.tr - 2 * block, cycle)
    on_a, on_u = starts, starts + 2 * block
    events = pd.DataFrame({"onset": np.r_[on_a, on_u], "duration": block,
                           "trial_type": ["affected_hand"] * len(on_a) + ["unaffected_hand"] * len(on_u)})
    events = events.sort_values("onset").reset_index(drop=True)
    ft = frame_times(n, params.tr)
    sig = np.zeros((n, grid.n_voxels), np.float32)
    for which, on in (("affected", on_a), ("unaffected", on_u)):
        c = np.array([lat[f"hand_{which}_{a}"] for a in "xyz"])
        w = lat[f"hand_{which}_width"]
        blob = 2.5 * np.exp(-np.sum((grid.xyz - c) ** 2, axis=1) / (2 * w**2))
        blob[blob < 0.01] = 0
        sig += np.outer(regressor(on, np.full(len(on), block), np.ones(len(on)), ft), blob).astype(np.float32)
    return events, sig


def modulation_task(params, rng, lat: pd.Series, clin: pd.Series, n: int, noise_scale: float):
    kinds = rng.permutation(np.repeat(["pain_unmodulated", "pain_modulated"], 8))
    onsets = _trial_onsets(rng, n, params.tr, len(kinds), 6.0)
    base = rating_curve(np.full(len(kinds), 47.0), lat["rating_offset"], lat["rating_slope"])
    relief = np.where(kinds == "pain_modulated", clin["modulation_score"], 0.0)
    ratings = np.clip(base - relief + rng.normal(0, 10, len(kinds)), 0, 200).round(1)
    events = pd.DataFrame({"onset": onsets.round(2), "duration": 6.0, "trial_type": kinds,
                           "intensity": 47.0, "rating": ratings})
    ft = frame_times(n, params.tr)
    unmod = kinds == "pain_unmodulated"
    reg_u = regressor(onsets[unmod], np.full(unmod.sum(), 6.0), np.ones(unmod.sum()), ft)
    reg_m = regressor(onsets[~unmod], np.full((~unmod).sum(), 6.0), np.ones((~unmod).sum()), ft)
    prof = region_profiles(params.resolution)
    V = len(next(iter(prof.values())))
    sig = np.zeros((n, V), np.float32)
    for r in PAIN_REGIONS:
        sig += np.outer(lat[f"resp_{r}"] * reg_u + (lat[f"resp_{r}"] - lat[f"mi_{r}"]) * reg_m, prof[r]).astype(np.float32)
    # PAG fluctuations; the rACC follows them more during the modulated condition (planted PPI)
    seed = ar1(rng, (n,), 0.6)
    seed = (seed - seed.mean()) / seed.std()
    psych = reg_m / max(reg_m.max(), 1e-9)
    sig += np.outer(1.6 * seed, prof["pag"]).astype(np.float32)
    sig += np.outer(1.6 * (0.2 + lat["ppi_pag_racc"] * psych) * seed, prof["racc"]).astype(np.float32)
    return events, sig


PAIN_ROI_LOADINGS = {
    # roi: {factor: loading}; the planted coupling factors are added per participant
    "mpfc": {"DefaultMode": 0.5}, "pcc": {"DefaultMode": 0.6}, "angular_l": {"DefaultMode": 0.6},
    "angular_r": {"DefaultMode": 0.6}, "racc": {"DefaultMode": 0.3},
    "nacc_l": {"Reward": 0.45}, "nacc_r": {"Reward": 0.45},
    "insula_anterior_l": {"Salience": 0.6}, "insula_anterior_r": {"Salience": 0.6},
    "insula_posterior_l": {"SomatomotorLateral": 0.5}, "insula_posterior_r": {"SomatomotorLateral": 0.5},
    "dacc": {"Salience": 0.6}, "s1_hand_l": {"SomatomotorDorsal": 0.6}, "s1_hand_r": {"SomatomotorDorsal": 0.6},
    "s2_l": {"SomatomotorLateral": 0.6}, "s2_r": {"SomatomotorLateral": 0.6},
    "thalamus_l": {"subcortical": 0.5}, "thalamus_r": {"subcortical": 0.5},
    "amygdala_l": {"MedialTemporalLobe": 0.5}, "amygdala_r": {"MedialTemporalLobe": 0.5},
    "dlpfc_l": {"FrontoParietal": 0.6}, "dlpfc_r": {"FrontoParietal": 0.6},
    "pag": {"brainstem": 0.5}, "rvm": {"brainstem": 0.5},
}


def rest_task(params, rng, lat: pd.Series, grid: Grid, n: int):
    L_net, nets = network_loadings(params.resolution)
    factors = list(nets) + ["subcortical", "brainstem", "coupling_mpfc_nacc"]
    F = bandlimited(rng, n, len(factors), params.tr)
    sig = (F[:, : len(nets)] @ L_net.T).astype(np.float32)  # Seitzman spheres
    prof = region_profiles(params.resolution)
    c = float(lat["coupling_mpfc_nacc"])
    w = float(lat["loading_dmn_insula"])
    for roi, loads in PAIN_ROI_LOADINGS.items():
        loads = dict(loads)
        if roi in ("mpfc", "nacc_l", "nacc_r"):
            # corr(mPFC, NAcc) = c: loadings sqrt|c| on both sides, sign on the NAcc side
            loads["coupling_mpfc_nacc"] = np.sqrt(abs(c)) * (np.sign(c) if roi != "mpfc" else 1.0)
        if roi.startswith("insula_"):
            loads["DefaultMode"] = loads.get("DefaultMode", 0.0) + w
        x = sum(v * F[:, factors.index(k)] for k, v in loads.items())
        private = np.sqrt(max(1.0 - sum(v**2 for v in loads.values()), 0.0))
        x = x + private * bandlimited(rng, n, 1, params.tr)[:, 0]
        sig += np.outer(x, prof[roi]).astype(np.float32)
    return None, sig


# ----------------------------------------------------------------------------- assembly


def bold_run(params, rng, grid: Grid, task_signal: np.ndarray, site: int, sites: dict,
             mean_fd: float, fields: np.ndarray, motion_maps: np.ndarray):
    """Raw-scale BOLD (T, V) int16, its percent-change version, and the motion table."""
    n = task_signal.shape[0]
    scale = params.noise_percent * sites["noise_scale"][site]
    f = params.smooth_noise_fraction
    k = fields.shape[0]
    z = ar1(rng, (n, k), 0.5).astype(np.float32)
    noise = np.sqrt(f) * (z @ fields)
    noise += np.sqrt(1 - f) * ar1(rng, (n, grid.n_voxels), params.noise_ar1).astype(np.float32)
    pct = task_signal + scale * noise
    mot = motion(params, rng, n, mean_fd * sites["motion_scale"][site])
    m = mot.to_numpy()
    m = (m - m.mean(0)) / (m.std(0) + 1e-9)
    pct += params.motion_artifact * (m @ motion_maps).astype(np.float32)
    fd = np.r_[0.0, np.abs(np.diff(mot.to_numpy()[:, :3], axis=0)).sum(1)
               + 50 * np.abs(np.diff(mot.to_numpy()[:, 3:], axis=0)).sum(1)]
    spikes = fd > 0.5
    if spikes.any():
        pct[spikes] += (rng.normal(0, 3.0, (spikes.sum(), 1)) * (1 + fields[0][None, :])).astype(np.float32)
    tissue = 1.0 * grid.gm + 0.8 * grid.wm + 1.25 * grid.csf
    baseline = sites["intensity"][site] * tissue.astype(np.float32)
    raw = np.clip(np.rint(baseline * (1 + 0.01 * pct)), -32768, 32767).astype(np.int16)
    return raw, pct, mot


def gm_map(params, rng, grid: Grid, lat: pd.Series, site: int, sites: dict) -> np.ndarray:
    """Full-grid GM probability map (float32) for one participant."""
    prof = smooth_region_profiles(params.resolution)
    factor = np.full(grid.n_voxels, lat["gm_global"], np.float32)
    for r in GM_REGIONS:
        factor += prof[r] * (lat[f"gm_{r}"] - lat["gm_global"])
    noise = ndimage.gaussian_filter(rng.normal(size=grid.shape), 4.0 / 2.3548 / params.resolution)
    noise = noise[grid.mask] / noise[grid.mask].std() * 0.03 * sites["gm_gain"][site]
    gm = np.clip(grid.gm * GM_SCALE * factor + noise * grid.gm, 0, 1)
    return grid.to_volume(gm)
