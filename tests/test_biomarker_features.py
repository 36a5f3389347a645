"""Feature-table clean-up before a biomarker: which features and participants survive."""
import numpy as np
import pandas as pd
import pytest

from painplast.biomarker.features import from_frame
from painplast.errors import InputError


def _table():
    rng = np.random.default_rng(0)
    ids = [f"sub-{i:02d}" for i in range(20)]
    frame = pd.DataFrame(rng.normal(size=(20, 4)), index=ids,
                         columns=["sensitization.a_response", "sensitization.a_threshold",
                                  "connectivity.x", "connectivity.scrubbed_fraction"])
    frame.loc[ids[:3], "sensitization.a_threshold"] = np.nan        # sporadic gap in a module
    frame.loc[ids[19], ["connectivity.x", "connectivity.scrubbed_fraction"]] = np.nan  # no module
    frame["connectivity.scrubbed_fraction"] = 0.0
    frame.loc[ids[:4], "connectivity.scrubbed_fraction"] = 0.1
    frame.loc[ids[19], "connectivity.scrubbed_fraction"] = np.nan
    return from_frame(frame)


def test_sporadic_gaps_drop_the_feature_and_missing_modules_drop_the_participant():
    table = _table().complete()
    assert "sensitization.a_threshold" not in table.data          # feature dropped, not 3 people
    assert "sub-19" not in table.data.index and len(table.data) == 19
    assert "sub-19" in table.excluded
    assert not table.data.isna().any().any()


def test_informative_drops_mostly_constant_features():
    table = _table().complete().informative()
    assert "connectivity.scrubbed_fraction" not in table.data     # 0 for 15 of 19
    assert {"sensitization.a_response", "connectivity.x"} <= set(table.data.columns)
    constant = from_frame(pd.DataFrame({"structure.gm_x": np.ones(5)}, index=[f"sub-{i}" for i in range(5)]))
    with pytest.raises(InputError, match="constant"):
        constant.informative()


def test_group_biomarker_uses_the_findings_features(small_cohort, tmp_path):
    """`painplast run ... group --biomarker diagnosis` end to end on two modules: the model's
    features are the findings tables' (regional GM; the somatotopic shift and asymmetry), not
    the modules' other outputs (map centroids, extents, peaks), and the files are written."""
    import json

    from painplast import engine
    from painplast.cli import _biomarker
    from painplast.cohort import Cohort
    from painplast.config import Config

    cohort = Cohort.from_bids(small_cohort)
    config = Config(modules=("structure", "reorganization"), n_permutations=20)
    out = tmp_path / "out"
    engine.run_participant_level(cohort, config, out, n_jobs=1, progress=False)
    engine.run_group_level(cohort, config, out, progress=False)
    findings = pd.concat([pd.read_csv(out / "group" / f"{m}_findings.tsv", sep="\t")
                          for m in config.modules])
    result = _biomarker(cohort, config, out, "diagnosis", repeats=1, n_permutations=0,
                        n_bootstrap=200, learning=False, inner_folds=3)
    written = json.loads((out / "group" / "biomarker_diagnosis.json").read_text())
    model = json.loads((out / written["model"] / "model.json").read_text())
    names = set(model["metadata"]["biomarker_input"]["features"])
    assert names and names <= set(findings["feature"])
    measured = pd.read_csv(next((out / "sub-001").glob("*reorganization_features.tsv")), sep="\t")
    assert len([c for c in measured.columns if c.startswith("reorganization.")]) > 2
    assert {c for c in names if c.startswith("reorganization.")} == {
        "reorganization.shift_mm", "reorganization.asymmetry"}
    assert result["n_features"] == len(names)
    assert written["metrics"]["auc"]["estimate"] > 0.7   # GM losses planted x2.5 in this cohort
    # a target's own hypotheses: treatment uses the features tested responder vs non-responder
    from painplast.biomarker.features import from_derivatives
    from painplast.biomarker.model import ALIASES
    from painplast.contrasts import for_column
    contrast = for_column(ALIASES["treatment"])
    responder_rows = set(findings.loc[findings["contrast"] == contrast, "feature"])
    chosen = set(from_derivatives(out).a_priori(out, keep=(), contrast=contrast).features)
    assert chosen and chosen == responder_rows & set(from_derivatives(out).features)
    assert not any(c.startswith("reorganization.") for c in chosen)  # no responder hypothesis there
