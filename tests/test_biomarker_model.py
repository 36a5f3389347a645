"""Feature tables, the in-fold pipeline, safe model files and prediction on new sites."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from functools import lru_cache

import numpy as np
import pandas as pd
import pytest

from painplast.biomarker.features import combine, from_derivatives, from_frame, from_results
from painplast.biomarker.model import (BiomarkerModel, ConfoundRegression, design, predict,
                                       resolve_target, save)
from painplast.errors import InputError
from painplast.results import SubjectResult


@lru_cache(maxsize=4)
def sim_table(**kwargs):
    """Noise-free features (participants_truth.tsv content) and participants of a cohort,
    straight from the simulator's latent model (no images)."""
    from painplast.simulate import SimulationParameters, latent_cohort

    return latent_cohort(SimulationParameters(**kwargs))


def test_feature_table_from_results_and_derivative_files(tmp_path):
    feats, parts = sim_table(n_participants=12, n_sites=2, seed=3)
    results = []
    for module in ("structure", "connectivity"):
        columns = [c for c in feats.columns if c.startswith(module + ".")]
        for pid, row in feats[columns].iterrows():
            info = {"excluded": "motion"} if (module, pid) == ("connectivity", "sub-002") else {}
            results.append(SubjectResult(module, pid, row.to_dict(), info=info))
            # the engine's file layout: sub-*/sub-*_desc-<module>_features.tsv + sidecar
            folder = tmp_path / pid
            folder.mkdir(exist_ok=True)
            pd.DataFrame([{"participant_id": pid, **row.to_dict()}]).to_csv(
                folder / f"{pid}_desc-{module}_features.tsv", sep="\t", index=False)
            (folder / f"{pid}_desc-{module}_features.json").write_text(json.dumps({"info": info}))
    table = from_results(results)
    walked = from_derivatives(tmp_path)
    pd.testing.assert_frame_equal(table.data, walked.data)
    assert table.provenance == walked.provenance
    assert set(table.modules) == {"structure", "connectivity"}
    assert table.provenance["connectivity.mpfc_nacc"] == "connectivity"
    assert np.isnan(table.data.loc["sub-002", "connectivity.mpfc_nacc"])
    np.testing.assert_allclose(table.data.loc["sub-003", "structure.gm_dacc"],
                               feats.loc["sub-003", "structure.gm_dacc"])
    complete = table.complete()
    assert "sub-002" in complete.excluded and complete.data.notna().all().all()
    # module-agnostic: a source the package has never heard of joins like any module
    extra = from_frame(pd.DataFrame({"newmodule.score": np.arange(12.0)}, index=feats.index))
    assert combine(complete, extra, how="inner").provenance["newmodule.score"] == "newmodule"
    with pytest.raises(InputError, match="no features from"):
        table.select(modules=["sensitization"])


def test_confound_regression_matches_least_squares():
    rng = np.random.default_rng(0)
    conf = rng.normal(size=(80, 3))
    Y = conf @ rng.normal(size=(3, 5)) + rng.normal(size=(80, 5)) + 4.0
    X = np.column_stack([Y, conf])
    step = ConfoundRegression(confounds=[5, 6, 7]).fit(X[:60])
    design_matrix = np.column_stack([np.ones(60), conf[:60]])
    beta = np.linalg.lstsq(design_matrix, Y[:60], rcond=None)[0]
    expected = Y[60:] - np.column_stack([np.ones(20), conf[60:]]) @ beta
    np.testing.assert_allclose(step.transform(X[60:]), expected, atol=1e-10)


def test_confound_scope_and_preserved_target_match_least_squares():
    """A scoped confound leaves other features alone; a preserved target keeps its effect.

    Motion (fd) is higher in patients and adds an artefact to the BOLD feature only; the
    gray-matter feature has a group effect and no motion effect. Plain regression of fd out of
    both removes part of the group difference; with the target preserved the fd slope is the
    within-group one (least squares on [fd, group]) and the group difference survives.
    """
    rng = np.random.default_rng(3)
    n = 4000
    group = np.repeat([0.0, 1.0], n // 2)
    fd = 0.12 + 0.06 * group + 0.04 * rng.normal(size=n)
    bold = 1.0 * group + 10.0 * fd + rng.normal(size=n)
    gm = -1.0 * group + rng.normal(size=n)
    X = pd.DataFrame({"connectivity.x": bold, "structure.gm": gm, "mean_fd": fd})
    plain = ConfoundRegression(confounds=["mean_fd"]).fit(X)
    scoped = ConfoundRegression(confounds=["mean_fd"], scope={"mean_fd": ["connectivity.x"]},
                                preserve_target=True).fit(X, group)
    # out of scope: coefficient exactly zero, feature only centred by the intercept
    assert scoped.coef_[0, 1] == 0.0
    np.testing.assert_allclose(scoped.transform(X)[:, 1], gm - gm.mean(), atol=1e-12)
    # in scope: the fd coefficient of least squares on [1, fd, group]
    design_matrix = np.column_stack([np.ones(n), fd, group])
    beta = np.linalg.lstsq(design_matrix, bold, rcond=None)[0]
    np.testing.assert_allclose(scoped.coef_[0, 0], beta[1], rtol=1e-10)
    assert abs(scoped.coef_[0, 0] - 10.0) < 1.0          # the artefact's true slope
    def difference(Z, column):
        return Z[group == 1, column].mean() - Z[group == 0, column].mean()
    kept, lost = scoped.transform(X), plain.transform(X)
    assert abs(difference(kept, 0) - 1.0) < 0.1          # the planted group effect survives
    assert abs(difference(kept, 1) + 1.0) < 0.1
    assert difference(lost, 0) < 0.8 and difference(lost, 1) > -0.8  # plain regression eats it
    # string labels and more classes become indicator columns; transform never needs y
    three = ConfoundRegression(confounds=["mean_fd"], preserve_target=True).fit(
        X, np.where(group == 1, "b", np.where(rng.random(n) < 0.5, "a", "c")))
    assert three.transform(X).shape == (n, 2)


def test_model_scopes_motion_to_bold_features_and_saves_it(tmp_path):
    """The default scope by module: motion leaves gray matter alone; the model file keeps it."""
    rng = np.random.default_rng(4)
    n = 200
    group = np.repeat([0.0, 1.0], n // 2)
    fd = 0.12 + 0.06 * group + 0.04 * rng.normal(size=n)
    ids = [f"sub-{i:03d}" for i in range(n)]
    feats = pd.DataFrame({"connectivity.x": group + 10 * fd + rng.normal(size=n),
                          "structure.gm": -group + rng.normal(size=n),
                          "connectivity.mean_fd": fd}, index=pd.Index(ids, name="participant_id"))
    parts = pd.DataFrame({"participant_id": ids, "site": np.tile(["a", "b"], n // 2),
                          "age": rng.uniform(20, 60, n),
                          "group": np.where(group == 1, "patient", "control")})
    X = design(from_frame(feats), parts)
    model = BiomarkerModel(inner_folds=3, screening=None, penalties=[1.0]).fit(X, parts["group"])
    step = model.pipeline_.named_steps["confounds"]
    fd_row = list(step.confound_indices_).index(
        len(model.input_spec_["features"]) + model.input_spec_["confounds"].index("mean_fd"))
    assert step.coef_[fd_row, model.feature_names_.index("structure.gm")] == 0.0
    assert step.coef_[fd_row, model.feature_names_.index("connectivity.x")] != 0.0
    path = save(model, tmp_path / "model")
    again = predict(path, from_frame(feats), parts)
    np.testing.assert_allclose(again["probability"].to_numpy(float),
                               model.predict_proba(X)[:, 1], rtol=1e-12)


def _motion_null_cohort(seed, n=120, p=200):
    """No feature differs between groups; patients move more (log mean FD d ~ 1)."""
    rng = np.random.default_rng(seed)
    group = np.repeat([0, 1], n // 2)
    rng.shuffle(group)
    fd = 0.12 * np.exp(0.35 * rng.normal(size=n) + 0.35 * group)
    ids = [f"sub-{i:03d}" for i in range(n)]
    feats = pd.DataFrame(rng.normal(size=(n, p)), index=pd.Index(ids, name="participant_id"),
                         columns=[f"connectivity.e{j}" for j in range(p)])
    parts = pd.DataFrame({"participant_id": ids, "site": np.tile(["a", "b", "c"], n // 3),
                          "age": rng.uniform(20, 60, n), "sex": rng.choice(["F", "M"], n),
                          "mean_fd": fd, "group": np.where(group == 1, "patient", "control")})
    return design(from_frame(feats), parts), parts["group"].to_numpy(), np.log(fd)


def test_motion_that_differs_between_groups_does_not_leak_into_predictions():
    """Under the null, held-out scores must not follow head motion (cross-validated confound
    regression); keeping the target in the confound fit lets motion in (the default avoids it).
    """
    from painplast.biomarker.validate import _fold_aucs, cross_validate

    def run(keep):
        aucs, follow = [], []
        for seed in range(6):
            X, y, log_fd = _motion_null_cohort(seed)
            model = BiomarkerModel(inner_folds=3, confounds_keep_target=keep)
            cv = cross_validate(model, X, y, folds=5, repeats=1, random_state=0)
            patient = y == "patient"
            aucs.append(np.nanmean(_fold_aucs(cv.scores, patient, cv.folds)))
            # within each class, so the group difference in motion does not count
            follow.append(np.mean([
                np.corrcoef(cv.scores[0][patient == c], log_fd[patient == c])[0, 1]
                for c in (True, False)]))
        return np.mean(aucs), np.mean(follow)

    auc, follow = run(keep=BiomarkerModel().confounds_keep_target)
    assert abs(follow) < 0.12 and auc < 0.6
    leaky_auc, leaky_follow = run(keep=True)
    assert leaky_follow > 0.2 and leaky_auc > auc + 0.05


@pytest.mark.parametrize("estimator", ["logistic", "svm", "ridge"])
def test_fit_in_the_rows_span_equals_the_fit_on_all_features(estimator):
    # 40 participants x 600 features: the model fitted in the 40-dimensional span of the rows
    # (BiomarkerModel's shortcut for p > n) must be the model sklearn fits on all 600 columns
    from sklearn.base import clone

    from painplast.biomarker.model import _make_estimator, fit_in_row_space

    rng = np.random.default_rng(3)
    Z = rng.normal(size=(40, 600))
    signal = Z[:, :5].sum(axis=1) + rng.normal(size=40)
    y = signal if estimator == "ridge" else (signal > 0).astype(int)
    penalty = {"logistic": 0.01, "svm": 0.001, "ridge": 50.0}[estimator]
    spec = _make_estimator(estimator, penalty, 0)
    if estimator != "ridge":
        spec.set_params(tol=1e-10, max_iter=100_000)
    direct = clone(spec).fit(Z, y)
    fast = fit_in_row_space(clone(spec), Z, y)
    assert fast.coef_.shape == direct.coef_.shape == (1, 600) or estimator == "ridge"
    scale = np.abs(direct.coef_).max()
    np.testing.assert_allclose(fast.coef_, direct.coef_, atol=1e-5 * scale)
    np.testing.assert_allclose(fast.intercept_, direct.intercept_, atol=1e-5 * max(scale, 1))
    new = rng.normal(size=(10, 600))
    out = (lambda m: m.predict(new)) if estimator == "ridge" else (lambda m: m.decision_function(new))
    np.testing.assert_allclose(out(fast), out(direct), rtol=1e-4, atol=1e-6)


def _fit_two_sites():
    feats, parts = sim_table(n_participants=90, n_sites=3, seed=5, effect_scale=1.5)
    X = design(from_frame(feats), parts)
    target = resolve_target(parts, "diagnosis")
    train = X.index[X["site"] != "site3"]
    # one screening share, so that the saved pipeline always holds a screening step
    model = BiomarkerModel(inner_folds=3, screening=(25,)).fit(X.loc[train],
                                                              target.y.loc[train].to_numpy())
    return feats, parts, X, target, model


def test_saved_model_reloads_in_fresh_process_and_edits_are_refused(tmp_path):
    feats, parts, X, target, model = _fit_two_sites()
    assert [name for name, _ in model.pipeline_.steps] == ["combat", "confounds", "scale",
                                                           "screening", "estimator"]
    kept = model.coefficients()
    assert (kept != 0).sum() == round(0.25 * len(kept))  # screened-out features weigh nothing
    path = save(model, tmp_path / "models" / "diagnosis", metadata={"target": "diagnosis"})
    old = X.index[X["site"] != "site3"]
    feats.loc[old].to_csv(tmp_path / "features.tsv", sep="\t")
    parts.to_csv(tmp_path / "participants.tsv", sep="\t", index=False)
    script = textwrap.dedent(f"""
        import pandas as pd
        from painplast.biomarker.model import predict
        f = pd.read_csv({str(tmp_path / 'features.tsv')!r}, sep="\\t", index_col=0)
        p = pd.read_csv({str(tmp_path / 'participants.tsv')!r}, sep="\\t")
        predict({str(path)!r}, f, p).to_csv({str(tmp_path / 'out.tsv')!r}, sep="\\t",
                                             index=False, float_format="%.17g")
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    fresh = pd.read_csv(tmp_path / "out.tsv", sep="\t")
    here = model.predict_proba(X.loc[old])[:, 1]
    # identical up to floating-point summation order (SIMD kernels depend on memory alignment,
    # which differs between processes): 1e-12 relative, far below any clinical meaning
    np.testing.assert_allclose(fresh["probability"].to_numpy(), here, rtol=1e-12, atol=1e-15)
    assert fresh["participant_id"].tolist() == list(old)
    assert (fresh["prediction"].to_numpy() == model.predict(X.loc[old])).all()
    # in-sample sanity: the planted effects separate the groups
    assert np.mean((here > 0.5) == (target.y.loc[old] == "patient").to_numpy()) > 0.8
    document = json.loads((path / "model.json").read_text())
    document["metadata"]["biomarker_input"]["target_fill"] = 0.1
    (path / "model.json").write_text(json.dumps(document))
    with pytest.raises(InputError, match="edited"):
        predict(path, feats, parts)


def test_model_applies_to_an_unseen_site(tmp_path):
    feats, parts, X, target, model = _fit_two_sites()
    path = save(model, tmp_path / "m")
    new = X.index[X["site"] == "site3"]
    out = predict(path, feats.loc[new], parts)
    from sklearn.metrics import roc_auc_score

    truth = (target.y.loc[out["participant_id"]] == "patient").to_numpy()
    auc = roc_auc_score(truth, out["probability"])
    assert auc > 0.8, auc
    # same answer in memory (the estimator adapts to the new site the same way)
    np.testing.assert_allclose(out["probability"], model.predict_proba(X.loc[new])[:, 1])
    # one participant of a new site cannot be harmonized alone
    with pytest.raises(InputError, match="one participant"):
        predict(path, feats.loc[new[:1]], parts)


def test_targets_and_aliases():
    _, parts = sim_table(n_participants=40, n_sites=2, seed=1)
    assert resolve_target(parts, "diagnosis").kind == "binary"
    treatment = resolve_target(parts, "treatment")
    assert treatment.classes == ["non-responder", "responder"] and len(treatment.y) == 20
    assert resolve_target(parts, "modulation_score").kind == "continuous"
    between = resolve_target(parts.assign(diagnosis=np.where(parts["group"] == "patient",
                                                              np.tile(["a", "b", "c", "d"], 10),
                                                              None)), "diagnosis_between")
    assert between.kind == "multiclass" and len(between.y) == 20
    with pytest.raises(InputError, match="needs a 'pain_duration' column"):
        resolve_target(parts, "pain_duration")
