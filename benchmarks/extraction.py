"""Connectivity time-series extraction: painplast vs nilearn's NiftiSpheresMasker / NiftiLabelsMasker.

usage: python benchmarks/extraction.py [--resolution 2] [--volumes 300] [--repeats 3] [--bids DIR]

On one simulated participant's resting run (``--volumes`` volumes), extracts region time series
from the 4-D image on disk, cleaned as the connectivity module cleans them (the module's
confounds strategy, scrubbing sample mask, detrending, high-pass filter, z-scoring):

* spheres: the 24 pain-system ROIs (6 mm, inside the brain mask, overlapping allowed):
  painplast's ``pain_parcellation`` vs nilearn's ``NiftiSpheresMasker`` (with ``dtype="float64"``:
  by default it stores the sphere means in the image's data type, so an int16 image's means are
  truncated to integers);
* labels: a label image of 300 regions (brain voxels within 10 mm of the nearest Seitzman
  coordinate, written to disk once): painplast's ``network_parcellation`` vs nilearn's
  ``NiftiLabelsMasker``.

Each extraction starts from the file (page cache warm: both read it once before timing) and ends
with the cleaned (T_kept, R) array. painplast and nilearn run alternately, ``--repeats`` times in
one process (the machine may be shared), the fastest of each is kept, in wall time and in this
process's CPU time. Checks that the time series
are equal to 1e-6 and prints the ratio. The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=int, default=2)
    ap.add_argument("--volumes", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bids", type=Path, default=None)
    args = ap.parse_args(argv)
    import nibabel as nib
    from nilearn.maskers import NiftiLabelsMasker, NiftiSpheresMasker
    from painplast import atlas
    from painplast.cohort import Cohort
    from painplast.plasticity import _firstlevel as fl
    from painplast.plasticity import connectivity as conn
    from painplast.simulate import SimulationParameters, simulate

    root = args.bids
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="painplast-ex-")) / "bids"
        counts = {f"volumes_{t}": args.volumes for t in ("pain", "somatotopy", "modulation", "rest")}
        simulate(root, SimulationParameters(n_participants=4, n_sites=1, resolution=args.resolution, **counts),
                 progress=False)
    run = Cohort.from_bids(root).subject("sub-001").run("rest")
    opts = dict(conn.DEFAULTS)
    table = run.load_confounds()
    confounds, _ = conn.confound_regressors(table, opts["confounds_strategy"], run.confounds)
    fd = conn._framewise_displacement(run, table, len(table))
    keep, _ = conn._scrub(fd, len(table), opts, conn.non_steady_state(table))
    tr = float(run.repetition_time)
    sample_mask = None if keep.all() else np.flatnonzero(keep)
    cleaning = dict(detrend=True, standardize="zscore_sample", high_pass=opts["high_pass"],
                    low_pass=opts["low_pass"], t_r=tr)
    mask_img = nib.load(run.mask)

    # a label image: brain voxels labelled by their nearest Seitzman coordinate (within 10 mm)
    from scipy.spatial import cKDTree
    brain = np.asarray(mask_img.dataobj) > 0.5
    coords = atlas.coords_atlas("seitzman")[["x", "y", "z"]].to_numpy(float)
    xyz = atlas.voxel_coordinates(brain.shape, mask_img.affine)[brain]
    dist, nearest = cKDTree(coords).query(xyz)
    labels = np.zeros(brain.shape, np.int16)
    labels[brain] = np.where(dist <= 10.0, nearest + 1, 0)
    labels_path = Path(tempfile.mkdtemp(prefix="painplast-ex-")) / "labels.nii.gz"
    nib.save(nib.Nifti1Image(labels, mask_img.affine), labels_path)

    def ours_spheres():
        bold = fl.load_bold(run)
        parc = conn.pain_parcellation(bold.shape, bold.affine, bold.mask, 6.0)
        return conn.clean(parc.means(bold.data), confounds, keep, tr, opts["high_pass"], opts["low_pass"])

    def ours_labels():
        bold = fl.load_bold(run)
        parc = conn.network_parcellation(str(labels_path), bold.shape, bold.affine, bold.mask)
        return conn.clean(parc.means(bold.data), confounds, keep, tr, opts["high_pass"], opts["low_pass"])

    def nilearn_spheres():
        # dtype: without it the masker stores sphere means in the image's dtype (int16 here:
        # truncated to integers); float64 as painplast's means
        masker = NiftiSpheresMasker([r.center for r in atlas.PAIN_ROIS], radius=6.0, mask_img=mask_img,
                                    allow_overlap=True, dtype="float64", **cleaning)
        return masker.fit_transform(str(run.bold), confounds=confounds, sample_mask=sample_mask)

    def nilearn_labels():
        masker = NiftiLabelsMasker(str(labels_path), mask_img=mask_img, **cleaning)
        return masker.fit_transform(str(run.bold), confounds=confounds, sample_mask=sample_mask)

    out = {"benchmark": "extraction", "resolution_mm": args.resolution, "volumes": int(len(table)),
           "volumes_kept": int(keep.sum()), "repeats": args.repeats}
    agree = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fl.load_bold(run)          # page cache warm for both
        for kind, mine, theirs in (("spheres", ours_spheres, nilearn_spheres), ("labels", ours_labels, nilearn_labels)):
            t_ours, t_nl, c_ours, c_nl = [], [], [], []
            for _ in range(args.repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                a = mine()
                t_ours.append(time.perf_counter() - t0)
                c_ours.append(time.process_time() - c0)
                t0, c0 = time.perf_counter(), time.process_time()
                b = theirs()
                t_nl.append(time.perf_counter() - t0)
                c_nl.append(time.process_time() - c0)
            diff = float(np.abs(a - b).max()) if a.shape == b.shape else float("inf")
            ok = diff < 1e-6
            agree &= ok
            ratio = min(t_nl) / min(t_ours)
            cpu_ratio = min(c_nl) / min(c_ours)
            print(f"{kind}: {a.shape[1]} regions x {a.shape[0]} volumes; painplast {min(t_ours):.2f} s, nilearn "
                  f"{min(t_nl):.2f} s (all: {[round(x, 2) for x in t_ours]} / {[round(x, 2) for x in t_nl]}), "
                  f"ratio {ratio:.2f}x; CPU {min(c_ours):.2f} / {min(c_nl):.2f} s, ratio {cpu_ratio:.2f}x; "
                  f"max |difference| {diff:.1e}", flush=True)
            out[f"{kind}_regions"] = int(a.shape[1])
            out[f"{kind}_painplast_s"] = round(min(t_ours), 2)
            out[f"{kind}_nilearn_s"] = round(min(t_nl), 2)
            out[f"{kind}_speedup"] = round(ratio, 2)
            out[f"{kind}_cpu_speedup"] = round(cpu_ratio, 2)
            out[f"{kind}_max_abs_diff"] = float(f"{diff:.2e}")
    out["agree"] = bool(agree)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
