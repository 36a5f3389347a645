"""plasticity._firstlevel's faster paths give nilearn's results to the bit: the design matrix built
without nilearn's event check, the masked streaming read, runs shared per thread."""
from __future__ import annotations

import threading

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from painplast.cohort import Cohort
from painplast.config import Config
from painplast.plasticity import _firstlevel as fl


@pytest.fixture(scope="module")
def cohort(small_cohort):
    return Cohort.from_bids(small_cohort)


def _nilearn_design(run, events, config, n, modulators=("intensity",), split_by=None, extra=None):
    """The design as nilearn builds it from the same events table (the pre-optimisation path)."""
    from nilearn.glm.first_level import make_first_level_design_matrix

    ev = fl._clean_events(events)
    if split_by is not None:
        ok = ev[split_by].notna()
        ev.loc[ok, "trial_type"] = [f"{t}_{fl.level_name(v)}" for t, v in zip(ev.loc[ok, "trial_type"],
                                                                               ev.loc[ok, split_by])]
    rows = [ev[["onset", "duration", "trial_type"]].assign(modulation=1.0)]
    for column in modulators:
        for condition, part in ev.groupby("trial_type", sort=True):
            values = pd.to_numeric(part[column], errors="coerce")
            if values.notna().sum() < 3 or values.std() < 1e-9:
                continue
            rows.append(pd.DataFrame({"onset": part["onset"], "duration": part["duration"],
                                      "trial_type": f"{condition}_x_{column}",
                                      "modulation": (values - values.mean()).fillna(0.0)}))
    conf = fl.confounds(run, fl.DEFAULT_CONFOUNDS, n)
    add = conf if extra is None else pd.concat([extra, conf], axis=1)
    return make_first_level_design_matrix(np.arange(n) * run.repetition_time, pd.concat(rows, ignore_index=True),
                                          hrf_model=config.hrf_model, drift_model="cosine",
                                          high_pass=config.high_pass, add_regs=add.to_numpy(float),
                                          add_reg_names=list(add.columns))


@pytest.mark.parametrize("hrf_model", ["glover", "spm + derivative"])
def test_design_matrix_equals_nilearn_to_the_bit(cohort, hrf_model):
    run = cohort.subject("sub-001").run("pain")
    events = run.load_events()
    config = Config(hrf_model=hrf_model)
    n = 120
    cases = [dict(), dict(modulators=(), split_by="intensity"),
             dict(extra=pd.DataFrame({"seed": np.sin(np.arange(n) / 5.0)}))]
    # duplicated events: nilearn sums their modulations (and warns)
    dup = pd.concat([events, events.iloc[:2]], ignore_index=True)
    for kw, ev in [(c, events) for c in cases] + [(dict(), dup)]:
        extra = kw.get("extra")
        ours = fl.design_matrix(run, ev, config, n_volumes=n, modulators=kw.get("modulators", ("intensity",)),
                                split_by=kw.get("split_by"), extra_regressors=extra)
        ref = _nilearn_design(run, ev, config, n, kw.get("modulators", ("intensity",)), kw.get("split_by"), extra)
        assert list(ours.columns) == list(ref.columns)
        assert np.array_equal(ours.index.to_numpy(), ref.index.to_numpy())
        assert np.array_equal(ours.to_numpy(), ref.to_numpy()), np.abs(ours.to_numpy() - ref.to_numpy()).max()
    assert any(c.endswith("_derivative") for c in ours.columns) == (hrf_model != "glover")


def test_masked_read_equals_nibabel(cohort):
    run = cohort.subject("sub-002").run("rest")
    bold = fl.load_bold(run)
    ref = np.asarray(nib.load(str(run.bold)).dataobj, dtype=np.float32)[bold.mask].T
    assert bold.data.dtype == np.float32 and np.array_equal(bold.data, ref)


def test_nan_voxel_leaves_the_mask(cohort, tmp_path):
    run = cohort.subject("sub-002").run("rest")
    img = nib.load(str(run.bold))
    arr = np.asarray(img.dataobj, dtype=np.float32)
    mask = np.asarray(nib.load(str(run.mask)).dataobj) > 0.5
    where = tuple(np.argwhere(mask)[3])
    arr[where + (7,)] = np.nan
    path = tmp_path / "bold.nii.gz"
    nib.save(nib.Nifti1Image(arr, img.affine), str(path))
    bold = fl.load_bold(_Run(path, run))   # a float image: NaN is possible and checked
    assert not bold.mask[where] and bold.mask.sum() == mask.sum() - 1
    assert np.array_equal(bold.data, arr[bold.mask].T)


class _Run:
    """A Run stand-in pointing at another BOLD file (same mask, repetition time)."""

    def __init__(self, bold, run):
        self.bold, self.mask, self.repetition_time, self.name = bold, run.mask, run.repetition_time, run.name


def test_shared_runs_are_per_thread(cohort):
    run = cohort.subject("sub-001").run("pain")
    seen = {}

    def worker(name):
        with fl.shared_runs():
            first = fl.load_bold(run)
            barrier.wait()
            seen[name] = (first, fl.load_bold(run))

    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen[0][0] is seen[0][1] and seen[1][0] is seen[1][1]       # shared within a thread
    assert seen[0][0] is not seen[1][0]                                # each thread its own block
    assert getattr(fl._SHARED, "runs", None) is None                   # nothing left in this thread


@pytest.mark.parametrize("voxel", [(2.0, 2.0, 2.0), (2.5, 3.0, 2.0)])
def test_tiled_smoother_equals_ndimage_on_an_irregular_mask(voxel):
    """The smoother computes each pass only on tiles that can reach the mask; on a lumpy mask
    (holes, a detached island, anisotropic voxels, the mask touching the image border) every
    mask voxel still equals scipy's filter of the whole zero-filled volume, and a tile plan that
    skipped a needed voxel would differ by the dropped weight (>= 1e-4 of the signal)."""
    from scipy import ndimage

    rng = np.random.default_rng(7)
    shape = (41, 47, 37)
    grid = np.indices(shape).astype(float)
    centre = np.array(shape)[:, None, None, None] / 2.0
    radius = np.array([17.0, 20.0, 15.0])[:, None, None, None]
    mask = (((grid - centre) / radius) ** 2).sum(axis=0) < 1.0
    mask &= rng.random(shape) > 0.15                    # holes
    mask[2:6, 3:8, 30:37] = True                       # an island at the border
    affine = np.diag([*voxel, 1.0])
    data = rng.normal(size=(3, int(mask.sum())))
    smoother = fl._Smoother(mask, affine, 6.0)
    got = smoother(data, dtype=np.float64)
    sigma = 6.0 / np.sqrt(8 * np.log(2)) / np.asarray(voxel)
    for t in range(3):
        vol = np.zeros(shape)
        vol[mask] = data[t]
        ref = ndimage.gaussian_filter(vol, sigma, truncate=4.0, mode="reflect")[mask]
        np.testing.assert_allclose(got[t], ref, rtol=0, atol=1e-12)
    single = smoother(data.astype(np.float32), subtract=np.zeros(data.shape[1], np.float32))
    np.testing.assert_allclose(single, got, rtol=0, atol=1e-5)
    assert sum(np.prod([s.stop - s.start for s in tile[4]]) for tile in smoother.tiles) < 3 * np.prod(smoother.shape)


def test_sphere_mask_on_its_box_equals_the_whole_grid():
    """atlas.sphere_mask measures only the sphere's bounding box in voxel space; on oblique,
    flipped and anisotropic grids, with centres inside, at the edge of and outside the grid, the
    mask equals the one measured on every voxel of the grid."""
    from scipy.spatial.transform import Rotation

    from painplast import atlas

    rng = np.random.default_rng(3)
    shape = (30, 34, 28)
    for k in range(60):
        affine = np.diag([*(rng.choice([1.0, 2.0, 2.5, 3.0], 3) * rng.choice([-1, 1], 3)), 1.0])
        if k % 2:
            affine[:3, :3] = Rotation.from_rotvec(rng.normal(size=3) * 0.4).as_matrix() @ affine[:3, :3]
        affine[:3, 3] = rng.normal(size=3) * 40
        center = affine[:3, :3] @ (rng.random(3) * np.array(shape) * 1.4 - 0.2 * np.array(shape)) + affine[:3, 3]
        radius = float(rng.choice([0.5, 3.0, 6.0, 10.0, 25.0]))
        whole = np.linalg.norm(atlas.voxel_coordinates(shape, affine) - center, axis=-1) <= radius
        ijk = np.round(np.linalg.solve(affine, np.r_[center, 1.0])[:3]).astype(int)
        if np.all((ijk >= 0) & (ijk < np.array(shape))):
            whole[tuple(ijk)] = True
        np.testing.assert_array_equal(atlas.sphere_mask(center, (shape, affine), radius), whole)
