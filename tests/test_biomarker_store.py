"""Safe model files: exact round trip in a fresh process, damage refused, no pickle."""
from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR, LinearSVC

import painplast
from painplast.biomarker import combat, store
from painplast.biomarker.combat import ComBatTransformer
from painplast.biomarker.store import load_model, save_model
from painplast.errors import InputError

N_FEATURES = 12
FEATURES = [f"connectivity.edge_{i:02d}" for i in range(N_FEATURES)]


class LinearConfoundRegression(TransformerMixin, BaseEstimator):
    """A confound-regression step following store.py's documented contract."""

    painplast_step_kind = "confound_regression"

    def __init__(self, confounds=()):
        self.confounds = confounds

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=np.float64)
        self.confound_indices_ = np.asarray(self.confounds, dtype=np.int64)
        self.feature_indices_ = np.array([i for i in range(X.shape[1])
                                          if i not in set(self.confounds)], dtype=np.int64)
        design = np.column_stack([np.ones(len(X)), X[:, self.confound_indices_]])
        beta = np.linalg.lstsq(design, X[:, self.feature_indices_], rcond=None)[0]
        self.intercept_, self.coef_ = beta[0], beta[1:]
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        X = np.asarray(X, dtype=np.float64)
        confounds = X[:, self.confound_indices_]
        return X[:, self.feature_indices_] - (confounds @ self.coef_ + self.intercept_)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n = 90
    table = pd.DataFrame(rng.normal(size=(n, N_FEATURES)), columns=FEATURES)
    table["site"] = np.repeat(["ucl", "mgh", "nyu"], n // 3)
    table["age"] = rng.uniform(20, 70, n)
    table[FEATURES] += (table["site"] == "mgh").to_numpy()[:, None] * 1.5
    table[FEATURES] += 0.02 * table["age"].to_numpy()[:, None]
    label = (table[FEATURES[0]] - table[FEATURES[1]] + rng.normal(size=n) > 0).astype(int)
    diagnosis = np.where(label == 1, "patient", "control")
    score = table[FEATURES[2]].to_numpy() * 2 + rng.normal(size=n)
    return table, diagnosis, score


def build_models(table, diagnosis, score):
    ages = (N_FEATURES,)  # ComBat keeps age as the last column for the confound step
    return {
        "combat_confound_logistic": (make_pipeline(
            ComBatTransformer(site="site", covariates=("age",), keep_covariates=True),
            LinearConfoundRegression(confounds=ages), StandardScaler(),
            LogisticRegression(C=0.5)), diagnosis),
        "scaler_pca_linear_svc": (Pipeline([
            ("scale", StandardScaler()), ("pca", PCA(n_components=5, whiten=True)),
            ("svm", LinearSVC(C=0.1))]), diagnosis),
        "combat_ridge": (make_pipeline(ComBatTransformer(site="site", covariates="age", eb=False),
                                       StandardScaler(), Ridge(alpha=3.0)), score),
        "scaler_svr": (make_pipeline(StandardScaler(), SVR(kernel="linear", C=0.3)), score),
    }


def _inputs(name, table):
    """The pipelines without ComBat see only the features."""
    return table if "combat" in name else table[FEATURES]


def _outputs(model, X):
    outputs = {"predict": np.asarray(model.predict(X))}
    for method in ("predict_proba", "decision_function"):
        final = model.steps[-1][1]
        if hasattr(final, method):
            outputs[method] = getattr(model, method)(X)
    return outputs


FRESH_PROCESS = """
import sys, numpy as np, pandas as pd
from pathlib import Path
from painplast.biomarker.store import load_model
folder = Path(sys.argv[1])
values = np.load(folder / "features.npy", allow_pickle=False)
table = pd.DataFrame(values[:, :-1], columns={features!r})
table["site"] = np.load(folder / "site.npy", allow_pickle=False)
table["age"] = values[:, -1]
for name in {names!r}:
    model = load_model(folder / (name + ".zip" if name.endswith("svr") else name))
    X = table if "combat" in name else table[{features!r}]
    out = {{"predict": np.asarray(model.predict(X))}}
    for method in ("predict_proba", "decision_function"):
        if hasattr(model.steps[-1][1], method):
            out[method] = getattr(model, method)(X)
    np.savez(folder / (name + "_out.npz"), **out)
"""


def test_round_trip_in_fresh_process_is_bitwise_identical(data, tmp_path):
    table, diagnosis, score = data
    models = build_models(table, diagnosis, score)
    expected = {}
    for name, (pipe, target) in models.items():
        X = _inputs(name, table)
        pipe.fit(X, target)
        expected[name] = _outputs(pipe, X)
        save_model(pipe, tmp_path / name, archive=name.endswith("svr"),
                   metadata={"target": "diagnosis", "training_cohort": {"n": len(table)},
                             "validation_metrics": {"auc": {"estimate": 0.8}}})
    np.save(tmp_path / "features.npy", table[FEATURES + ["age"]].to_numpy())
    np.save(tmp_path / "site.npy", table["site"].to_numpy().astype(str))
    script = FRESH_PROCESS.format(features=FEATURES, names=list(models))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, env=env,
                   capture_output=True, timeout=120)
    for name, outputs in expected.items():
        with np.load(tmp_path / f"{name}_out.npz", allow_pickle=False) as reloaded:
            assert sorted(reloaded.files) == sorted(outputs)
            for method, values in outputs.items():
                assert reloaded[method].dtype.kind == values.dtype.kind or method == "predict"
                np.testing.assert_array_equal(reloaded[method], values, strict=False)
                if values.dtype.kind == "f":
                    assert reloaded[method].tobytes() == values.tobytes()  # bitwise


def test_model_json_records_provenance(data, tmp_path):
    table, diagnosis, score = data
    pipe, target = build_models(table, diagnosis, score)["combat_confound_logistic"]
    pipe.fit(table, target)
    path = save_model(pipe, tmp_path / "diagnosis", metadata={
        "target": "diagnosis", "training_cohort": {"n": 90, "sites": ["mgh", "nyu", "ucl"]},
        "validation_metrics": {"auc": {"estimate": np.float64(0.81), "ci_low": 0.7,
                                       "ci_high": 0.9}}})
    document = json.loads((path / "model.json").read_text())
    assert document["painplast_version"] == painplast.__version__
    assert [step["kind"] for step in document["steps"]] == [
        "combat", "confound_regression", "standard_scaler", "logistic_regression"]
    assert document["steps"][-1]["params"]["C"] == 0.5
    assert document["model"]["kind"] == "classifier"
    assert document["feature_names"] == list(table.columns)
    for name, entry in document["files"].items():
        assert hashlib.sha256((path / name).read_bytes()).hexdigest() == entry["sha256"]
    loaded = load_model(path)
    assert loaded.feature_names == list(table.columns)
    assert loaded.metadata["training_cohort"]["n"] == 90
    assert loaded.metadata["validation_metrics"]["auc"]["estimate"] == 0.81
    assert loaded.metadata["painplast_version"] == painplast.__version__
    assert list(loaded.classes_) == ["control", "patient"]
    # columns are matched by name, in any order; a missing column is a clear error
    shuffled = table[list(reversed(table.columns))]
    np.testing.assert_array_equal(loaded.predict_proba(shuffled), pipe.predict_proba(table))
    with pytest.raises(InputError, match="age"):
        loaded.predict(table.drop(columns="age"))


def test_weights_written_as_nifti_with_mask_and_affine(data, tmp_path):
    table, diagnosis, _ = data
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(table[FEATURES], diagnosis)
    mask = np.zeros((4, 3, 2), bool)
    mask.flat[[0, 2, 3, 5, 7, 8, 11, 13, 17, 19, 22, 23]] = True
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    path = save_model(pipe, tmp_path / "weights", metadata={"mask": mask, "affine": affine})
    loaded = load_model(path)
    image = loaded.weights_image
    np.testing.assert_array_equal(image.affine, affine)
    voxel_weights = np.asarray(image.dataobj)[mask]
    expected = (pipe[-1].coef_ / pipe[0].scale_).ravel().astype(np.float32)
    np.testing.assert_array_equal(voxel_weights, expected)
    assert np.all(np.asarray(image.dataobj)[~mask] == 0)
    with pytest.raises(InputError, match="voxels"):
        save_model(pipe, tmp_path / "bad", metadata={"mask": mask[:2], "affine": affine})


@pytest.fixture()
def saved(data, tmp_path):
    table, diagnosis, score = data
    pipe, target = build_models(table, diagnosis, score)["combat_ridge"]
    pipe.fit(table, target)
    return save_model(pipe, tmp_path / "model", metadata={"target": "pain_intensity"},
                      archive=True)


def _an_array(path: Path) -> Path:
    return sorted((path / "arrays").glob("*gamma_star.npy"))[0]


def _rewrite_json(path: Path, edit, fix_checksum: bool) -> None:
    document = json.loads((path / "model.json").read_text())
    edit(document)
    if fix_checksum:
        document["checksum"] = store._sha256(store._canonical(document))
    (path / "model.json").write_text(json.dumps(document))


def _tamper(case: str, path: Path) -> str:
    """Damage the saved model at ``path``; return the file name the error must mention."""
    array = _an_array(path)
    if case == "flipped byte in array":
        data = bytearray(array.read_bytes())
        data[-3] ^= 0x01
        array.write_bytes(bytes(data))
        return array.name
    if case == "truncated array":
        array.write_bytes(array.read_bytes()[:-40])
        return array.name
    if case == "missing array":
        array.unlink()
        return array.name
    if case == "swapped arrays":
        other = sorted((path / "arrays").glob("*delta_star.npy"))[0]
        shutil.copyfile(other, array)
        return array.name
    if case == "edited metadata":
        _rewrite_json(path, lambda d: d["metadata"].update(target="treatment"), False)
        return "model.json"
    if case == "edited hyper-parameter":
        _rewrite_json(path, lambda d: d["steps"][-1]["params"].update(alpha=1.0), False)
        return "model.json"
    if case == "truncated model.json":
        text = (path / "model.json").read_bytes()
        (path / "model.json").write_bytes(text[: len(text) // 2])
        return "model.json"
    if case == "missing model.json":
        (path / "model.json").unlink()
        return "model.json"
    if case == "foreign json":
        (path / "model.json").write_text(json.dumps({"weights": [1, 2, 3]}))
        return "model.json"
    if case == "newer format":
        _rewrite_json(path, lambda d: d.update(format_version=store.FORMAT_VERSION + 1), True)
        return "model.json"
    if case == "pickled object array with valid checksum":
        buffer = io.BytesIO()
        np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        array.write_bytes(buffer.getvalue())

        def edit(document):
            entry = document["files"][f"arrays/{array.name}"]
            entry.update(sha256=hashlib.sha256(buffer.getvalue()).hexdigest(),
                         bytes=len(buffer.getvalue()))
        _rewrite_json(path, edit, True)
        return array.name
    if case == "unknown step kind":
        _rewrite_json(path, lambda d: d["steps"][-1].update(kind="os_system"), True)
        return "model.json"
    raise AssertionError(case)


TAMPER_CASES = ["flipped byte in array", "truncated array", "missing array", "swapped arrays",
                "edited metadata", "edited hyper-parameter", "truncated model.json",
                "missing model.json", "foreign json", "newer format",
                "pickled object array with valid checksum", "unknown step kind"]


@pytest.mark.parametrize("case", TAMPER_CASES)
def test_damaged_model_is_refused_naming_the_file(saved, case):
    load_model(saved)  # intact first
    name = _tamper(case, saved)
    with pytest.raises(InputError) as error:
        load_model(saved)
    message = str(error.value)
    assert name in message and "fix:" in message
    if case == "newer format":
        assert "upgrade" in message


@pytest.mark.parametrize("case", ["member", "truncated zip", "not a zip", "zip without model"])
def test_damaged_archive_is_refused(saved, case, tmp_path):
    archive = saved.with_name(saved.name + ".zip")
    load_model(archive)
    if case == "member":  # re-pack with one array altered
        with zipfile.ZipFile(archive) as source:
            members = {info.filename: source.read(info) for info in source.infolist()}
        target = next(name for name in members if name.endswith("gamma_star.npy"))
        members[target] = members[target][:-8] + b"\x00" * 8
        with zipfile.ZipFile(archive, "w") as out:
            for name, content in members.items():
                out.writestr(name, content)
        expected = "gamma_star.npy"
    elif case == "truncated zip":
        archive.write_bytes(archive.read_bytes()[:-100])
        expected = archive.name
    elif case == "not a zip":
        archive = tmp_path / "weights.txt"
        archive.write_text("0.1 0.2 0.3\n")
        expected = "weights.txt"
    else:
        with zipfile.ZipFile(archive, "w") as out:
            out.writestr("model/readme.txt", "hello")
        expected = "model.json"
    with pytest.raises(InputError) as error:
        load_model(archive)
    assert expected in str(error.value) and "fix:" in str(error.value)


def test_save_refuses_unsupported_unfitted_and_existing(data, tmp_path):
    table, diagnosis, _ = data
    X = table[FEATURES]
    with pytest.raises(InputError, match="KNeighborsClassifier"):
        save_model(make_pipeline(StandardScaler(), KNeighborsClassifier()).fit(X, diagnosis),
                   tmp_path / "knn", metadata={})
    with pytest.raises(InputError, match="kernel"):
        save_model(SVR(kernel="rbf").fit(X, np.arange(len(X), dtype=float)), tmp_path / "rbf",
                   metadata={"feature_names": FEATURES})
    with pytest.raises(InputError, match="not fitted"):
        save_model(make_pipeline(StandardScaler(), LogisticRegression()), tmp_path / "unfitted",
                   metadata={})
    fitted = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, diagnosis)
    with pytest.raises(InputError, match="feature names"):
        save_model(fitted.fit(X.to_numpy(), diagnosis), tmp_path / "array", metadata={})
    path = save_model(fitted, tmp_path / "array", metadata={"feature_names": FEATURES})
    with pytest.raises(InputError, match="already exists"):
        save_model(fitted, path, metadata={"feature_names": FEATURES})
    save_model(fitted, path, metadata={"feature_names": FEATURES, "target": "new"},
               overwrite=True)
    assert load_model(path).metadata["target"] == "new"
    with pytest.raises(InputError, match="probabilities"):
        svc = make_pipeline(StandardScaler(), LinearSVC()).fit(table[FEATURES], diagnosis)
        load_model(save_model(svc, tmp_path / "svc", metadata={})).predict_proba(table)


def test_no_pickle_anywhere_in_the_model_code():
    forbidden = ("pickle", "joblib", "dill", "marshal", "shelve")
    for module in (store, combat):
        source = Path(module.__file__).read_text()
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not any(alias.name.split(".")[0] in forbidden for alias in node.names)
            if isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] not in forbidden
            if isinstance(node, ast.keyword) and node.arg == "allow_pickle":
                assert isinstance(node.value, ast.Constant) and node.value.value is False
            if isinstance(node, ast.Attribute):
                assert node.attr not in ("loads", "load") or not (
                    isinstance(node.value, ast.Name) and node.value.id in forbidden)
        for text in ("import pickle", "joblib.load", "allow_pickle=True", "pickle.load"):
            assert text not in source
