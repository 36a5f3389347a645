"""Benchmark: painplast.stats.permutation (max-t and TFCE) against nilearn's permutation test.

40 simulated participants at 2 mm in nilearn's MNI152 brain mask (about 235,000 voxels):
smooth Gaussian noise (sigma 1.7 voxels, about 8 mm FWHM), two groups of 20, a small planted
group effect (d = 0.8 in a sphere of radius 4 voxels). The same data go to
``nilearn.glm.second_level.non_parametric_inference`` (two-sided, as painplast's default) and to
``painplast.stats.permutation.permutation_test`` with ``connectivity=6`` (nilearn labels clusters
with 6-connectivity; painplast defaults to 26 like FSL).

* TFCE: nilearn 20 permutations, painplast 1000.
* max-t only: nilearn 200 permutations, painplast 1000.

Time per permutation: nilearn's is the marginal cost ``(T(n_perm) - T(1)) / (n_perm - 1)`` (its
set-up, including the unpermuted TFCE, is excluded); painplast's is its total time divided by
the number of permutations (set-up included), so the speed-ups are conservative. Both run in
this one process with one BLAS thread and ``n_jobs=1``. Times are CPU times of this process
(``time.process_time``), which other jobs on a shared machine barely disturb; wall-clock times
are printed too. The speed-ups in the JSON line are CPU-time ratios.

Agreement: t maps within 1e-6, TFCE maps within 1e-4 relative, and FWE p maps within
Monte-Carlo error (two-sample Kolmogorov–Smirnov distance at alpha = 0.01 between the two null
distributions of the maximum, plus 2/n_perm for ties), since FWE p is the null CDF of the
maximum evaluated at each voxel's statistic.

Run from the repository root::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/tfce.py

The last line printed is one JSON object.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import time
import warnings

import numpy as np
from scipy import ndimage

N_SUBJECTS, SIGMA, EFFECT, RADIUS = 40, 1.7, 0.8, 4
N_PERM_NILEARN_TFCE, N_PERM_NILEARN_MAXT, N_PERM_PAINPLAST = 20, 200, 1000
SEED = 0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def make_data(mask: np.ndarray, seed: int = SEED):
    """Masked smooth-noise maps (n_subjects, n_voxels), float64, and the design."""
    rng = np.random.default_rng(seed)
    group = np.repeat([1.0, -1.0], N_SUBJECTS // 2)
    centre = np.array([30, 60, 40])                       # a voxel inside the brain
    grid = np.indices(mask.shape).transpose(1, 2, 3, 0)
    sphere = (np.linalg.norm(grid - centre, axis=-1) <= RADIUS)[mask]
    data = np.empty((N_SUBJECTS, int(mask.sum())))
    for i in range(N_SUBJECTS):
        noise = ndimage.gaussian_filter(rng.standard_normal(mask.shape), SIGMA)[mask]
        data[i] = noise / noise.std()
    data[:, sphere] += EFFECT / 2 * group[:, None]         # group difference of EFFECT SD
    design = np.column_stack([np.ones(N_SUBJECTS), group])
    return data, design, sphere


def ks_bound(b1: int, b2: int) -> float:
    return 1.63 * np.sqrt((b1 + b2) / (b1 * b2)) + 2.0 / min(b1, b2)


class Timer:
    """Wall-clock and CPU time of a block (CPU: this process, plus finished children)."""

    def __enter__(self):
        self.wall0, self.cpu0 = time.perf_counter(), self._cpu()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall0
        self.cpu = self._cpu() - self.cpu0

    @staticmethod
    def _cpu() -> float:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + children.ru_utime + children.ru_stime


def run_painplast(data, design, mask, *, tfce, n_perm, n_jobs=1, connectivity=6):
    from painplast.stats.permutation import permutation_test

    with Timer() as timer:
        result = permutation_test(data, design, [0, 1], n_permutations=n_perm, tfce=tfce,
                                  mask=mask, two_sided=True, random_state=SEED, n_jobs=n_jobs,
                                  connectivity=connectivity)
    return result, timer


def run_nilearn(images, design, mask_img, *, tfce, n_perm):
    import pandas as pd
    from nilearn.glm.second_level import non_parametric_inference

    frame = pd.DataFrame(design, columns=["intercept", "group"])
    with Timer() as timer, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = non_parametric_inference(images, design_matrix=frame,
                                       second_level_contrast="group", mask=mask_img,
                                       n_perm=n_perm, tfce=tfce, two_sided_test=True,
                                       random_state=SEED, n_jobs=1)
    return out, timer


def main() -> dict:
    import nibabel as nib
    import nilearn
    from nilearn.datasets import load_mni152_brain_mask

    mask_img = load_mni152_brain_mask(resolution=2)
    mask = np.asarray(mask_img.get_fdata() > 0)
    data, design, sphere = make_data(mask)
    n_voxels = data.shape[1]
    print(f"data: {N_SUBJECTS} participants (2 groups), 2 mm MNI mask {mask.shape}, "
          f"{n_voxels} voxels, planted d={EFFECT} in {int(sphere.sum())} voxels; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; {os.cpu_count()} CPUs, "
          f"{platform.machine()}; nilearn {nilearn.__version__}, numpy {np.__version__}")

    # painplast first, so that its peak RSS is measured before nilearn's images exist
    ours_tfce, ours_tfce_time = run_painplast(data, design, mask, tfce=True,
                                              n_perm=N_PERM_PAINPLAST)
    ours_maxt, ours_maxt_time = run_painplast(data, design, mask, tfce=False,
                                              n_perm=N_PERM_PAINPLAST)
    painplast_rss = peak_rss_mb()
    print(f"painplast TFCE (6-conn): {N_PERM_PAINPLAST} permutations in "
          f"{ours_tfce_time.cpu:.1f} s CPU ({ours_tfce_time.wall:.1f} s wall); max-t only: "
          f"{ours_maxt_time.cpu:.2f} s CPU ({ours_maxt_time.wall:.2f} s wall); "
          f"peak RSS {painplast_rss:.0f} MB")
    _, ours_26_time = run_painplast(data, design, mask, tfce=True, n_perm=100,
                                    connectivity=26)
    print(f"painplast TFCE with 26-connectivity (the default), 100 permutations: "
          f"{ours_26_time.cpu:.1f} s CPU ({ours_26_time.wall:.1f} s wall)")

    images = []
    for row in data:
        volume = np.zeros(mask.shape)
        volume[mask] = row
        images.append(nib.Nifti1Image(volume, mask_img.affine))
    theirs_tfce, theirs_tfce_time = run_nilearn(images, design, mask_img, tfce=True,
                                                n_perm=N_PERM_NILEARN_TFCE)
    _, theirs_tfce_1 = run_nilearn(images, design, mask_img, tfce=True, n_perm=1)
    theirs_maxt, theirs_maxt_time = run_nilearn(images, design, mask_img, tfce=False,
                                                n_perm=N_PERM_NILEARN_MAXT)
    _, theirs_maxt_1 = run_nilearn(images, design, mask_img, tfce=False, n_perm=1)
    print(f"nilearn TFCE: {N_PERM_NILEARN_TFCE} permutations in {theirs_tfce_time.cpu:.1f} s "
          f"CPU ({theirs_tfce_time.wall:.1f} s wall), 1 permutation {theirs_tfce_1.cpu:.1f} s CPU; "
          f"max-t only: {N_PERM_NILEARN_MAXT} in {theirs_maxt_time.cpu:.1f} s CPU "
          f"({theirs_maxt_time.wall:.1f} s wall), 1 in {theirs_maxt_1.cpu:.1f} s CPU")

    # agreement
    t_theirs = theirs_tfce["t"].get_fdata()[mask]
    t_diff = float(np.max(np.abs(ours_tfce.t - t_theirs)))
    tfce_theirs = theirs_tfce["tfce"].get_fdata()[mask]
    tfce_rel = float(np.max(np.abs(ours_tfce.tfce - tfce_theirs)
                            / np.maximum(np.abs(tfce_theirs), 1e-12 * np.abs(tfce_theirs).max())))
    p_tfce_theirs = 10 ** -theirs_tfce["logp_max_tfce"].get_fdata()[mask]
    p_maxt_theirs = 10 ** -theirs_maxt.get_fdata()[mask]
    p_tfce_diff = float(np.max(np.abs(ours_tfce.p_fwe_tfce - p_tfce_theirs)))
    p_maxt_diff = float(np.max(np.abs(ours_maxt.p_fwe - p_maxt_theirs)))
    bound_tfce = ks_bound(N_PERM_NILEARN_TFCE, N_PERM_PAINPLAST)
    bound_maxt = ks_bound(N_PERM_NILEARN_MAXT, N_PERM_PAINPLAST)
    agree = {
        "t": t_diff <= 1e-6,
        "tfce": tfce_rel <= 1e-4,
        "p_fwe_tfce": p_tfce_diff <= bound_tfce,
        "p_fwe_max_t": p_maxt_diff <= bound_maxt,
        "same_t_both_runs": bool(np.array_equal(ours_tfce.t, ours_maxt.t)),
    }
    print(f"t max |diff| {t_diff:.2e}; TFCE max relative diff {tfce_rel:.2e}; "
          f"FWE p (TFCE) max |diff| {p_tfce_diff:.3f} (bound {bound_tfce:.3f}); "
          f"FWE p (max-t) max |diff| {p_maxt_diff:.3f} (bound {bound_maxt:.3f}); {agree}")
    print(f"planted sphere: painplast min p_fwe_tfce {ours_tfce.p_fwe_tfce[sphere].min():.4f}, "
          f"min p_fwe {ours_maxt.p_fwe[sphere].min():.4f}; nilearn min p_fwe_tfce "
          f"{p_tfce_theirs[sphere].min():.4f}, min p_fwe {p_maxt_theirs[sphere].min():.4f}")

    def marginal(many, one, n_perm, kind):
        return (getattr(many, kind) - getattr(one, kind)) / (n_perm - 1)

    nilearn_tfce = marginal(theirs_tfce_time, theirs_tfce_1, N_PERM_NILEARN_TFCE, "cpu")
    nilearn_maxt = marginal(theirs_maxt_time, theirs_maxt_1, N_PERM_NILEARN_MAXT, "cpu")
    nilearn_tfce_wall = marginal(theirs_tfce_time, theirs_tfce_1, N_PERM_NILEARN_TFCE, "wall")
    nilearn_maxt_wall = marginal(theirs_maxt_time, theirs_maxt_1, N_PERM_NILEARN_MAXT, "wall")
    ours_tfce_pp = ours_tfce_time.cpu / N_PERM_PAINPLAST
    ours_maxt_pp = ours_maxt_time.cpu / N_PERM_PAINPLAST
    ours_tfce_wall = ours_tfce_time.wall / N_PERM_PAINPLAST
    ours_maxt_wall = ours_maxt_time.wall / N_PERM_PAINPLAST
    print(f"CPU time per permutation, TFCE: nilearn {nilearn_tfce * 1e3:.0f} ms, painplast "
          f"{ours_tfce_pp * 1e3:.1f} ms (26-conn: {ours_26_time.cpu / 100 * 1e3:.0f} ms), "
          f"speed-up {nilearn_tfce / ours_tfce_pp:.1f}x (wall clock: {nilearn_tfce_wall * 1e3:.0f}"
          f" vs {ours_tfce_wall * 1e3:.1f} ms, {nilearn_tfce_wall / ours_tfce_wall:.1f}x)")
    print(f"CPU time per permutation, max-t: nilearn {nilearn_maxt * 1e3:.1f} ms, painplast "
          f"{ours_maxt_pp * 1e3:.2f} ms, speed-up {nilearn_maxt / ours_maxt_pp:.1f}x "
          f"(wall clock: {nilearn_maxt_wall * 1e3:.1f} vs {ours_maxt_wall * 1e3:.2f} ms, "
          f"{nilearn_maxt_wall / ours_maxt_wall:.1f}x)")
    summary = {
        "benchmark": "tfce",
        "nilearn_s_per_perm": round(nilearn_tfce, 4),
        "painplast_s_per_perm": round(ours_tfce_pp, 5),
        "speedup": round(nilearn_tfce / ours_tfce_pp, 1),
        "nilearn_no_tfce_s_per_perm": round(nilearn_maxt, 5),
        "painplast_no_tfce_s_per_perm": round(ours_maxt_pp, 5),
        "speedup_no_tfce": round(nilearn_maxt / ours_maxt_pp, 1),
        "speedup_wall": round(nilearn_tfce_wall / ours_tfce_wall, 1),
        "speedup_no_tfce_wall": round(nilearn_maxt_wall / ours_maxt_wall, 1),
        "painplast_26conn_s_per_perm": round(ours_26_time.cpu / 100, 4),
        "t_max_abs_diff": t_diff,
        "tfce_max_rel_diff": tfce_rel,
        "agree": all(agree.values()),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "painplast_peak_rss_mb": round(painplast_rss, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
