"""The longitudinal group stage: session choice, findings rows, recovery of planted change."""
from __future__ import annotations

import dataclasses

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DOCS, simulated
from test_simulate_sessions import LONGITUDINAL

from painplast import engine, plasticity
from painplast.cli import main
from painplast.cohort import Cohort
from painplast.config import Config
from painplast.errors import InputError
from painplast.plasticity import _group, _longitudinal
from painplast.results import FINDINGS_COLUMNS, SubjectResult
from painplast.stats.effects import holm

#: 48 participants (about 22 chronic, 17 controls, 9 subacute), 2 sites, resting state only
#: (structure reads the anatomy), effects x2.
STRUCTURE = dict(n_participants=48, n_sites=2, seed=21, design="longitudinal", resolution=6,
                 effect_scale=2.0, tasks=("rest",), volumes_rest=60)
ROOT = Path(__file__).resolve().parents[1]


def _benchmark():
    spec = importlib.util.spec_from_file_location("bench_longitudinal", ROOT / "benchmarks" / "longitudinal.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_longitudinal_sessions_auto_named_and_off():
    cohort = Cohort.from_bids(simulated(**LONGITUDINAL))
    assert engine.longitudinal_sessions(cohort) == ("baseline", "followup")
    assert engine.longitudinal_sessions(cohort, "none") is None
    assert engine.longitudinal_sessions(cohort, "ses-followup,baseline") == ("followup", "baseline")
    with pytest.raises(InputError, match="--longitudinal"):
        engine.longitudinal_sessions(cohort, "baseline,month6")
    with pytest.raises(InputError, match="--longitudinal"):
        engine.longitudinal_sessions(cohort, "baseline")
    # one session per participant: cross-sectional; one session read: cross-sectional too
    assert engine.longitudinal_sessions(Cohort.from_bids(simulated(**DOCS))) is None
    assert engine.longitudinal_sessions(Cohort.from_bids(simulated(**LONGITUDINAL),
                                                         session_label="baseline")) is None


def test_longitudinal_rows_exclusions_and_one_family():
    """Every a-priori feature gets the four contrasts; a participant excluded at follow-up
    leaves the change contrasts (and is listed) but stays in the baseline contrast; Holm runs
    over the cross-sectional and longitudinal rows together."""
    rng = np.random.default_rng(3)
    n = 60
    ids = [f"sub-{i:02d}" for i in range(n)]
    stage = np.array(["chronic"] * 25 + ["subacute"] * 15 + [None] * 20, dtype=object)
    parts = pd.DataFrame({"group": np.where(stage == None, "control", "patient"),  # noqa: E711
                          "stage": stage, "site": ["a", "b"] * 30, "age": rng.integers(20, 70, n),
                          "sex": ["F", "M", "M"] * 20,
                          "pain_relief": np.where(stage == "chronic", rng.uniform(-20, 90, n), np.nan),
                          "outcome": np.where(stage == "subacute",
                                              np.where(np.arange(n) % 2, "persisting", "recovering"), None),
                          "pain_intensity": np.where(stage == None, 0.0, 5.0)},  # noqa: E711
                         index=pd.Index(ids, name="participant_id"))
    # persisting-recovering is tested on the declared prognostic features only
    declaration = dataclasses.replace(plasticity.get("reorganization"),
                                      prognostic=("reorganization.shift_mm",))
    base = rng.normal(size=(n, 2))
    follow = base + 0.3 * rng.normal(size=(n, 2)) + np.where(stage == "chronic", 1.0, 0.0)[:, None]
    names = ["reorganization.shift_mm", "reorganization.asymmetry"]
    results = [[SubjectResult("reorganization", pid, dict(zip(names, values[i])), session=label,
                              info={"excluded": "motion"} if (label == "followup" and i == 0) else {})
                for i, pid in enumerate(ids)] for values, label in ((base, "baseline"), (follow, "followup"))]
    cohort = type("C", (), {"participants": parts})()
    config = Config()
    group = _group.run(declaration, results[0], cohort, config)
    out = _longitudinal.extend(group, declaration, results[0], results[1], cohort, config,
                               ("baseline", "followup"))
    findings = out.findings
    assert list(findings.columns) == list(FINDINGS_COLUMNS)
    rows = findings[findings.contrast.isin(_longitudinal.CONTRASTS)]
    assert sorted(map(tuple, rows[["feature", "contrast"]].values)) == sorted(
        [(f, c) for f in names for c in _longitudinal.CONTRASTS if c != "persisting-recovering"]
        + [("reorganization.shift_mm", "persisting-recovering")])
    np.testing.assert_allclose(findings.p_corrected, holm(findings.p.to_numpy()))
    assert len(findings) > len(rows) > 0                    # cross-sectional rows kept
    time = rows.set_index(["feature", "contrast"]).loc[("reorganization.shift_mm", "time")]
    assert time.n == 24 and time.estimate > 2 and time.p_corrected < 1e-6
    persisting = rows.set_index(["feature", "contrast"]).loc[("reorganization.shift_mm", "persisting-recovering")]
    assert persisting.n == 15
    excluded = out.tables["longitudinal_excluded"]
    assert "sub-00" in set(excluded.participant_id)
    assert len(out.tables["features_long"]) == 2 * n - 1


def test_feature_level_recovers_every_planted_longitudinal_effect():
    """Painplast's group stages on a large cohort drawn from the simulator's latent and
    measurement models (benchmarks/longitudinal.py, feature level): every planted longitudinal
    effect found with its sign, no unplanted significant row, ICC intervals cover the truth."""
    bench = _benchmark()
    args = type("A", (), {"participants": 600, "sites": 3, "null": False})()
    findings, long, truth = bench.feature_level(5, args)
    hits, false_positives = bench.score(findings, truth, longitudinal_only=True)
    assert len(hits) >= 30
    assert all(hits.values()), [k for k, v in hits.items() if not v]
    assert sum(false_positives.values()) <= 1
    inside, total = bench.icc_coverage(long, truth)
    assert total == len(truth["icc"]) and inside >= 0.8 * total
    # the recorded sizes lie in the intervals (measured scale, as findings estimate them)
    planted = {(e["feature"], e["contrast"]): e["size"] * e["direction"] for e in truth["effects"]}
    rows = pd.concat(findings.values())
    rows = rows[[(f, c) in planted and c in _longitudinal.CONTRASTS for f, c in zip(rows.feature, rows.contrast)]]
    covered = [lo <= planted[(f, c)] <= hi for f, c, lo, hi in
               zip(rows.feature, rows.contrast, rows.ci_low, rows.ci_high)]
    assert np.mean(covered) >= 0.8, rows


def test_structure_change_found_from_images(tmp_path):
    """Command line on a simulated longitudinal cohort: the group level turns longitudinal by
    itself, structure's findings recover the planted gray-matter change, check_recovery's join
    reads them, and the voxel-wise change maps are written."""
    root = simulated(**STRUCTURE)
    out = tmp_path / "out"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"options": {"structure": {"voxelwise_contrasts": []}}}))
    assert main(["run", str(root), str(out), "participant", "--modules", "structure", "--quiet",
                 "--n-jobs", "2", "--config", str(config)]) == 0
    assert main(["run", str(root), str(out), "group", "--modules", "structure", "--quiet",
                 "--n-permutations", "100", "--config", str(config)]) == 0
    findings = pd.read_csv(out / "group" / "structure_findings.tsv", sep="\t")
    truth = json.loads((root / "derivatives" / "simulation" / "ground_truth.json").read_text())
    table = findings.set_index(["feature", "contrast"])
    planted = [e for e in truth["effects"] if e["module"] == "structure" and e["contrast"] == "time"]
    assert len(planted) == 4
    for e in planted:
        row = table.loc[(e["feature"], "time")]
        assert row.p_corrected < 0.05 and np.sign(row.estimate) == e["direction"], e["feature"]
        assert row.ci_low <= e["size"] <= row.ci_high
    for e in truth["effects"]:
        if e["module"] == "structure" and e["contrast"] in ("group:time", "change~pain_relief"):
            assert np.sign(table.loc[(e["feature"], e["contrast"])].estimate) == e["direction"]
    assert {"patient-control", "time", "group:time", "change~pain_relief"} <= set(findings.contrast)
    assert "persisting-recovering" not in set(findings.contrast)   # structure declares no prognostic feature
    np.testing.assert_allclose(findings.p_corrected, holm(findings.p.to_numpy()))
    long = pd.read_csv(out / "group" / "structure_features_long.tsv", sep="\t")
    assert sorted(long.session.unique()) == ["baseline", "followup"] and len(long) == 96
    assert (out / "group" / "structure_time_logp_fwe_tfce.nii.gz").exists()
    summary = pd.read_csv(out / "group" / "structure_voxelwise_longitudinal.tsv", sep="\t")
    assert set(summary.contrast) == {"time", "group:time"} and (summary.n_voxels > 1000).all()
    notes = json.loads((out / "group" / "structure_notes.json").read_text())
    assert any("baseline -> followup" in n for n in notes["notes"])
    # a saved biomarker (diagnosis from baseline structure) for the prediction reliability
    from painplast.biomarker import run_biomarker
    from painplast.biomarker.features import from_derivatives

    cohort = Cohort.from_bids(root)
    base = from_derivatives(out, sessions=cohort.cross_sectional_sessions())
    run_biomarker(base.a_priori(out).complete().informative(), cohort.participants.reset_index(),
                  "diagnosis", random_state=0, repeats=1, n_permutations=0, n_bootstrap=50,
                  site_out=False, learning=False, out_dir=out, overwrite=True)
    # test-retest reliability of the controls' two sessions: planted ICC inside the intervals
    assert main(["reliability", str(root), str(out), "--modules", "structure", "--config", str(config)]) == 0
    icc = pd.read_csv(out / "group" / "reliability.tsv", sep="\t")
    assert set(icc.kind) == {"ICC(2,1)", "ICC(3,1)"} and set(icc.band) <= {"poor", "moderate", "good", "excellent"}
    # the biomarker's own score: applied to each session of the same controls, with its ICCs
    n_controls = (pd.read_csv(root / "participants.tsv", sep="\t").group == "control").sum()
    score = icc[icc.feature == "biomarker.diagnosis"].set_index("kind")
    assert list(score.module) == ["biomarker", "biomarker"] and (score.n == n_controls).all()
    assert score.loc["ICC(3,1)", "icc"] > 0.5, score   # from gray matter measured with ICC ~0.98
    assert json.loads((out / "group" / "reliability.json").read_text())["biomarkers"] == ["diagnosis"]
    consistency = icc[(icc.kind == "ICC(3,1)") & (icc.module == "structure")]
    planted_icc = consistency.feature.map(truth["icc"])
    assert len(consistency) == 12 and planted_icc.notna().all()
    assert ((consistency.ci_low <= planted_icc) & (planted_icc <= consistency.ci_high)).sum() >= 10
    assert (consistency.n == (pd.read_csv(root / "participants.tsv", sep="\t").group == "control").sum()).all()
    assert main(["reliability", str(root), str(out), "--sessions", "baseline,month3"]) == 2
    # the report gains the longitudinal and reliability sections (spaghetti plots, ranked ICCs)
    assert main(["report", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert 'id="longitudinal"' in html and 'id="reliability"' in html
    section = html.split('id="longitudinal"')[1].split("</section>")[0]
    assert section.count("<img") >= 2 and "structure.gm_" in section
    # a biomarker of a longitudinal cohort sees the baseline session only
    seen = {}
    cohort = Cohort.from_bids(root)
    engine.run_biomarker(cohort, Config(modules=("structure",)), out, "outcome", force=True,
                         runner=lambda c, *a: seen.update(c.cross_sectional_sessions()))
    assert len(seen) == 48 and set(seen.values()) == {"baseline"}
    engine.run_biomarker(cohort, Config(modules=("structure",)), out, "outcome", force=True,
                         longitudinal="followup,baseline",
                         runner=lambda c, *a: seen.update(c.cross_sectional_sessions()))
    assert set(seen.values()) == {"followup"}


def test_course_of_pain_is_tested_on_declared_prognostic_features_only():
    """persisting-recovering rows exist only for a module's prognostic features, and a
    biomarker of ``outcome`` takes its a-priori features from exactly those rows."""
    from painplast.stats.longitudinal import baseline_contrast_for

    measured = pd.Series(100, index=list(dict.fromkeys(
        f for d in plasticity.available().values() for f, _ in d.a_priori(Config()))))
    rows = {name: _longitudinal.longitudinal_tests(d, Config(), measured)
            for name, d in plasticity.available().items()}
    course = sorted(f for r in rows.values() for f, c in r if c == baseline_contrast_for("outcome"))
    assert course == ["connectivity.mpfc_nacc"]
    assert all(c in _longitudinal.CONTRASTS for r in rows.values() for _, c in r)
    # every a-priori feature still gets the change contrasts
    for name, d in plasticity.available().items():
        for f in dict.fromkeys(f for f, _ in d.a_priori(Config())):
            assert {c for g, c in rows[name] if g == f} >= {"time", "group:time", "change~pain_relief"}
