"""Deterministic writers: the same call writes the same bytes, on any machine, at any time.

Random content is seeded from the file's own name (:func:`rng_for`), so two builds of a case
are byte-identical. Gzipped NIfTIs are written with ``mtime=0`` (a gzip header otherwise carries
the time of writing).
"""
from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import nibabel as nib
import numpy as np
import pandas as pd


def rng_for(*parts: object) -> np.random.Generator:
    """A random generator seeded by ``parts`` (e.g. a file name), never by the clock."""
    digest = hashlib.sha256("\0".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def text(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return path


def placeholder(path: Path) -> Path:
    """An empty file, as bids-examples keeps the outputs painplast never reads (figures, .h5, .gii)."""
    return text(path, "")


def json_file(path: Path, data: Mapping[str, Any]) -> Path:
    return text(path, json.dumps(data, indent=2) + "\n")


def tsv(path: Path, table: pd.DataFrame | Mapping[str, Any]) -> Path:
    """A BIDS TSV: tab-separated, ``n/a`` for missing values, ``\\n`` line ends."""
    frame = table if isinstance(table, pd.DataFrame) else pd.DataFrame(table)
    return text(path, frame.to_csv(sep="\t", index=False, na_rep="n/a", lineterminator="\n",
                                   float_format="%.6g"))


def nifti(path: Path, data: np.ndarray, affine: np.ndarray, tr: float | None = None,
          template: bool = True) -> Path:
    """A NIfTI-1 image (``.nii`` or ``.nii.gz``) with the data's dtype, sform and qform set.

    ``tr`` (seconds) goes into ``pixdim[4]`` with ``xyzt_units`` in seconds, as fMRIPrep and
    dcm2niix write 4-D series. ``template``: the sform code says MNI space (4), as fMRIPrep's
    standard-space outputs do; else scanner space (1), as raw data.
    """
    image = nib.Nifti1Image(np.asarray(data), np.asarray(affine, float))
    header = image.header
    header.set_xyzt_units("mm", "sec")
    image.set_sform(affine, code=4 if template else 1)
    image.set_qform(affine, code=4 if template else 1)
    if tr is not None:
        zooms = header.get_zooms()
        header.set_zooms(tuple(zooms[:3]) + (float(tr),))
    raw = image.to_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        # noise does not compress: large series are stored (level 0, still a gzip stream) to
        # keep the build fast; small images are compressed as usual
        level = 0 if len(raw) > 1 << 18 else 1
        path.write_bytes(gzip.compress(raw, compresslevel=level, mtime=0))
    else:
        path.write_bytes(raw)
    return path
