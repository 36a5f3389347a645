"""Reading the single 3-D maps modules take as input (gray-matter maps, signature weights)."""
from __future__ import annotations

import nibabel as nib
import numpy as np

from ..errors import InputError

__all__ = ["load_volume"]


def load_volume(source, what: str, fix: str, dtype=np.float64) -> tuple[nib.spatialimages.SpatialImage, np.ndarray]:
    """One 3-D map from a file or an image (a 4-D file with a single volume counts).

    Parameters
    ----------
    source : str, Path or nibabel image
    what : str
        What the map is, for messages (``"gray-matter map"``).
    fix : str
        What to give instead when the file cannot be read.
    dtype : numpy dtype
        Of the returned values.

    Returns
    -------
    img : nibabel image
        As read (its affine is the map's).
    data : ndarray, shape (X, Y, Z)

    Raises
    ------
    InputError
        Unreadable, or not one 3-D volume; the message names the file.

    Examples
    --------
    >>> img = nib.Nifti1Image(np.ones((2, 2, 2, 1), np.float32), np.eye(4))
    >>> load_volume(img, "map", "give a map")[1].shape
    (2, 2, 2)
    >>> load_volume(nib.Nifti1Image(np.ones((2, 2, 2, 3)), np.eye(4)), "map", "give a map")
    Traceback (most recent call last):
    ...
    painplast.errors.InputError: the map has shape (2, 2, 2, 3); it must be one 3-D map; fix: ...
    """
    where = None if isinstance(source, nib.spatialimages.SpatialImage) else source
    try:
        img = source if where is None else nib.load(str(source))
        data = np.asarray(img.dataobj, dtype=dtype)
    except Exception as error:  # nibabel raises several types for unreadable files
        raise InputError(f"cannot read the {what} ({error})", path=where, fix=fix) from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"the {what} has shape {data.shape}; it must be one 3-D map", path=where,
                         fix="give a 3-D map, or a 4-D file with a single volume")
    return img, data
