"""First-level GLMs: painplast's shared first level vs a plain nilearn FirstLevelModel.

usage: python benchmarks/first_level.py [--resolutions 4 2] [--volumes 300] [--repeats 2]
                                        [--bids DIR] [--profile] [--legacy-profile]

For one simulated participant per resolution (``--volumes`` per task run; the simulator's own
counts with ``--volumes 0``), fits the three task GLMs (pain with a centred intensity modulator,
somatotopy, modulation) voxel-wise (AR(1), 6 mm smoothing, percent signal) with
painplast.plasticity._firstlevel and with nilearn's FirstLevelModel on the same image and the same
design matrix. Each GLM starts from the file on disk (both read it, page cache warm) and ends with
the contrast maps as images in memory. The two are run alternately, ``--repeats`` times, and the
fastest time of each is kept (the machine may be shared), in wall time and in this process's CPU
time (which other programs on a shared machine do not inflate); checks that the contrast estimates agree
(relative to the largest: every voxel's difference, and the share within 1e-5) and prints the time
per task GLM of each and the ratio.

``--profile`` times painplast's stages on the pain run, in wall and CPU seconds: decompress (the
gzip stream alone, not part of the total), read_mask (the masked read, which includes
decompressing; ``mask`` is its part beyond decompressing), design, smooth, fit (the data pass and
the AR(1) coefficients), contrasts (the pre-whitened fit per AR bin and the contrasts), write.
``--legacy-profile`` times the same stages as painplast computed them before
issue 18 (nibabel's full read, ndimage smoothing of the whole grid, percent signal in float64,
nilearn's run_glm and compute_contrast) on the same run. The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import gzip
import json
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

CONTRASTS = {"pain": {"pain": "pain", "pain_x_intensity": "pain_x_intensity"},
             "somatotopy": {"affected": "affected_hand", "unaffected": "unaffected_hand"},
             "modulation": {"mi": "pain_unmodulated - pain_modulated"}}
FWHM = 6.0


def dataset(res: int, volumes: int, bids: Path | None) -> Path:
    """The simulated dataset of one resolution (simulated unless ``bids`` is given)."""
    from painplast.simulate import SimulationParameters, simulate
    if bids is not None:
        return bids
    counts = {f"volumes_{t}": volumes for t in ("pain", "somatotopy", "modulation", "rest")} if volumes else {}
    root = Path(tempfile.mkdtemp(prefix="painplast-fl-")) / "bids"
    t0 = time.perf_counter()
    simulate(root, SimulationParameters(n_participants=4, n_sites=1, resolution=res, **counts), progress=False)
    print(f"simulated {res} mm, {volumes or 'default'} volumes in {time.perf_counter() - t0:.0f} s", flush=True)
    return root


def ours(run, task):
    """painplast: read, design, fit, contrast images (what a task module does per run)."""
    from painplast.config import Config
    from painplast.plasticity import _firstlevel as fl
    bold = fl.load_bold(run)
    X = fl.design_matrix(run, run.load_events(), Config(), n_volumes=bold.n_volumes,
                         modulators=("intensity",) if task == "pain" else ())
    maps = fl.contrast_maps(bold, X, CONTRASTS[task], FWHM).images(("beta", "t"))
    return bold.mask, X, {name: maps[f"{name}_beta"] for name in CONTRASTS[task]}


def nilearn_glm(run, task, X):
    import nibabel as nib
    from nilearn.glm.first_level import FirstLevelModel
    flm = FirstLevelModel(t_r=run.repetition_time, mask_img=nib.load(run.mask), noise_model="ar1",
                          signal_scaling=0, smoothing_fwhm=FWHM, minimize_memory=True)
    flm.fit(str(run.bold), design_matrices=X)
    out = {}
    for name, expr in CONTRASTS[task].items():
        out[name] = flm.compute_contrast(expr, output_type="effect_size")
        flm.compute_contrast(expr, output_type="stat")
    return out


def profile(run, legacy: bool) -> dict:
    """Seconds per stage of one task GLM (the pain run)."""
    import nibabel as nib
    from painplast.config import Config
    from painplast.derivatives import write_nifti
    from painplast.plasticity import _firstlevel as fl
    t, cpu = {}, {}
    c0 = [time.process_time()]

    def clock(name, t0):
        t[name] = round(time.perf_counter() - t0, 3)
        cpu[name] = round(time.process_time() - c0[0], 3)
        c0[0] = time.process_time()
        return time.perf_counter()

    t0 = time.perf_counter()
    with gzip.open(run.bold, "rb") as handle:
        while handle.read(1 << 24):
            pass
    t0 = clock("decompress", t0)
    if legacy:
        from scipy import ndimage
        img = nib.load(str(run.bold))
        arr = np.asarray(img.dataobj, dtype=np.float32)
        mask = np.asarray(nib.load(str(run.mask)).dataobj) > 0.5
        mask &= np.all(np.isfinite(arr), axis=3) if not np.isfinite(arr).all() else True
        data = np.ascontiguousarray(arr[mask].T)
        del arr
        bold = fl.BoldData(data, mask, np.asarray(img.affine, float), float(run.repetition_time), str(run.bold))
    else:
        bold = fl.load_bold(run)
    t0 = clock("read_mask", t0)
    X = fl.design_matrix(run, run.load_events(), Config(), n_volumes=bold.n_volumes, modulators=("intensity",))
    t0 = clock("design", t0)
    if legacy:
        vox = np.sqrt((bold.affine[:3, :3] ** 2).sum(axis=0))
        sigma = FWHM / np.sqrt(8 * np.log(2)) / vox
        smoothed = np.empty_like(bold.data)
        vol = np.zeros(bold.shape, np.float32)
        for i in range(bold.n_volumes):
            vol[bold.mask] = bold.data[i]
            smoothed[i] = ndimage.gaussian_filter(vol, sigma, mode="reflect", truncate=4.0)[bold.mask]
    else:
        smoothed, offset = fl._smooth(bold, FWHM)
    t0 = clock("smooth", t0)
    C = np.array([fl._contrast_vector(c, X.columns) for c in CONTRASTS["pain"].values()])
    if legacy:
        from nilearn.glm.contrasts import compute_contrast
        labels, results = fl._glm(fl.percent_signal(smoothed), X.to_numpy(float), "ar1")
        t0 = clock("fit", t0)
        values = [compute_contrast(labels, results, c, stat_type="t") for c in C]
        effect = np.array([v.effect_size() for v in values])
        variance = np.array([v.effect_variance() for v in values])
        t0 = clock("contrasts", t0)
    else:
        products = fl._series_products(smoothed, X.to_numpy(float), offset)   # glm_contrasts, in its steps
        bins = fl._ar1_bins(products, X.to_numpy(float))
        t0 = clock("fit", t0)
        effect, variance = fl._binned_contrasts(products, X.to_numpy(float), C, bins)
        t0 = clock("contrasts", t0)
    maps = {}
    for i, name in enumerate(CONTRASTS["pain"]):
        full = np.zeros(bold.shape)
        full[bold.mask] = effect[i]
        var = np.zeros(bold.shape)
        var[bold.mask] = variance[i]
        maps[name] = fl.ContrastMaps({name: full}, {name: var}, 1.0, bold.mask, bold.affine)
    with tempfile.TemporaryDirectory() as tmp:
        for name, m in maps.items():
            for key, img in m.images(("beta", "t")).items():
                write_nifti(Path(tmp) / f"{key}.nii.gz", img)
    clock("write", t0)
    for d in (t, cpu):
        d["total"] = round(sum(v for k, v in d.items() if k != "decompress"), 3)
        d["mask"] = round(d["read_mask"] - d["decompress"], 3)   # the masked read beyond inflating
    return {"wall": t, "cpu": cpu}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolutions", type=int, nargs="+", default=[4, 2])
    ap.add_argument("--volumes", type=int, default=300, help="volumes per run (0: the simulator's defaults)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--bids", type=Path, default=None, help="a simulated dataset to use (one resolution)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--legacy-profile", action="store_true")
    args = ap.parse_args(argv)
    from painplast.cohort import Cohort
    warnings.simplefilter("ignore")          # nilearn's notes about t_r and the given mask

    out = {"benchmark": "first_level", "volumes": args.volumes, "repeats": args.repeats}
    agree = True
    for res in args.resolutions:
        root = dataset(res, args.volumes, args.bids)
        subject = Cohort.from_bids(root).subject("sub-001")
        if args.legacy_profile:
            out[f"profile_legacy_{res}mm"] = profile(subject.run("pain"), legacy=True)
            print(f"{res} mm legacy profile (s): {out[f'profile_legacy_{res}mm']}", flush=True)
        if args.profile:
            out[f"profile_{res}mm"] = profile(subject.run("pain"), legacy=False)
            print(f"{res} mm profile (s): {out[f'profile_{res}mm']}", flush=True)
        ratios, cpu_ratios, worst, exact = [], [], 0.0, 1.0
        t_ours_sum = t_nl_sum = c_ours_sum = c_nl_sum = 0.0
        for task in CONTRASTS:
            run = subject.run(task)
            t_ours, t_nl, c_ours, c_nl = [], [], [], []
            for _ in range(args.repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                mask, X, mine = ours(run, task)
                t_ours.append(time.perf_counter() - t0)
                c_ours.append(time.process_time() - c0)
                t0, c0 = time.perf_counter(), time.process_time()
                refs = nilearn_glm(run, task, X)
                t_nl.append(time.perf_counter() - t0)
                c_nl.append(time.process_time() - c0)
            for name, ref in refs.items():
                a = mine[name].get_fdata()[mask]
                b = ref.get_fdata()[mask]
                rel = np.abs(a - b) / (np.abs(b).max() + 1e-12)
                worst = max(worst, float(rel.max()))
                exact = min(exact, float(np.mean(rel < 1e-5)))
            ratios.append(min(t_nl) / min(t_ours))
            cpu_ratios.append(min(c_nl) / min(c_ours))
            t_ours_sum += min(t_ours)
            t_nl_sum += min(t_nl)
            c_ours_sum += min(c_ours)
            c_nl_sum += min(c_nl)
            print(f"{res} mm {task}: painplast {min(t_ours):.2f} s, nilearn {min(t_nl):.2f} s "
                  f"(all: {[round(x, 2) for x in t_ours]} / {[round(x, 2) for x in t_nl]}), "
                  f"ratio {ratios[-1]:.2f}x; CPU {min(c_ours):.2f} / {min(c_nl):.2f} s, "
                  f"ratio {cpu_ratios[-1]:.2f}x", flush=True)
        ok = exact >= 0.999 and worst < 1e-2
        agree &= ok
        print(f"{res} mm: per task GLM painplast {t_ours_sum / 3:.2f} s, nilearn {t_nl_sum / 3:.2f} s, "
              f"ratio {t_nl_sum / t_ours_sum:.2f}x (per task {', '.join(f'{r:.2f}' for r in ratios)}); "
              f"CPU seconds {c_ours_sum / 3:.2f} / {c_nl_sum / 3:.2f}, ratio {c_nl_sum / c_ours_sum:.2f}x "
              f"(per task {', '.join(f'{r:.2f}' for r in cpu_ratios)}); "
              f"max relative difference {worst:.2e}; voxels within 1e-5: {exact:.4%}")
        out[f"painplast_s_per_glm_{res}mm"] = round(t_ours_sum / 3, 2)
        out[f"nilearn_s_per_glm_{res}mm"] = round(t_nl_sum / 3, 2)
        out[f"speedup_{res}mm"] = round(t_nl_sum / t_ours_sum, 2)
        out[f"speedup_min_task_{res}mm"] = round(min(ratios), 2)
        out[f"painplast_cpu_s_per_glm_{res}mm"] = round(c_ours_sum / 3, 2)
        out[f"nilearn_cpu_s_per_glm_{res}mm"] = round(c_nl_sum / 3, 2)
        out[f"cpu_speedup_{res}mm"] = round(c_nl_sum / c_ours_sum, 2)
        out[f"cpu_speedup_min_task_{res}mm"] = round(min(cpu_ratios), 2)
        out[f"max_rel_diff_{res}mm"] = float(f"{worst:.2e}")
        out[f"share_within_1e-5_{res}mm"] = round(exact, 6)
    out["agree"] = bool(agree)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
