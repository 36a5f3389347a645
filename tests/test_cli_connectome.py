"""The connectome biomarker through the command line, on the real RPN time series.

``painplast run ... participant --modules connectivity`` then ``painplast run ... group
--biomarker pain_sensitivity`` on a part of ``rpn_szeged`` (a continuous target that no findings
table tests, so the features fall back to the connectome with a note), with an exclusion
column; ``painplast predict`` of the saved model on Bochum participants prints r with its
interval. The dataset is copied as links with one extra participants column, so the input is
never modified.
"""
from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from painplast.cli import main

from conftest import shared_once

#: Szeged participants run (16 of 29 keeps the test fast); two are marked for exclusion.
SZEGED = [f"szeged{i:03d}" for i in (1, 2, 3, 4, 5, 6, 7, 8, 10, 14, 15, 16, 18, 19, 20, 21)]
MARKED = ["sub-szeged002", "sub-szeged007"]
#: Bochum participants for the external sample (sub-bochum010 is excluded by the authors).
BOCHUM = [f"bochum{i:03d}" for i in (4, 6, 7, 8, 9, 10, 11)]
LIGHT = {"options": {"biomarker": {"repeats": 1, "n_permutations": 19, "n_bootstrap": 200,
                                   "connectome_folds": 5}}}


def _linked_copy(source: Path, target: Path, marked: list[str]) -> Path:
    """``source`` as symbolic links, with participants.tsv copied plus a ``left_out`` column."""
    target.mkdir(parents=True)
    for item in source.iterdir():
        if item.name != "participants.tsv":
            (target / item.name).symlink_to(item.resolve())
    table = pd.read_csv(source / "participants.tsv", sep="\t", dtype=str, keep_default_na=False)
    table["left_out"] = np.where(table["participant_id"].isin(marked), "1", "0")
    table.to_csv(target / "participants.tsv", sep="\t", index=False)
    return target


def _labels(ids):
    return [a for pid in ids for a in ("--participant-label", pid)]


@pytest.fixture(scope="module")
def trained(shared_data, tmp_path_factory):
    """Participant and group level on 16 Szeged participants (2 marked in ``left_out``)."""
    def build(root: Path):
        bids = _linked_copy(shared_data / "rpn_szeged", root / "szeged", MARKED)
        (root / "light.json").write_text(json.dumps(LIGHT))
        out = root / "out"
        assert main(["run", str(bids), str(out), "participant", "--modules", "connectivity",
                     "--repetition-time", "2.5", "--quiet", *_labels(SZEGED)]) == 0
        assert main(["run", str(bids), str(out), "group", "--modules", "connectivity",
                     "--repetition-time", "2.5", "--biomarker", "pain_sensitivity",
                     "--exclude-column", "left_out", "--config", str(root / "light.json"),
                     "--quiet", *_labels(SZEGED)]) == 0
    return shared_once(tmp_path_factory, "cli-connectome", build)


def test_group_level_falls_back_to_the_connectome_and_honours_the_exclusion_column(trained):
    out = trained / "out"
    result = json.loads((out / "group" / "biomarker_pain_sensitivity.json").read_text())
    assert result["features"] == "connectome"
    assert any("no a-priori feature for pain_sensitivity" in n and "connectome features" in n
               for n in result["notes"])
    assert any("left out by the exclusion column left_out" in n and all(m in n for m in MARKED)
               for n in result["notes"])
    predictions = pd.read_csv(out / "group" / "biomarker_pain_sensitivity_predictions.tsv",
                              sep="\t")
    ran = {f"sub-{p}" for p in SZEGED}
    motion = {p for p in ran if json.loads(
        (out / p / f"{p}_desc-connectivity_features.json").read_text())["info"].get("excluded")}
    assert set(predictions["participant_id"]) == ran - set(MARKED) - motion
    assert result["n"] == len(predictions) >= 10
    # the out-of-fold r is the Pearson r of the written predictions with the target
    assert result["metrics"]["r"]["estimate"] == pytest.approx(
        stats.pearsonr(predictions["score"], predictions["target"])[0], abs=1e-9)
    r = result["metrics"]["r"]
    assert r["ci_low"] <= r["estimate"] <= r["ci_high"]
    assert result["permutation"]["n_permutations"] == 19 and 0 < result["permutation_p"] <= 1

    edges = pd.read_csv(out / "group" / "biomarker_pain_sensitivity_edges.tsv", sep="\t")
    assert len(edges) == 122 * 121 // 2 == result["n_features"]
    assert edges["selection_frequency"].between(0, 1).all()
    assert (edges.loc[edges["selection_frequency"] == 0, "mean_weight"] == 0).all()
    assert (edges["selection_frequency"] > 0).sum() >= result["connectome"]["final_k"] > 0
    assert (edges["final_weight"] != 0).sum() == result["connectome"]["final_k"]
    networks = pd.read_csv(out / "group" / "biomarker_pain_sensitivity_networks.tsv", sep="\t")
    assert networks["n_edges"].sum() == len(edges)
    assert networks["n_predictive"].sum() == (edges["selection_frequency"] >= 0.5).sum()
    atlas = pd.read_csv(trained / "szeged" / "atlas-MIST122_dseg.tsv", sep="\t")
    assert set(edges["network_a"]) <= {str(n).lower() for n in atlas["network"]}

    report = (out / "report.html").read_text()
    assert "Predictive network by atlas network pair" in report
    assert "no a-priori feature for pain_sensitivity" in report
    assert "biomarker_pain_sensitivity_connectome" in report


def test_saved_connectome_model_loads_without_pickle(trained, monkeypatch):
    from painplast.biomarker import connectome as cx
    from painplast.biomarker.connectome_run import make_model
    from painplast.biomarker.store import load_model

    folder = trained / "out" / "models" / "pain_sensitivity"
    assert {p.suffix for p in folder.rglob("*") if p.is_file()} == {".json", ".npy"}

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used while loading a model")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    loaded = load_model(folder)
    predictions = pd.read_csv(trained / "out" / "group" /
                              "biomarker_pain_sensitivity_predictions.tsv", sep="\t")
    ids = list(predictions["participant_id"])
    data = cx.read_connectomes(trained / "out", participants=ids)
    cov = data.covariances[[data.participant_ids.index(p) for p in ids]]
    refit = make_model("ridge", "partial correlation").fit(cov, predictions["target"])
    np.testing.assert_allclose(loaded.predict(cov), refit.predict(cov), rtol=1e-10, atol=1e-12)
    assert loaded.metadata["biomarker_input"]["connectome"]["nodes"] == data.nodes


def test_predict_on_another_sample_prints_r_with_its_interval(trained, shared_data, tmp_path,
                                                             capsys):
    out = tmp_path / "bochum"
    capsys.readouterr()
    code = main(["predict", str(trained / "out" / "models" / "pain_sensitivity"),
                 str(shared_data / "rpn_bochum"), str(out), "--repetition-time", "2.5",
                 "--exclude-column", "excluded_by_authors", *_labels(BOCHUM)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    match = re.search(r"r = (-?\d\.\d{3}) \[95% CI (-?\d\.\d{3}), (-?\d\.\d{3})\] against "
                      r"pain_sensitivity \(n = (\d+)\)", printed)
    assert match, printed
    predictions = pd.read_csv(out / "predictions.tsv", sep="\t")
    assert "sub-bochum010" not in set(predictions["participant_id"])   # excluded by the authors
    truth = pd.read_csv(shared_data / "rpn_bochum" / "participants.tsv", sep="\t") \
        .set_index("participant_id").loc[predictions["participant_id"], "pain_sensitivity"]
    expected = stats.pearsonr(predictions["prediction"], truth)[0]
    estimate, low, high, n = (float(match.group(i)) for i in range(1, 5))
    assert n == len(predictions) == 6
    assert estimate == pytest.approx(expected, abs=5e-4)
    assert low <= estimate <= high and high - low > 0.1
    written = json.loads((out / "validation.json").read_text())
    assert written["metric"] == "r" and written["estimate"] == pytest.approx(expected, abs=1e-6)
    assert any("sub-bochum010" in note for note in written["notes"])


def test_connectome_options_stop_with_one_line_before_any_work(trained, tmp_path, capsys):
    import shutil

    bids = trained / "szeged"
    out = shutil.copytree(trained / "out", tmp_path / "out", symlinks=True)
    before = sorted(p.name for p in (out / "group").iterdir())
    for extra, words in ((["--biomarker", "pain_sensitivity", "--exclude-column", "no_such"],
                          ("no_such", "--exclude-column")),
                         (["--biomarker", "sex", "--biomarker-features", "connectome"],
                          ("continuous", "--biomarker-features all")),
                         (["--biomarker", "pain_sensitivity", "--connectome-folds", "1"],
                          ("outer folds 1", "--connectome-folds loo"))):
        capsys.readouterr()
        code = main(["run", str(bids), str(out), "group", "--modules", "connectivity",
                     "--repetition-time", "2.5", "--quiet", *_labels(SZEGED), *extra])
        err = capsys.readouterr().err
        assert code == 2 and all(w in err for w in words), err
        assert len(err.strip().splitlines()) == 1
        assert sorted(p.name for p in (out / "group").iterdir()) == before


def test_series_from_another_pipeline_are_scrubbed_detrended_and_scaled_not_refiltered(
        trained, shared_data):
    """ROI time series from elsewhere count as denoised and filtered: the stage's series equal
    nilearn's ``signal.clean`` with linear detrending and z-scoring and no filter (a second
    0.01 Hz high-pass would move them by whole standard deviations)."""
    import warnings

    from nilearn import signal

    folder = shared_data / "rpn_szeged" / "derivatives" / "timeseries"
    checked = 0
    for label in SZEGED:
        pid = f"sub-{label}"
        confounds = pd.read_csv(folder / pid / "func" /
                                f"{pid}_task-rest_desc-confounds_timeseries.tsv", sep="\t")
        fd = pd.to_numeric(confounds["framewise_displacement"], errors="coerce")
        written = trained / "out" / pid / f"{pid}_desc-connectivityAtlasTimeseries_array.npy"
        if fd.max() > 0.5 or not written.exists():     # scrubbed or excluded: not this check
            continue
        raw = pd.read_csv(folder / pid / "func" / f"{pid}_task-rest_atlas-MIST122_timeseries.tsv",
                          sep="\t").to_numpy(float)[:, 1:]           # GlobSig is not a node
        series = np.load(written)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = signal.clean(raw, detrend=True, standardize="zscore_sample", filter=False)
            filtered = signal.clean(raw, detrend=True, standardize="zscore_sample",
                                    filter="butterworth", high_pass=0.01, t_r=2.5)
        np.testing.assert_allclose(series, expected, atol=1e-5)
        assert np.abs(series - filtered).max() > 0.5
        checked += 1
    assert checked >= 5


def test_nested_leave_one_out_predicts_each_participant_from_a_model_without_them(
        trained, tmp_path):
    """``--connectome-folds loo``: one outer fold per participant; each written prediction is
    the default model fitted on everyone else (refitted here) applied to that participant."""
    import shutil

    from painplast.biomarker import connectome as cx
    from painplast.biomarker.connectome_run import make_model

    out = shutil.copytree(trained / "out", tmp_path / "out", symlinks=True)
    assert main(["run", str(trained / "szeged"), str(out), "group", "--modules", "connectivity",
                 "--repetition-time", "2.5", "--biomarker", "pain_sensitivity",
                 "--exclude-column", "left_out", "--connectome-folds", "loo",
                 "--config", str(trained / "light.json"), "--quiet", *_labels(SZEGED)]) == 0
    result = json.loads((out / "group" / "biomarker_pain_sensitivity.json").read_text())
    assert result["scheme"].startswith(f"nested leave-one-out cross-validation ({result['n']} ")
    predictions = pd.read_csv(out / "group" / "biomarker_pain_sensitivity_predictions.tsv",
                              sep="\t")
    ids = list(predictions["participant_id"])
    data = cx.read_connectomes(out, participants=ids)
    cov = data.covariances[[data.participant_ids.index(p) for p in ids]]
    y = predictions["target"].to_numpy(float)
    for i in range(len(ids)):
        train = np.arange(len(ids)) != i
        model = make_model("ridge", "partial correlation").fit(cov[train], y[train])
        assert predictions["score"][i] == pytest.approx(model.predict(cov[i:i + 1])[0],
                                                       rel=1e-8, abs=1e-10)
    assert result["metrics"]["r"]["estimate"] == pytest.approx(
        stats.pearsonr(predictions["score"], y)[0], abs=1e-9)


@pytest.mark.parametrize("model", ["cpm", "elastic_net"])
def test_connectome_models_round_trip_through_a_model_file(model, tmp_path, monkeypatch):
    from painplast.biomarker import connectome as cx
    from painplast.biomarker.connectome_run import make_model
    from painplast.biomarker.store import load_model, save_model
    from painplast.errors import InputError

    rng = np.random.default_rng(3)
    ts = [rng.normal(size=(80, 7)) for _ in range(30)]
    y = rng.normal(size=30)
    for t, v in zip(ts, y):
        t[:, 2] += 0.7 * v * t[:, 0]
    cov = cx.ledoit_wolf_covariances(ts)
    fitted = make_model(model, "tangent").fit(cov[:24], y[:24])
    folder = save_model(fitted, tmp_path / "m", metadata={"feature_names": list("abcdefg")})
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("pickle used"))
    loaded = load_model(folder)
    np.testing.assert_array_equal(loaded.predict(cov[24:]), fitted.predict(cov[24:]))
    document = json.loads((folder / "model.json").read_text())
    assert document["steps"][0]["kind"] == ("cpm" if model == "cpm" else "connectome_regressor")
    assert set(document["steps"][0]["state"]) == set(cx.FITTED_ATTRIBUTES[type(fitted).__name__])
    # a file naming a state the class does not have is refused (checksum recomputed: not damage)
    from painplast.biomarker.store import _canonical, _sha256

    document["steps"][0]["state"]["extra_"] = 1
    document["checksum"] = _sha256(_canonical(document))
    (folder / "model.json").write_text(json.dumps(document))
    with pytest.raises(InputError, match="other attributes"):
        load_model(folder)


def test_connectomes_of_a_session_dataset_are_read_one_session_per_participant(shared_data,
                                                                                tmp_path):
    """A dataset with two sessions: every session gets its connectome; reading asks which
    session (several stop with a fix), and the group level uses the one ``--session-label``
    names. Session 2 holds the next participant's series, so the session read is visible."""
    import shutil

    from painplast.biomarker import connectome as cx
    from painplast.errors import InputError

    labels = [f"szeged{i:03d}" for i in (3, 4, 5, 6, 7, 8, 10, 14, 15, 16, 18, 19)]
    source = shared_data / "rpn_szeged"
    bids = tmp_path / "sessions"
    bids.mkdir()
    for name in ("dataset_description.json", "atlas-MIST122_dseg.tsv"):
        (bids / name).symlink_to((source / name).resolve())
    (bids / "participants.tsv").symlink_to((source / "participants.tsv").resolve())
    for i, label in enumerate(labels):
        for session, donor in (("1", label), ("2", labels[(i + 1) % len(labels)])):
            folder = bids / "derivatives" / "timeseries" / f"sub-{label}" / f"ses-{session}" / "func"
            folder.mkdir(parents=True)
            for kind in ("atlas-MIST122_timeseries", "desc-confounds_timeseries"):
                origin = (source / "derivatives" / "timeseries" / f"sub-{donor}" / "func" /
                          f"sub-{donor}_task-rest_{kind}.tsv")
                (folder / f"sub-{label}_ses-{session}_task-rest_{kind}.tsv").symlink_to(
                    origin.resolve())
    out = tmp_path / "out"
    assert main(["run", str(bids), str(out), "participant", "--modules", "connectivity",
                 "--repetition-time", "2.5", "--quiet"]) == 0
    assert len(cx.connectivity_sidecars(out)) == 2 * len(labels)
    with pytest.raises(InputError, match="several sessions.*--session-label"):
        cx.read_connectomes(out)
    first = cx.read_connectomes(out, sessions={f"sub-{p}": "1" for p in labels})
    second = cx.read_connectomes(out, sessions={f"sub-{p}": "2" for p in labels})
    assert first.participant_ids == second.participant_ids == sorted(f"sub-{p}" for p in labels)
    order = {pid: i for i, pid in enumerate(first.participant_ids)}
    for i, label in enumerate(labels):
        donor = f"sub-{labels[(i + 1) % len(labels)]}"
        np.testing.assert_array_equal(second.covariances[order[f"sub-{label}"]],
                                      first.covariances[order[donor]])

    (tmp_path / "light.json").write_text(json.dumps(LIGHT))
    results = {}
    for session in ("1", "2"):
        folder = tmp_path / f"group{session}"
        shutil.copytree(out, folder, symlinks=True)
        assert main(["run", str(bids), str(folder), "group", "--modules", "connectivity",
                     "--repetition-time", "2.5", "--session-label", session,
                     "--biomarker", "pain_sensitivity", "--biomarker-features", "connectome",
                     "--config", str(tmp_path / "light.json"), "--quiet"]) == 0
        results[session] = pd.read_csv(folder / "group" /
                                       "biomarker_pain_sensitivity_predictions.tsv", sep="\t")
        assert len(results[session]) == len(labels)
    assert not np.allclose(results["1"]["score"], results["2"]["score"])
