"""Safe model files: a fitted biomarker pipeline as JSON + ``.npy`` arrays, never pickle.

A saved model is a directory (and, with ``archive=True``, also a ``.zip`` of that directory)::

    models/diagnosis/
      model.json                  format, versions, steps with hyper-parameters, feature names,
                                  training cohort summary, validation metrics, SHA-256 of every
                                  file and of model.json itself (the "checksum" field excluded)
      arrays/00_combat.model_.grand_mean.npy   one plain array per learned attribute
      ...
      weights.nii.gz              optional: voxel-wise weights, when metadata has mask + affine

Loading reads arrays with ``np.load(..., allow_pickle=False)`` and rebuilds each step from an
allow-list of classes by setting its learned attributes on a fresh instance; nothing in the file
is ever executed or imported. Checksums catch accidental damage (truncation, editing, a swapped
array); they are not a signature against a deliberate forger, but even a forged file can only
hold numbers, strings and the allowed step kinds.

What ``save_model`` accepts (the contract for :mod:`painplast.biomarker.model`)
--------------------------------------------------------------------------------
A fitted :class:`sklearn.pipeline.Pipeline` with named steps (or one bare final estimator),
fitted on a pandas DataFrame (so that the first step has ``feature_names_in_``; otherwise pass
``metadata["feature_names"]``). ``"passthrough"`` steps are dropped. Each step must be one of:

============================  ======================  ===========================================
step (exact class)            kind in model.json      stored
============================  ======================  ===========================================
``ComBatTransformer``         ``combat``              ComBatModel arrays + column positions
confound regression (below)   ``confound_regression`` ``coef_``, ``intercept_``, column positions
``StandardScaler``            ``standard_scaler``     ``mean_``, ``var_``, ``scale_``, ...
``Screening`` (painplast)     ``screening``           ``support_`` (bool), ``scores_``
``PCA``                       ``pca``                 ``components_``, ``mean_``, ...
``LogisticRegression``        ``logistic_regression`` ``coef_``, ``intercept_``, ``classes_``
``LinearSVC``                 ``linear_svc``          ``coef_``, ``intercept_``, ``classes_``
``Ridge``                     ``ridge``               ``coef_``, ``intercept_``
``SVR(kernel="linear")``      ``svr``                 support vectors, dual coefficients
``ConnectomeRegressor``       ``connectome_regressor`` the arrays of ``connectome.FITTED_ATTRIBUTES``
``CPMRegressor``              ``cpm``                 the arrays of ``connectome.FITTED_ATTRIBUTES``
============================  ======================  ===========================================

The connectome models (:mod:`painplast.biomarker.connectome`, which registers them with
:func:`register_estimator` when imported; importing :mod:`painplast.biomarker` does that) are
stored as one bare estimator
fitted on covariance matrices (n, R, R): their ``feature_names`` are the R region names, their
parameters plain JSON values, their state exactly the attributes listed in
:data:`~painplast.biomarker.connectome.FITTED_ATTRIBUTES` (plain arrays and numbers).

For the scikit-learn and ComBat steps every learned attribute (public and private) is stored,
so the reloaded step runs the same code on the same numbers: predictions are bitwise equal.

A confound-regression step is any transformer with the class attribute
``painplast_step_kind = "confound_regression"`` and these fitted attributes:
``confound_indices_`` (int array, positions of the confound columns in its input),
``feature_indices_`` (int array, positions of the columns to clean, in output order),
``coef_`` (shape (n_confounds, n_features_out)), ``intercept_`` (shape (n_features_out,)),
``n_features_in_`` and, when fitted on a DataFrame, ``feature_names_in_``. Its ``transform``
must return the ndarray ``X[:, feature_indices_] - (X[:, confound_indices_] @ coef_ +
intercept_)`` (float64, computed in that order); it is reloaded as
:class:`painplast.biomarker.steps.ConfoundRegression`, whose ``transform`` computes exactly that.

``metadata`` keys: ``feature_names`` (list of str), ``target`` (str), ``kind`` (str, defaults to
``"classifier"``/``"regressor"``), ``training_cohort`` (dict, e.g. n per group and site),
``validation_metrics`` (dict), ``mask`` (3-D boolean array) + ``affine`` (4 x 4) to also write
the weights as NIfTI, and any other JSON-serializable values (kept under ``metadata``).

Examples
--------
>>> import tempfile, numpy as np, pandas as pd
>>> from sklearn.pipeline import make_pipeline
>>> from sklearn.preprocessing import StandardScaler
>>> from sklearn.linear_model import LogisticRegression
>>> rng = np.random.default_rng(0)
>>> X = pd.DataFrame(rng.normal(size=(40, 3)), columns=["a", "b", "c"])
>>> y = (X["a"] + rng.normal(size=40) > 0).astype(int)
>>> pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
>>> folder = tempfile.mkdtemp()
>>> saved = save_model(pipe, f"{folder}/diagnosis", metadata={"target": "diagnosis"})
>>> loaded = load_model(saved)
>>> loaded.feature_names
['a', 'b', 'c']
>>> bool(np.array_equal(loaded.predict_proba(X), pipe.predict_proba(X)))
True
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import os
import shutil
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import sklearn
from sklearn.base import is_classifier
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR, LinearSVC
from sklearn.utils.validation import check_is_fitted

import painplast
from painplast.biomarker import steps as _steps
from painplast.biomarker.combat import ComBatTransformer
from painplast.biomarker.steps import ConfoundRegression, Screening
from painplast.errors import InputError
from painplast.stats.harmonize import ComBatModel

__all__ = ["FORMAT", "FORMAT_VERSION", "LoadedModel", "load_model", "register_estimator",
           "save_model"]

FORMAT = "painplast-model"
FORMAT_VERSION = 1
MODEL_JSON = "model.json"
WEIGHTS_NIFTI = "weights.nii.gz"

_STEP_CLASSES = {  # kind -> class; the only classes a model file can instantiate
    "combat": ComBatTransformer,
    "screening": Screening,
    "standard_scaler": StandardScaler,
    "pca": PCA,
    "logistic_regression": LogisticRegression,
    "linear_svc": LinearSVC,
    "ridge": Ridge,
    "svr": SVR,
}
#: painplast estimators of other modules, registered by those modules
#: (:func:`register_estimator`): kind -> (class, the fitted attributes to store). Only code can
#: add to it; a model file can only name a kind that is here.
_REGISTERED: dict[str, tuple[type, tuple[str, ...]]] = {}
_KIND_OF_CLASS = {cls: kind for kind, cls in _STEP_CLASSES.items()}
_CONFOUND_ATTRIBUTES = ("confound_indices_", "feature_indices_", "coef_", "intercept_",
                        "n_features_in_", "feature_names_in_")
_FIX_DAMAGED = "restore the model from an intact copy, or re-train and save it again"


# --------------------------------------------------------------------------------------------
# encoding of step state: JSON for small values, .npy files for arrays


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in text)


def _encode(value, name: str, files: dict[str, bytes]):
    """JSON description of ``value``; arrays go to ``files`` under a name derived from ``name``."""
    if isinstance(value, ComBatModel):
        return {"type": "combat_model", "empirical_bayes": value.empirical_bayes,
                "arrays": {field: _encode(getattr(value, field), f"{name}.{field}", files)
                           for field in ("site_labels", "site_sizes", "grand_mean",
                                         "pooled_variance", "covariate_betas", "gamma_star",
                                         "delta_star")}}
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            if value.ndim == 1 and all(isinstance(item, str) for item in value):
                return {"type": "object_strings", "value": value.tolist()}
            raise InputError(f"cannot store {name}: an object array of non-strings",
                             fix="convert it to a numeric or string array before saving")
        file = f"arrays/{_safe_name(name)}.npy"
        files[file] = _npy_bytes(value)
        return {"type": "array", "file": file}
    if isinstance(value, np.generic):
        file = f"arrays/{_safe_name(name)}.npy"
        files[file] = _npy_bytes(np.asarray(value))
        return {"type": "numpy_scalar", "file": file}
    if value is None or isinstance(value, (bool, int, str)):
        return value  # plain JSON, readable as-is in model.json
    if isinstance(value, float):
        return value if math.isfinite(value) else {"type": "float", "value": repr(value)}
    if isinstance(value, (tuple, list)):
        return {"type": type(value).__name__,
                "items": [_encode(item, f"{name}.{i}", files) for i, item in enumerate(value)]}
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {"type": "dict",
                "items": {key: _encode(item, f"{name}.{key}", files)
                          for key, item in value.items()}}
    raise InputError(f"cannot store {name} of type {type(value).__name__} in a safe model file",
                     fix="use only the supported pipeline steps (see painplast.biomarker.store)")


def _decode(spec, arrays: dict[str, np.ndarray], where: str):
    """Inverse of :func:`_encode`."""
    if spec is None or isinstance(spec, (bool, int, float, str)):
        return spec
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == "array":
        return arrays[spec["file"]]
    if kind == "numpy_scalar":
        return arrays[spec["file"]][()]
    if kind == "float":
        return float(spec["value"])
    if kind == "object_strings":
        return np.asarray(spec["value"], dtype=object)
    if kind in ("tuple", "list"):
        items = [_decode(item, arrays, where) for item in spec["items"]]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict":
        return {key: _decode(item, arrays, where) for key, item in spec["items"].items()}
    if kind == "combat_model":
        return ComBatModel(empirical_bayes=spec["empirical_bayes"],
                           **{field: _decode(item, arrays, where)
                              for field, item in spec["arrays"].items()})
    raise InputError(f"unknown value type {kind!r} in {where}",
                     fix="load it with the painplast version that wrote it")


# --------------------------------------------------------------------------------------------
# saving


def _pipeline_steps(model) -> list[tuple[str, object]]:
    if isinstance(model, Pipeline):
        steps = [(name, step) for name, step in model.steps
                 if step is not None and step != "passthrough"]
    else:
        steps = [(_KIND_OF_CLASS.get(type(model), type(model).__name__.lower()), model)]
    if not steps:
        raise InputError("the pipeline has no steps to save", fix="save a fitted pipeline")
    return steps


def register_estimator(kind: str, cls: type, attributes) -> None:
    """Allow a painplast estimator class in model files.

    Parameters
    ----------
    kind : str
        Its name in model.json.
    cls : type
        A scikit-learn-style estimator whose ``get_params()`` are plain JSON values.
    attributes : sequence of str
        The fitted attributes to store (plain arrays, numbers, strings or None); loading sets
        exactly these on a fresh ``cls(**params)``.
    """
    _REGISTERED[str(kind)] = (cls, tuple(attributes))


def _step_kind(step) -> str:
    if getattr(step, "painplast_step_kind", None) == "confound_regression":
        return "confound_regression"
    for kind, (cls, _) in _REGISTERED.items():
        if type(step) is cls:
            return kind
    kind = _KIND_OF_CLASS.get(type(step))
    if kind is None:
        raise InputError(f"pipeline step {type(step).__name__} cannot be stored in a safe model "
                         "file", fix="use ComBatTransformer, confound regression, StandardScaler, "
                         "PCA, LogisticRegression, LinearSVC, Ridge or SVR(kernel='linear')")
    if kind == "svr" and step.kernel != "linear":
        raise InputError(f"SVR with kernel={step.kernel!r} cannot be stored",
                         fix="use SVR(kernel='linear') or Ridge")
    return kind


def _encode_step(index: int, name: str, step, files: dict[str, bytes]) -> dict:
    kind = _step_kind(step)
    prefix = f"{index:02d}_{name}"
    try:
        check_is_fitted(step)
    except Exception as error:  # NotFittedError, or a duck-typed step without sklearn's markers
        raise InputError(f"pipeline step {name!r} is not fitted ({error})",
                         fix="fit the pipeline before saving it") from None
    if kind == "confound_regression":
        params = step.get_params(deep=False) if hasattr(step, "get_params") else {}
        state = {attr: getattr(step, attr) for attr in _CONFOUND_ATTRIBUTES if hasattr(step, attr)}
    elif kind in _REGISTERED:   # painplast's own estimators: their listed state only
        params = step.get_params(deep=False)
        state = {attr: getattr(step, attr) for attr in _REGISTERED[kind][1]}
    else:
        params = step.get_params(deep=False)
        state = {attr: value for attr, value in vars(step).items() if attr not in params}
    return {"name": name, "kind": kind, "class": type(step).__name__,
            "params": {key: _encode(value, f"{prefix}.param.{key}", files)
                       for key, value in params.items()},
            "state": {attr: _encode(value, f"{prefix}.{attr}", files)
                      for attr, value in state.items()}}


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value).__name__)


def _canonical(document: dict) -> bytes:
    """The bytes that the JSON checksum covers: the document without its "checksum" field."""
    body = {key: value for key, value in document.items() if key != "checksum"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode()


def _voxel_weights(steps) -> np.ndarray:
    """Final linear weights mapped back through PCA and StandardScaler, (n_outputs, n_features)."""
    final = steps[-1][1]
    coef = np.atleast_2d(np.asarray(final.coef_, dtype=np.float64))
    for _, step in reversed(steps[:-1]):
        if isinstance(step, PCA):
            if step.whiten:
                coef = coef / np.sqrt(step.explained_variance_)
            coef = coef @ step.components_
        elif isinstance(step, Screening):
            coef = step.inverse_transform(coef)
        elif isinstance(step, StandardScaler):
            if step.scale_ is not None:
                coef = coef / step.scale_
        else:
            break  # ComBat / confound regression: weights are in their output space
    return coef


def _weights_nifti(steps, mask, affine) -> bytes:
    import nibabel as nib

    mask = np.asarray(mask, dtype=bool)
    affine = np.asarray(affine, dtype=np.float64)
    if mask.ndim != 3 or affine.shape != (4, 4):
        raise InputError(f"metadata mask must be 3-D and affine 4 x 4, got shapes {mask.shape} "
                         f"and {affine.shape}", fix="pass the analysis mask array and its affine")
    weights = _voxel_weights(steps)
    if weights.shape[1] != int(mask.sum()):
        raise InputError(f"the mask has {int(mask.sum())} voxels but the model has "
                         f"{weights.shape[1]} feature weights", fix="give the mask that selected "
                         "exactly the model's features, in the same (C) order")
    volume = np.zeros(mask.shape + (weights.shape[0],), dtype=np.float32)
    volume[mask] = weights.T
    if weights.shape[0] == 1:
        volume = volume[..., 0]
    image = nib.Nifti1Image(volume, affine)
    image.header.set_xyzt_units("mm")
    return gzip.compress(image.to_bytes(), mtime=0)


def _write_tree(directory: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _write_zip(target: Path, top: str, files: dict[str, bytes]) -> None:
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(f"{top}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, files[name])
    os.replace(temporary, target)


def save_model(model, path, *, metadata: Mapping, archive: bool = False,
               overwrite: bool = False) -> Path:
    """Save a fitted pipeline as a directory of JSON + ``.npy`` files (no pickle).

    Parameters
    ----------
    model : sklearn.pipeline.Pipeline or estimator
        Fitted; steps among the supported ones (see the module docstring).
    path : str or path-like
        Directory to create (e.g. ``OUTPUT_DIR/models/diagnosis``).
    metadata : mapping
        ``feature_names``, ``target``, ``kind``, ``training_cohort``, ``validation_metrics``,
        optional ``mask`` (3-D bool array) + ``affine`` (4 x 4) for ``weights.nii.gz``, and any
        other JSON-serializable entries.
    archive : bool, default False
        Also write ``<path>.zip`` holding the same files under the directory's name.
    overwrite : bool, default False
        Replace an existing model directory (and archive) at ``path``.

    Returns
    -------
    Path
        The model directory.

    Raises
    ------
    InputError
        For an unsupported or unfitted step, non-serializable metadata or an existing ``path``.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from sklearn.linear_model import Ridge
    >>> ridge = Ridge().fit(np.eye(3), [1.0, 2.0, 3.0])
    >>> folder = tempfile.mkdtemp()
    >>> save_model(ridge, f"{folder}/age", metadata={"feature_names": ["x", "y", "z"]}).name
    'age'
    """
    path = Path(path)
    if not isinstance(metadata, Mapping):
        raise InputError("metadata must be a mapping", fix="pass metadata={...}")
    metadata = dict(metadata)
    mask, affine = metadata.pop("mask", None), metadata.pop("affine", None)
    steps = _pipeline_steps(model)
    files: dict[str, bytes] = {}
    step_specs = [_encode_step(i, name, step, files) for i, (name, step) in enumerate(steps)]

    first, final = steps[0][1], steps[-1][1]
    fitted_names = getattr(first, "feature_names_in_", None)
    given_names = metadata.pop("feature_names", None)
    if fitted_names is not None:
        feature_names = [str(name) for name in fitted_names]
        if given_names is not None and list(given_names) != feature_names:
            raise InputError("metadata feature_names differ from the columns the pipeline was "
                             "fitted on", fix="drop metadata['feature_names'] or make them equal")
    elif given_names is not None:
        feature_names = [str(name) for name in given_names]
    else:
        raise InputError("the pipeline was fitted on an array, so its feature names are unknown",
                         fix="fit it on a DataFrame or pass metadata['feature_names']")
    n_in = getattr(first, "n_features_in_", len(feature_names))
    if len(feature_names) != n_in:
        raise InputError(f"{len(feature_names)} feature names for a model with {n_in} inputs",
                         fix="pass one name per input column")

    weights = None
    if mask is not None or affine is not None:
        if mask is None or affine is None:
            raise InputError("metadata has only one of mask and affine",
                             fix="give both to write voxel-wise weights, or neither")
        files[WEIGHTS_NIFTI] = _weights_nifti(steps, mask, affine)
        weights = {"file": WEIGHTS_NIFTI, "affine": np.asarray(affine, float).tolist(),
                   "shape": list(np.shape(mask))}

    kind = metadata.pop("kind", "classifier" if is_classifier(final) else "regressor")
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "painplast_version": painplast.__version__,
        "library_versions": {"numpy": np.__version__, "scikit-learn": sklearn.__version__},
        "model": {"kind": kind, "estimator": type(final).__name__,
                  "input": "dataframe" if fitted_names is not None else "array"},
        "feature_names": feature_names,
        "steps": step_specs,
        "metadata": metadata,
        "weights": weights,
        "files": {name: {"sha256": _sha256(data), "bytes": len(data)}
                  for name, data in sorted(files.items())},
    }
    try:  # normalize numpy values, fail on anything JSON cannot hold
        document = json.loads(json.dumps(document, default=_json_default, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise InputError(f"metadata cannot be written as JSON ({error})",
                         fix="use only numbers, strings, lists and dicts in metadata") from None
    document["checksum"] = _sha256(_canonical(document))
    files[MODEL_JSON] = (json.dumps(document, indent=1, sort_keys=True, allow_nan=False)
                         + "\n").encode()

    zip_path = path.with_name(path.name + ".zip")
    for target in (path, zip_path) if archive else (path,):
        if target.exists() and not overwrite:
            raise InputError("already exists", path=target,
                             fix="choose another path or pass overwrite=True")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    _write_tree(temporary, files)
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
        os.replace(temporary, path)
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    else:
        os.replace(temporary, path)
    if archive:
        _write_zip(zip_path, path.name, files)
    return path


# --------------------------------------------------------------------------------------------
# loading


class _Reader:
    """Bytes of the files of a model directory or zip archive, with errors naming the file."""

    def __init__(self, path: Path):
        self.path = path
        self._zip = None
        self._prefix = ""
        if path.is_file() and path.name == MODEL_JSON:
            self.path = path = path.parent
        if path.is_dir():
            return
        if not path.exists():
            raise InputError("no model at this path", path=path,
                             fix="give the directory (or .zip) written by save_model")
        if not zipfile.is_zipfile(path):
            raise InputError("is not a painplast model (neither a model directory nor a zip "
                             "archive)", path=path, fix="give the directory (or .zip) written by "
                             "save_model")
        try:
            self._zip = zipfile.ZipFile(path)
            names = self._zip.namelist()
        except (zipfile.BadZipFile, OSError) as error:
            raise InputError(f"is not a readable zip archive ({error})", path=path,
                             fix=_FIX_DAMAGED) from None
        tops = [name[: -len(MODEL_JSON)] for name in names
                if name == MODEL_JSON or (name.endswith("/" + MODEL_JSON)
                                          and name.count("/") == 1)]
        self._prefix = tops[0] if len(tops) == 1 else ""

    def where(self, name: str) -> str:
        if self._zip is not None:
            return f"{self.path}:{self._prefix}{name}"
        return str(self.path / name)

    def read(self, name: str) -> bytes:
        try:
            if self._zip is not None:
                return self._zip.read(self._prefix + name)
            return (self.path / name).read_bytes()
        except (KeyError, FileNotFoundError, IsADirectoryError):
            what = ("is not a painplast model (it has no model.json)" if name == MODEL_JSON
                    else "is missing from the model")
            raise InputError(what, path=self.where(name),
                             fix="give the directory (or .zip) written by save_model"
                             if name == MODEL_JSON else _FIX_DAMAGED) from None
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise InputError(f"cannot be read ({error})", path=self.where(name),
                             fix=_FIX_DAMAGED) from None

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def _read_document(reader: _Reader) -> dict:
    where = reader.where(MODEL_JSON)
    try:
        document = json.loads(reader.read(MODEL_JSON).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"is not valid JSON, so it was truncated, edited or is not a painplast "
                         f"model ({error})", path=where, fix=_FIX_DAMAGED) from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InputError(f"is not a painplast model file (no \"format\": \"{FORMAT}\")",
                         path=where, fix="load a model written by painplast's save_model")
    version = document.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InputError(f"has an invalid format_version {version!r}", path=where,
                         fix=_FIX_DAMAGED)
    if version > FORMAT_VERSION:
        raise InputError(f"uses model format {version}, written by painplast "
                         f"{document.get('painplast_version', '?')}; this painplast "
                         f"({painplast.__version__}) reads format {FORMAT_VERSION} and older",
                         path=where, fix="upgrade painplast (pip install --upgrade painplast)")
    try:
        expected = _sha256(_canonical(document))
    except (TypeError, ValueError):
        expected = None
    if document.get("checksum") != expected:
        raise InputError("was edited after saving (its checksum does not match its content)",
                         path=where, fix=_FIX_DAMAGED)
    return document


def _read_files(reader: _Reader, document: dict) -> tuple[dict[str, np.ndarray], dict]:
    arrays, raw = {}, {}
    for name, entry in document["files"].items():
        data = reader.read(name)
        if _sha256(data) != entry["sha256"]:
            raise InputError(f"does not match its checksum in model.json ({len(data)} bytes, "
                             f"expected {entry['bytes']}): truncated or altered",
                             path=reader.where(name), fix=_FIX_DAMAGED)
        if name.endswith(".npy"):
            try:
                arrays[name] = np.load(io.BytesIO(data), allow_pickle=False)
            except ValueError as error:
                raise InputError(f"is not a plain numeric/string array ({error})",
                                 path=reader.where(name), fix=_FIX_DAMAGED) from None
        else:
            raw[name] = data
    return arrays, raw


def _build_step(spec: dict, arrays: dict, where: str):
    kind = spec.get("kind")
    if kind == "confound_regression":  # any such step is rebuilt as painplast's own
        step = ConfoundRegression()
    elif kind in _STEP_CLASSES or kind in _REGISTERED:
        params = {key: _decode(value, arrays, where) for key, value in spec["params"].items()}
        cls = _STEP_CLASSES[kind] if kind in _STEP_CLASSES else _REGISTERED[kind][0]
        try:
            step = cls(**params)
        except TypeError as error:
            raise InputError(f"step {spec.get('name')!r} has parameters this scikit-learn "
                             f"({sklearn.__version__}) does not accept ({error})", path=where,
                             fix="install the scikit-learn version recorded in model.json") \
                from None
    else:
        raise InputError(f"step {spec.get('name')!r} has an unsupported kind {kind!r}",
                         path=where, fix="load it with the painplast version that wrote it")
    if kind in _REGISTERED and set(spec["state"]) != set(_REGISTERED[kind][1]):
        raise InputError(f"step {spec.get('name')!r} stores other attributes than a {kind} has",
                         path=where, fix=_FIX_DAMAGED)
    for attr, value in spec["state"].items():
        setattr(step, attr, _decode(value, arrays, where))
    return step


class LoadedModel:
    """A model read by :func:`load_model`; predicts from a participants-by-features table.

    Attributes
    ----------
    path : Path
        Where the model was read from.
    feature_names : list of str
        Input columns, in order (site and covariate columns included when ComBat is a step).
    metadata : dict
        Everything model.json records besides the step internals: ``painplast_version``,
        ``model`` (kind, estimator), ``target``, ``training_cohort``, ``validation_metrics``, ...
    steps : list of (str, estimator)
        The reconstructed steps.
    weights_image : nibabel.Nifti1Image or None
        Voxel-wise weights, when the model was saved with a mask and affine.
    """

    def __init__(self, path, feature_names, metadata, steps, input_kind, weights_image=None):
        self.path = Path(path)
        self.feature_names = list(feature_names)
        self.metadata = metadata
        self.steps = steps
        self.weights_image = weights_image
        self._input_kind = input_kind

    @property
    def classes_(self):
        """Class labels of a classifier (as the final estimator stores them)."""
        return getattr(self.steps[-1][1], "classes_", None)

    def with_steps(self, steps) -> "LoadedModel":
        """The same model with other fitted steps (e.g. adapted to new sites)."""
        return LoadedModel(self.path, self.feature_names, self.metadata, list(steps),
                           self._input_kind, self.weights_image)

    def transform(self, X):
        """The data entering the final estimator, from X (n_participants, columns).

        A DataFrame must hold the model's ``feature_names`` (other columns are ignored); an
        array, exactly those columns in that order.
        """
        if hasattr(X, "columns"):
            missing = [name for name in self.feature_names if name not in X.columns]
            if missing:
                raise InputError(f"the data lack {len(missing)} column(s) the model needs, e.g. "
                                 f"{missing[0]!r}", path=self.path,
                                 fix="provide all columns listed in the model's feature_names")
            X = X.loc[:, self.feature_names]
            if self._input_kind != "dataframe":
                X = X.to_numpy()
        elif np.shape(X)[1] != len(self.feature_names):
            raise InputError(f"the data have {np.shape(X)[1]} columns, the model needs "
                             f"{len(self.feature_names)}", path=self.path,
                             fix="pass a DataFrame with the model's feature_names as columns")
        return _steps.apply(self.steps[:-1], X)

    def predict(self, X):
        """Predicted class or value, shape (n_participants,), from X (n_participants, columns)."""
        return self.steps[-1][1].predict(self.transform(X))

    def decision_function(self, X):
        """Decision values (classifiers), shape (n_participants,) or (n_participants, n_classes)."""
        final = self.steps[-1][1]
        if not hasattr(final, "decision_function"):
            raise InputError(f"the model's final step ({type(final).__name__}) has no decision "
                             "function", path=self.path, fix="use predict")
        return final.decision_function(self.transform(X))

    def predict_proba(self, X):
        """Class probabilities, shape (n_participants, n_classes), columns in ``classes_`` order."""
        final = self.steps[-1][1]
        if not hasattr(final, "predict_proba"):
            raise InputError(f"the model's final step ({type(final).__name__}) gives no "
                             "probabilities", path=self.path,
                             fix="use predict or decision_function, or train a "
                             "LogisticRegression model")
        return final.predict_proba(self.transform(X))


def load_model(path) -> LoadedModel:
    """Read a model written by :func:`save_model`, verifying every checksum.

    Parameters
    ----------
    path : str or path-like
        The model directory, its ``model.json``, or the ``.zip`` archive.

    Returns
    -------
    LoadedModel

    Raises
    ------
    InputError
        Naming the file, when it is missing, truncated, edited, not a painplast model, or written
        in a newer format.

    Examples
    --------
    >>> import tempfile
    >>> load_model(tempfile.mkdtemp())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    painplast.errors.InputError: ...model.json: is not a painplast model (it has no model.json)...
    """
    reader = _Reader(Path(path))
    try:
        document = _read_document(reader)
        arrays, raw = _read_files(reader, document)
        where = reader.where(MODEL_JSON)
        try:
            steps = [(spec["name"], _build_step(spec, arrays, where))
                     for spec in document["steps"]]
            weights_image = None
            if document.get("weights"):
                import nibabel as nib

                data = gzip.decompress(raw[document["weights"]["file"]])
                weights_image = nib.Nifti1Image.from_bytes(data)
            metadata = {key: document[key] for key in ("painplast_version", "library_versions",
                                                       "model", "format_version")}
            metadata.update(document["metadata"])
            feature_names = document["feature_names"]
            input_kind = document["model"]["input"]
        except (KeyError, TypeError, AttributeError) as error:
            raise InputError(f"is incomplete or malformed ({type(error).__name__}: {error})",
                             path=where, fix=_FIX_DAMAGED) from None
    finally:
        reader.close()
    return LoadedModel(reader.path, feature_names, metadata, steps, input_kind, weights_image)
